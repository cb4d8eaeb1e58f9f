//! The front of the server: the service every connection calls, and the HTTP/1.1 accept loop.
//!
//! Update checks are nearly all of the traffic and are answered from memory, so a `GET` of
//! `/apps/{slug}/manifest` is answered here directly, without the router's matching, middleware
//! and boxed futures. Everything else, and any request this lane does not recognise exactly
//! (`HEAD`, percent-encoded slugs), goes to the router, which answers the manifest route the
//! same way through the same [`manifest::answer`].

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header::HOST;
use axum::http::{Method, Request, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use futures::future::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::metrics;
use crate::protocol::manifest;
use crate::state::AppState;
use crate::wire::{self, Outcome, Rewind};

/// The whole application as one service: the front lane for update checks, then the router.
#[derive(Clone)]
pub struct Front {
    state: AppState,
    router: Router,
    peer: Option<SocketAddr>,
}

impl Front {
    pub(crate) fn new(state: AppState, router: Router) -> Self {
        Self {
            state,
            router,
            peer: None,
        }
    }

    /// The service for one connection: the router's handlers see the peer address as
    /// `ConnectInfo`, as with axum's own server.
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }

    pub(crate) fn state(&self) -> &AppState {
        &self.state
    }

    /// The slug of a `GET /apps/{slug}/manifest` this lane answers itself.
    fn manifest_slug<B>(request: &Request<B>) -> Option<&str> {
        if request.method() != Method::GET {
            return None;
        }
        Self::manifest_slug_of(request.uri().path())
    }

    /// The slug in a manifest path the fast lanes answer. Anything unusual (an empty or encoded
    /// slug, a deeper path) is the router's to answer.
    pub(crate) fn manifest_slug_of(path: &str) -> Option<&str> {
        let slug = path.strip_prefix("/apps/")?.strip_suffix("/manifest")?;
        (!slug.is_empty() && !slug.bytes().any(|b| b == b'/' || b == b'%')).then_some(slug)
    }
}

impl<B> tower::Service<Request<B>> for Front
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // HTTP/1.1 makes Host mandatory and a server must refuse a request without it (RFC 9112
        // section 3.2). Checked on network connections only: in-process callers have no Host.
        if self.peer.is_some() && request.version() == Version::HTTP_11 && !request.headers().contains_key(HOST) {
            let response = ApiError::bad_request("missing_host", "an HTTP/1.1 request needs a Host header");
            return Either::Left(ready(Ok(response.into_response())));
        }
        if let Some(slug) = Self::manifest_slug(&request) {
            let uri = request.uri();
            let found = manifest::CheckHeaders::scan(request.headers());
            let response = answer_check(&self.state, uri.path(), slug, uri.query(), found);
            return Either::Left(ready(Ok(response)));
        }
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        // The router is always ready (axum documents it), so it is called without poll_ready.
        Either::Right(tower::Service::call(&mut self.router, request))
    }
}

/// An update check answered by a fast lane (this one or the wire lane): the answer, an error
/// as its JSON response, and the request's metrics and log line.
pub(crate) fn answer_check(
    state: &AppState,
    path: &str,
    slug: &str,
    query: Option<&str>,
    found: manifest::CheckHeaders<'_>,
) -> Response {
    let start = Instant::now();
    let response = manifest::answer_parts(state, slug, query, found).unwrap_or_else(IntoResponse::into_response);
    metrics::track_manifest_get(state, path, &response, start);
    response
}

/// Accepts connections and serves HTTP/1.1 on them until `shutdown` completes, then lets the
/// requests in flight finish (up to `drain`) before returning.
///
/// Every connection starts in the wire lane (`wire.rs`), which answers plain update checks
/// straight off the socket; the first other request hands the connection to hyper.
///
/// A connection with no request for `idle` (or one sending a request head slowly) is closed:
/// within one to two periods in the wire lane, after `idle` in hyper (its header-read timeout).
pub async fn serve(
    listener: TcpListener,
    front: Front,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    idle: Duration,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(idle);
    // Each connection holds a receiver: `closed()` on the sender is "every connection ended".
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory: wait instead of spinning. Errors of a
                    // single connection (reset before accept) just skip it.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole in one call; Nagle would only delay the last segment.
        let _ = stream.set_nodelay(true);
        let front = front.for_peer(peer);
        let http = http.clone();
        let mut signal = stopped.clone();
        tokio::spawn(async move {
            let (stream, read) = match wire::run(stream, &front, &mut signal, idle).await {
                Ok(Outcome::HandOver(stream, read)) => (stream, read),
                Ok(Outcome::Closed) => return,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                    return;
                }
            };
            let service = TowerToHyperService::new(front);
            let mut connection = pin!(http.serve_connection(TokioIo::new(Rewind::new(stream, read)), service));
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    // Idle keep-alive connections close now; a request in flight finishes first.
                    _ = signal.changed(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    drop(stopped);
    let _ = stop.send(());
    if tokio::time::timeout(drain, stop.closed()).await.is_err() {
        tracing::warn!("requests still in flight after {drain:?}; stopping anyway");
    }
    Ok(())
}
