//! The S3 API over [`Store`]: converts s3s requests into store calls and
//! store results and errors into S3 responses.
//!
//! Implemented operations: CreateBucket, HeadBucket, ListBuckets, DeleteBucket,
//! GetBucketLocation, PutObject, GetObject (with `Range`), HeadObject,
//! DeleteObject, ListObjects, ListObjectsV2, CreateMultipartUpload, UploadPart,
//! ListParts, CompleteMultipartUpload, AbortMultipartUpload and
//! ListMultipartUploads. Every other operation returns 501 `NotImplemented`.
//! Versioning, ACLs, encryption, tagging and conditional requests
//! (`If-Match` and friends) are not supported and their headers are ignored.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt as _;
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, TrailingHeaders};
use tokio::io::AsyncReadExt as _;
use tokio_util::io::ReaderStream;
use tracing::error;

use crate::error::StoreError;
use crate::multipart::CompletedPartRef;
use crate::store::{
    ExpectedChecksums, IO_BUFFER_SIZE, MAX_LIST_PAGE, MAX_PART_NUMBER, MAX_PART_SIZE,
    MAX_PUT_OBJECT_SIZE, Store,
};

/// The s3s service implementation backed by a [`Store`].
pub(crate) struct S3Store {
    pub(crate) store: Store,
}

/// Converts a store error into the S3 error a client expects. Internal errors
/// are logged here, once, and reach the client as a generic message.
fn to_s3_error(err: StoreError) -> S3Error {
    let code = match &err {
        StoreError::NoSuchBucket { .. } => S3ErrorCode::NoSuchBucket,
        StoreError::BucketAlreadyExists { .. } => S3ErrorCode::BucketAlreadyOwnedByYou,
        StoreError::BucketNotEmpty { .. } => S3ErrorCode::BucketNotEmpty,
        StoreError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
        StoreError::NoSuchUpload { .. } => S3ErrorCode::NoSuchUpload,
        StoreError::UploadBusy { .. } => S3ErrorCode::OperationAborted,
        StoreError::InvalidPartNumber { .. } | StoreError::InvalidArgument { .. } => {
            S3ErrorCode::InvalidArgument
        }
        StoreError::EntityTooLarge { .. } => S3ErrorCode::EntityTooLarge,
        StoreError::BadDigest { .. } => S3ErrorCode::BadDigest,
        StoreError::InvalidPart { .. } => S3ErrorCode::InvalidPart,
        StoreError::InvalidPartOrder { .. } => S3ErrorCode::InvalidPartOrder,
        StoreError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        StoreError::EmptyPartList => S3ErrorCode::MalformedXML,
        StoreError::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
        StoreError::Io { .. } | StoreError::Database { .. } | StoreError::Worker(_) => {
            error!(error = %error_chain(&err), "store operation failed");
            return S3Error::with_message(
                S3ErrorCode::InternalError,
                "The store failed to process the request; the server log has the details.",
            );
        }
    };
    S3Error::with_message(code, err.to_string())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn run<T>(result: Result<T, StoreError>) -> S3Result<T> {
    result.map_err(to_s3_error)
}

fn invalid_argument(name: &'static str, reason: impl Into<String>) -> S3Error {
    to_s3_error(StoreError::InvalidArgument {
        name,
        reason: reason.into(),
    })
}

fn part_number_of(value: i32) -> S3Result<u32> {
    match u32::try_from(value) {
        Ok(number) if (1..=MAX_PART_NUMBER).contains(&number) => Ok(number),
        _ => Err(to_s3_error(StoreError::InvalidPartNumber {
            part_number: i64::from(value),
        })),
    }
}

fn to_btree(metadata: Option<Metadata>) -> BTreeMap<String, String> {
    metadata
        .map(|map| map.into_iter().collect())
        .unwrap_or_default()
}

fn from_btree(metadata: &BTreeMap<String, String>) -> Option<Metadata> {
    if metadata.is_empty() {
        return None;
    }
    Some(
        metadata
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    )
}

/// Enables a hasher for each checksum algorithm the client sends a value for,
/// names in `x-amz-checksum-algorithm`, or announces in `x-amz-trailer`.
/// SHA-256 and MD5 are always computed by the store and are not enabled here.
fn checksum_hasher(
    algorithm: Option<&ChecksumAlgorithm>,
    expected: &ExpectedChecksums,
    headers: &http::HeaderMap,
) -> ChecksumHasher {
    let announced = |name: &str| {
        headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value
                    .split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(name))
            })
    };
    let algorithm = algorithm.map(ChecksumAlgorithm::as_str).unwrap_or_default();
    let mut hasher = ChecksumHasher::default();
    if expected.crc32.is_some()
        || algorithm == ChecksumAlgorithm::CRC32
        || announced("x-amz-checksum-crc32")
    {
        hasher.crc32 = Some(Default::default());
    }
    if expected.crc32c.is_some()
        || algorithm == ChecksumAlgorithm::CRC32C
        || announced("x-amz-checksum-crc32c")
    {
        hasher.crc32c = Some(Default::default());
    }
    if expected.crc64nvme.is_some()
        || algorithm == ChecksumAlgorithm::CRC64NVME
        || announced("x-amz-checksum-crc64nvme")
    {
        hasher.crc64nvme = Some(Default::default());
    }
    if expected.sha1.is_some()
        || algorithm == ChecksumAlgorithm::SHA1
        || announced("x-amz-checksum-sha1")
    {
        hasher.sha1 = Some(Default::default());
    }
    hasher
}

/// Takes checksums sent as trailers of an `aws-chunked` body, which are known
/// only after the body has been read.
fn add_trailers(trailers: Option<TrailingHeaders>, expected: &mut ExpectedChecksums) {
    let Some(headers) = trailers.and_then(|trailers| trailers.take()) else {
        return;
    };
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let fields = [
        ("x-amz-checksum-sha256", &mut expected.sha256),
        ("x-amz-checksum-crc32", &mut expected.crc32),
        ("x-amz-checksum-crc32c", &mut expected.crc32c),
        ("x-amz-checksum-crc64nvme", &mut expected.crc64nvme),
        ("x-amz-checksum-sha1", &mut expected.sha1),
    ];
    for (name, field) in fields {
        if let Some(found) = value(name) {
            *field = Some(found);
        }
    }
}

fn check_content_length(
    content_length: Option<i64>,
    max: u64,
    entity: &'static str,
) -> S3Result<()> {
    if let Some(length) = content_length
        && u64::try_from(length).is_ok_and(|length| length > max)
    {
        return Err(to_s3_error(StoreError::EntityTooLarge {
            entity,
            size: length as u64,
            max,
        }));
    }
    Ok(())
}

impl S3Store {
    async fn stage(
        &self,
        body: Option<StreamingBlob>,
        max: u64,
        entity: &'static str,
        hasher: ChecksumHasher,
    ) -> S3Result<crate::store::StagedBody> {
        let staged = match body {
            Some(body) => self.store.stage_body(body, max, entity, hasher).await,
            None => {
                let empty = futures::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
                self.store.stage_body(empty, max, entity, hasher).await
            }
        };
        run(staged)
    }
}

#[async_trait::async_trait]
impl S3 for S3Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        run(self.store.create_bucket(&req.input.bucket))?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        run(self.store.head_bucket(&req.input.bucket))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        run(self.store.delete_bucket(&req.input.bucket))?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        run(self.store.head_bucket(&req.input.bucket))?;
        // An empty location constraint means us-east-1 in S3.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = run(self.store.list_buckets())?
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(Timestamp::from(created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        check_content_length(input.content_length, MAX_PUT_OBJECT_SIZE, "object")?;
        run(self.store.head_bucket(&input.bucket))?;

        let mut expected = ExpectedChecksums {
            content_md5: input.content_md5,
            sha256: input.checksum_sha256,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            crc64nvme: input.checksum_crc64nvme,
            sha1: input.checksum_sha1,
        };
        let hasher = checksum_hasher(input.checksum_algorithm.as_ref(), &expected, &req.headers);
        let staged = self
            .stage(input.body, MAX_PUT_OBJECT_SIZE, "object", hasher)
            .await?;
        add_trailers(req.trailing_headers, &mut expected);
        run(staged.verify(&expected))?;

        let computed = staged.checksums.clone();
        let metadata = to_btree(input.metadata);
        let info = run(self.store.commit_object(
            staged,
            &input.bucket,
            &input.key,
            input.content_type.as_deref(),
            &metadata,
        ))?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(info.etag)),
            checksum_sha256: Some(info.checksum_sha256),
            checksum_crc32: computed.checksum_crc32,
            checksum_crc32c: computed.checksum_crc32c,
            checksum_crc64nvme: computed.checksum_crc64nvme,
            checksum_sha1: computed.checksum_sha1,
            checksum_type: Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            size: Some(info.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "GetObject with partNumber is not supported; use a Range header",
            ));
        }
        let (info, data) = run(self.store.open_object(&input.bucket, &input.key))?;

        let (start, length, content_range) = match &input.range {
            None => (0, info.size, None),
            Some(range) => {
                let range = range.check(info.size)?;
                let content_range =
                    format!("bytes {}-{}/{}", range.start, range.end - 1, info.size);
                (range.start, range.end - range.start, Some(content_range))
            }
        };
        let pieces = data.into_range(start, length).map_err(|err| {
            to_s3_error(StoreError::io("seek in object data", self.store.root())(
                err,
            ))
        })?;
        let body = futures::stream::iter(pieces).flat_map(|(file, length)| {
            ReaderStream::with_capacity(
                tokio::fs::File::from_std(file).take(length),
                IO_BUFFER_SIZE,
            )
        });

        // S3 returns the object's checksum only on request, and only for the whole object.
        let whole = content_range.is_none();
        let wants_checksum = input
            .checksum_mode
            .as_ref()
            .is_some_and(|mode| mode.as_str() == ChecksumMode::ENABLED);
        let (checksum_sha256, checksum_type) = if whole && wants_checksum {
            (
                Some(info.checksum_sha256.clone()),
                Some(checksum_type_of(&info)),
            )
        } else {
            (None, None)
        };

        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(length as i64),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(ETag::Strong(info.etag.clone())),
            last_modified: Some(Timestamp::from(info.last_modified)),
            content_type: info.content_type.clone(),
            metadata: from_btree(&info.metadata),
            checksum_sha256,
            checksum_type,
            parts_count: info.parts_count.map(|count| count as i32),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let info = run(self.store.head_object(&input.bucket, &input.key))?;
        let wants_checksum = input
            .checksum_mode
            .as_ref()
            .is_some_and(|mode| mode.as_str() == ChecksumMode::ENABLED);
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(ETag::Strong(info.etag.clone())),
            last_modified: Some(Timestamp::from(info.last_modified)),
            content_type: info.content_type.clone(),
            metadata: from_btree(&info.metadata),
            checksum_sha256: wants_checksum.then(|| info.checksum_sha256.clone()),
            checksum_type: wants_checksum.then(|| checksum_type_of(&info)),
            parts_count: info.parts_count.map(|count| count as i32),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        run(self.store.delete_object(&req.input.bucket, &req.input.key))?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let v2 = self.list_objects_v2(req.map_input(Into::into)).await?;
        Ok(v2.map_output(|v2| ListObjectsOutput {
            contents: v2.contents,
            common_prefixes: v2.common_prefixes,
            delimiter: v2.delimiter,
            encoding_type: v2.encoding_type,
            name: v2.name,
            prefix: v2.prefix,
            max_keys: v2.max_keys,
            is_truncated: v2.is_truncated,
            next_marker: v2.next_continuation_token,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = match input.max_keys {
            None => MAX_LIST_PAGE,
            Some(value) => u32::try_from(value)
                .map_err(|_| invalid_argument("max-keys", "must not be negative"))?,
        };
        // The continuation token is the last key or common prefix of the previous page.
        let start_after = match (
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        ) {
            (Some(token), Some(after)) => Some(token.max(after)),
            (token, after) => token.or(after),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let page = run(self.store.list_objects(
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            start_after,
            max_keys,
        ))?;

        let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
        let contents = page
            .objects
            .into_iter()
            .map(|info| Object {
                key: Some(info.key),
                size: Some(info.size as i64),
                e_tag: Some(ETag::Strong(info.etag)),
                last_modified: Some(Timestamp::from(info.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        let common_prefixes = page
            .common_prefixes
            .into_iter()
            .map(|prefix| CommonPrefix {
                prefix: Some(prefix),
            })
            .collect::<Vec<_>>();

        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            is_truncated: Some(page.is_truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next_start_after,
            start_after: input.start_after,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        // Every part's SHA-256 is computed whatever algorithm the client names, so the
        // composite SHA-256 is always available. Part checksums of the named algorithm
        // are verified on upload; completion does not combine them.
        let metadata = to_btree(input.metadata);
        let upload_id = run(self.store.create_multipart_upload(
            &input.bucket,
            &input.key,
            input.content_type.as_deref(),
            &metadata,
        ))?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: Some(ChecksumType::from_static(ChecksumType::COMPOSITE)),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let part_number = part_number_of(input.part_number)?;
        check_content_length(input.content_length, MAX_PART_SIZE, "part")?;
        run(self
            .store
            .check_upload(&input.bucket, &input.key, &input.upload_id))?;

        let mut expected = ExpectedChecksums {
            content_md5: input.content_md5,
            sha256: input.checksum_sha256,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            crc64nvme: input.checksum_crc64nvme,
            sha1: input.checksum_sha1,
        };
        let hasher = checksum_hasher(input.checksum_algorithm.as_ref(), &expected, &req.headers);
        let staged = self
            .stage(input.body, MAX_PART_SIZE, "part", hasher)
            .await?;
        add_trailers(req.trailing_headers, &mut expected);
        // A mismatch drops `staged`, which deletes the received bytes.
        run(staged.verify(&expected))?;

        let computed = staged.checksums.clone();
        let part = run(self.store.commit_part(
            staged,
            &input.bucket,
            &input.key,
            &input.upload_id,
            part_number,
        ))?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            checksum_sha256: Some(part.checksum_sha256),
            checksum_crc32: computed.checksum_crc32,
            checksum_crc32c: computed.checksum_crc32c,
            checksum_crc64nvme: computed.checksum_crc64nvme,
            checksum_sha1: computed.checksum_sha1,
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max_parts = match input.max_parts {
            None => MAX_LIST_PAGE,
            Some(value) => u32::try_from(value)
                .map_err(|_| invalid_argument("max-parts", "must not be negative"))?,
        };
        let marker = match input.part_number_marker {
            None => 0,
            Some(value) => u32::try_from(value)
                .map_err(|_| invalid_argument("part-number-marker", "must not be negative"))?,
        };
        let page = run(self.store.list_parts(
            &input.bucket,
            &input.key,
            &input.upload_id,
            marker,
            max_parts,
        ))?;

        let parts = page
            .parts
            .into_iter()
            .map(|part| Part {
                part_number: Some(part.part_number as i32),
                size: Some(part.size as i64),
                e_tag: Some(ETag::Strong(part.etag)),
                checksum_sha256: Some(part.checksum_sha256),
                last_modified: Some(Timestamp::from(part.last_modified)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            parts: Some(parts),
            max_parts: Some(max_parts.min(MAX_LIST_PAGE) as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: page.next_part_number_marker.map(|marker| marker as i32),
            is_truncated: Some(page.is_truncated),
            checksum_algorithm: Some(ChecksumAlgorithm::from_static(ChecksumAlgorithm::SHA256)),
            checksum_type: Some(ChecksumType::from_static(ChecksumType::COMPOSITE)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let mut parts = Vec::new();
        for part in input
            .multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default()
        {
            let Some(number) = part.part_number else {
                return Err(S3Error::with_message(
                    S3ErrorCode::MalformedXML,
                    "a Part has no PartNumber",
                ));
            };
            let part_number = part_number_of(number)?;
            let Some(etag) = part.e_tag else {
                return Err(S3Error::with_message(
                    S3ErrorCode::MalformedXML,
                    format!("part {part_number} has no ETag"),
                ));
            };
            parts.push(CompletedPartRef {
                part_number,
                etag: etag.value().to_owned(),
                checksum_sha256: part.checksum_sha256,
            });
        }

        let done = run(self
            .store
            .complete_multipart_upload(&input.bucket, &input.key, &input.upload_id, &parts)
            .await)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(done.bucket.clone()),
            key: Some(done.key.clone()),
            location: Some(format!("/{}/{}", done.bucket, done.key)),
            e_tag: Some(ETag::Strong(done.etag)),
            checksum_sha256: Some(done.checksum_sha256),
            checksum_type: Some(ChecksumType::from_static(ChecksumType::COMPOSITE)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        run(self
            .store
            .abort_multipart_upload(&input.bucket, &input.key, &input.upload_id))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let max_uploads = match input.max_uploads {
            None => MAX_LIST_PAGE,
            Some(value) => u32::try_from(value)
                .map_err(|_| invalid_argument("max-uploads", "must not be negative"))?,
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        // NOTE: `upload-id-marker` and `delimiter` are ignored, so a page boundary
        // inside several uploads of one key skips that key's remaining uploads.
        let (uploads, is_truncated) = run(self.store.list_multipart_uploads(
            &input.bucket,
            &prefix,
            input.key_marker.as_deref(),
            max_uploads,
        ))?;
        let next_key_marker = if is_truncated {
            uploads.last().map(|upload| upload.key.clone())
        } else {
            None
        };
        let uploads = uploads
            .into_iter()
            .map(|upload| MultipartUpload {
                key: Some(upload.key),
                upload_id: Some(upload.upload_id),
                initiated: Some(Timestamp::from(upload.initiated)),
                checksum_algorithm: Some(ChecksumAlgorithm::from_static(ChecksumAlgorithm::SHA256)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            max_uploads: Some(max_uploads as i32),
            is_truncated: Some(is_truncated),
            next_key_marker,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

fn checksum_type_of(info: &crate::store::ObjectInfo) -> ChecksumType {
    if info.parts_count.is_some() {
        ChecksumType::from_static(ChecksumType::COMPOSITE)
    } else {
        ChecksumType::from_static(ChecksumType::FULL_OBJECT)
    }
}
