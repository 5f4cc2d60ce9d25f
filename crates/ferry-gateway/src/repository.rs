//! Persistent state of the grant API behind the [`GrantRepository`] trait:
//! uploads, the deny list and countersigned checkpoints.
//!
//! [`SqliteRepository`] keeps them in the gateway's embedded database. A
//! shared database (so that several gateways can serve one store) would
//! implement the same trait; every state change that must not race is a
//! single conditional `UPDATE`, which such a database can also run atomically.

use ferry_api::{
    Checkpoint, CompleteUploadRequest, CompletedUpload, UploadGrantRequest, UploadStatus,
};
use jiff::Timestamp;
use rusqlite::{OptionalExtension as _, Row, params};

use crate::db::{Db, DbError};
use crate::policy::{DenyKind, DenyList};

/// Migration that keys checkpoints by device, log and seq, because one
/// device keeps one transfer log per profile and every log counts from 0.
/// Checkpoints recorded before it belong to the log id `''`.
pub const CHECKPOINTS_BY_LOG_MIGRATION: &str = r#"
    CREATE TABLE grant_checkpoints_by_log (
        device_id    TEXT NOT NULL,
        log_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        subject      TEXT NOT NULL,
        recorded_at  INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (device_id, log_id, seq)
    );
    INSERT INTO grant_checkpoints_by_log (device_id, log_id, seq, subject, recorded_at, body)
        SELECT device_id, '', seq, subject, recorded_at, body FROM grant_checkpoints;
    DROP TABLE grant_checkpoints;
    ALTER TABLE grant_checkpoints_by_log RENAME TO grant_checkpoints;
"#;

/// Migration that keys checkpoints by subject as well, so that one user's
/// checkpoints never occupy, or count as, another user's log of the same
/// device and log id.
pub const CHECKPOINTS_BY_SUBJECT_MIGRATION: &str = r#"
    CREATE TABLE grant_checkpoints_by_subject (
        subject      TEXT NOT NULL,
        device_id    TEXT NOT NULL,
        log_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        recorded_at  INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (subject, device_id, log_id, seq)
    );
    INSERT INTO grant_checkpoints_by_subject (subject, device_id, log_id, seq, recorded_at, body)
        SELECT subject, device_id, log_id, seq, recorded_at, body FROM grant_checkpoints;
    DROP TABLE grant_checkpoints;
    ALTER TABLE grant_checkpoints_by_subject RENAME TO grant_checkpoints;
"#;

/// Migration that keeps the completion request of each upload, stored before
/// the gateway asks the store to complete it, so that a completion cut short
/// after the store completed the upload can be finished from it.
pub const COMPLETION_REQUEST_MIGRATION: &str = r#"
    ALTER TABLE grant_uploads ADD COLUMN completion_request TEXT;
"#;

/// Migration that creates the grant API's tables; appended to `db::MIGRATIONS`.
pub const MIGRATION: &str = r#"
    CREATE TABLE grant_uploads (
        id               TEXT PRIMARY KEY,
        object_key       TEXT NOT NULL UNIQUE,
        store_upload_id  TEXT NOT NULL,
        subject          TEXT NOT NULL,
        client_id        TEXT NOT NULL,
        patient          TEXT NOT NULL,
        file_name        TEXT NOT NULL,
        media_type       TEXT NOT NULL,
        size             INTEGER NOT NULL,
        part_size        INTEGER NOT NULL,
        part_count       INTEGER NOT NULL,
        status           TEXT NOT NULL,
        correlation_id   TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        expires_at       INTEGER NOT NULL,
        request          TEXT NOT NULL,
        document_id      TEXT UNIQUE,
        completion       TEXT
    );
    CREATE INDEX grant_uploads_open ON grant_uploads(status, expires_at);
    CREATE TABLE grant_deny_list (
        kind        TEXT NOT NULL CHECK (kind IN ('user', 'patient', 'object')),
        value       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (kind, value)
    );
    CREATE TABLE grant_checkpoints (
        device_id    TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        subject      TEXT NOT NULL,
        recorded_at  INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (device_id, seq)
    );
    CREATE TABLE grant_documents (
        id          TEXT PRIMARY KEY,
        patient     TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        resource    TEXT NOT NULL
    );
"#;

/// One upload as the gateway tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// Gateway upload id (`upl_…`), used in API paths.
    pub id: String,
    /// Store object key.
    pub object_key: String,
    /// The store's multipart upload id.
    pub store_upload_id: String,
    pub subject: String,
    pub client_id: String,
    pub patient: String,
    pub file_name: String,
    pub media_type: String,
    pub size: u64,
    pub part_size: u64,
    pub part_count: u32,
    pub status: UploadStatus,
    pub correlation_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The request the grant was issued for (study, mismatch confirmation).
    pub request: UploadGrantRequest,
    pub completion: Option<CompletedUpload>,
}

/// Errors of the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("stored {what} is not valid JSON: {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {seq} of device '{device_id}' was already recorded with other content")]
    CheckpointConflict { device_id: String, seq: u64 },
}

impl From<rusqlite::Error> for RepositoryError {
    fn from(error: rusqlite::Error) -> Self {
        RepositoryError::Database(DbError::Query(error))
    }
}

/// State the grant API keeps between requests.
pub trait GrantRepository: Send + Sync {
    fn insert_upload(&self, upload: &UploadRecord) -> Result<(), RepositoryError>;
    fn upload(&self, id: &str) -> Result<Option<UploadRecord>, RepositoryError>;
    fn upload_by_object(&self, object_key: &str) -> Result<Option<UploadRecord>, RepositoryError>;
    fn upload_by_document(
        &self,
        document_id: &str,
    ) -> Result<Option<UploadRecord>, RepositoryError>;
    /// Moves an upload from `from` to `to`; returns false when its status was not `from`.
    fn transition(
        &self,
        id: &str,
        from: UploadStatus,
        to: UploadStatus,
    ) -> Result<bool, RepositoryError>;
    /// Stores the completion of an open upload; returns false when it was not open.
    fn complete(&self, id: &str, completion: &CompletedUpload) -> Result<bool, RepositoryError>;
    /// Stores the part list and whole-file SHA-256 a completion is about to
    /// send to the store, replacing an earlier one.
    fn record_completion_request(
        &self,
        id: &str,
        request: &CompleteUploadRequest,
    ) -> Result<(), RepositoryError>;
    /// Returns the completion request last stored for an upload, if any.
    fn completion_request(
        &self,
        id: &str,
    ) -> Result<Option<CompleteUploadRequest>, RepositoryError>;
    /// Returns every open upload, oldest first.
    fn open_uploads(&self) -> Result<Vec<UploadRecord>, RepositoryError>;
    /// Open uploads whose lifetime ended before `now`.
    fn expired_uploads(&self, now: Timestamp) -> Result<Vec<UploadRecord>, RepositoryError>;

    fn deny_list(&self) -> Result<DenyList, RepositoryError>;
    /// Adds an entry; returns false when it was already there.
    fn add_deny(&self, kind: DenyKind, value: &str) -> Result<bool, RepositoryError>;
    /// Removes an entry; returns false when it was not there.
    fn remove_deny(&self, kind: DenyKind, value: &str) -> Result<bool, RepositoryError>;

    /// Stores a checkpoint under its subject, device, log and seq. Recording
    /// the same checkpoint again returns the stored one; different content
    /// under the same key is a conflict.
    fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RepositoryError>;
    /// Returns the checkpoint with the highest sequence number recorded for
    /// one log of a device and subject.
    fn latest_checkpoint(
        &self,
        subject: &str,
        device_id: &str,
        log_id: &str,
    ) -> Result<Option<Checkpoint>, RepositoryError>;
    /// Returns the checkpoint recorded at `seq` of one log of a device and subject.
    fn checkpoint_at(
        &self,
        subject: &str,
        device_id: &str,
        log_id: &str,
        seq: u64,
    ) -> Result<Option<Checkpoint>, RepositoryError>;
    /// Returns the device key of the earliest checkpoint of one log of a
    /// device and subject that carried one.
    fn log_device_key(
        &self,
        subject: &str,
        device_id: &str,
        log_id: &str,
    ) -> Result<Option<String>, RepositoryError>;
    /// A device's checkpoints recorded for `subject`, of all its logs, in
    /// sequence order.
    fn checkpoints(
        &self,
        device_id: &str,
        subject: &str,
    ) -> Result<Vec<Checkpoint>, RepositoryError>;
}

/// [`GrantRepository`] on the gateway's embedded SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteRepository {
    db: Db,
}

impl SqliteRepository {
    pub fn new(db: Db) -> SqliteRepository {
        SqliteRepository { db }
    }
}

const UPLOAD_COLUMNS: &str = "id, object_key, store_upload_id, subject, client_id, patient, file_name, \
     media_type, size, part_size, part_count, status, correlation_id, created_at, expires_at, request, completion";

fn status_text(status: UploadStatus) -> &'static str {
    match status {
        UploadStatus::Open => "open",
        UploadStatus::Completed => "completed",
        UploadStatus::Aborted => "aborted",
        UploadStatus::Expired => "expired",
        UploadStatus::Denied => "denied",
    }
}

fn parse_status(text: &str) -> UploadStatus {
    match text {
        "completed" => UploadStatus::Completed,
        "aborted" => UploadStatus::Aborted,
        "expired" => UploadStatus::Expired,
        "denied" => UploadStatus::Denied,
        _ => UploadStatus::Open,
    }
}

fn timestamp(millis: i64) -> Timestamp {
    Timestamp::from_millisecond(millis).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Raw columns of an upload row, converted to [`UploadRecord`] outside the
/// row callback so JSON errors keep their own variant.
struct UploadRow {
    record: UploadRecord,
    request: String,
    completion: Option<String>,
}

fn read_upload_row(row: &Row<'_>) -> rusqlite::Result<UploadRow> {
    let status: String = row.get(11)?;
    let record = UploadRecord {
        id: row.get(0)?,
        object_key: row.get(1)?,
        store_upload_id: row.get(2)?,
        subject: row.get(3)?,
        client_id: row.get(4)?,
        patient: row.get(5)?,
        file_name: row.get(6)?,
        media_type: row.get(7)?,
        size: row.get::<_, i64>(8)? as u64,
        part_size: row.get::<_, i64>(9)? as u64,
        part_count: row.get(10)?,
        status: parse_status(&status),
        correlation_id: row.get(12)?,
        created_at: timestamp(row.get(13)?),
        expires_at: timestamp(row.get(14)?),
        request: UploadGrantRequest {
            file_name: String::new(),
            size: 0,
            media_type: String::new(),
            patient: String::new(),
            part_size: 0,
            study: None,
            patient_mismatch_confirmation: None,
        },
        completion: None,
    };
    Ok(UploadRow {
        record,
        request: row.get(15)?,
        completion: row.get(16)?,
    })
}

fn finish_upload_row(row: UploadRow) -> Result<UploadRecord, RepositoryError> {
    let mut record = row.record;
    record.request =
        serde_json::from_str(&row.request).map_err(|source| RepositoryError::Corrupt {
            what: "upload request",
            source,
        })?;
    record.completion = row
        .completion
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|source| RepositoryError::Corrupt {
            what: "upload completion",
            source,
        })?;
    Ok(record)
}

impl SqliteRepository {
    fn upload_where(
        &self,
        condition: &str,
        value: &str,
    ) -> Result<Option<UploadRecord>, RepositoryError> {
        let connection = self.db.lock();
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM grant_uploads WHERE {condition} = ?1");
        let row = connection
            .prepare_cached(&sql)?
            .query_row([value], read_upload_row)
            .optional()?;
        drop(connection);
        row.map(finish_upload_row).transpose()
    }
}

impl GrantRepository for SqliteRepository {
    fn insert_upload(&self, upload: &UploadRecord) -> Result<(), RepositoryError> {
        let request =
            serde_json::to_string(&upload.request).map_err(|source| RepositoryError::Corrupt {
                what: "upload request",
                source,
            })?;
        self.db.lock().execute(
            &format!(
                "INSERT INTO grant_uploads ({UPLOAD_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, NULL)"
            ),
            params![
                upload.id,
                upload.object_key,
                upload.store_upload_id,
                upload.subject,
                upload.client_id,
                upload.patient,
                upload.file_name,
                upload.media_type,
                upload.size as i64,
                upload.part_size as i64,
                upload.part_count,
                status_text(upload.status),
                upload.correlation_id,
                upload.created_at.as_millisecond(),
                upload.expires_at.as_millisecond(),
                request,
            ],
        )?;
        Ok(())
    }

    fn upload(&self, id: &str) -> Result<Option<UploadRecord>, RepositoryError> {
        self.upload_where("id", id)
    }

    fn upload_by_object(&self, object_key: &str) -> Result<Option<UploadRecord>, RepositoryError> {
        self.upload_where("object_key", object_key)
    }

    fn upload_by_document(
        &self,
        document_id: &str,
    ) -> Result<Option<UploadRecord>, RepositoryError> {
        self.upload_where("document_id", document_id)
    }

    fn transition(
        &self,
        id: &str,
        from: UploadStatus,
        to: UploadStatus,
    ) -> Result<bool, RepositoryError> {
        let changed = self.db.lock().execute(
            "UPDATE grant_uploads SET status = ?3 WHERE id = ?1 AND status = ?2",
            params![id, status_text(from), status_text(to)],
        )?;
        Ok(changed == 1)
    }

    fn complete(&self, id: &str, completion: &CompletedUpload) -> Result<bool, RepositoryError> {
        let text =
            serde_json::to_string(completion).map_err(|source| RepositoryError::Corrupt {
                what: "upload completion",
                source,
            })?;
        let changed = self.db.lock().execute(
            "UPDATE grant_uploads SET status = 'completed', document_id = ?2, completion = ?3
             WHERE id = ?1 AND status = 'open'",
            params![id, completion.document_id, text],
        )?;
        Ok(changed == 1)
    }

    fn record_completion_request(
        &self,
        id: &str,
        request: &CompleteUploadRequest,
    ) -> Result<(), RepositoryError> {
        let text = serde_json::to_string(request).map_err(|source| RepositoryError::Corrupt {
            what: "completion request",
            source,
        })?;
        self.db.lock().execute(
            "UPDATE grant_uploads SET completion_request = ?2 WHERE id = ?1",
            params![id, text],
        )?;
        Ok(())
    }

    fn completion_request(
        &self,
        id: &str,
    ) -> Result<Option<CompleteUploadRequest>, RepositoryError> {
        let text: Option<Option<String>> = self
            .db
            .lock()
            .prepare_cached("SELECT completion_request FROM grant_uploads WHERE id = ?1")?
            .query_row([id], |row| row.get(0))
            .optional()?;
        text.flatten()
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|source| RepositoryError::Corrupt {
                what: "completion request",
                source,
            })
    }

    fn open_uploads(&self) -> Result<Vec<UploadRecord>, RepositoryError> {
        let connection = self.db.lock();
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM grant_uploads WHERE status = 'open' ORDER BY created_at, id"
        );
        let rows: Vec<UploadRow> = connection
            .prepare_cached(&sql)?
            .query_map([], read_upload_row)?
            .collect::<Result<_, _>>()?;
        drop(connection);
        rows.into_iter().map(finish_upload_row).collect()
    }

    fn expired_uploads(&self, now: Timestamp) -> Result<Vec<UploadRecord>, RepositoryError> {
        let connection = self.db.lock();
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM grant_uploads WHERE status = 'open' AND expires_at <= ?1"
        );
        let rows: Vec<UploadRow> = connection
            .prepare_cached(&sql)?
            .query_map([now.as_millisecond()], read_upload_row)?
            .collect::<Result<_, _>>()?;
        drop(connection);
        rows.into_iter().map(finish_upload_row).collect()
    }

    fn deny_list(&self) -> Result<DenyList, RepositoryError> {
        let connection = self.db.lock();
        let mut statement = connection.prepare_cached("SELECT kind, value FROM grant_deny_list")?;
        let mut list = DenyList::default();
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (kind, value) = row?;
            if let Some(kind) = DenyKind::parse(&kind) {
                list.insert(kind, value);
            }
        }
        Ok(list)
    }

    fn add_deny(&self, kind: DenyKind, value: &str) -> Result<bool, RepositoryError> {
        let changed = self.db.lock().execute(
            "INSERT OR IGNORE INTO grant_deny_list (kind, value, created_at) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), value, Timestamp::now().as_millisecond()],
        )?;
        Ok(changed == 1)
    }

    fn remove_deny(&self, kind: DenyKind, value: &str) -> Result<bool, RepositoryError> {
        let changed = self.db.lock().execute(
            "DELETE FROM grant_deny_list WHERE kind = ?1 AND value = ?2",
            params![kind.as_str(), value],
        )?;
        Ok(changed == 1)
    }

    fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RepositoryError> {
        let body =
            serde_json::to_string(checkpoint).map_err(|source| RepositoryError::Corrupt {
                what: "checkpoint",
                source,
            })?;
        let request = &checkpoint.checkpoint;
        let log_id = request.log_id.as_deref().unwrap_or_default();
        let connection = self.db.lock();
        let existing: Option<String> = connection
            .prepare_cached(
                "SELECT body FROM grant_checkpoints
                 WHERE subject = ?1 AND device_id = ?2 AND log_id = ?3 AND seq = ?4",
            )?
            .query_row(
                params![
                    checkpoint.subject,
                    request.device_id,
                    log_id,
                    request.seq as i64
                ],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(existing) = existing {
            let stored: Checkpoint =
                serde_json::from_str(&existing).map_err(|source| RepositoryError::Corrupt {
                    what: "checkpoint",
                    source,
                })?;
            if stored.checkpoint == checkpoint.checkpoint {
                return Ok(stored);
            }
            return Err(RepositoryError::CheckpointConflict {
                device_id: request.device_id.clone(),
                seq: request.seq,
            });
        }
        connection.execute(
            "INSERT INTO grant_checkpoints (device_id, log_id, seq, subject, recorded_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                request.device_id,
                log_id,
                request.seq as i64,
                checkpoint.subject,
                checkpoint.recorded_at.as_millisecond(),
                body
            ],
        )?;
        Ok(checkpoint.clone())
    }

    fn latest_checkpoint(
        &self,
        subject: &str,
        device_id: &str,
        log_id: &str,
    ) -> Result<Option<Checkpoint>, RepositoryError> {
        let body: Option<String> = self
            .db
            .lock()
            .prepare_cached(
                "SELECT body FROM grant_checkpoints WHERE subject = ?1 AND device_id = ?2 AND log_id = ?3
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![subject, device_id, log_id], |row| row.get(0))
            .optional()?;
        parse_checkpoint(body)
    }

    fn checkpoint_at(
        &self,
        subject: &str,
        device_id: &str,
        log_id: &str,
        seq: u64,
    ) -> Result<Option<Checkpoint>, RepositoryError> {
        let body: Option<String> = self
            .db
            .lock()
            .prepare_cached(
                "SELECT body FROM grant_checkpoints
                 WHERE subject = ?1 AND device_id = ?2 AND log_id = ?3 AND seq = ?4",
            )?
            .query_row(params![subject, device_id, log_id, seq as i64], |row| {
                row.get(0)
            })
            .optional()?;
        parse_checkpoint(body)
    }

    fn log_device_key(
        &self,
        subject: &str,
        device_id: &str,
        log_id: &str,
    ) -> Result<Option<String>, RepositoryError> {
        Ok(self
            .db
            .lock()
            .prepare_cached(
                "SELECT json_extract(body, '$.checkpoint.device_public_key') AS device_key
                 FROM grant_checkpoints
                 WHERE subject = ?1 AND device_id = ?2 AND log_id = ?3 AND device_key IS NOT NULL
                 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![subject, device_id, log_id], |row| row.get(0))
            .optional()?)
    }

    fn checkpoints(
        &self,
        device_id: &str,
        subject: &str,
    ) -> Result<Vec<Checkpoint>, RepositoryError> {
        let connection = self.db.lock();
        let mut statement = connection.prepare_cached(
            "SELECT body FROM grant_checkpoints WHERE device_id = ?1 AND subject = ?2 ORDER BY seq, log_id",
        )?;
        let bodies: Vec<String> = statement
            .query_map(params![device_id, subject], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        bodies
            .iter()
            .map(|body| {
                serde_json::from_str(body).map_err(|source| RepositoryError::Corrupt {
                    what: "checkpoint",
                    source,
                })
            })
            .collect()
    }
}

fn parse_checkpoint(body: Option<String>) -> Result<Option<Checkpoint>, RepositoryError> {
    body.map(|body| serde_json::from_str(&body))
        .transpose()
        .map_err(|source| RepositoryError::Corrupt {
            what: "checkpoint",
            source,
        })
}
