//! Embedded S3-compatible object store.
