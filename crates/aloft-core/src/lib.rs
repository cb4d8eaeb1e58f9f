//! Wire and domain types of the Expo Updates protocol, and the pure logic around them.
//!
//! Nothing here does I/O: no tokio, no HTTP framework, no database. Everything that decides
//! the exact bytes a device receives lives here so it can be unit-tested and snapshotted.

pub mod accept;
pub mod api;
pub mod bsdiff;
pub mod content_type;
pub mod directive;
pub mod distinct;
pub mod embedded;
pub mod export;
pub mod fasthash;
pub mod halt;
pub mod hash;
pub mod keys;
pub mod manifest;
pub mod multipart;
pub mod names;
pub mod platform;
pub mod reports;
pub mod rollout;
pub mod signature;
pub mod time;
pub mod webhook;

pub use hash::{ContentHash, Md5Key};
pub use names::{AppSlug, BranchName, ChannelName, NameError, RuntimeVersion};
pub use platform::Platform;
