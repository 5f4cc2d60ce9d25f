//! Ferry's embedded S3-compatible object store.
//!
//! Serves the S3 REST API on loopback for the sandbox gateway and for tests:
//! path-style addressing (`http://127.0.0.1:PORT/bucket/key`), SigV4 header
//! authentication and SigV4 presigned URLs. The protocol layer is the `s3s`
//! crate (0.14.1), which parses requests and validates signatures, expiry and
//! signed headers. This crate implements the operations over local disk
//! ([`Store`]) and reports every request to an [`AccessHook`].
//!
//! What the store verifies itself:
//! - the body of `PutObject` and `UploadPart` against `x-amz-checksum-sha256`
//!   (and CRC32, CRC32C, CRC64NVME, SHA-1 and `Content-MD5` when sent), as a
//!   header or an `aws-chunked` trailer, rejecting a mismatch with 400
//!   `BadDigest` and keeping nothing of the body;
//! - the part list of `CompleteMultipartUpload` against the stored parts.
//!
//! The gateway can work with the store in two ways: over HTTP with presigned
//! URLs from [`presign`] (what clients do), or in-process through
//! [`StoreHandle::store`] for listing parts, completing, aborting, cleaning up
//! expired uploads and hashing a completed object.
//!
//! Not supported: virtual-hosted-style addressing, versioning, ACLs and bucket
//! policies (access is all-or-nothing per key pair, narrowed by the hook),
//! server-side encryption, `CopyObject`, `UploadPartCopy`, and conditional
//! requests.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let mut config = ferry_store::StoreConfig::new("/var/tmp/ferry-store");
//! config.buckets.push("ferry".to_owned());
//! let handle = ferry_store::serve(config).await?;
//! println!("endpoint {}", handle.endpoint());
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod access;
mod credentials;
mod error;
mod hash_ahead;
mod hook;
mod multipart;
pub mod presign;
mod s3;
mod server;
mod store;

pub use credentials::{Credentials, SecretAccessKey};
pub use error::StoreError;
pub use hook::{AccessDecision, AccessHook, AccessOutcome, AccessRequest, AllowAll};
pub use multipart::{CompletedPartRef, CompletedUpload, PartInfo, PartPage, UploadInfo};
pub use server::{ServeError, StoreConfig, StoreHandle, serve, serve_listener};
pub use store::{
    MAX_LIST_PAGE, MAX_PART_NUMBER, MAX_PART_SIZE, MAX_PUT_OBJECT_SIZE, MIN_PART_SIZE, ObjectData,
    ObjectInfo, ObjectPage, Store, StoreOptions,
};
