//! Use-cases behind the management API, independent of HTTP extraction.

pub mod publish;
