//! Aloft's persistence: the database (apps, channels, branches, updates, blobs, tokens) and the
//! content-addressed blob storage. Only this crate writes SQL or talks to object storage.

pub mod blobs;
pub mod db;
/// Test backends (they panic, and create databases with `psql`): for this crate's tests and, with
/// the `testing` feature, for the other crates' tests through their [dev-dependencies]. Never
/// part of a normal build.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use blobs::{BlobStore, Encoding, IngestError, S3Config};
pub use db::{Database, DbError};
