//! The dashboard-user bodies of the management API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    /// `admin` (everything), `publisher` (read and release the given apps) or `viewer` (read
    /// the given apps).
    pub role: String,
    /// The apps a publisher or viewer is for.
    #[serde(default)]
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserInfo {
    pub email: String,
    /// admin, publisher or viewer.
    pub role: String,
    pub apps: Vec<String>,
    /// Whether the user has set a password (through a sign-in link).
    pub password_set: bool,
    pub created_at: String,
}

/// A user with a new one-time sign-in link.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserSignInLink {
    pub user: UserInfo,
    /// Opens the dashboard's page for setting a password; works once, until `expires_at`.
    /// Shown once; only a hash is stored.
    pub sign_in_url: String,
    pub expires_at: String,
}
