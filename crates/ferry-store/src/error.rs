//! Errors of the store's operations, shared by the S3 interface and the
//! in-process API. Each variant maps to one S3 error code in `s3.rs`.

use std::path::PathBuf;

/// A failed store operation. The messages name the bucket, key, upload id or
/// part number involved and never contain credentials or signed URLs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket {bucket:?} does not exist; create it first")]
    NoSuchBucket { bucket: String },
    #[error("bucket {bucket:?} already exists")]
    BucketAlreadyExists { bucket: String },
    #[error("bucket {bucket:?} is not empty; delete its objects and abort its uploads first")]
    BucketNotEmpty { bucket: String },
    #[error("object {key:?} not found in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error(
        "multipart upload {upload_id:?} for {bucket}/{key} not found; it was completed, aborted or never created"
    )]
    NoSuchUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    #[error(
        "multipart upload {upload_id:?} is being completed; retry the request when completion has finished"
    )]
    UploadBusy { upload_id: String },
    #[error("part number {part_number} is out of range; S3 allows 1 to 10000")]
    InvalidPartNumber { part_number: i64 },
    #[error("{entity} of {size} bytes exceeds the maximum of {max} bytes")]
    EntityTooLarge {
        entity: &'static str,
        size: u64,
        max: u64,
    },
    #[error(
        "the request body's {algorithm} checksum {computed} does not match the {algorithm} checksum {expected} sent with it; the data changed in transit or the checksum was computed over other data"
    )]
    BadDigest {
        algorithm: &'static str,
        expected: String,
        computed: String,
    },
    #[error("part {part_number} cannot be completed: {reason}")]
    InvalidPart { part_number: u32, reason: String },
    #[error("the part list is not in ascending order: part {part_number} follows part {previous}")]
    InvalidPartOrder { part_number: u32, previous: u32 },
    #[error(
        "part {part_number} has {size} bytes, below the minimum part size of {min} bytes for all parts but the last"
    )]
    EntityTooSmall {
        part_number: u32,
        size: u64,
        min: u64,
    },
    #[error("the part list is empty; completion needs at least one part")]
    EmptyPartList,
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    #[error("the request body ended early after {received} bytes")]
    IncompleteBody {
        received: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to {stage} {path}")]
    Io {
        stage: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store database query failed while trying to {stage}")]
    Database {
        stage: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store worker thread failed")]
    Worker(#[source] tokio::task::JoinError),
}

impl StoreError {
    pub(crate) fn io(
        stage: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            stage,
            path,
            source,
        }
    }

    pub(crate) fn db(stage: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Database { stage, source }
    }
}
