//! Durable journal of transfers and their parts, in SQLite.
//!
//! The transfer engine writes a row before and after every change of state,
//! so a process killed at any instant can resume: the journal names the
//! upload or the temporary file, and which parts were confirmed. The
//! database runs in WAL mode with `synchronous=FULL`, so a committed write
//! survives a power cut.
//!
//! Claims keep two processes (the desktop app and the CLI) from running the
//! same transfer: a transfer is claimed by a process id and that process's
//! start time, and another process may take it over only once the claimant
//! is gone.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    state TEXT NOT NULL,
    file_name TEXT NOT NULL,
    size INTEGER,
    source_path TEXT,
    source_mtime_ns INTEGER,
    patient TEXT,
    media_type TEXT,
    upload_request TEXT,
    destination_dir TEXT,
    destination_path TEXT,
    temp_path TEXT,
    existing_file TEXT,
    upload_id TEXT,
    document_id TEXT,
    part_size INTEGER,
    part_count INTEGER,
    sha256 TEXT,
    object_etag TEXT,
    correlation_id TEXT,
    receipt TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    claimed_pid INTEGER,
    claimed_start TEXT
);
CREATE TABLE IF NOT EXISTS parts (
    transfer_id TEXT NOT NULL REFERENCES transfers(id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT,
    state TEXT NOT NULL,
    etag TEXT,
    PRIMARY KEY (transfer_id, part_number)
);
";

/// Failure of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the transfer journal at {path} failed: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("transfer {0} is not in the journal")]
    NotFound(String),
    #[error("the journal holds an invalid value {value:?} in column {column}")]
    InvalidValue { column: &'static str, value: String },
}

/// Direction of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }

    fn parse(value: &str) -> Result<Self, JournalError> {
        match value {
            "upload" => Ok(Self::Upload),
            "download" => Ok(Self::Download),
            _ => Err(JournalError::InvalidValue { column: "direction", value: value.to_owned() }),
        }
    }
}

/// State of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Queued,
    Running,
    Paused,
    WaitingForNetwork,
    Verifying,
    Completed,
    Failed,
    Cancelled,
}

impl TransferState {
    pub const ALL: [Self; 8] = [
        Self::Queued,
        Self::Running,
        Self::Paused,
        Self::WaitingForNetwork,
        Self::Verifying,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::WaitingForNetwork => "waiting_for_network",
            Self::Verifying => "verifying",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Returns true for states a transfer never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    fn parse(value: &str) -> Result<Self, JournalError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| JournalError::InvalidValue { column: "state", value: value.to_owned() })
    }
}

/// State of one part of an upload, or one range of a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// Not sent yet (upload), or not written yet (download).
    Pending,
    /// The request is in flight; the store may or may not hold the bytes.
    Sent,
    /// The store returned the part's ETag (upload), or the range is written
    /// and flushed to the temporary file (download).
    Confirmed,
}

impl PartState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Confirmed => "confirmed",
        }
    }

    fn parse(value: &str) -> Result<Self, JournalError> {
        match value {
            "pending" => Ok(Self::Pending),
            "sent" => Ok(Self::Sent),
            "confirmed" => Ok(Self::Confirmed),
            _ => Err(JournalError::InvalidValue { column: "parts.state", value: value.to_owned() }),
        }
    }
}

/// One transfer as the journal records it. Upload-only and download-only
/// fields are `None` for the other direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    pub id: String,
    pub direction: Direction,
    pub state: TransferState,
    /// Upload: the source file's name. Download: the sanitized name, once
    /// the download grant is known (the document id before that).
    pub file_name: String,
    /// Bytes; known from the start for uploads, from the grant for downloads.
    pub size: Option<u64>,
    pub source_path: Option<PathBuf>,
    /// Source modification time in nanoseconds since the Unix epoch.
    pub source_mtime_ns: Option<i64>,
    pub patient: Option<String>,
    pub media_type: Option<String>,
    /// JSON of the upload grant request, sent when the upload is created.
    pub upload_request: Option<String>,
    pub destination_dir: Option<PathBuf>,
    pub destination_path: Option<PathBuf>,
    pub temp_path: Option<PathBuf>,
    /// What a download does when the destination exists: `rename`,
    /// `overwrite` or `fail`.
    pub existing_file: Option<String>,
    pub upload_id: Option<String>,
    pub document_id: Option<String>,
    pub part_size: Option<u64>,
    pub part_count: Option<u32>,
    /// Whole-file SHA-256 (hex), once known.
    pub sha256: Option<String>,
    /// ETag of the object being downloaded, sent in `If-Range`.
    pub object_etag: Option<String>,
    pub correlation_id: Option<String>,
    /// JSON of the verified signed receipt of a completed upload.
    pub receipt: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub claimed_by: Option<Claimant>,
}

impl TransferRecord {
    /// Returns a new record in state `queued`.
    pub fn new(id: String, direction: Direction, file_name: String) -> Self {
        let now = now();
        Self {
            id,
            direction,
            state: TransferState::Queued,
            file_name,
            size: None,
            source_path: None,
            source_mtime_ns: None,
            patient: None,
            media_type: None,
            upload_request: None,
            destination_dir: None,
            destination_path: None,
            temp_path: None,
            existing_file: None,
            upload_id: None,
            document_id: None,
            part_size: None,
            part_count: None,
            sha256: None,
            object_etag: None,
            correlation_id: None,
            receipt: None,
            error: None,
            created_at: now.clone(),
            updated_at: now,
            claimed_by: None,
        }
    }
}

/// One part of an upload or one range of a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub part_number: u32,
    pub offset: u64,
    pub size: u64,
    /// SHA-256 (hex) of the part, recorded before the part is sent.
    pub sha256: Option<String>,
    pub state: PartState,
    pub etag: Option<String>,
}

/// A process that runs a transfer: its id and its start time, so that a
/// recycled process id is not mistaken for the claimant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimant {
    pub pid: u32,
    pub start: String,
}

impl Claimant {
    /// Returns the claimant that identifies this process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self { pid, start: process_start(pid).unwrap_or_else(fallback_start) }
    }

    /// Returns true when the process is still running.
    pub fn is_alive(&self) -> bool {
        if self.pid == std::process::id() {
            return *self == Self::current();
        }
        match process_start(self.pid) {
            Some(start) => start == self.start,
            None => false,
        }
    }
}

/// Identifies a running process by the boot id and its start time in clock
/// ticks since boot (`/proc/PID/stat`, field 22).
#[cfg(target_os = "linux")]
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Field 3 is the state: a zombie (`Z`) or dead (`X`) process has exited
    // and only waits for its parent to reap it, so its claims are stale.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    let start_ticks = fields.nth(18)?;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Some(format!("{}:{start_ticks}", boot_id.trim()))
}

/// TODO: identify other processes on macOS and Windows. Until then a claim
/// by another process there counts as stale, so an interrupted transfer can
/// always be resumed, but two processes could run one transfer at once.
#[cfg(not(target_os = "linux"))]
fn process_start(_pid: u32) -> Option<String> {
    None
}

/// A start mark for platforms without `/proc`: fixed for this process's lifetime.
fn fallback_start() -> String {
    static START: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    START.get_or_init(now).clone()
}

/// Writes every field of `record` except its state, error and claim, and
/// sets `updated_at`; returns the number of rows changed.
fn write_fields(connection: &Connection, record: &TransferRecord) -> rusqlite::Result<usize> {
    connection
        .execute(
            "UPDATE transfers SET file_name = ?2, size = ?3, source_path = ?4,
                source_mtime_ns = ?5, patient = ?6, media_type = ?7, destination_dir = ?8,
                destination_path = ?9, temp_path = ?10, existing_file = ?11, upload_id = ?12,
                document_id = ?13, part_size = ?14, part_count = ?15, sha256 = ?16,
                object_etag = ?17, correlation_id = ?18, receipt = ?19,
                upload_request = ?21, updated_at = ?20
             WHERE id = ?1",
            params![
                record.id,
                record.file_name,
                record.size.map(to_sql_u64),
                record.source_path.as_deref().map(path_text),
                record.source_mtime_ns,
                record.patient,
                record.media_type,
                record.destination_dir.as_deref().map(path_text),
                record.destination_path.as_deref().map(path_text),
                record.temp_path.as_deref().map(path_text),
                record.existing_file,
                record.upload_id,
                record.document_id,
                record.part_size.map(to_sql_u64),
                record.part_count,
                record.sha256,
                record.object_etag,
                record.correlation_id,
                record.receipt,
                now(),
                record.upload_request,
            ],
        )
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The journal: one SQLite database, shared by every transfer of a profile.
pub struct Journal {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens or creates the journal at `path` (for example
    /// `{profile_dir}/journal.sqlite`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, JournalError> {
        let path = path.as_ref().to_path_buf();
        let sqlite = |source| JournalError::Sqlite { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }

        let connection = Connection::open(&path).map_err(sqlite)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        connection
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(sqlite)?;
        connection.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(Self { path, connection: Mutex::new(connection) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn error(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite { path: self.path.clone(), source }
    }

    /// Inserts a new transfer.
    pub fn insert(&self, record: &TransferRecord) -> Result<(), JournalError> {
        let mut connection = self.lock();
        // One transaction, so that a process killed between the two
        // statements leaves no row without its fields: `ferry resume`
        // cannot continue an upload whose source path is missing.
        let transaction = connection.transaction().map_err(|error| self.error(error))?;
        transaction
            .execute(
                "INSERT INTO transfers (id, direction, state, error, file_name, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![
                    record.id,
                    record.direction.as_str(),
                    record.state.as_str(),
                    record.error,
                    record.file_name,
                    record.created_at
                ],
            )
            .map_err(|error| self.error(error))?;
        write_fields(&transaction, record).map_err(|error| self.error(error))?;
        transaction.commit().map_err(|error| self.error(error))
    }

    /// Writes every field of `record` except its state, error and claim, and
    /// sets `updated_at`. State and error change only through
    /// [`Journal::set_state`], so a record read before another task changed
    /// the state (to `waiting_for_network`, `paused`, ...) cannot undo that
    /// change when it is written back.
    pub fn update(&self, record: &TransferRecord) -> Result<(), JournalError> {
        let changed = write_fields(&self.lock(), record).map_err(|error| self.error(error))?;
        if changed == 0 {
            return Err(JournalError::NotFound(record.id.clone()));
        }
        Ok(())
    }

    /// Sets a transfer's state and error message.
    pub fn set_state(&self, id: &str, state: TransferState, error: Option<&str>) -> Result<(), JournalError> {
        let connection = self.lock();
        let changed = connection
            .execute(
                "UPDATE transfers SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), error, now()],
            )
            .map_err(|error| self.error(error))?;
        if changed == 0 {
            return Err(JournalError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<TransferRecord, JournalError> {
        let connection = self.lock();
        let record = connection
            .query_row("SELECT * FROM transfers WHERE id = ?1", [id], read_transfer)
            .optional()
            .map_err(|error| self.error(error))?;
        record.ok_or_else(|| JournalError::NotFound(id.to_owned()))?
    }

    /// Lists every transfer, oldest first.
    pub fn list(&self) -> Result<Vec<TransferRecord>, JournalError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT * FROM transfers ORDER BY created_at, id")
            .map_err(|error| self.error(error))?;
        let rows = statement
            .query_map([], read_transfer)
            .map_err(|error| self.error(error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| self.error(error))?;
        rows.into_iter().collect()
    }

    /// Deletes a transfer and its parts.
    pub fn delete(&self, id: &str) -> Result<(), JournalError> {
        let connection = self.lock();
        connection
            .execute("DELETE FROM transfers WHERE id = ?1", [id])
            .map_err(|error| self.error(error))?;
        Ok(())
    }

    /// Replaces the transfer's parts, all in one transaction.
    pub fn set_parts(&self, id: &str, parts: &[PartRecord]) -> Result<(), JournalError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|error| self.error(error))?;
        transaction
            .execute("DELETE FROM parts WHERE transfer_id = ?1", [id])
            .map_err(|error| self.error(error))?;
        {
            let mut insert = transaction
                .prepare(
                    "INSERT INTO parts (transfer_id, part_number, offset, size, sha256, state, etag)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|error| self.error(error))?;
            for part in parts {
                insert
                    .execute(params![
                        id,
                        part.part_number,
                        to_sql_u64(part.offset),
                        to_sql_u64(part.size),
                        part.sha256,
                        part.state.as_str(),
                        part.etag,
                    ])
                    .map_err(|error| self.error(error))?;
            }
        }
        transaction.commit().map_err(|error| self.error(error))
    }

    /// Records a part's state, with its SHA-256 and ETag when given (a
    /// `None` keeps the stored value).
    pub fn set_part(
        &self,
        id: &str,
        part_number: u32,
        state: PartState,
        sha256: Option<&str>,
        etag: Option<&str>,
    ) -> Result<(), JournalError> {
        let connection = self.lock();
        let changed = connection
            .execute(
                "UPDATE parts SET state = ?3, sha256 = COALESCE(?4, sha256), etag = COALESCE(?5, etag)
                 WHERE transfer_id = ?1 AND part_number = ?2",
                params![id, part_number, state.as_str(), sha256, etag],
            )
            .map_err(|error| self.error(error))?;
        if changed == 0 {
            return Err(JournalError::NotFound(format!("{id} part {part_number}")));
        }
        Ok(())
    }

    /// Sets every part back to `pending`, forgetting hashes and ETags.
    pub fn reset_parts(&self, id: &str) -> Result<(), JournalError> {
        let connection = self.lock();
        connection
            .execute(
                "UPDATE parts SET state = 'pending', sha256 = NULL, etag = NULL WHERE transfer_id = ?1",
                [id],
            )
            .map_err(|error| self.error(error))?;
        Ok(())
    }

    /// Lists the transfer's parts in part-number order.
    pub fn parts(&self, id: &str) -> Result<Vec<PartRecord>, JournalError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT part_number, offset, size, sha256, state, etag FROM parts
                 WHERE transfer_id = ?1 ORDER BY part_number",
            )
            .map_err(|error| self.error(error))?;
        let rows = statement
            .query_map([id], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(|error| self.error(error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| self.error(error))?;
        rows.into_iter()
            .map(|(part_number, offset, size, sha256, state, etag)| {
                Ok(PartRecord {
                    part_number,
                    offset: offset as u64,
                    size: size as u64,
                    sha256,
                    state: PartState::parse(&state)?,
                    etag,
                })
            })
            .collect()
    }

    /// Claims a transfer for `claimant`, in one `BEGIN IMMEDIATE`
    /// transaction: the claim succeeds when the transfer is unclaimed,
    /// already claimed by `claimant`, or claimed by a process that is gone.
    /// Returns the live claimant that holds it otherwise.
    pub fn claim(&self, id: &str, claimant: &Claimant) -> Result<Result<(), Claimant>, JournalError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|error| self.error(error))?;
        let current = transaction
            .query_row(
                "SELECT claimed_pid, claimed_start FROM transfers WHERE id = ?1",
                [id],
                |row| Ok((row.get::<_, Option<u32>>(0)?, row.get::<_, Option<String>>(1)?)),
            )
            .optional()
            .map_err(|error| self.error(error))?
            .ok_or_else(|| JournalError::NotFound(id.to_owned()))?;

        if let (Some(pid), Some(start)) = current {
            let holder = Claimant { pid, start };
            if holder != *claimant && holder.is_alive() {
                return Ok(Err(holder));
            }
        }
        transaction
            .execute(
                "UPDATE transfers SET claimed_pid = ?2, claimed_start = ?3 WHERE id = ?1",
                params![id, claimant.pid, claimant.start],
            )
            .map_err(|error| self.error(error))?;
        transaction.commit().map_err(|error| self.error(error))?;
        Ok(Ok(()))
    }

    /// Releases the claim of `claimant` on a transfer; another claimant's
    /// claim stays.
    pub fn release(&self, id: &str, claimant: &Claimant) -> Result<(), JournalError> {
        let connection = self.lock();
        connection
            .execute(
                "UPDATE transfers SET claimed_pid = NULL, claimed_start = NULL
                 WHERE id = ?1 AND claimed_pid = ?2 AND claimed_start = ?3",
                params![id, claimant.pid, claimant.start],
            )
            .map_err(|error| self.error(error))?;
        Ok(())
    }
}

/// SQLite integers are signed 64-bit; sizes and offsets stay far below 2^63.
fn to_sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn read_transfer(row: &Row<'_>) -> rusqlite::Result<Result<TransferRecord, JournalError>> {
    let direction: String = row.get("direction")?;
    let state: String = row.get("state")?;
    let claimed_pid: Option<u32> = row.get("claimed_pid")?;
    let claimed_start: Option<String> = row.get("claimed_start")?;
    let path = |column: &str| -> rusqlite::Result<Option<PathBuf>> {
        Ok(row.get::<_, Option<String>>(column)?.map(PathBuf::from))
    };
    let direction = match Direction::parse(&direction) {
        Ok(direction) => direction,
        Err(error) => return Ok(Err(error)),
    };
    let state = match TransferState::parse(&state) {
        Ok(state) => state,
        Err(error) => return Ok(Err(error)),
    };

    Ok(Ok(TransferRecord {
        id: row.get("id")?,
        direction,
        state,
        file_name: row.get("file_name")?,
        size: row.get::<_, Option<i64>>("size")?.map(|size| size as u64),
        source_path: path("source_path")?,
        source_mtime_ns: row.get("source_mtime_ns")?,
        patient: row.get("patient")?,
        media_type: row.get("media_type")?,
        upload_request: row.get("upload_request")?,
        destination_dir: path("destination_dir")?,
        destination_path: path("destination_path")?,
        temp_path: path("temp_path")?,
        existing_file: row.get("existing_file")?,
        upload_id: row.get("upload_id")?,
        document_id: row.get("document_id")?,
        part_size: row.get::<_, Option<i64>>("part_size")?.map(|size| size as u64),
        part_count: row.get("part_count")?,
        sha256: row.get("sha256")?,
        object_etag: row.get("object_etag")?,
        correlation_id: row.get("correlation_id")?,
        receipt: row.get("receipt")?,
        error: row.get("error")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        claimed_by: match (claimed_pid, claimed_start) {
            (Some(pid), Some(start)) => Some(Claimant { pid, start }),
            _ => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for state in TransferState::ALL {
            assert_eq!(TransferState::parse(state.as_str()).unwrap(), state);
        }
    }

    #[test]
    fn current_process_is_alive() {
        assert!(Claimant::current().is_alive());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn claimant_with_other_start_time_is_dead() {
        let mut claimant = Claimant::current();
        claimant.pid = 1;
        claimant.start = "not-a-start-time".into();
        assert!(!claimant.is_alive());
    }
}
