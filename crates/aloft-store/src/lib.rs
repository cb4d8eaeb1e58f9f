//! Aloft's persistence: the database (apps, channels, branches, updates, blobs, tokens) and the
//! content-addressed blob storage. Only this crate writes SQL or talks to object storage.

pub mod blobs;
pub mod db;
pub mod testing;

pub use blobs::{BlobStore, Encoding, IngestError, S3Config};
pub use db::{Database, DbError};
