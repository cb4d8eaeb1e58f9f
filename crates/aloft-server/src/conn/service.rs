//! The front lane: the tower service hyper calls for every request on a connection the wire
//! lane handed over (and the service tests call in-process).
//!
//! Update checks are nearly all of the traffic and are answered from memory, so a `GET` of a
//! plain manifest path ([`manifest_slug`]) is answered here directly, without the router's
//! matching, middleware and boxed futures. Everything else, and any request this lane does not
//! recognise exactly (`HEAD`, percent-encoded slugs), goes to the router, which answers the
//! manifest route through the same device hook ([`Devices::check`]).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header::HOST;
use axum::http::{Method, Request, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use futures::future::Either;

use crate::device::Devices;
use crate::error::ApiError;
use crate::protocol::assets::Assets;
use crate::protocol::manifest::CheckHeaders;
use crate::protocol::manifest_slug;

/// The whole application as one service: the front lane for update checks, then the router.
#[derive(Clone)]
pub struct Front {
    devices: Devices,
    assets: Arc<Assets>,
    router: Router,
    peer: Option<SocketAddr>,
}

impl Front {
    pub(crate) fn new(devices: Devices, assets: Arc<Assets>, router: Router) -> Self {
        Self {
            devices,
            assets,
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

    /// What the wire lane answers checks with.
    pub(crate) fn devices(&self) -> &Devices {
        &self.devices
    }

    /// What the wire lane answers asset downloads from.
    pub(crate) fn assets(&self) -> &Assets {
        &self.assets
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
        if request.method() == Method::GET
            && let Some(slug) = manifest_slug(request.uri().path())
        {
            let uri = request.uri();
            let found = CheckHeaders::scan(request.headers());
            let response = self.devices.check(&Method::GET, uri.path(), slug, uri.query(), found);
            return Either::Left(ready(Ok(response)));
        }
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        // The router is always ready (axum documents it), so it is called without poll_ready.
        Either::Right(tower::Service::call(&mut self.router, request))
    }
}
