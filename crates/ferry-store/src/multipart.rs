//! Multipart uploads: create, upload part, list parts, complete, abort.
//!
//! Each part is stored as its own data file with its MD5 (the part ETag) and
//! SHA-256, both computed while the part was received. Completion checks the
//! client's part list against the stored parts and keeps the listed part files
//! as the object's segments, so no byte is copied. It records the whole-object
//! SHA-256 as [`ObjectInfo::sha256`], so a caller that checks an upload's
//! whole-file SHA-256 needs no second read of the object. That SHA-256 is
//! mostly computed while the parts arrive (see `hash_ahead`); the completion
//! reads only the parts it does not cover. The object's ETag and composite
//! checksum come from the stored part digests.
//!
//! A completion changes the database in one transaction: the object row, the
//! deleted upload and part rows, and the record that lets it be replayed. Before
//! that transaction it only reads, so a completion stopped at any step leaves
//! the upload whole: [`Store::open`] reopens it, and the client completes it
//! again. After it, a repeated completion is replayed. A stop before the
//! unlisted parts' files are deleted leaves only unreferenced files.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use s3s::crypto::{Checksum as _, Md5, Sha256};
use tracing::{debug, info, warn};

use crate::error::StoreError;
use crate::hash_ahead::HashedPrefix;
use crate::store::{
    DataLayout, MAX_LIST_PAGE, MAX_PART_NUMBER, ObjectInfo, StagedBody, Store, base64_encode,
    insert_object, ms_to_time, now_ms, time_to_ms,
};

/// An open multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub initiated: SystemTime,
}

/// A part the store holds for an open upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    /// Base64 SHA-256 of the part.
    pub checksum_sha256: String,
    pub last_modified: SystemTime,
}

/// One page of `ListParts`.
#[derive(Clone, Debug, Default)]
pub struct PartPage {
    pub parts: Vec<PartInfo>,
    pub is_truncated: bool,
    /// The part number to pass as `part_number_marker` for the next page; set when truncated.
    pub next_part_number_marker: Option<u32>,
}

/// One entry of the client's part list in `CompleteMultipartUpload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedPartRef {
    pub part_number: u32,
    /// ETag as returned by `UploadPart`; surrounding quotes are ignored.
    pub etag: String,
    /// Base64 SHA-256 of the part, checked against the stored part when given.
    pub checksum_sha256: Option<String>,
}

/// The result of a completed multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedUpload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// `<hex MD5 of the concatenated binary part MD5s>-<part count>`, as S3 computes it.
    pub etag: String,
    /// `<base64 SHA-256 of the concatenated binary part SHA-256s>-<part count>`,
    /// the composite checksum S3 reports for a multipart upload with SHA-256.
    pub checksum_sha256: String,
    pub parts_count: u32,
    /// True when this call repeated an earlier successful completion and changed nothing.
    pub replayed: bool,
}

const STATE_OPEN: &str = "open";
const STATE_COMPLETING: &str = "completing";

impl Store {
    /// Starts a multipart upload and returns its upload id.
    pub fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, StoreError> {
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let metadata = serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned());
        let db = self.db();
        self.check_bucket(&db, bucket)?;
        db.execute(
            "INSERT INTO uploads (upload_id, bucket, key, content_type, metadata, state, initiated_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![upload_id, bucket, key, content_type, metadata, STATE_OPEN, now_ms()],
        )
        .map_err(StoreError::db("create a multipart upload"))?;
        debug!(bucket, key, upload_id, "created multipart upload");
        Ok(upload_id)
    }

    /// Fails unless `upload_id` is an open upload of `bucket/key`.
    pub fn check_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let state = upload_state(&self.db(), bucket, key, upload_id)?;
        if state == STATE_COMPLETING {
            return Err(StoreError::UploadBusy {
                upload_id: upload_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Records a staged body as part `part_number` of an open upload, replacing
    /// an earlier part with that number.
    pub(crate) fn commit_part(
        &self,
        staged: StagedBody,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
    ) -> Result<PartInfo, StoreError> {
        let data_file = uuid::Uuid::new_v4().to_string();
        let staged = staged.persist(&self.data_path(&data_file))?;
        let part = PartInfo {
            part_number,
            size: staged.size,
            etag: hex::encode(staged.md5),
            checksum_sha256: base64_encode(&staged.sha256),
            last_modified: SystemTime::now(),
        };

        let committed = (|| -> Result<Option<String>, StoreError> {
            let mut db = self.db();
            let transaction = db
                .transaction()
                .map_err(StoreError::db("begin storing a part"))?;
            // The upload may have been completed or aborted while the body arrived.
            let state = upload_state(&transaction, bucket, key, upload_id)?;
            if state != STATE_OPEN {
                return Err(StoreError::UploadBusy {
                    upload_id: upload_id.to_owned(),
                });
            }
            let old: Option<String> = transaction
                .query_row(
                    "SELECT data_file FROM parts WHERE upload_id = ?1 AND part_number = ?2",
                    params![upload_id, part_number],
                    |row| row.get(0),
                )
                .optional()
                .map_err(StoreError::db("look up a part"))?;
            transaction
                .execute(
                    "INSERT OR REPLACE INTO parts (upload_id, part_number, size, etag, checksum_sha256, data_file, \
                     last_modified_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        upload_id,
                        part_number,
                        part.size as i64,
                        part.etag,
                        part.checksum_sha256,
                        data_file,
                        time_to_ms(part.last_modified)
                    ],
                )
                .map_err(StoreError::db("store a part"))?;
            transaction
                .commit()
                .map_err(StoreError::db("commit a part"))?;
            Ok(old)
        })();

        match committed {
            Ok(old) => {
                if let Some(old) = old {
                    self.remove_data_file(&old);
                }
                debug!(upload_id, part_number, size = part.size, "stored part");
                self.hash_ahead(upload_id);
                Ok(part)
            }
            Err(err) => {
                self.remove_data_file(&data_file);
                Err(err)
            }
        }
    }

    /// Lists the parts of an open upload with numbers above `part_number_marker`,
    /// at most `max_parts` (capped at 1000) per page, in part number order.
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: u32,
        max_parts: u32,
    ) -> Result<PartPage, StoreError> {
        let max_parts = max_parts.min(MAX_LIST_PAGE);
        let db = self.db();
        upload_state(&db, bucket, key, upload_id)?;
        let mut statement = db
            .prepare(
                "SELECT part_number, size, etag, checksum_sha256, last_modified_ms FROM parts \
                 WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3",
            )
            .map_err(StoreError::db("list parts"))?;
        let rows = statement
            .query_map(
                params![upload_id, part_number_marker, i64::from(max_parts) + 1],
                part_from_row,
            )
            .map_err(StoreError::db("list parts"))?;
        let mut parts = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list parts"))?;

        let is_truncated = parts.len() > max_parts as usize;
        parts.truncate(max_parts as usize);
        let next_part_number_marker = if is_truncated {
            parts.last().map(|part| part.part_number)
        } else {
            None
        };
        Ok(PartPage {
            parts,
            is_truncated,
            next_part_number_marker,
        })
    }

    /// Lists the open uploads of a bucket whose key starts with `prefix`, ordered
    /// by key, then initiation time. Returns at most `max_uploads` (capped at
    /// 1000) and whether more exist.
    pub fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: Option<&str>,
        max_uploads: u32,
    ) -> Result<(Vec<UploadInfo>, bool), StoreError> {
        let max_uploads = max_uploads.min(MAX_LIST_PAGE);
        let db = self.db();
        self.check_bucket(&db, bucket)?;
        let mut statement = db
            .prepare(
                "SELECT upload_id, bucket, key, content_type, initiated_ms FROM uploads \
                 WHERE bucket = ?1 AND key > ?2 AND substr(key, 1, length(?3)) = ?3 \
                 ORDER BY key, initiated_ms LIMIT ?4",
            )
            .map_err(StoreError::db("list multipart uploads"))?;
        let rows = statement
            .query_map(
                params![
                    bucket,
                    key_marker.unwrap_or(""),
                    prefix,
                    i64::from(max_uploads) + 1
                ],
                upload_from_row,
            )
            .map_err(StoreError::db("list multipart uploads"))?;
        let mut uploads = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list multipart uploads"))?;
        let is_truncated = uploads.len() > max_uploads as usize;
        uploads.truncate(max_uploads as usize);
        Ok((uploads, is_truncated))
    }

    /// Completes an upload from the client's part list.
    ///
    /// Checks that the list is ascending and that every listed part is stored
    /// with the given ETag (and SHA-256, when given). Every part but the last
    /// must have at least the minimum part size. Any failed check changes
    /// nothing. Then it computes the object's SHA-256, reading only the listed
    /// parts that the SHA-256 hashed ahead does not cover. It records the parts
    /// as the object's segments in one transaction, so readers see the old
    /// object or the new one, never a partial one.
    ///
    /// Repeating a successful completion with the same part list returns the
    /// same result with `replayed` set, as long as the store keeps its record
    /// (it does not expire). A repeat with another part list, or for an aborted
    /// upload, fails with [`StoreError::NoSuchUpload`], as S3 does.
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPartRef],
    ) -> Result<CompletedUpload, StoreError> {
        check_part_list(parts)?;
        let part_list = canonical_part_list(parts);

        let (upload, stored) =
            match self.begin_completion(bucket, key, upload_id, parts, &part_list)? {
                Completion::Replayed(done) => return Ok(done),
                Completion::Started { upload, stored } => (upload, stored),
            };

        // The assembly runs in a task of its own, so that it ends committed
        // or reopened even when the caller's future is dropped halfway (the
        // client that asked for the completion disconnected). Otherwise the
        // upload would stay "completing" and every later completion would
        // fail with UploadBusy.
        let store = self.clone();
        let upload_id = upload_id.to_owned();
        let assembly = tokio::spawn(async move {
            let result = store
                .assemble_and_commit(&upload, &stored, &part_list)
                .await;
            if result.is_err() {
                let reopened = store.db().execute(
                    "UPDATE uploads SET state = ?1 WHERE upload_id = ?2",
                    params![STATE_OPEN, upload_id],
                );
                if let Err(err) = reopened {
                    warn!(upload_id, error = %err, "failed to reopen an upload after a failed completion");
                }
            }
            result
        });
        assembly.await.map_err(StoreError::Worker)?
    }

    fn begin_completion(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPartRef],
        part_list: &str,
    ) -> Result<Completion, StoreError> {
        let mut db = self.db();
        let transaction = db
            .transaction()
            .map_err(StoreError::db("begin a completion"))?;

        let upload = match find_upload(&transaction, upload_id)? {
            Some((upload, _)) if upload.bucket != bucket || upload.key != key => None,
            other => other,
        };
        let Some((upload, state)) = upload else {
            if let Some(done) = find_completed(&transaction, bucket, key, upload_id, part_list)? {
                debug!(upload_id, "replayed a completed multipart upload");
                return Ok(Completion::Replayed(done));
            }
            return Err(no_such_upload(bucket, key, upload_id));
        };
        if state != STATE_OPEN {
            return Err(StoreError::UploadBusy {
                upload_id: upload_id.to_owned(),
            });
        }

        let mut statement = transaction
            .prepare(
                "SELECT part_number, size, etag, checksum_sha256, last_modified_ms, data_file FROM parts \
                 WHERE upload_id = ?1",
            )
            .map_err(StoreError::db("load parts"))?;
        let stored_parts: HashMap<u32, (PartInfo, String)> = statement
            .query_map([upload_id], |row| {
                Ok((part_from_row(row)?, row.get::<_, String>(5)?))
            })
            .map_err(StoreError::db("load parts"))?
            .map(|row| row.map(|(part, file)| (part.part_number, (part, file))))
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("load parts"))?;
        drop(statement);

        let mut selected = Vec::with_capacity(parts.len());
        for (index, requested) in parts.iter().enumerate() {
            let Some((stored, file)) = stored_parts.get(&requested.part_number) else {
                return Err(StoreError::InvalidPart {
                    part_number: requested.part_number,
                    reason: "the store holds no such part; upload it, or list parts to see which are stored"
                        .to_owned(),
                });
            };
            let etag = requested.etag.trim().trim_matches('"');
            if !etag.eq_ignore_ascii_case(&stored.etag) {
                return Err(StoreError::InvalidPart {
                    part_number: requested.part_number,
                    reason: format!(
                        "ETag {etag:?} does not match the stored part's ETag {:?}",
                        stored.etag
                    ),
                });
            }
            if let Some(checksum) = &requested.checksum_sha256
                && checksum.trim() != stored.checksum_sha256
            {
                return Err(StoreError::InvalidPart {
                    part_number: requested.part_number,
                    reason: format!(
                        "SHA-256 {checksum:?} does not match the stored part's SHA-256 {:?}",
                        stored.checksum_sha256
                    ),
                });
            }
            let is_last = index + 1 == parts.len();
            let min = self.options().min_part_size;
            if !is_last && stored.size < min {
                return Err(StoreError::EntityTooSmall {
                    part_number: requested.part_number,
                    size: stored.size,
                    min,
                });
            }
            selected.push((stored.clone(), file.clone()));
        }

        transaction
            .execute(
                "UPDATE uploads SET state = ?1 WHERE upload_id = ?2",
                params![STATE_COMPLETING, upload_id],
            )
            .map_err(StoreError::db("mark an upload as completing"))?;
        transaction
            .commit()
            .map_err(StoreError::db("begin a completion"))?;
        Ok(Completion::Started {
            upload,
            stored: selected,
        })
    }

    async fn assemble_and_commit(
        &self,
        upload: &UploadInfo,
        parts: &[(PartInfo, String)],
        part_list: &str,
    ) -> Result<CompletedUpload, StoreError> {
        let expected_size: u64 = parts.iter().map(|(part, _)| part.size).sum();

        let HashedPrefix {
            parts: covered,
            size: initial_size,
            sha256: initial,
        } = self.take_hashed_prefix(&upload.upload_id, parts);
        let sources: Vec<_> = parts[covered..]
            .iter()
            .map(|(_, file)| self.data_path(file))
            .collect();

        let started = std::time::Instant::now();
        let (rest_size, sha256) =
            tokio::task::spawn_blocking(move || hash_segments(initial, &sources))
                .await
                .map_err(StoreError::Worker)??;
        let size = initial_size + rest_size;
        debug!(
            upload_id = %upload.upload_id,
            parts_hashed_ahead = covered,
            parts_hashed = parts.len() - covered,
            bytes_hashed = rest_size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "hashed the parts of a completion"
        );
        if size != expected_size {
            return Err(StoreError::Io {
                stage: "read part data",
                path: self.inner.data_dir.clone(),
                source: std::io::Error::other(format!(
                    "read {size} bytes but the parts' records hold {expected_size} bytes"
                )),
            });
        }

        let (etag, checksum_sha256) = composite_digests(parts)?;
        let parts_count = parts.len() as u32;
        let layout = DataLayout::Segments(
            parts
                .iter()
                .map(|(part, file)| (file.clone(), part.size))
                .collect(),
        );

        let info = ObjectInfo {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            size,
            etag: etag.clone(),
            checksum_sha256: checksum_sha256.clone(),
            sha256: Some(sha256),
            content_type: upload.content_type.clone(),
            metadata: self.upload_metadata(&upload.upload_id),
            parts_count: Some(parts_count),
            last_modified: SystemTime::now(),
        };
        let done = CompletedUpload {
            upload_id: upload.upload_id.clone(),
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            size,
            etag,
            checksum_sha256,
            parts_count,
            replayed: false,
        };

        let (old_object, part_files) =
            self.commit_completion(&info, &layout.to_column(), &done, part_list)?;
        if let Some(old) = old_object {
            self.remove_object_data(&old);
        }
        // The listed parts are the object's segments now; only the others go.
        for file in part_files {
            if !parts.iter().any(|(_, segment)| *segment == file) {
                self.remove_data_file(&file);
            }
        }
        info!(
            bucket = %done.bucket,
            key = %done.key,
            upload_id = %done.upload_id,
            size,
            parts = parts_count,
            "completed multipart upload"
        );
        Ok(done)
    }

    fn upload_metadata(&self, upload_id: &str) -> BTreeMap<String, String> {
        let metadata: Option<String> = self
            .db()
            .query_row(
                "SELECT metadata FROM uploads WHERE upload_id = ?1",
                [upload_id],
                |row| row.get(0),
            )
            .optional()
            .ok()
            .flatten();
        metadata
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }

    /// Records the object, deletes the upload and its part rows, and returns the
    /// replaced object's `data_file` value and every part's data file.
    fn commit_completion(
        &self,
        info: &ObjectInfo,
        data_file: &str,
        done: &CompletedUpload,
        part_list: &str,
    ) -> Result<(Option<String>, Vec<String>), StoreError> {
        let mut db = self.db();
        let transaction = db
            .transaction()
            .map_err(StoreError::db("begin committing a completion"))?;
        let old_object = insert_object(&transaction, info, data_file)?;
        let part_files = delete_upload_rows(&transaction, &done.upload_id)?;
        transaction
            .execute(
                "INSERT OR REPLACE INTO completed_uploads (upload_id, bucket, key, part_list, size, etag, \
                 checksum_sha256, parts_count, completed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    done.upload_id,
                    done.bucket,
                    done.key,
                    part_list,
                    done.size as i64,
                    done.etag,
                    done.checksum_sha256,
                    done.parts_count,
                    now_ms()
                ],
            )
            .map_err(StoreError::db("record a completion"))?;
        transaction
            .commit()
            .map_err(StoreError::db("commit a completion"))?;
        Ok((old_object, part_files))
    }

    /// Aborts an open upload and deletes its parts.
    pub fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let part_files = {
            let mut db = self.db();
            let transaction = db.transaction().map_err(StoreError::db("begin an abort"))?;
            let state = upload_state(&transaction, bucket, key, upload_id)?;
            if state == STATE_COMPLETING {
                return Err(StoreError::UploadBusy {
                    upload_id: upload_id.to_owned(),
                });
            }
            let files = delete_upload_rows(&transaction, upload_id)?;
            transaction
                .commit()
                .map_err(StoreError::db("commit an abort"))?;
            files
        };
        self.inner.hash_ahead.forget(upload_id);
        for file in &part_files {
            self.remove_data_file(file);
        }
        info!(
            bucket,
            key,
            upload_id,
            parts = part_files.len(),
            "aborted multipart upload"
        );
        Ok(())
    }

    /// Aborts every open upload initiated more than `older_than` ago and returns them.
    ///
    /// Uploads whose completion is in progress are skipped. An upload that
    /// another caller completes or aborts meanwhile is skipped too.
    pub fn abort_expired_uploads(
        &self,
        older_than: Duration,
    ) -> Result<Vec<UploadInfo>, StoreError> {
        let cutoff = time_to_ms(
            SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let expired: Vec<UploadInfo> = {
            let db = self.db();
            let mut statement = db
                .prepare(
                    "SELECT upload_id, bucket, key, content_type, initiated_ms FROM uploads \
                     WHERE state = ?1 AND initiated_ms < ?2 ORDER BY initiated_ms",
                )
                .map_err(StoreError::db("find expired uploads"))?;
            let rows = statement
                .query_map(params![STATE_OPEN, cutoff], upload_from_row)
                .map_err(StoreError::db("find expired uploads"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::db("find expired uploads"))?
        };

        let mut aborted = Vec::with_capacity(expired.len());
        for upload in expired {
            match self.abort_multipart_upload(&upload.bucket, &upload.key, &upload.upload_id) {
                Ok(()) => aborted.push(upload),
                Err(StoreError::NoSuchUpload { .. } | StoreError::UploadBusy { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(aborted)
    }
}

enum Completion {
    Replayed(CompletedUpload),
    Started {
        upload: UploadInfo,
        stored: Vec<(PartInfo, String)>,
    },
}

fn check_part_list(parts: &[CompletedPartRef]) -> Result<(), StoreError> {
    if parts.is_empty() {
        return Err(StoreError::EmptyPartList);
    }
    let mut previous: Option<u32> = None;
    for part in parts {
        if part.part_number == 0 || part.part_number > MAX_PART_NUMBER {
            return Err(StoreError::InvalidPartNumber {
                part_number: i64::from(part.part_number),
            });
        }
        if let Some(previous) = previous
            && part.part_number <= previous
        {
            return Err(StoreError::InvalidPartOrder {
                part_number: part.part_number,
                previous,
            });
        }
        previous = Some(part.part_number);
    }
    Ok(())
}

/// Formats the part list as recorded for replaying a completion: `number:etag` pairs.
fn canonical_part_list(parts: &[CompletedPartRef]) -> String {
    parts
        .iter()
        .map(|part| {
            format!(
                "{}:{}",
                part.part_number,
                part.etag.trim().trim_matches('"').to_ascii_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Computes the multipart ETag and the composite SHA-256 checksum as S3 does:
/// a digest over the concatenated binary part digests, suffixed with `-<part count>`.
fn composite_digests(parts: &[(PartInfo, String)]) -> Result<(String, String), StoreError> {
    use base64::Engine as _;

    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    for (part, _) in parts {
        let part_md5 = hex::decode(&part.etag).map_err(|err| StoreError::InvalidPart {
            part_number: part.part_number,
            reason: format!("stored ETag is not hex: {err}"),
        })?;
        let part_sha256 = base64::engine::general_purpose::STANDARD
            .decode(&part.checksum_sha256)
            .map_err(|err| StoreError::InvalidPart {
                part_number: part.part_number,
                reason: format!("stored SHA-256 is not base64: {err}"),
            })?;
        md5.update(&part_md5);
        sha256.update(&part_sha256);
    }
    let count = parts.len();
    Ok((
        format!("{}-{count}", hex::encode(md5.finalize())),
        format!("{}-{count}", base64_encode(&sha256.finalize())),
    ))
}

/// Size of one read while hashing an object's segments.
const HASH_BUFFER_SIZE: usize = 4 * 1024 * 1024;
/// Buffers that move between the reading and the hashing thread, so that one
/// is hashed while the next is read.
const HASH_BUFFERS: usize = 3;

/// Reads the segment files in order, feeding their bytes into `sha256`, and
/// returns the number of bytes read and the final SHA-256.
///
/// This thread reads. A second thread hashes each buffer after it was read,
/// so hashing overlaps the I/O of the next buffer.
fn hash_segments(
    sha256: sha2::Sha256,
    sources: &[std::path::PathBuf],
) -> Result<(u64, [u8; 32]), StoreError> {
    use sha2::Digest as _;
    use std::sync::mpsc::sync_channel;

    let (read_sender, read) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
    let (free_sender, free) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
    for _ in 0..HASH_BUFFERS {
        free_sender
            .send(vec![0; HASH_BUFFER_SIZE])
            .expect("the channel has room for every buffer");
    }
    let hasher = std::thread::spawn(move || {
        let mut sha256 = sha256;
        for buffer in read {
            sha256.update(&buffer);
            // The reading thread may have stopped on an error, and then the
            // buffer is not needed any more.
            let _ = free_sender.send(buffer);
        }
        <[u8; 32]>::from(sha256.finalize())
    });

    let total = (|| -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut buffer = free.recv().expect("the pool starts with every buffer");
        for source in sources {
            let mut part =
                std::fs::File::open(source).map_err(StoreError::io("open part data", source))?;
            loop {
                buffer.resize(HASH_BUFFER_SIZE, 0);
                let read = read_full(&mut part, &mut buffer)
                    .map_err(StoreError::io("read part data", source))?;
                if read == 0 {
                    // The buffer stays with this thread for the next part.
                    break;
                }
                buffer.truncate(read);
                total += read as u64;
                read_sender
                    .send(buffer)
                    .expect("the hashing thread runs until the channel closes");
                buffer = free
                    .recv()
                    .expect("the hashing thread returns every buffer");
            }
        }
        Ok(total)
    })();
    drop(read_sender);
    let sha256 = hasher.join().map_err(|_| StoreError::Io {
        stage: "hash part data",
        path: sources.first().cloned().unwrap_or_default(),
        source: std::io::Error::other("the hashing thread panicked"),
    })?;
    Ok((total?, sha256))
}

/// Reads until `buffer` is full or the file ends, and returns the bytes read.
fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read as _;

    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

pub(crate) fn part_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PartInfo> {
    Ok(PartInfo {
        part_number: row.get(0)?,
        size: row.get::<_, i64>(1)? as u64,
        etag: row.get(2)?,
        checksum_sha256: row.get(3)?,
        last_modified: ms_to_time(row.get(4)?),
    })
}

fn upload_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UploadInfo> {
    Ok(UploadInfo {
        upload_id: row.get(0)?,
        bucket: row.get(1)?,
        key: row.get(2)?,
        content_type: row.get(3)?,
        initiated: ms_to_time(row.get(4)?),
    })
}

fn find_upload(
    db: &Connection,
    upload_id: &str,
) -> Result<Option<(UploadInfo, String)>, StoreError> {
    db.query_row(
        "SELECT upload_id, bucket, key, content_type, initiated_ms, state FROM uploads WHERE upload_id = ?1",
        [upload_id],
        |row| Ok((upload_from_row(row)?, row.get::<_, String>(5)?)),
    )
    .optional()
    .map_err(StoreError::db("look up a multipart upload"))
}

/// Returns the state of `upload_id`, or [`StoreError::NoSuchUpload`] unless it
/// is an upload of `bucket/key`.
fn upload_state(
    db: &Connection,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<String, StoreError> {
    match find_upload(db, upload_id)? {
        Some((upload, state)) if upload.bucket == bucket && upload.key == key => Ok(state),
        _ => Err(no_such_upload(bucket, key, upload_id)),
    }
}

fn find_completed(
    db: &Connection,
    bucket: &str,
    key: &str,
    upload_id: &str,
    part_list: &str,
) -> Result<Option<CompletedUpload>, StoreError> {
    db.query_row(
        "SELECT size, etag, checksum_sha256, parts_count FROM completed_uploads \
         WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3 AND part_list = ?4",
        params![upload_id, bucket, key, part_list],
        |row| {
            Ok(CompletedUpload {
                upload_id: upload_id.to_owned(),
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: row.get::<_, i64>(0)? as u64,
                etag: row.get(1)?,
                checksum_sha256: row.get(2)?,
                parts_count: row.get(3)?,
                replayed: true,
            })
        },
    )
    .optional()
    .map_err(StoreError::db("look up a completed upload"))
}

/// Deletes an upload and its part rows and returns the parts' data files.
fn delete_upload_rows(db: &Connection, upload_id: &str) -> Result<Vec<String>, StoreError> {
    let mut statement = db
        .prepare("DELETE FROM parts WHERE upload_id = ?1 RETURNING data_file")
        .map_err(StoreError::db("delete parts"))?;
    let files = statement
        .query_map([upload_id], |row| row.get::<_, String>(0))
        .map_err(StoreError::db("delete parts"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::db("delete parts"))?;
    db.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])
        .map_err(StoreError::db("delete an upload"))?;
    Ok(files)
}

fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> StoreError {
    StoreError::NoSuchUpload {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        upload_id: upload_id.to_owned(),
    }
}
