//! Bearer-token authentication and scopes, enforced by the route table.
//!
//! Every route of [`super::endpoints`] is built with the gate of its [`Access`] class
//! ([`admit`], a route layer) and a handler whose first argument is that class's grant (a type
//! of [`grant`] of the same name; [`guarded`] refuses any other at compile time). The gate
//! authenticates the caller, resolves the app of the `{slug}` segment and checks the scope before
//! any other part of the request is read; it leaves its result in the request's extensions,
//! where only the grant extractors look for it. A handler therefore cannot run without its check,
//! nor ask for more than its route declares.
//!
//! The order of refusals: `401 unauthorized` (no valid token), then `400 invalid_path` (a slug
//! that is not UTF-8), then `404 app_not_found`, then `403 forbidden`, then whatever the handler
//! refuses (the body, the query). A token scoped to some apps cannot tell another app from a
//! missing one: both are `404 app_not_found`. A token that can see an app but not change it gets
//! `403 forbidden`.

use std::collections::HashMap;
use std::net::SocketAddr;

use aloft_core::AppSlug;
use aloft_store::db::apps::{self, App};
use aloft_store::db::tokens::{self, Scope};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Access;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::service::Actor;
use crate::state::AppState;

/// The authenticated caller of a management route.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub who: Who,
    pub scope: Scope,
    /// Peer address, and `X-Forwarded-For` when a proxy set it.
    pub remote: String,
}

/// Who a caller is: a token (API) or a signed-in user (dashboard).
#[derive(Debug, Clone)]
pub(crate) enum Who {
    Token { id: i64, name: String },
    User { email: String },
}

/// What a route does to an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn no_such_app(slug: &str) -> ApiError {
    ApiError::not_found("app_not_found", format!("no app {slug:?} on this server"))
}

impl Caller {
    /// Whether this caller may see the app `slug` (whether or not it exists).
    pub(crate) fn sees(&self, slug: &str) -> bool {
        match &self.scope {
            Scope::Admin => true,
            Scope::Publish(apps) | Scope::Read(apps) => apps.iter().any(|a| a == slug),
        }
    }

    /// The app, if this caller may `need` it.
    pub(crate) async fn app(&self, state: &AppState, slug: &str, need: Need) -> Result<App, ApiError> {
        let parsed = AppSlug::parse(slug).map_err(|_| no_such_app(slug))?;
        if !self.sees(slug) {
            return Err(no_such_app(slug));
        }
        let app = apps::by_slug(&state.db, &parsed).await?;
        if need == Need::Write && matches!(self.scope, Scope::Read(_)) {
            return Err(forbidden("this token may read the app but not change it"));
        }
        Ok(app)
    }

    pub(crate) fn admin(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Admin => Ok(()),
            _ => Err(forbidden("only an admin token may do this")),
        }
    }

    /// Uploading blobs is part of publishing.
    fn uploader(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Read(_) => Err(forbidden("a read-only token cannot upload")),
            _ => Ok(()),
        }
    }

    /// Who the changes this caller makes are by.
    pub(crate) fn actor(&self) -> Actor {
        let (who, name) = match &self.who {
            Who::Token { id, name } => (format!("{name} (token {id})"), name.clone()),
            Who::User { email } => (email.clone(), email.clone()),
        };
        Actor {
            who,
            name,
            remote: self.remote.clone(),
        }
    }

    /// The caller the `authorization` header names, or `401 unauthorized`.
    pub(crate) async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let token = tokens::find_by_hash(&state.db, &tokens::hash_secret(secret))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller {
            who: Who::Token {
                id: token.id,
                name: token.name,
            },
            scope: token.scope,
            remote: remote(parts),
        })
    }
}

/// Where a request came from, as the audit log shows it: the peer address, and
/// `X-Forwarded-For` when a proxy set it.
pub(crate) fn remote(parts: &Parts) -> String {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match (peer, forwarded) {
        (Some(p), Some(f)) => format!("{p} (for {f})"),
        (Some(p), None) => p,
        (None, Some(f)) => format!("(for {f})"),
        (None, None) => String::new(),
    }
}

/// The gate of one route: its access class, and whether its path names an app.
#[derive(Clone)]
pub(super) struct Gate {
    pub state: AppState,
    pub access: Access,
    pub app_in_path: bool,
}

/// What a gate let through, for the route's grant extractor.
#[derive(Clone)]
struct Granted {
    caller: Caller,
    app: Option<App>,
}

impl Gate {
    async fn check(&self, parts: &mut Parts) -> Result<Option<Granted>, ApiError> {
        if self.access == Access::Public {
            return Ok(None);
        }
        let caller = Caller::authenticate(parts, &self.state).await?;
        let need = match self.access {
            Access::AppRead => Need::Read,
            // An admin route about an app: a tenant that cannot see it is told it does not exist.
            Access::AppWrite | Access::Admin => Need::Write,
            Access::Public | Access::AnyToken | Access::Upload => Need::Read,
        };
        let app = match self.app_in_path {
            true => {
                let ApiPath(params) =
                    ApiPath::<HashMap<String, String>>::from_request_parts(parts, &self.state).await?;
                let slug = params
                    .get("slug")
                    .ok_or_else(|| ApiError::internal("a route's access", &"its path has no {slug}"))?;
                Some(caller.app(&self.state, slug, need).await?)
            }
            false => None,
        };
        match self.access {
            Access::AppRead | Access::AppWrite if app.is_none() => {
                return Err(ApiError::internal("a route's access", &"an app route without {slug}"));
            }
            Access::Admin => caller.admin()?,
            Access::Upload => caller.uploader()?,
            _ => {}
        }
        Ok(Some(Granted { caller, app }))
    }
}

/// The route layer of every management route: refuses the request, or lets it through with its
/// grant (see the module documentation).
pub(super) async fn admit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match gate.check(&mut parts).await {
        Ok(granted) => {
            if let Some(granted) = granted {
                parts.extensions.insert(granted);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// The grants handlers take as their first argument, one per [`Access`] class and named after
/// it. Each is only ever made from what the route's gate let through.
pub(crate) mod grant {
    use super::*;

    /// Anyone (no token is looked at).
    pub(crate) struct Public;
    /// Any valid token; the handler shows only what it may see.
    pub(crate) struct AnyToken(pub Caller);
    /// A token that may read `app` (reading records nothing, so the caller is not kept).
    pub(crate) struct AppRead {
        pub app: App,
    }
    /// A token that may change `app`.
    pub(crate) struct AppWrite {
        pub caller: Caller,
        pub app: App,
    }
    /// A publish or admin token (uploads are content-addressed and record nothing).
    pub(crate) struct Upload;
    /// An admin token; with the app of the path, when the route names one.
    pub(crate) struct Admin {
        pub caller: Caller,
        app: Option<App>,
    }

    impl Admin {
        /// The app of the path.
        pub(crate) fn app(&self) -> Result<&App, ApiError> {
            self.app
                .as_ref()
                .ok_or_else(|| ApiError::internal("a route's access", &"an admin route without {slug}"))
        }
    }

    fn granted(parts: &mut Parts) -> Result<Granted, ApiError> {
        parts
            .extensions
            .remove::<Granted>()
            .ok_or_else(|| ApiError::internal("a route's access", &"the route has no gate"))
    }

    fn with_app(parts: &mut Parts) -> Result<(Caller, App), ApiError> {
        let Granted { caller, app } = granted(parts)?;
        let app = app.ok_or_else(|| ApiError::internal("a route's access", &"an app route without {slug}"))?;
        Ok((caller, app))
    }

    impl<S: Send + Sync> FromRequestParts<S> for Public {
        type Rejection = ApiError;
        async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, ApiError> {
            Ok(Public)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for AnyToken {
        type Rejection = ApiError;
        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
            Ok(AnyToken(granted(parts)?.caller))
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for AppRead {
        type Rejection = ApiError;
        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
            let (_, app) = with_app(parts)?;
            Ok(AppRead { app })
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for AppWrite {
        type Rejection = ApiError;
        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
            let (caller, app) = with_app(parts)?;
            Ok(AppWrite { caller, app })
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Upload {
        type Rejection = ApiError;
        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
            granted(parts)?;
            Ok(Upload)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Admin {
        type Rejection = ApiError;
        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
            let Granted { caller, app } = granted(parts)?;
            Ok(Admin { caller, app })
        }
    }
}

/// Argument lists (as axum's [`Handler`] sees them: a marker, then the arguments) whose first
/// argument is `G`.
pub(super) trait FirstArgument<G> {}

macro_rules! first_argument {
    ($($t:ident),*) => {
        impl<M, G, $($t),*> FirstArgument<G> for (M, G, $($t),*) {}
    };
}

first_argument!();
first_argument!(T1);
first_argument!(T1, T2);
first_argument!(T1, T2, T3);
first_argument!(T1, T2, T3, T4);
first_argument!(T1, T2, T3, T4, T5);
first_argument!(T1, T2, T3, T4, T5, T6);

/// `handler`, if its first argument is the grant `G`; anything else does not compile.
pub(super) fn guarded<G, T, H>(handler: H) -> H
where
    H: Handler<T, AppState>,
    T: FirstArgument<G>,
{
    handler
}
