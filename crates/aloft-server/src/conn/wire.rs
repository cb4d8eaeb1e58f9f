//! The wire lane: update checks and asset downloads read and answered straight off the socket.
//!
//! Each connection starts here. Requests are parsed in place with `httparse` and the two
//! requests devices make nearly all the time are answered by the device hook, as on every
//! other lane: a plain `GET /apps/{slug}/manifest` ([`Devices::check`], no header map, no
//! allocation per header) and a `GET` or `HEAD` of a plain `/assets/{file}`
//! ([`Devices::asset`]); a cached asset body that is also a file on local disk is sent with
//! `sendfile` rather than copied through this process. The first request that is anything
//! else (another path, a body, `Connection: close`, HTTP/1.0, a malformed or huge head) hands
//! the connection, with the bytes already read, to hyper and the router for the rest of its
//! life. So this lane only ever handles the request shapes it fully understands, and writes
//! their answers byte for byte as hyper would (`tests/device.rs` and `tests/patches.rs`
//! compare the two); hyper handles all of HTTP/1.1.
//!
//! [`Devices::check`]: crate::device::Devices::check
//! [`Devices::asset`]: crate::device::Devices::asset

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::Front;
#[cfg(target_os = "linux")]
use crate::protocol::assets::FileBody;
use crate::protocol::manifest::CheckHeaders;
use crate::protocol::{ASSET_REQUEST_HEADERS, asset_file, manifest_slug};

/// Headers parsed per request; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// A request head longer than this goes to hyper (which answers 431 beyond its own limit).
const MAX_HEAD: usize = 16 * 1024;

/// What the wire lane made of a connection.
pub(crate) enum Outcome {
    /// The peer closed the connection, or the server is shutting down.
    Closed,
    /// A request this lane does not answer: hyper takes the connection from here, starting
    /// with these bytes.
    HandOver(TcpStream, Bytes),
}

/// Answers update checks on `stream` until the peer closes, the server shuts down, or a request
/// needs hyper.
///
/// A connection that gets no request answered for a whole `idle` period (idle, or trickling a
/// request head) is closed within two periods. One timer per connection, not per request.
pub(crate) async fn run(
    mut stream: TcpStream,
    front: &Front,
    shutdown: &mut tokio::sync::watch::Receiver<()>,
    idle: Duration,
) -> io::Result<Outcome> {
    let mut periods = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    let mut answered = false;
    let mut buf = BytesMut::with_capacity(2048);
    // Answers not yet written: heads (with small bodies inline) and large bodies as they are
    // held in memory, written together with one vectored write. A manifest body is sent from
    // where it lives instead of being copied next to its head first.
    let mut out = Output::default();
    loop {
        // Answer every complete request already read (pipelining), in order.
        loop {
            match answer_one(front, &buf, &mut out).await {
                Step::Answered(consumed, streamed) => {
                    buf.advance(consumed);
                    answered = true;
                    match streamed {
                        None => {}
                        Some(Streamed::Body(body, length)) => {
                            out.flush(&mut stream).await?;
                            send_body(&mut stream, body, length).await?;
                        }
                        #[cfg(target_os = "linux")]
                        Some(Streamed::File(file, length)) => {
                            // The heads go out with the file's first bytes, not in a packet
                            // of their own.
                            out.write(&mut stream, true).await?;
                            send_file(&stream, &file, length).await?;
                        }
                    }
                }
                Step::NeedMore => break,
                Step::HandOver => {
                    out.flush(&mut stream).await?;
                    return Ok(Outcome::HandOver(stream, buf.freeze()));
                }
            }
        }
        out.flush(&mut stream).await?;
        if buf.len() >= MAX_HEAD {
            return Ok(Outcome::HandOver(stream, buf.freeze()));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(Outcome::Closed);
                }
            }
            // Between requests: nothing in flight, so shutting down just closes.
            _ = shutdown.changed(), if buf.is_empty() => return Ok(Outcome::Closed),
            _ = periods.tick() => {
                if !answered {
                    return Ok(Outcome::Closed);
                }
                answered = false;
            }
        }
    }
}

enum Step {
    /// One request was answered; this many bytes of the buffer were its head. A body not held
    /// in memory, or sent from its file, is written after the answers before it.
    Answered(usize, Option<Streamed>),
    NeedMore,
    HandOver,
}

/// A body written after its head rather than queued with it, and its length.
enum Streamed {
    /// Read from storage as it is written.
    Body(Body, u64),
    /// A file on local disk, sent with `sendfile`.
    #[cfg(target_os = "linux")]
    File(std::sync::Arc<std::fs::File>, u64),
}

/// What the wire lane answers: an update check, or an asset download.
enum Ask<'a> {
    Check(&'a str),
    Asset(&'a str, Method),
}

async fn answer_one(front: &Front, buf: &[u8], out: &mut Output) -> Step {
    if buf.is_empty() {
        return Step::NeedMore;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Step::NeedMore,
        // Malformed, or too many headers: hyper gives the proper error.
        Err(_) => return Step::HandOver,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version) else {
        return Step::HandOver;
    };
    // Only the shapes devices send: a plain slug or asset name and no query string (the target
    // includes it). The rest (queries, odd characters that hyper's URI parser judges, `HEAD` of
    // a manifest) is hyper's.
    let ask = match method {
        "GET" => match (manifest_slug(target), asset_file(target)) {
            (Some(slug), _) => Ask::Check(slug),
            (None, Some(file)) => Ask::Asset(file, Method::GET),
            (None, None) => return Step::HandOver,
        },
        "HEAD" => match asset_file(target) {
            Some(file) => Ask::Asset(file, Method::HEAD),
            None => return Step::HandOver,
        },
        _ => return Step::HandOver,
    };
    let mut has_host = false;
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if h.value.iter().any(|&b| b != b'0') || h.value.is_empty() {
                return Step::HandOver;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
            || (name.eq_ignore_ascii_case(b"connection") && !h.value.eq_ignore_ascii_case(b"keep-alive"))
        {
            return Step::HandOver;
        }
    }
    if !has_host {
        return Step::HandOver;
    }

    match ask {
        Ask::Check(slug) => {
            let found = CheckHeaders::from_pairs(request.headers.iter().map(|h| (h.name.as_bytes(), h.value)));
            let response = front.devices().check(&Method::GET, target, slug, None, found);
            let (parts, body) = response.into_parts();
            // Manifest, no-update and error bodies are all in memory: collecting is immediate.
            let body = collect(body).await;
            let length = body.len() as u64;
            out.push(parts.status, &parts.headers, body, length);
            Step::Answered(consumed, None)
        }
        Ask::Asset(file, method) => {
            // The headers an asset is answered from, as hyper would have put them in a map.
            let mut map = HeaderMap::with_capacity(ASSET_REQUEST_HEADERS.len());
            for h in request.headers.iter() {
                let Some(name) = ASSET_REQUEST_HEADERS
                    .iter()
                    .find(|n| h.name.eq_ignore_ascii_case(n.as_str()))
                else {
                    continue;
                };
                let Ok(value) = HeaderValue::from_bytes(h.value) else {
                    return Step::HandOver;
                };
                map.append((*name).clone(), value);
            }
            let response = front
                .devices()
                .asset(front.assets(), &method, target, Ok(file), &map)
                .await;
            let (parts, body) = response.into_parts();
            let exact = body.size_hint().exact();
            if method == Method::HEAD {
                out.push(parts.status, &parts.headers, Bytes::new(), exact.unwrap_or(0));
                return Step::Answered(consumed, None);
            }
            #[cfg(target_os = "linux")]
            if let (Some(FileBody(file)), Some(length)) = (parts.extensions.get::<FileBody>(), exact) {
                out.push(parts.status, &parts.headers, Bytes::new(), length);
                return Step::Answered(consumed, Some(Streamed::File(file.clone(), length)));
            }
            // Bodies held in memory are written whole; a large blob read from storage is
            // streamed, framed by the length the asset module gave.
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if let (None, Some(length)) = (exact, declared) {
                out.push(parts.status, &parts.headers, Bytes::new(), length);
                return Step::Answered(consumed, Some(Streamed::Body(body, length)));
            }
            let body = collect(body).await;
            let length = body.len() as u64;
            out.push(parts.status, &parts.headers, body, length);
            Step::Answered(consumed, None)
        }
    }
}

async fn collect(body: Body) -> Bytes {
    match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

/// Writes a streamed body of `length` bytes (its head is written already). A body that fails or
/// does not match its length ends the connection, as hyper does: the client sees a short answer.
async fn send_body(stream: &mut TcpStream, mut body: Body, length: u64) -> io::Result<()> {
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        if let Ok(data) = frame.into_data() {
            sent += data.len() as u64;
            if sent > length {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a body longer than its length",
                ));
            }
            stream.write_all(&data).await?;
        }
    }
    if sent < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a body shorter than its length",
        ));
    }
    Ok(())
}

/// Writes `slices` with `MSG_MORE`: the kernel holds a partial packet for what follows.
#[cfg(target_os = "linux")]
async fn send_more(stream: &mut TcpStream, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};
    let stream = &*stream;
    let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
    stream
        .async_io(tokio::io::Interest::WRITABLE, || {
            Ok(sendmsg(stream, slices, &mut SendAncillaryBuffer::default(), flags)?)
        })
        .await
}

/// Elsewhere, a plain vectored write.
#[cfg(not(target_os = "linux"))]
async fn send_more(stream: &mut TcpStream, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    stream.write_vectored(slices).await
}

/// Sends `length` bytes of `file` from its start with `sendfile`: the kernel moves the pages
/// to the socket without a copy through this process. A file shorter than `length` ends the
/// connection, as a short body does.
#[cfg(target_os = "linux")]
async fn send_file(stream: &TcpStream, file: &std::fs::File, length: u64) -> io::Result<()> {
    let mut offset = 0u64;
    while offset < length {
        let count = usize::try_from(length - offset).unwrap_or(usize::MAX).min(1 << 30);
        let sent = stream
            .async_io(tokio::io::Interest::WRITABLE, || {
                Ok(rustix::fs::sendfile(stream, file, Some(&mut offset), count)?)
            })
            .await?;
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a file shorter than its length",
            ));
        }
    }
    Ok(())
}

/// Bodies up to this size are copied after their head; larger ones are written from where
/// they are.
const INLINE_BODY: usize = 512;

/// Answers waiting to be written, in order.
#[derive(Default)]
struct Output {
    segments: std::collections::VecDeque<Bytes>,
    head: Vec<u8>,
}

impl Output {
    /// Queues an answer: its head, then `body`. `length` is its `content-length` when the
    /// headers do not give one (a `HEAD` answer has no body but the length of the `GET`'s).
    fn push(&mut self, status: StatusCode, headers: &HeaderMap, body: Bytes, length: u64) {
        write_head(&mut self.head, status, headers, length);
        if body.len() <= INLINE_BODY {
            self.head.extend_from_slice(&body);
        } else {
            self.segments.push_back(Bytes::from(std::mem::take(&mut self.head)));
            self.segments.push_back(body);
        }
    }

    async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        self.write(stream, false).await
    }

    /// Writes everything queued; with `more`, tells the kernel more follows at once (a body
    /// sent from its file), so the last head is not sent in a packet of its own.
    async fn write(&mut self, stream: &mut TcpStream, more: bool) -> io::Result<()> {
        if !self.head.is_empty() {
            self.segments.push_back(Bytes::from(std::mem::take(&mut self.head)));
        }
        while !self.segments.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); 64];
            let count = self.segments.len().min(slices.len());
            for (slice, segment) in slices.iter_mut().zip(&self.segments) {
                *slice = io::IoSlice::new(segment);
            }
            let slices = &slices[..count];
            let mut written = if more {
                send_more(stream, slices).await?
            } else {
                stream.write_vectored(slices).await?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let Some(first) = self.segments.front_mut() else { break };
                if written >= first.len() {
                    written -= first.len();
                    self.segments.pop_front();
                } else {
                    first.advance(written);
                    written = 0;
                }
            }
        }
        Ok(())
    }
}

/// The status line and headers, as hyper (behind axum) writes them: the response's headers in
/// order, `content-length` where they give it or else `length` after them (never on a 204 or
/// 304), then `date`.
fn write_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, length: u64) {
    out.reserve(320 + headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut wrote_length = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            if bodiless || wrote_length {
                continue;
            }
            wrote_length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !bodiless && !wrote_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(length.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n\r\n");
}

/// The `Date` value, formatted once a second per thread.
fn date(f: impl FnOnce(&[u8])) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes());
    });
}

/// A stream that first replays bytes already read from it: how hyper is handed a connection
/// the wire lane has started reading.
pub(crate) struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub(crate) fn new(inner: TcpStream, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
