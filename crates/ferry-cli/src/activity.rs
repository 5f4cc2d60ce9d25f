//! Writing sign-ins and transfers into the profile's signed transfer log
//! (`ferry_core::log`).
//!
//! The log lives at `{data_dir}/profiles/{name}/transfer-log.ndjson`; its
//! signing key is the credential store entry
//! `profile/{name}/transfer-log-key`. A log that cannot be opened or
//! appended to is reported as a warning and never fails the transfer it
//! describes, because the bytes have already moved by then.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::log::{Actor, Direction, Event, NewEntry, OpenOptions, TransferLog};
use ferry_core::login::{ProfileContext, SessionInfo};
use ferry_core::profile::{FerryDirs, ProfileName};
use ferry_core::secrets::SecretStore;

use crate::exit::error_chain;
use crate::output::Output;

/// File name of a profile's transfer log in its data folder.
pub const LOG_FILE: &str = "transfer-log.ndjson";

/// Returns `{data_dir}/profiles/{name}/transfer-log.ndjson`.
pub fn log_path(dirs: &FerryDirs, name: &ProfileName) -> PathBuf {
    dirs.profile_data_dir(name).join(LOG_FILE)
}

/// Credential store entry of the log's current epoch key.
pub fn key_entry(name: &ProfileName) -> String {
    format!("profile/{name}/transfer-log-key")
}

/// This workstation's id in log entries: a random id kept in
/// `{data_dir}/device-id`, created on first use.
pub fn device_id(dirs: &FerryDirs) -> String {
    let path = dirs.data_dir.join("device-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = format!("dev-{}", uuid_like());
    if let Err(error) =
        std::fs::create_dir_all(&dirs.data_dir).and_then(|()| std::fs::write(&path, &id))
    {
        tracing::warn!(path = %path.display(), %error, "failed to store the device id");
    }
    id
}

/// 16 random hex digits from the standard library's randomly seeded hasher.
fn uuid_like() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}

/// An open transfer log of one profile and who acts in it.
pub struct ActivityLog {
    log: TransferLog,
    actor: Option<Actor>,
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
        let path = log_path(dirs, name);
        let options = OpenOptions::new(device_id(dirs), key_entry(name));
        let opened =
            tokio::task::spawn_blocking(move || TransferLog::open(&path, store, options)).await;
        match opened {
            Ok(Ok(log)) => Some(ActivityLog {
                log,
                actor: session.map(actor_of),
            }),
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
        self.log.path()
    }

    /// Appends an entry with this log's actor; failures become a warning.
    pub fn append(&mut self, mut entry: NewEntry, output: Output) {
        entry.actor = entry.actor.or_else(|| self.actor.clone());
        if let Err(error) = self.log.append(entry) {
            output.status(format!(
                "warning: failed to append to the transfer log: {}",
                error_chain(&error)
            ));
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

fn actor_of(info: &SessionInfo) -> Actor {
    Actor {
        fhir_user: info.fhir_user.clone(),
        subject: info
            .fhir_user
            .clone()
            .unwrap_or_else(|| format!("profile:{}", info.profile)),
    }
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
    entry.patient = patient.map(|patient| {
        if patient.starts_with("Patient/") {
            patient.to_owned()
        } else {
            format!("Patient/{patient}")
        }
    });
    entry.object = object.map(str::to_owned);
    entry.file_name = file_name.map(str::to_owned);
    entry.size = size;
    entry.sha256 = sha256.map(str::to_owned);
    entry.correlation_id = correlation_id.map(str::to_owned);
    entry
}
