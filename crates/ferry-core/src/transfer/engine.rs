//! The facade over uploads, downloads and the journal that the CLI and the
//! desktop app use.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use ferry_api::UploadGrantRequest;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::buffers::BufferBudget;
use super::progress::{Progress, REPORT_INTERVAL, SpeedMeter};
use super::rate::RateLimiter;
use super::{
    Control, DownloadOptions, EngineOptions, TransferContext, TransferError, TransferOutcome, UploadOptions, download,
    guess_media_type, upload,
};
use crate::grant::{GrantClient, GrantError};
use crate::http::{HttpOptions, build_store_client};
use crate::journal::{Claimant, Direction, Journal, TransferRecord, TransferState};

/// How a transfer ended, shared by every handle of it.
pub type TransferResult = Result<TransferOutcome, Arc<TransferError>>;

/// A running transfer, as its caller follows it.
#[derive(Clone)]
pub struct TransferHandle {
    id: String,
    progress: watch::Receiver<Progress>,
    result: watch::Receiver<Option<TransferResult>>,
}

impl std::fmt::Debug for TransferHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferHandle").field("id", &self.id).finish()
    }
}

impl TransferHandle {
    /// The transfer's id in the journal.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Progress reports, at most 10 per second, plus every change of state.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits until the transfer ends: completed, paused, cancelled or failed.
    pub async fn wait(&self) -> TransferResult {
        let mut result = self.result.clone();
        match result.wait_for(Option::is_some).await {
            Ok(done) => done.clone().expect("wait_for returned a finished result"),
            Err(_) => Err(Arc::new(TransferError::Task("the engine stopped before the transfer ended".to_owned()))),
        }
    }
}

struct Running {
    control: watch::Sender<Control>,
    handle: TransferHandle,
    task: AbortHandle,
}

struct EngineInner {
    journal: Arc<Journal>,
    grants: GrantClient,
    store: reqwest::Client,
    options: EngineOptions,
    rate: Arc<RateLimiter>,
    budget: Arc<BufferBudget>,
    claimant: Claimant,
    running: Mutex<HashMap<String, Running>>,
}

impl Drop for EngineInner {
    /// Stops every transfer at its next await point, as a crash would; the
    /// journal lets a new engine resume them.
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for transfer in running.values() {
            transfer.task.abort();
        }
    }
}

/// The transfer engine: starts, follows, pauses, resumes and cancels the
/// transfers of one journal. Transfers run as Tokio tasks, so the methods
/// must be called inside a Tokio runtime. Dropping the engine stops its
/// transfers where they are; [`Engine::resume_all`] continues them later.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("journal", &self.inner.journal.path()).finish()
    }
}

impl Engine {
    /// Opens the journal at `journal_path` and creates an engine that asks
    /// `grants` for grants.
    pub fn new(journal_path: impl AsRef<Path>, grants: GrantClient, options: EngineOptions) -> Result<Self, TransferError> {
        let journal = Arc::new(Journal::open(journal_path)?);
        let store = match &options.store_client {
            Some(client) => client.clone(),
            // The store client follows no redirect, because a store that
            // redirects to another host must not receive a part's bytes. It reaches loopback stores without a proxy and others
            // through the environment's proxy, as every Ferry client does.
            None => {
                let http = HttpOptions { connect_timeout: options.connect_timeout, ..HttpOptions::default() };
                build_store_client(&http)
                    .map_err(|error| TransferError::Task(format!("building the store's HTTP client failed: {error}")))?
            }
        };
        Ok(Self {
            inner: Arc::new(EngineInner {
                journal,
                grants,
                store,
                rate: Arc::new(RateLimiter::new(options.rate_limit)),
                budget: BufferBudget::new(options.max_buffered_bytes),
                options,
                claimant: Claimant::current(),
                running: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Changes the bandwidth cap, in bytes per second (0 for none), of
    /// running and later transfers.
    pub fn set_rate_limit(&self, bytes_per_second: u64) {
        self.inner.rate.set_rate(bytes_per_second);
        tracing::info!(bytes_per_second, "bandwidth cap changed");
    }

    /// Returns the bytes the part buffers of this engine's transfers hold
    /// now. It stays within [`EngineOptions::max_buffered_bytes`] unless a
    /// single part is larger than that budget.
    pub fn buffered_bytes(&self) -> u64 {
        self.inner.budget.buffered()
    }

    /// Returns the most bytes the part buffers of this engine's transfers
    /// held at once, for tests and benchmarks of the memory bound.
    pub fn buffered_bytes_high_water(&self) -> u64 {
        self.inner.budget.high_water()
    }

    /// The bandwidth cap in bytes per second; 0 when there is none.
    pub fn rate_limit(&self) -> u64 {
        self.inner.rate.rate()
    }

    /// Records and starts the upload of the file at `path` for FHIR
    /// `Patient/{patient}`.
    pub async fn upload(&self, path: impl AsRef<Path>, patient: &str, options: UploadOptions) -> Result<TransferHandle, TransferError> {
        let path = std::path::absolute(path.as_ref()).unwrap_or_else(|_| path.as_ref().to_owned());
        let metadata = std::fs::metadata(&path).map_err(|source| TransferError::Io {
            stage: "reading the metadata of",
            path: path.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(TransferError::Io {
                stage: "uploading",
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let file_name = options
            .file_name
            .clone()
            .or_else(|| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "upload".to_owned());
        let media_type = options.media_type.clone().unwrap_or_else(|| guess_media_type(&file_name).to_owned());
        let request = UploadGrantRequest {
            file_name: file_name.clone(),
            size: metadata.len(),
            media_type: media_type.clone(),
            patient: patient.to_owned(),
            part_size: options.part_size.unwrap_or(self.inner.options.part_size),
            study: options.study.clone(),
            patient_mismatch_confirmation: options.patient_mismatch_confirmation.clone(),
        };

        let mut record = TransferRecord::new(new_transfer_id(), Direction::Upload, file_name);
        record.size = Some(metadata.len());
        record.source_path = Some(path);
        record.source_mtime_ns = upload::mtime_ns(&metadata);
        record.patient = Some(patient.to_owned());
        record.media_type = Some(media_type);
        record.upload_request = serde_json::to_string(&request).ok();
        self.inner.journal.insert(&record)?;
        self.start(&record.id)
    }

    /// Records and starts the download of FHIR `DocumentReference/{document_id}`
    /// into `destination_dir`.
    pub async fn download(
        &self,
        document_id: &str,
        destination_dir: impl AsRef<Path>,
        options: DownloadOptions,
    ) -> Result<TransferHandle, TransferError> {
        let directory = destination_dir.as_ref();
        let directory = std::path::absolute(directory).unwrap_or_else(|_| directory.to_owned());
        if !directory.is_dir() {
            return Err(TransferError::Io {
                stage: "downloading into",
                path: directory,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not an existing folder"),
            });
        }
        let mut record = TransferRecord::new(new_transfer_id(), Direction::Download, document_id.to_owned());
        record.document_id = Some(document_id.to_owned());
        record.destination_dir = Some(directory);
        record.existing_file = Some(options.existing_file.as_str().to_owned());
        self.inner.journal.insert(&record)?;
        self.start(&record.id)
    }

    /// Lists every transfer in the journal, oldest first.
    pub fn list(&self) -> Result<Vec<TransferRecord>, TransferError> {
        Ok(self.inner.journal.list()?)
    }

    pub fn get(&self, id: &str) -> Result<TransferRecord, TransferError> {
        Ok(self.inner.journal.get(id)?)
    }

    /// Returns a handle of a transfer this engine is running.
    pub fn handle(&self, id: &str) -> Option<TransferHandle> {
        self.running().get(id).map(|running| running.handle.clone())
    }

    /// Pauses a transfer. A running one stops after the parts in flight; a
    /// queued or interrupted one is marked `paused`.
    pub fn pause(&self, id: &str) -> Result<(), TransferError> {
        if let Some(running) = self.running().get(id) {
            running.control.send_replace(Control::Pause);
            return Ok(());
        }
        let record = self.inner.journal.get(id)?;
        if record.state.is_final() {
            return Err(TransferError::InvalidState { id: id.to_owned(), state: record.state, action: "paused" });
        }
        self.claim(id)?;
        self.inner.journal.set_state(id, TransferState::Paused, None)?;
        self.inner.journal.release(id, &self.inner.claimant)?;
        Ok(())
    }

    /// Starts a transfer again from where the journal says it stopped:
    /// paused, interrupted by a crash, or failed.
    pub fn resume(&self, id: &str) -> Result<TransferHandle, TransferError> {
        if let Some(handle) = self.handle(id) {
            return Ok(handle);
        }
        let record = self.inner.journal.get(id)?;
        if matches!(record.state, TransferState::Completed | TransferState::Cancelled) {
            return Err(TransferError::InvalidState { id: id.to_owned(), state: record.state, action: "resumed" });
        }
        self.start(id)
    }

    /// Cancels a transfer: a running one stops at once; an upload is aborted
    /// at the gateway and a download's temporary file deleted.
    pub async fn cancel(&self, id: &str) -> Result<(), TransferError> {
        let handle = {
            let running = self.running();
            running.get(id).map(|running| {
                running.control.send_replace(Control::Cancel);
                running.handle.clone()
            })
        };
        if let Some(handle) = handle {
            let _ = handle.wait().await;
            return Ok(());
        }

        let record = self.inner.journal.get(id)?;
        if record.state.is_final() {
            return Err(TransferError::InvalidState { id: id.to_owned(), state: record.state, action: "cancelled" });
        }
        self.claim(id)?;
        cleanup_cancelled(&self.inner.grants, &record).await;
        self.inner.journal.set_state(id, TransferState::Cancelled, None)?;
        self.inner.journal.release(id, &self.inner.claimant)?;
        Ok(())
    }

    /// Resumes every transfer that a crash or a lost network interrupted:
    /// those `queued`, `running`, `waiting_for_network` or `verifying` and
    /// not run by another live process. Paused ones stay paused.
    pub fn resume_all(&self) -> Result<Vec<TransferHandle>, TransferError> {
        let mut handles = Vec::new();
        for record in self.inner.journal.list()? {
            let interrupted = matches!(
                record.state,
                TransferState::Queued | TransferState::Running | TransferState::WaitingForNetwork | TransferState::Verifying
            );
            if !interrupted {
                continue;
            }
            match self.resume(&record.id) {
                Ok(handle) => handles.push(handle),
                Err(TransferError::ClaimedElsewhere { id, pid }) => {
                    tracing::info!(transfer = %id, pid, "transfer is run by another process; leaving it there");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(handles)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim(&self, id: &str) -> Result<(), TransferError> {
        match self.inner.journal.claim(id, &self.inner.claimant)? {
            Ok(()) => Ok(()),
            Err(holder) => Err(TransferError::ClaimedElsewhere { id: id.to_owned(), pid: holder.pid }),
        }
    }

    /// Claims the transfer and runs it in a new task.
    fn start(&self, id: &str) -> Result<TransferHandle, TransferError> {
        let mut running = self.running();
        if let Some(existing) = running.get(id) {
            return Ok(existing.handle.clone());
        }
        self.claim(id)?;
        let record = self.inner.journal.get(id)?;

        let (control_sender, control) = watch::channel(Control::Run);
        let initial = Progress::initial(id, record.direction, &record.file_name, record.state);
        let (progress_sender, progress) = watch::channel(initial);
        let (result_sender, result) = watch::channel(None);
        let context = Arc::new(TransferContext::new(
            id.to_owned(),
            self.inner.journal.clone(),
            self.inner.grants.clone(),
            self.inner.store.clone(),
            self.inner.options.clone(),
            self.inner.rate.clone(),
            self.inner.budget.clone(),
            control,
            record.state,
        ));
        let span = tracing::info_span!("transfer", id = %id, direction = record.direction.as_str());
        let task = tokio::spawn(
            drive(Arc::downgrade(&self.inner), context, record, progress_sender, result_sender).instrument(span),
        );

        let handle = TransferHandle { id: id.to_owned(), progress, result };
        running.insert(
            id.to_owned(),
            Running { control: control_sender, handle: handle.clone(), task: task.abort_handle() },
        );
        Ok(handle)
    }
}

fn new_transfer_id() -> String {
    format!("tr_{}", uuid::Uuid::new_v4().simple())
}

/// Runs one transfer to its end, publishing progress, then records the end
/// in the journal and releases the claim.
async fn drive(
    engine: Weak<EngineInner>,
    context: Arc<TransferContext>,
    record: TransferRecord,
    progress: watch::Sender<Progress>,
    result: watch::Sender<Option<TransferResult>>,
) {
    let work = async {
        match record.direction {
            Direction::Upload => upload::run(context.clone()).await,
            Direction::Download => download::run(context.clone()).await,
        }
    };
    tokio::pin!(work);
    let mut meter = SpeedMeter::new();
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = ticker.tick() => {
                let report = meter.report(&context, &progress.borrow());
                progress.send_if_modified(|current| {
                    let changed = *current != report;
                    *current = report;
                    changed
                });
            }
        }
    };

    let outcome = settle(&context, &record, outcome).await;
    let mut report = meter.report(&context, &progress.borrow());
    report.state = context.journal.get(&context.id).map(|record| record.state).unwrap_or(report.state);
    report.eta = None;
    if let Err(error) = &outcome {
        report.error = Some(error.to_string());
    }
    progress.send_replace(report);

    if let Some(engine) = engine.upgrade() {
        let _ = engine.journal.release(&context.id, &engine.claimant);
        engine.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&context.id);
    }
    result.send_replace(Some(outcome));
}

/// Turns a run's result into the journal's final state for this run.
async fn settle(
    context: &TransferContext,
    record: &TransferRecord,
    outcome: Result<TransferOutcome, TransferError>,
) -> TransferResult {
    let interrupted = matches!(outcome, Err(TransferError::Interrupted));
    if interrupted || matches!(outcome, Ok(TransferOutcome::Paused | TransferOutcome::Cancelled)) {
        return match context.control() {
            Control::Cancel => {
                let record = context.journal.get(&context.id).unwrap_or_else(|_| record.clone());
                cleanup_cancelled(&context.grants, &record).await;
                context.set_state(TransferState::Cancelled).map_err(Arc::new)?;
                tracing::info!(transfer = %context.id, "transfer cancelled");
                Ok(TransferOutcome::Cancelled)
            }
            Control::Pause | Control::Run => {
                context.set_state(TransferState::Paused).map_err(Arc::new)?;
                tracing::info!(transfer = %context.id, "transfer paused");
                Ok(TransferOutcome::Paused)
            }
        };
    }

    match outcome {
        Ok(outcome) => Ok(outcome),
        // The server rejected the refresh token: the transfer waits for the
        // user to sign in again, and `ferry resume` or the app continues it
        // from the parts already confirmed.
        Err(error) if needs_sign_in(&error) => {
            tracing::warn!(transfer = %context.id, "transfer paused until the user signs in again: {error}");
            let message = error.to_string();
            if let Err(journal_error) = context.journal.set_state(&context.id, TransferState::Paused, Some(&message)) {
                tracing::error!(transfer = %context.id, "recording the pause failed: {journal_error}");
            }
            Err(Arc::new(error))
        }
        Err(error) => {
            tracing::error!(transfer = %context.id, "transfer failed: {error}");
            let message = error.to_string();
            if let Err(journal_error) = context.journal.set_state(&context.id, TransferState::Failed, Some(&message)) {
                tracing::error!(transfer = %context.id, "recording the failure failed: {journal_error}");
            }
            Err(Arc::new(error))
        }
    }
}

/// Returns whether `error` means the stored sign-in is no longer valid.
fn needs_sign_in(error: &TransferError) -> bool {
    matches!(error, TransferError::Grant(GrantError::AccessToken { source, .. }) if source.sign_in_required)
}

/// Aborts a cancelled upload at the gateway (a few attempts; the gateway
/// expires it anyway) or deletes a cancelled download's temporary file.
async fn cleanup_cancelled(grants: &GrantClient, record: &TransferRecord) {
    match record.direction {
        Direction::Download => download::discard(record),
        Direction::Upload => {
            let Some(upload_id) = &record.upload_id else { return };
            for attempt in 1..=3 {
                match grants.abort(upload_id).await {
                    Ok(()) => return,
                    Err(error) if error.is_retryable() && attempt < 3 => {
                        tracing::warn!(%upload_id, attempt, "aborting the upload failed, retrying: {error}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(error) => {
                        tracing::warn!(%upload_id, "aborting the upload failed; the gateway deletes it when it expires: {error}");
                        return;
                    }
                }
            }
        }
    }
}
