//! The storage engine: buckets, objects and their metadata on local disk.
//!
//! Layout under the root folder:
//! - `store.sqlite3`: buckets, objects, multipart uploads and parts (metadata only);
//! - `data/<uuid>`: the bytes of one object or one part, never modified after it is written.
//!   A completed multipart object keeps its parts' files as its segments: its
//!   row lists them (see `DataLayout`) instead of naming one file;
//! - `tmp/<uuid>`: bodies being received or objects being assembled.
//!
//! A body is written to `tmp/`, flushed to disk, verified, renamed into `data/`
//! and only then recorded in the database. The database row is the commit point,
//! so a crash or a rejected body leaves at most an unreferenced file, never a
//! torn object or part that a listing shows. Files left in `tmp/` are removed
//! when the store is opened.
//!
//! Object keys are never used as file names, so a key such as `../x` cannot
//! reach outside the root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rusqlite::{Connection, OptionalExtension, params};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5, Sha256};
use tracing::{debug, warn};

use crate::error::StoreError;

/// S3's minimum size of every part but the last, 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's maximum part size, 5 GiB.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's maximum size of a single `PutObject`, 5 GiB.
pub const MAX_PUT_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// S3's maximum and default page size of `ListParts`, `ListObjectsV2` and `ListMultipartUploads`.
pub const MAX_LIST_PAGE: u32 = 1000;

/// Buffer size of file reads and writes. Large buffers keep the number of
/// system calls per gigabyte small.
pub(crate) const IO_BUFFER_SIZE: usize = 1024 * 1024;

/// Tuning that differs between production-like and test setups.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Minimum size of every part but the last at completion. S3 uses
    /// [`MIN_PART_SIZE`]; tests may lower it to complete uploads of small files.
    pub min_part_size: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            min_part_size: MIN_PART_SIZE,
        }
    }
}

/// Metadata of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// ETag without quotes: the hex MD5 of the body for `PutObject`, or
    /// `<hex MD5 of the part MD5s>-<part count>` for a multipart upload.
    pub etag: String,
    /// The `x-amz-checksum-sha256` value S3 reports: the base64 SHA-256 of the
    /// body for `PutObject`, or the composite `<base64 SHA-256 of the part SHA-256s>-<part count>`
    /// for a multipart upload.
    pub checksum_sha256: String,
    /// SHA-256 of the whole object, computed from the bytes the store holds:
    /// while receiving a `PutObject` body, or from the stored parts of a
    /// multipart upload, mostly while they arrive and otherwise at completion.
    /// `None` for multipart objects completed by store versions that did not
    /// compute it. [`Store::read_object_sha256`] reads any object back.
    pub sha256: Option<[u8; 32]>,
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*` headers, without the prefix).
    pub metadata: BTreeMap<String, String>,
    pub parts_count: Option<u32>,
    pub last_modified: SystemTime,
}

/// A page of `ListObjectsV2`.
#[derive(Clone, Debug, Default)]
pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix of this page, to pass as `start_after` for the next page.
    pub next_start_after: Option<String>,
}

/// The handle to a store on local disk. Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    pub(crate) db: Mutex<Connection>,
    pub(crate) options: StoreOptions,
    pub(crate) hash_ahead: crate::hash_ahead::HashAhead,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    checksum_sha256 TEXT NOT NULL,
    sha256_hex TEXT,
    content_type TEXT,
    metadata TEXT NOT NULL,
    parts_count INTEGER,
    data_file TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    content_type TEXT,
    metadata TEXT NOT NULL,
    state TEXT NOT NULL,
    initiated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    checksum_sha256 TEXT NOT NULL,
    data_file TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS completed_uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    part_list TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    checksum_sha256 TEXT NOT NULL,
    parts_count INTEGER NOT NULL,
    completed_ms INTEGER NOT NULL
);
";

impl Store {
    /// Opens the store under `root`, creating the folder and database if needed.
    ///
    /// Removes leftovers of an earlier process: files in `tmp/`, and the
    /// "completing" mark of uploads whose completion was interrupted (they
    /// become open again and can be completed or aborted).
    pub fn open(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Self, StoreError> {
        let root = root.into();
        let data_dir = root.join("data");
        let tmp_dir = root.join("tmp");
        std::fs::create_dir_all(&data_dir)
            .map_err(StoreError::io("create data folder", &data_dir))?;
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)
                .map_err(StoreError::io("clear temporary folder", &tmp_dir))?;
        }
        std::fs::create_dir_all(&tmp_dir)
            .map_err(StoreError::io("create temporary folder", &tmp_dir))?;

        let db_path = root.join("store.sqlite3");
        let db = Connection::open(&db_path).map_err(StoreError::db("open the database"))?;
        db.execute_batch(SCHEMA)
            .map_err(StoreError::db("create the schema"))?;
        let reopened = db
            .execute(
                "UPDATE uploads SET state = 'open' WHERE state = 'completing'",
                [],
            )
            .map_err(StoreError::db("reopen interrupted completions"))?;
        if reopened > 0 {
            warn!(
                uploads = reopened,
                "reopened multipart uploads whose completion was interrupted"
            );
        }

        Ok(Self {
            inner: Arc::new(Inner {
                root,
                data_dir,
                tmp_dir,
                db: Mutex::new(db),
                options,
                hash_ahead: crate::hash_ahead::HashAhead::default(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: every
        // multi-statement change runs in a transaction that rolls back on drop.
        self.inner.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn data_path(&self, file: &str) -> PathBuf {
        self.inner.data_dir.join(file)
    }

    pub(crate) fn new_tmp_path(&self) -> PathBuf {
        self.inner.tmp_dir.join(uuid::Uuid::new_v4().to_string())
    }

    /// Creates a bucket. Fails with [`StoreError::BucketAlreadyExists`] if it exists.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let inserted = self
            .db()
            .execute(
                "INSERT OR IGNORE INTO buckets (name, created_ms) VALUES (?1, ?2)",
                params![bucket, now_ms()],
            )
            .map_err(StoreError::db("create a bucket"))?;
        if inserted == 0 {
            return Err(StoreError::BucketAlreadyExists {
                bucket: bucket.to_owned(),
            });
        }
        debug!(bucket, "created bucket");
        Ok(())
    }

    /// Creates the bucket unless it exists.
    pub fn ensure_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        match self.create_bucket(bucket) {
            Ok(()) | Err(StoreError::BucketAlreadyExists { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Lists bucket names with their creation times, sorted by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let db = self.db();
        let mut statement = db
            .prepare("SELECT name, created_ms FROM buckets ORDER BY name")
            .map_err(StoreError::db("list buckets"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, ms_to_time(row.get(1)?)))
            })
            .map_err(StoreError::db("list buckets"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list buckets"))
    }

    pub(crate) fn check_bucket(&self, db: &Connection, bucket: &str) -> Result<(), StoreError> {
        let exists = db
            .query_row(
                "SELECT 1 FROM buckets WHERE name = ?1",
                [bucket],
                |_| Ok(()),
            )
            .optional()
            .map_err(StoreError::db("look up a bucket"))?
            .is_some();
        if !exists {
            return Err(StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            });
        }
        Ok(())
    }

    /// Fails with [`StoreError::NoSuchBucket`] unless the bucket exists.
    pub fn head_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.check_bucket(&self.db(), bucket)
    }

    /// Deletes an empty bucket.
    pub fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let db = self.db();
        self.check_bucket(&db, bucket)?;
        let used: i64 = db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM objects WHERE bucket = ?1) + (SELECT COUNT(*) FROM uploads WHERE bucket = ?1)",
                [bucket],
                |row| row.get(0),
            )
            .map_err(StoreError::db("count a bucket's objects"))?;
        if used > 0 {
            return Err(StoreError::BucketNotEmpty {
                bucket: bucket.to_owned(),
            });
        }
        db.execute("DELETE FROM buckets WHERE name = ?1", [bucket])
            .map_err(StoreError::db("delete a bucket"))?;
        Ok(())
    }

    /// Returns the metadata of an object.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        self.object_row(bucket, key).map(|(info, _)| info)
    }

    pub(crate) fn object_row(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, String), StoreError> {
        let db = self.db();
        let row = db
            .query_row(
                &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"),
                params![bucket, key],
                object_from_row,
            )
            .optional()
            .map_err(StoreError::db("look up an object"))?;
        match row {
            Some(found) => Ok(found),
            None => {
                self.check_bucket(&db, bucket)?;
                Err(StoreError::NoSuchKey {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })
            }
        }
    }

    /// Opens an object's data files for reading, with its metadata.
    ///
    /// The files stay readable after a concurrent overwrite or delete removes their
    /// names, so a download in progress finishes with the version it started.
    ///
    /// TODO: a multipart object opens one file per part, up to 10,000, which
    /// can pass a process's open-file limit (often 1024 by default).
    pub fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ObjectData), StoreError> {
        // An overwrite between the lookup and the open removes the old files;
        // the second lookup then finds the new ones.
        for attempt in 0..2 {
            let (info, data_file) = self.object_row(bucket, key)?;
            let layout = DataLayout::parse(&data_file).map_err(|reason| StoreError::Io {
                stage: "parse object segments",
                path: self.inner.root.clone(),
                source: std::io::Error::other(reason),
            })?;
            let mut segments = Vec::new();
            let mut missing = None;
            for (file, size) in layout.segments(info.size) {
                let path = self.data_path(&file);
                match std::fs::File::open(&path) {
                    Ok(opened) => segments.push((opened, size)),
                    Err(err) => {
                        missing = Some((path, err));
                        break;
                    }
                }
            }
            match missing {
                None => return Ok((info, ObjectData { segments })),
                Some((_, err)) if err.kind() == std::io::ErrorKind::NotFound && attempt == 0 => {
                    continue;
                }
                Some((path, err)) => return Err(StoreError::io("open object data", path)(err)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Reads an object back from disk and returns its SHA-256.
    ///
    /// Costs one sequential read of the object in 1 MiB steps, on a blocking thread.
    pub async fn read_object_sha256(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<[u8; 32], StoreError> {
        let (_, data) = self.open_object(bucket, key)?;
        let path = self.inner.root.clone();
        let digest = tokio::task::spawn_blocking(move || -> Result<[u8; 32], StoreError> {
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; IO_BUFFER_SIZE];
            for (mut file, _) in data.segments {
                loop {
                    let read = file
                        .read(&mut buffer)
                        .map_err(StoreError::io("read object data", &path))?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                }
            }
            Ok(hasher.finalize())
        })
        .await
        .map_err(StoreError::Worker)??;
        Ok(digest)
    }

    /// Deletes an object. Deleting a missing object succeeds, as in S3.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let data_file: Option<String> = {
            let db = self.db();
            self.check_bucket(&db, bucket)?;
            db.query_row(
                "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING data_file",
                params![bucket, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(StoreError::db("delete an object"))?
        };
        if let Some(file) = data_file {
            self.remove_object_data(&file);
        }
        Ok(())
    }

    /// Lists objects in key order, as `ListObjectsV2` does.
    ///
    /// Keys equal to or before `start_after` are skipped. With a delimiter, keys
    /// that contain it after the prefix are rolled up into common prefixes.
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max_keys: u32,
    ) -> Result<ObjectPage, StoreError> {
        let db = self.db();
        self.check_bucket(&db, bucket)?;
        let mut statement = db
            .prepare(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key > ?2 \
                 AND substr(key, 1, length(?3)) = ?3 ORDER BY key"
            ))
            .map_err(StoreError::db("list objects"))?;
        let rows = statement
            .query_map(
                params![bucket, start_after.unwrap_or(""), prefix],
                object_from_row,
            )
            .map_err(StoreError::db("list objects"))?;

        let mut page = ObjectPage::default();
        let max_keys = max_keys.min(MAX_LIST_PAGE) as usize;
        let mut count = 0usize;
        for row in rows {
            let (info, _) = row.map_err(StoreError::db("list objects"))?;
            let rolled_up = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                info.key[prefix.len()..]
                    .find(d)
                    .map(|at| info.key[..prefix.len() + at + d.len()].to_owned())
            });
            // A common prefix already returned on this page or an earlier one
            // (then it is `start_after`) is not returned again.
            if let Some(common) = &rolled_up
                && (page.common_prefixes.last() == Some(common)
                    || start_after.is_some_and(|after| common.as_str() <= after))
            {
                continue;
            }
            if count == max_keys {
                page.is_truncated = true;
                break;
            }
            count += 1;
            match rolled_up {
                Some(common) => {
                    page.next_start_after = Some(common.clone());
                    page.common_prefixes.push(common);
                }
                None => {
                    page.next_start_after = Some(info.key.clone());
                    page.objects.push(info);
                }
            }
        }
        if !page.is_truncated {
            page.next_start_after = None;
        }
        Ok(page)
    }

    /// Records a staged body as the object `bucket/key`, replacing any earlier version.
    pub(crate) fn commit_object(
        &self,
        staged: StagedBody,
        bucket: &str,
        key: &str,
        content_type: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ObjectInfo, StoreError> {
        let data_file = uuid::Uuid::new_v4().to_string();
        let data_path = self.data_path(&data_file);
        {
            let db = self.db();
            self.check_bucket(&db, bucket)?;
        }
        let staged = staged.persist(&data_path)?;

        let info = ObjectInfo {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: staged.size,
            etag: hex::encode(staged.md5),
            checksum_sha256: base64_encode(&staged.sha256),
            sha256: Some(staged.sha256),
            content_type: content_type.map(str::to_owned),
            metadata: metadata.clone(),
            parts_count: None,
            last_modified: SystemTime::now(),
        };
        let old_file = self.replace_object_row(&info, &data_file);
        let old_file = match old_file {
            Ok(old) => old,
            Err(err) => {
                self.remove_data_file(&data_file);
                return Err(err);
            }
        };
        if let Some(old) = old_file {
            self.remove_object_data(&old);
        }
        debug!(bucket, key, size = info.size, "stored object");
        Ok(info)
    }

    /// Inserts or replaces an object row and returns the data file it replaced.
    pub(crate) fn replace_object_row(
        &self,
        info: &ObjectInfo,
        data_file: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut db = self.db();
        let transaction = db
            .transaction()
            .map_err(StoreError::db("begin storing an object"))?;
        let old = insert_object(&transaction, info, data_file)?;
        transaction
            .commit()
            .map_err(StoreError::db("commit an object"))?;
        Ok(old)
    }

    /// Deletes the data files of an object that is no longer referenced: its
    /// one file, or every segment file of a multipart object.
    pub(crate) fn remove_object_data(&self, data_file: &str) {
        match DataLayout::parse(data_file) {
            Ok(layout) => {
                for (file, _) in layout.segments(0) {
                    self.remove_data_file(&file);
                }
            }
            Err(reason) => {
                warn!(
                    data_file,
                    reason, "failed to delete an unreferenced object's data"
                );
            }
        }
    }

    pub(crate) fn remove_data_file(&self, file: &str) {
        let path = self.data_path(file);
        if let Err(err) = std::fs::remove_file(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %err, "failed to delete an unreferenced data file");
        }
    }

    /// Receives a request body into a temporary file on a blocking thread while
    /// hashing it with MD5, SHA-256 and the algorithms enabled in `extra`.
    ///
    /// Fails with [`StoreError::EntityTooLarge`] once the body passes `max_size`.
    /// On any failure the temporary file is removed.
    pub(crate) async fn stage_body<S, E>(
        &self,
        mut body: S,
        max_size: u64,
        entity: &'static str,
        extra: ChecksumHasher,
    ) -> Result<StagedBody, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = self.new_tmp_path();
        let file = std::fs::File::create_new(&path)
            .map_err(StoreError::io("create temporary file", &path))?;
        let mut staged = StagedBody {
            path: path.clone(),
            size: 0,
            md5: [0; 16],
            sha256: [0; 32],
            checksums: s3s::dto::Checksum::default(),
            persisted: false,
        };

        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
        let writer_path = path.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut extra = extra;
            let mut md5 = Md5::new();
            let mut sha256 = Sha256::new();
            let mut out = std::io::BufWriter::with_capacity(IO_BUFFER_SIZE, file);
            while let Some(chunk) = receiver.blocking_recv() {
                md5.update(&chunk);
                sha256.update(&chunk);
                extra.update(&chunk);
                out.write_all(&chunk)
                    .map_err(StoreError::io("write temporary file", &writer_path))?;
            }
            let file = out.into_inner().map_err(|err| {
                StoreError::io("write temporary file", &writer_path)(err.into_error())
            })?;
            file.sync_all()
                .map_err(StoreError::io("flush temporary file", &writer_path))?;
            Ok((md5.finalize(), sha256.finalize(), extra.finalize()))
        });

        let mut received: u64 = 0;
        let mut failure: Option<StoreError> = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    failure = Some(StoreError::IncompleteBody {
                        received,
                        source: err.into(),
                    });
                    break;
                }
            };
            received += chunk.len() as u64;
            if received > max_size {
                failure = Some(StoreError::EntityTooLarge {
                    entity,
                    size: received,
                    max: max_size,
                });
                break;
            }
            if sender.send(chunk).await.is_err() {
                // The writer stopped on an I/O error, which its result reports.
                break;
            }
        }
        drop(sender);

        let written = writer.await.map_err(StoreError::Worker)?;
        if let Some(err) = failure {
            return Err(err);
        }
        let (md5, sha256, checksums) = written?;
        staged.size = received;
        staged.md5 = md5;
        staged.sha256 = sha256;
        staged.checksums = checksums;
        Ok(staged)
    }
}

/// A received body in a temporary file. Dropping it before [`StagedBody::persist`]
/// deletes the file.
pub(crate) struct StagedBody {
    path: PathBuf,
    pub(crate) size: u64,
    pub(crate) md5: [u8; 16],
    pub(crate) sha256: [u8; 32],
    /// Base64 checksums of the algorithms the caller enabled besides SHA-256.
    pub(crate) checksums: s3s::dto::Checksum,
    persisted: bool,
}

/// Checksums sent with a body, base64 as in the `x-amz-checksum-*` headers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExpectedChecksums {
    pub(crate) content_md5: Option<String>,
    pub(crate) sha256: Option<String>,
    pub(crate) crc32: Option<String>,
    pub(crate) crc32c: Option<String>,
    pub(crate) crc64nvme: Option<String>,
    pub(crate) sha1: Option<String>,
}

impl StagedBody {
    /// Compares the body against the checksums sent with it.
    pub(crate) fn verify(&self, expected: &ExpectedChecksums) -> Result<(), StoreError> {
        let sha256 = base64_encode(&self.sha256);
        let md5 = base64_encode(&self.md5);
        let computed = &self.checksums;
        let checks: [(&'static str, &Option<String>, Option<&String>); 6] = [
            ("SHA256", &expected.sha256, Some(&sha256)),
            ("Content-MD5", &expected.content_md5, Some(&md5)),
            ("CRC32", &expected.crc32, computed.checksum_crc32.as_ref()),
            (
                "CRC32C",
                &expected.crc32c,
                computed.checksum_crc32c.as_ref(),
            ),
            (
                "CRC64NVME",
                &expected.crc64nvme,
                computed.checksum_crc64nvme.as_ref(),
            ),
            ("SHA1", &expected.sha1, computed.checksum_sha1.as_ref()),
        ];
        for (algorithm, expected, computed) in checks {
            let Some(expected) = expected else { continue };
            let computed = computed.map(String::as_str).unwrap_or("(not computed)");
            if expected.trim() != computed {
                return Err(StoreError::BadDigest {
                    algorithm,
                    expected: expected.clone(),
                    computed: computed.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Moves the file to `destination` and keeps it.
    pub(crate) fn persist(mut self, destination: &Path) -> Result<Self, StoreError> {
        std::fs::rename(&self.path, destination)
            .map_err(StoreError::io("move received data to", destination))?;
        self.persisted = true;
        Ok(self)
    }
}

impl Drop for StagedBody {
    fn drop(&mut self) {
        if !self.persisted
            && let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), error = %err, "failed to delete a temporary file");
        }
    }
}

/// An open object's data: its files in order, each with the byte count it
/// contributes. An object stored by `PutObject` has one file; a multipart
/// object has one per part.
#[derive(Debug)]
pub struct ObjectData {
    segments: Vec<(std::fs::File, u64)>,
}

impl ObjectData {
    /// Positions the files for reading `length` bytes from `start` and returns,
    /// in order, each file that holds some of those bytes with the number of
    /// bytes to read from it.
    pub fn into_range(self, start: u64, length: u64) -> std::io::Result<Vec<(std::fs::File, u64)>> {
        use std::io::Seek as _;

        let mut pieces = Vec::new();
        let mut offset = 0u64;
        let end = start.saturating_add(length);
        for (mut file, size) in self.segments {
            let segment_end = offset + size;
            if segment_end > start && offset < end {
                let from = start.saturating_sub(offset);
                let to = end.min(segment_end) - offset;
                if from > 0 {
                    file.seek(std::io::SeekFrom::Start(from))?;
                }
                pieces.push((file, to - from));
            }
            offset = segment_end;
        }
        Ok(pieces)
    }
}

/// How an object row's `data_file` column names the object's bytes.
///
/// A plain file name is one file holding the whole object. A value starting
/// with [`SEGMENTS_PREFIX`] lists segment files with their sizes, as
/// `segments:<file>:<size>,<file>:<size>,...`, read in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DataLayout {
    Single(String),
    Segments(Vec<(String, u64)>),
}

/// Prefix of a `data_file` value that lists segments. Data file names are
/// UUIDs, so no single file name starts with it.
const SEGMENTS_PREFIX: &str = "segments:";

impl DataLayout {
    pub(crate) fn parse(data_file: &str) -> Result<Self, String> {
        let Some(list) = data_file.strip_prefix(SEGMENTS_PREFIX) else {
            return Ok(Self::Single(data_file.to_owned()));
        };
        list.split(',')
            .map(|entry| {
                let (file, size) = entry
                    .split_once(':')
                    .ok_or_else(|| format!("segment entry {entry:?} has no size"))?;
                let size = size
                    .parse::<u64>()
                    .map_err(|err| format!("segment entry {entry:?} has an invalid size: {err}"))?;
                Ok((file.to_owned(), size))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Self::Segments)
    }

    pub(crate) fn to_column(&self) -> String {
        match self {
            Self::Single(file) => file.clone(),
            Self::Segments(segments) => {
                let list = segments
                    .iter()
                    .map(|(file, size)| format!("{file}:{size}"))
                    .collect::<Vec<_>>()
                    .join(",");
                format!("{SEGMENTS_PREFIX}{list}")
            }
        }
    }

    /// Returns the files with their sizes; a single file has `object_size` bytes.
    fn segments(self, object_size: u64) -> Vec<(String, u64)> {
        match self {
            Self::Single(file) => vec![(file, object_size)],
            Self::Segments(segments) => segments,
        }
    }
}

pub(crate) const OBJECT_COLUMNS: &str = "bucket, key, size, etag, checksum_sha256, sha256_hex, content_type, \
                                         metadata, parts_count, last_modified_ms, data_file";

fn object_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ObjectInfo, String)> {
    let sha256_hex: Option<String> = row.get(5)?;
    let metadata: String = row.get(7)?;
    let info = ObjectInfo {
        bucket: row.get(0)?,
        key: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        etag: row.get(3)?,
        checksum_sha256: row.get(4)?,
        sha256: sha256_hex.and_then(|hex_digest| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .ok()
                .map(|()| digest)
        }),
        content_type: row.get(6)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        parts_count: row.get::<_, Option<i64>>(8)?.map(|count| count as u32),
        last_modified: ms_to_time(row.get(9)?),
    };
    Ok((info, row.get(10)?))
}

/// Inserts or replaces an object row and returns the data file it replaced.
pub(crate) fn insert_object(
    db: &Connection,
    info: &ObjectInfo,
    data_file: &str,
) -> Result<Option<String>, StoreError> {
    let old: Option<String> = db
        .query_row(
            "SELECT data_file FROM objects WHERE bucket = ?1 AND key = ?2",
            params![info.bucket, info.key],
            |row| row.get(0),
        )
        .optional()
        .map_err(StoreError::db("look up an object"))?;
    let metadata = serde_json::to_string(&info.metadata).unwrap_or_else(|_| "{}".to_owned());
    db.execute(
        "INSERT OR REPLACE INTO objects (bucket, key, size, etag, checksum_sha256, sha256_hex, content_type, \
         metadata, parts_count, last_modified_ms, data_file) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            info.bucket,
            info.key,
            info.size as i64,
            info.etag,
            info.checksum_sha256,
            info.sha256.map(hex::encode),
            info.content_type,
            metadata,
            info.parts_count.map(i64::from),
            time_to_ms(info.last_modified),
            data_file,
        ],
    )
    .map_err(StoreError::db("store an object"))?;
    Ok(old)
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn now_ms() -> i64 {
    time_to_ms(SystemTime::now())
}

pub(crate) fn time_to_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn ms_to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
