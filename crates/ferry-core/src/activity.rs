//! Recording a profile's sign-ins and transfers in its signed transfer log
//! ([`crate::log`]), the same way from the desktop app and the CLI.
//!
//! The log is `{data_dir}/profiles/{name}/transfer-log.ndjson` and its key
//! the credential store entry `{device}/profile/{name}/transfer-log-key`
//! (see [`crate::profile`]). [`ProfileLog::checkpoint`] sends the head to the
//! gateway for countersigning and records the result. Callers send one at
//! every sign-in (so the first goes with a device's first sign-in), after
//! each completed transfer and when the user verifies the log.

use std::sync::Arc;

use crate::grant::{GrantClient, GrantError};
use crate::journal::{self, TransferRecord};
use crate::log::{
    Actor, Checkpoint, CheckpointError, Direction, Event, Head, LogError, NewEntry, OpenOptions,
    TransferLog,
};
use crate::login::SessionInfo;
use crate::profile::{FerryDirs, ProfileError, ProfileName};
use crate::secrets::SecretStore;
use crate::transfer::{Engine, TransferError, TransferHandle, TransferOutcome};

/// Failure to open a profile's log or to checkpoint it.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("sending the transfer log's head to the gateway failed: {0}")]
    Gateway(#[from] GrantError),
    #[error("the gateway's countersigned checkpoint was rejected: {0}")]
    Countersignature(#[from] CheckpointError),
}

/// An open transfer log of one profile and who acts in it.
#[derive(Debug)]
pub struct ProfileLog {
    log: TransferLog,
    actor: Option<Actor>,
}

impl ProfileLog {
    /// Opens the profile's log, creating it on first use. This blocks on
    /// file and credential store access; in async code call it from
    /// `spawn_blocking`.
    pub fn open(
        dirs: &FerryDirs,
        name: &ProfileName,
        store: Arc<dyn SecretStore>,
        session: Option<&SessionInfo>,
    ) -> Result<ProfileLog, ActivityError> {
        let key_entry = dirs.transfer_log_key_entry(name)?;
        adopt_legacy_key(store.as_ref(), name, &key_entry)?;
        let options = OpenOptions::new(dirs.device_id()?, key_entry);
        let log = TransferLog::open(dirs.transfer_log_path(name), store, options)?;
        Ok(ProfileLog { log, actor: session.map(actor_of) })
    }

    pub fn log(&self) -> &TransferLog {
        &self.log
    }

    /// Appends an entry; an entry without an actor gets this log's actor.
    pub fn append(&mut self, mut entry: NewEntry) -> Result<Head, LogError> {
        entry.actor = entry.actor.or_else(|| self.actor.clone());
        self.log.append(entry)
    }

    /// Seals the head, sends it to the gateway's `POST /checkpoints`, checks
    /// the countersignature with the gateway's `GET /keys` and appends the
    /// checkpoint to the log.
    pub async fn checkpoint(&mut self, grants: &GrantClient) -> Result<Checkpoint, ActivityError> {
        let request = self.log.checkpoint_request()?;
        let countersigned = grants.checkpoint(&request.to_body()).await?;
        let keys = grants.keys().await?;
        let checkpoint = Checkpoint::from_countersigned(&request, countersigned, &keys)?;
        self.log.record_checkpoint(checkpoint.clone())?;
        tracing::info!(
            log_id = %checkpoint.log_id,
            head_seq = checkpoint.head_seq,
            "the gateway countersigned the transfer log's head"
        );
        Ok(checkpoint)
    }

    /// Seals the head and closes the log.
    pub fn close(self) -> Result<Head, LogError> {
        self.log.close()
    }
}

/// Moves the log key that earlier desktop app versions kept under
/// `profile/{name}/transfer-log-key` (and its pending next key) to the
/// device-scoped entry, when only the old entry exists. Without this, the
/// log those versions wrote could not be opened, because its key would not
/// be found.
fn adopt_legacy_key(store: &dyn SecretStore, name: &ProfileName, key_entry: &str) -> Result<(), LogError> {
    let legacy_entry = format!("profile/{name}/transfer-log-key");
    if legacy_entry == key_entry || store.get(key_entry)?.is_some() {
        return Ok(());
    }
    let Some(key) = store.get(&legacy_entry)? else {
        return Ok(());
    };

    store.set(key_entry, &key)?;
    let legacy_next = format!("{legacy_entry}/next");
    if let Some(next) = store.get(&legacy_next)? {
        store.set(&format!("{key_entry}/next"), &next)?;
        store.delete(&legacy_next)?;
    }
    store.delete(&legacy_entry)?;
    tracing::info!(profile = %name, entry = key_entry, "moved the transfer log key to its device-scoped entry");
    Ok(())
}

/// Returns the actor of a session: its `fhirUser`, which is also the subject
/// the client records, or the profile when the server sent no `fhirUser`.
pub fn actor_of(info: &SessionInfo) -> Actor {
    Actor {
        fhir_user: info.fhir_user.clone(),
        subject: info.fhir_user.clone().unwrap_or_else(|| format!("profile:{}", info.profile)),
    }
}

/// Returns `Patient/{id}` for a bare id, and a reference unchanged.
pub fn patient_reference(patient: &str) -> String {
    if patient.starts_with("Patient/") { patient.to_owned() } else { format!("Patient/{patient}") }
}

/// Builds an entry about one transfer from its journal record.
pub fn transfer_entry(event: Event, record: &TransferRecord) -> NewEntry {
    let mut entry = NewEntry::new(event);
    entry.direction = Some(match record.direction {
        journal::Direction::Upload => Direction::Upload,
        journal::Direction::Download => Direction::Download,
    });
    entry.patient = record.patient.as_deref().map(patient_reference);
    entry.object = record.document_id.as_ref().map(|id| format!("DocumentReference/{id}"));
    entry.file_name = Some(record.file_name.clone());
    entry.size = record.size;
    entry.sha256 = record.sha256.clone();
    entry.correlation_id = record.correlation_id.clone();
    entry
}

/// Builds the entries that record how a transfer ended: completed and verified
/// (with the gateway's receipt for an upload), paused, cancelled, or failed
/// with its reason.
pub fn outcome_entries(
    record: &TransferRecord,
    result: &Result<TransferOutcome, Arc<TransferError>>,
) -> Vec<NewEntry> {
    match result {
        Ok(TransferOutcome::Uploaded { document_id, receipt }) => {
            let mut completed = transfer_entry(Event::Completed, record);
            completed.object = Some(format!("DocumentReference/{document_id}"));
            completed.sha256 = Some(receipt.receipt.sha256.clone());
            completed.size = Some(receipt.receipt.size);
            completed.correlation_id = Some(receipt.receipt.correlation_id.clone());
            completed.receipt = serde_json::to_value(receipt).ok();
            let mut verified = completed.clone();
            verified.event = Event::Verified;
            verified.receipt = None;
            vec![completed, verified]
        }
        Ok(TransferOutcome::Downloaded { size, sha256, .. }) => {
            let mut completed = transfer_entry(Event::Completed, record);
            completed.size = Some(*size);
            completed.sha256 = Some(sha256.clone());
            let mut verified = completed.clone();
            verified.event = Event::Verified;
            vec![completed, verified]
        }
        Ok(TransferOutcome::Paused) => vec![transfer_entry(Event::Paused, record)],
        Ok(TransferOutcome::Cancelled) => vec![transfer_entry(Event::Cancelled, record)],
        Err(error) => vec![transfer_entry(Event::Failed { reason: crate::error_chain(error.as_ref()) }, record)],
    }
}

/// Waits until the upload's grant has been issued and returns its
/// correlation id, or `None` when the transfer ends without one (the grant
/// request failed). Entries written before the grant exists, such as a
/// confirmed patient mismatch, take the id from here so that an auditor can
/// join them to the gateway's audit records. The journal is read again at
/// each progress report, because the grant's id is stored there before the
/// first part is sent.
pub async fn grant_correlation_id(engine: &Engine, handle: &TransferHandle) -> Option<String> {
    let recorded = || engine.get(handle.id()).ok().and_then(|record| record.correlation_id);
    let mut progress = handle.progress();
    loop {
        if let Some(correlation_id) = recorded() {
            return Some(correlation_id);
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = handle.wait() => break,
        }
    }
    recorded()
}

/// Returns whether a transfer completed, after which the client checkpoints.
pub fn is_completed(result: &Result<TransferOutcome, Arc<TransferError>>) -> bool {
    matches!(result, Ok(TransferOutcome::Uploaded { .. } | TransferOutcome::Downloaded { .. }))
}

