//! Why a use-case refused or failed, in the service's own words: a kind, and the stable code and
//! message clients see. Which HTTP status each kind is, is decided once, where it becomes the
//! HTTP error (`crate::error`).

use std::fmt;

use aloft_store::DbError;

#[derive(Debug)]
pub enum Error {
    /// The request is wrong in itself: a value out of range, a name that is not one.
    Invalid { code: &'static str, message: String },
    /// Something the request names does not exist.
    NotFound { code: &'static str, message: String },
    /// The state of things refuses it now (something exists already, a rollout is in progress,
    /// the state changed since the prepare).
    Conflict { code: &'static str, message: String },
    /// Our failure, not the caller's: `context` is reported, `detail` only logged.
    Internal { context: &'static str, detail: String },
    /// The store refused or failed; its errors have their own codes.
    Store(DbError),
}

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn internal(context: &'static str, err: &dyn fmt::Display) -> Self {
        Self::Internal {
            context,
            detail: err.to_string(),
        }
    }
}

impl From<DbError> for Error {
    fn from(err: DbError) -> Self {
        Self::Store(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { code, message } | Self::NotFound { code, message } | Self::Conflict { code, message } => {
                write!(f, "{code}: {message}")
            }
            Self::Internal { context, detail } => write!(f, "{context}: {detail}"),
            Self::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}
