//! Writing sign-ins and transfers into the profile's signed transfer log
//! through `ferry_core::activity`, which names the files and entries (see
//! `ferry_core::profile`). A log that cannot be opened, appended to or
//! checkpointed is reported as a warning and never fails the transfer it
//! describes, because the bytes have already moved by then.

use std::path::Path;
use std::sync::Arc;

use ferry_core::activity::{self, ProfileLog};
use ferry_core::grant::GrantClient;
use ferry_core::journal::TransferRecord;
use ferry_core::log::{Checkpoint, Direction, Event, NewEntry};
use ferry_core::login::{ProfileContext, Session, SessionInfo};
use ferry_core::profile::{FerryDirs, ProfileName};
use ferry_core::secrets::SecretStore;
use ferry_core::transfer::{TransferError, TransferOutcome};

use crate::exit::error_chain;
use crate::output::Output;

/// An open transfer log of one profile.
pub struct ActivityLog {
    log: ProfileLog,
}

impl ActivityLog {
    /// Opens the profile's log with the given secret store. Returns `None`
    /// after printing a warning when the log cannot be opened.
    pub async fn open(
        dirs: &FerryDirs,
        name: &ProfileName,
        store: Arc<dyn SecretStore>,
        session: Option<&SessionInfo>,
        output: Output,
    ) -> Option<ActivityLog> {
        let (dirs, name, session) = (dirs.clone(), name.clone(), session.cloned());
        let opened = tokio::task::spawn_blocking(move || {
            ProfileLog::open(&dirs, &name, store, session.as_ref())
        })
        .await;
        match opened {
            Ok(Ok(log)) => Some(ActivityLog { log }),
            Ok(Err(error)) => {
                output.status(format!(
                    "warning: the transfer log was not written: {}",
                    error_chain(&error)
                ));
                None
            }
            Err(error) => {
                output.status(format!(
                    "warning: the transfer log was not written: {error}"
                ));
                None
            }
        }
    }

    /// Opens the log of a profile context.
    pub async fn for_context(
        context: &ProfileContext,
        session: Option<&SessionInfo>,
        output: Output,
    ) -> Option<ActivityLog> {
        ActivityLog::open(
            &context.dirs,
            &context.profile.name,
            context.store.clone(),
            session,
            output,
        )
        .await
    }

    pub fn path(&self) -> &Path {
        self.log.log().path()
    }

    /// Appends an entry with this log's actor; failures become a warning.
    pub fn append(&mut self, entry: NewEntry, output: Output) {
        if let Err(error) = self.log.append(entry) {
            output.status(format!(
                "warning: failed to append to the transfer log: {}",
                error_chain(&error)
            ));
        }
    }

    /// Appends the entries that record how a transfer ended.
    pub fn append_outcome(
        &mut self,
        record: &TransferRecord,
        result: &Result<TransferOutcome, Arc<TransferError>>,
        output: Output,
    ) {
        for entry in activity::outcome_entries(record, result) {
            self.append(entry, output);
        }
    }

    /// Has the gateway countersign the log's head and records the
    /// checkpoint; failures become a warning.
    pub async fn checkpoint(&mut self, grants: &GrantClient, output: Output) -> Option<Checkpoint> {
        match self.log.checkpoint(grants).await {
            Ok(checkpoint) => Some(checkpoint),
            Err(error) => {
                output.status(format!(
                    "warning: the transfer log's head was not countersigned by the gateway: {}",
                    error_chain(&error)
                ));
                None
            }
        }
    }

    /// Checkpoints with the grant API of a signed-in session.
    pub async fn checkpoint_with(
        &mut self,
        context: &ProfileContext,
        session: &Session,
        output: Output,
    ) -> Option<Checkpoint> {
        match grant_client(context, session) {
            Ok(grants) => self.checkpoint(&grants, output).await,
            Err(message) => {
                output.status(format!(
                    "warning: the transfer log's head was not countersigned by the gateway: {message}"
                ));
                None
            }
        }
    }

    /// Seals the log and closes it.
    pub fn close(self, output: Output) {
        if let Err(error) = self.log.close() {
            output.status(format!(
                "warning: failed to seal the transfer log: {}",
                error_chain(&error)
            ));
        }
    }
}

/// The grant API client of a signed-in session.
pub fn grant_client(context: &ProfileContext, session: &Session) -> Result<GrantClient, String> {
    let grant_api = session.grant_api().map_err(|error| error_chain(&error))?;
    Ok(GrantClient::new(
        grant_api,
        context.http.clone(),
        Arc::new(session.clone()),
    ))
}

/// An entry about one transfer.
#[allow(clippy::too_many_arguments)]
pub fn transfer_entry(
    event: Event,
    direction: Direction,
    patient: Option<&str>,
    object: Option<&str>,
    file_name: Option<&str>,
    size: Option<u64>,
    sha256: Option<&str>,
    correlation_id: Option<&str>,
) -> NewEntry {
    let mut entry = NewEntry::new(event);
    entry.direction = Some(direction);
    entry.patient = patient.map(activity::patient_reference);
    entry.object = object.map(str::to_owned);
    entry.file_name = file_name.map(str::to_owned);
    entry.size = size;
    entry.sha256 = sha256.map(str::to_owned);
    entry.correlation_id = correlation_id.map(str::to_owned);
    entry
}
