//! Transfer engine: uploads and downloads of single files through the grant
//! API, with the bytes going directly between this machine and the store.
//!
//! An upload reads its file once, part by part, into bounded buffers, hashes
//! each part and the whole file in the same pass, and sends several parts in
//! flight with presigned `PUT`s; memory stays bounded by parts in flight ×
//! part size. A download fetches several ranges in flight into a temporary
//! file beside its destination, verifies size and SHA-256, then renames it
//! into place. Every state change is written to the [`Journal`] before and
//! after it happens, so a process killed at any instant can resume.
//!
//! [`Engine`] is the facade the CLI and the desktop app use.

mod buffers;
mod download;
mod engine;
mod file_sync;
mod names;
mod progress;
mod range_digest;
mod rate;
mod retry;
mod upload;
pub mod wire;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_api::{PatientMismatchConfirmation, SignedReceipt, StudySummary};
use tokio::sync::watch;

use crate::grant::{GrantClient, GrantError, ReceiptError};
use crate::journal::{Journal, JournalError, TransferState};

pub use engine::{Engine, TransferHandle, TransferResult};
pub use names::safe_file_name;
pub(crate) use names::is_windows_reserved_name;
pub use progress::Progress;
pub use retry::RetryPolicy;
pub(crate) use wire::{is_expired_url_body, s3_error_summary};

/// Part size an upload proposes by default: 16 MiB.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts or ranges sent at the same time by default.
pub const DEFAULT_IN_FLIGHT: usize = 4;
/// Bytes the part buffers of all of an engine's transfers may hold at once
/// by default: 128 MiB, eight parts of the default size.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 128 * 1024 * 1024;

/// Settings shared by every transfer of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Part size proposed in upload grants, in bytes. The gateway may raise it
    /// to respect the store's limits (at least 5 MiB, at most 10,000 parts).
    pub part_size: u64,
    /// Parts of one upload sent at the same time. One upload's buffers use
    /// at most `parts_in_flight × part_size`, and all transfers together at
    /// most [`EngineOptions::max_buffered_bytes`].
    pub parts_in_flight: usize,
    /// Size of one ranged `GET` of a download, in bytes.
    pub range_size: u64,
    /// Ranges of one download fetched at the same time.
    pub ranges_in_flight: usize,
    /// Bytes that the part buffers of every transfer of the engine may hold
    /// at once: upload parts read and not yet confirmed (or kept for reuse),
    /// and the write buffers of download ranges in flight. Transfers beyond
    /// it wait in state `running` until a buffer is freed. A single part
    /// larger than this budget takes all of it and is read alone.
    pub max_buffered_bytes: u64,
    /// A request to the store fails when no bytes moved for this long.
    pub idle_timeout: Duration,
    /// Limit on opening a connection to the store.
    pub connect_timeout: Duration,
    /// A presigned URL this close to its `expires_at` is renewed before use.
    /// Zero by default, because the store checks expiry when a request
    /// arrives and a 403 for an expired URL also leads to a renewal.
    pub url_expiry_margin: Duration,
    pub retry: RetryPolicy,
    /// Bandwidth cap in bytes per second, shared by every part and range of
    /// every transfer of the engine; 0 means no cap.
    pub rate_limit: u64,
    /// Client for requests to the store, for example one configured for a
    /// proxy or a private CA. It must not add an `Authorization` header
    /// and should not follow redirects. `None` builds one with
    /// [`crate::http::build_store_client`] and the environment's proxies.
    pub store_client: Option<reqwest::Client>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_IN_FLIGHT,
            range_size: DEFAULT_PART_SIZE,
            ranges_in_flight: DEFAULT_IN_FLIGHT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            url_expiry_margin: Duration::ZERO,
            retry: RetryPolicy::default(),
            rate_limit: 0,
            store_client: None,
        }
    }
}

/// Per-upload settings.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Name sent to the gateway; the source file's name when `None`.
    pub file_name: Option<String>,
    /// MIME type; guessed from the file's extension when `None`.
    pub media_type: Option<String>,
    /// Part size proposed for this upload; [`EngineOptions::part_size`] when `None`.
    pub part_size: Option<u64>,
    pub study: Option<StudySummary>,
    pub patient_mismatch_confirmation: Option<PatientMismatchConfirmation>,
}

/// What a download does when its destination already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExistingFile {
    /// Save as `NAME (1).EXT`, `NAME (2).EXT` and so on.
    #[default]
    Rename,
    /// Replace the existing file.
    Overwrite,
    /// Fail the download.
    Fail,
}

impl ExistingFile {
    fn as_str(self) -> &'static str {
        match self {
            Self::Rename => "rename",
            Self::Overwrite => "overwrite",
            Self::Fail => "fail",
        }
    }

    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("overwrite") => Self::Overwrite,
            Some("fail") => Self::Fail,
            _ => Self::Rename,
        }
    }
}

/// Per-download settings.
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    pub existing_file: ExistingFile,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The gateway completed the upload and its receipt verified.
    Uploaded { document_id: String, receipt: SignedReceipt },
    /// The file is at `path` with the expected size and SHA-256.
    Downloaded { path: PathBuf, size: u64, sha256: String },
    /// Stopped by [`Engine::pause`]; [`Engine::resume`] continues it.
    Paused,
    /// Stopped by [`Engine::cancel`]; an upload was aborted at the gateway.
    Cancelled,
}

/// Failure of a transfer. Messages name the stage, the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("{stage} {}: {source}", .path.display())]
    Io {
        stage: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed since the transfer began ({detail}); nothing of the new content was sent. Start a new upload of the file as it is now", .path.display())]
    SourceChanged { path: PathBuf, detail: String },
    #[error("{stage}: the store returned {status}: {detail}")]
    StoreRejected { stage: String, status: u16, detail: String },
    #[error("{stage}: gave up after {attempts} attempts; the last failure was: {last}")]
    RetriesExhausted { stage: String, attempts: u32, last: String },
    #[error("the gateway's receipt for upload {upload_id} failed verification")]
    Receipt {
        upload_id: String,
        #[source]
        source: ReceiptError,
    },
    #[error("upload {upload_id} is {status} at the gateway and cannot continue; start a new upload")]
    UploadClosed { upload_id: String, status: String },
    #[error(
        "the downloaded bytes of document {document_id} do not match the document: expected \
         {expected_size} bytes with SHA-256 {expected_sha256}, got {actual_size} bytes with \
         SHA-256 {actual_sha256}; nothing was saved. Download it again"
    )]
    DigestMismatch {
        document_id: String,
        expected_size: u64,
        expected_sha256: String,
        actual_size: u64,
        actual_sha256: String,
    },
    #[error("document {document_id} changed at the store during the download ({detail}); download it again")]
    ObjectChanged { document_id: String, detail: String },
    #[error("{} already exists; choose another folder or allow overwriting", .path.display())]
    DestinationExists { path: PathBuf },
    #[error("transfer {id} is being run by process {pid}; wait for it to finish or stop that process")]
    ClaimedElsewhere { id: String, pid: u32 },
    #[error("transfer {id} is {} and cannot be {action}", .state.as_str())]
    InvalidState { id: String, state: TransferState, action: &'static str },
    #[error("the gateway's grant is inconsistent: {0}")]
    InconsistentGrant(String),
    #[error("the journal's record of transfer {id} is incomplete: {detail}")]
    IncompleteRecord { id: String, detail: String },
    /// Paused or cancelled while work was under way; not a failure.
    #[error("the transfer was interrupted by a pause or a cancel")]
    Interrupted,
    #[error("a transfer task stopped unexpectedly: {0}")]
    Task(String),
}

/// What the user asked a running transfer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Run,
    Pause,
    Cancel,
}

/// State shared by the tasks of one running transfer.
pub(crate) struct TransferContext {
    pub(crate) id: String,
    pub(crate) journal: Arc<Journal>,
    pub(crate) grants: GrantClient,
    pub(crate) store: reqwest::Client,
    pub(crate) options: EngineOptions,
    rate: Arc<rate::RateLimiter>,
    /// The engine's budget of buffered bytes, shared by all its transfers.
    pub(crate) budget: Arc<buffers::BufferBudget>,
    control: watch::Receiver<Control>,
    state: Mutex<TransferState>,
    /// Bytes sent or received so far, including those of parts in flight.
    pub(crate) bytes_done: AtomicU64,
    pub(crate) bytes_total: AtomicU64,
}

impl TransferContext {
    pub(crate) fn new(
        id: String,
        journal: Arc<Journal>,
        grants: GrantClient,
        store: reqwest::Client,
        options: EngineOptions,
        rate: Arc<rate::RateLimiter>,
        budget: Arc<buffers::BufferBudget>,
        control: watch::Receiver<Control>,
        state: TransferState,
    ) -> Self {
        Self {
            id,
            journal,
            grants,
            store,
            options,
            rate,
            budget,
            control,
            state: Mutex::new(state),
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> TransferState {
        *self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new state in the journal, then in memory; does nothing when
    /// the state is unchanged.
    pub(crate) fn set_state(&self, state: TransferState) -> Result<(), TransferError> {
        let mut current = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current == state {
            return Ok(());
        }
        self.journal.set_state(&self.id, state, None)?;
        tracing::info!(transfer = %self.id, from = current.as_str(), to = state.as_str(), "transfer state changed");
        *current = state;
        Ok(())
    }

    /// Returns to `running` after a request succeeded while the transfer was
    /// waiting for the network.
    pub(crate) fn network_ok(&self) -> Result<(), TransferError> {
        if self.state() == TransferState::WaitingForNetwork {
            self.set_state(TransferState::Running)?;
        }
        Ok(())
    }

    pub(crate) fn control(&self) -> Control {
        *self.control.borrow()
    }

    pub(crate) fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn remove_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Waits until `bytes` fit under the engine's bandwidth cap. The wait
    /// counts as activity for the idle timeout, which measures a stalled
    /// connection, not a capped one.
    pub(crate) async fn throttle(&self, bytes: u64, activity: &retry::Activity) {
        self.rate.acquire(bytes, || activity.touch()).await;
    }

    /// Resolves once the transfer is cancelled.
    pub(crate) async fn cancelled(&self) {
        let mut control = self.control.clone();
        if control.wait_for(|control| *control == Control::Cancel).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the transfer is paused or cancelled.
    pub(crate) async fn interrupted(&self) {
        let mut control = self.control.clone();
        if control.wait_for(|control| *control != Control::Run).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps before a retry; a pause or cancel ends the wait with
    /// [`TransferError::Interrupted`].
    pub(crate) async fn sleep(&self, delay: Duration) -> Result<(), TransferError> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.interrupted() => Err(TransferError::Interrupted),
        }
    }

    /// Calls the gateway, retrying transport failures, 5xx and 429 (see
    /// [`retry`](self::retry) for why each call is safe to repeat).
    pub(crate) async fn gateway<T, F, Fut>(&self, mut call: F) -> Result<T, TransferError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GrantError>>,
    {
        let mut attempt = 0;
        loop {
            let error = match call().await {
                Ok(value) => {
                    self.network_ok()?;
                    return Ok(value);
                }
                Err(error) if error.is_retryable() => error,
                Err(error) => return Err(error.into()),
            };

            attempt += 1;
            let network = error.status().is_none();
            if !network && attempt >= self.options.retry.max_attempts {
                return Err(error.into());
            }
            if network {
                self.set_state(TransferState::WaitingForNetwork)?;
            }
            let delay = self.options.retry.delay(attempt, error.retry_after());
            tracing::warn!(
                transfer = %self.id,
                status = error.status(),
                delay_ms = delay.as_millis() as u64,
                attempt,
                "grant API request failed, retrying: {}",
                crate::error_chain(&error)
            );
            self.sleep(delay).await?;
        }
    }
}

/// Guesses a MIME type from a file name's extension.
pub(crate) fn guess_media_type(file_name: &str) -> &'static str {
    let extension = file_name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("zip") => "application/zip",
        Some("dcm") => "application/dicom",
        Some("pdf") => "application/pdf",
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        Some("gz" | "tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_is_guessed_from_extension() {
        assert_eq!(guess_media_type("study.ZIP"), "application/zip");
        assert_eq!(guess_media_type("image.dcm"), "application/dicom");
        assert_eq!(guess_media_type("noextension"), "application/octet-stream");
    }
}
