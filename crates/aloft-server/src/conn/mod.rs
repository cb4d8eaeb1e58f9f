//! The connection layer: the accept loop, and the hand-over of each connection from the wire lane
//! to hyper.
//!
//! - `wire.rs`: the wire lane, plain update checks answered straight off the socket;
//! - `service.rs`: the front lane, the tower service hyper calls, which answers plain update
//!   checks itself and passes everything else to the router.
//!
//! Both lanes, and the router, answer update checks through the device hook (`device.rs`).

mod service;
mod wire;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub use service::Front;
use wire::{Outcome, Rewind};

/// Lets this process open as many files as its hard limit allows: each connection, and each
/// blob file kept open for `sendfile`, takes a descriptor, and the usual soft limit (1,024) is
/// below what a fleet's connections need. (nginx's `worker_rlimit_nofile` and Go's runtime do
/// the same.) Called by `aloft serve` before it listens.
pub fn raise_open_file_limit() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current == limit.maximum {
            return;
        }
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
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
