//! What the app holds while it runs: its folders and settings, the chosen
//! profile and patient, and the connection of the signed-in profile (its
//! session, transfer engine and signed transfer log).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_core::grant::GrantClient;
use ferry_core::log::{Actor, NewEntry, OpenOptions, TransferLog};
use ferry_core::login::{ProfileContext, Session, SessionInfo, SignInKind};
use ferry_core::profile::{FerryDirs, Profile, Profiles};
use ferry_core::transfer::{Engine, EngineOptions, Progress};
use serde::Serialize;

use crate::error::{CommandError, CommandResult};
use crate::fhir::PatientView;
use crate::settings::Settings;

/// File name of a profile's transfer journal, shared with the `ferry` CLI.
pub const JOURNAL_FILE: &str = "journal.sqlite";
/// File name of a profile's signed transfer log.
pub const LOG_FILE: &str = "transfer-log.ndjson";

/// Locks a mutex, going on with the data of a poisoned one: every value
/// behind these mutexes is replaced whole, so none is left half-written.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a transfer ended, as the Transfers and Download screens show it.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub outcome: &'static str,
    /// The downloaded file's path or the uploaded document's reference.
    pub detail: Option<String>,
    pub error: Option<String>,
}

/// State shared by every command.
pub struct AppState {
    pub dirs: FerryDirs,
    pub settings: Mutex<Settings>,
    /// Name of the profile the Sign-in screen acts on.
    pub profile: Mutex<String>,
    pub connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    pub patient: Mutex<Option<PatientView>>,
    /// The last progress report of each transfer followed since start-up.
    pub progress: Mutex<HashMap<String, Progress>>,
    pub finished: Mutex<HashMap<String, Finished>>,
}

impl AppState {
    /// Reads Ferry's folders (`FERRY_HOME` or the platform's) and the settings.
    pub fn load() -> CommandResult<AppState> {
        let dirs = FerryDirs::from_env()?;
        let settings = Settings::load(&dirs.config_dir);
        let profiles = Profiles::load(&dirs)?;
        let profile = match settings.profile.as_deref().map(|name| profiles.get(name)) {
            Some(Ok(profile)) => profile,
            _ => profiles.default_profile()?,
        };
        Ok(AppState {
            dirs,
            settings: Mutex::new(settings),
            profile: Mutex::new(profile.name.to_string()),
            connection: tokio::sync::Mutex::new(None),
            patient: Mutex::new(None),
            progress: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
        })
    }

    pub fn selected_profile(&self) -> CommandResult<Profile> {
        let name = lock(&self.profile).clone();
        Ok(Profiles::load(&self.dirs)?.get(&name)?)
    }

    /// Builds the sign-in context of the selected profile. Opening the
    /// credential store talks to D-Bus, so it runs on a blocking thread.
    pub async fn profile_context(&self) -> CommandResult<ProfileContext> {
        let profile = self.selected_profile()?;
        let store = tokio::task::spawn_blocking(ferry_core::credentials::open_credential_store)
            .await
            .map_err(|error| CommandError::new(format!("opening the credential store stopped: {error}")))??;
        let http = ferry_core::http::build_client(&ferry_core::http::HttpOptions::default())?;
        Ok(ProfileContext { profile, dirs: self.dirs.clone(), store: Arc::new(store), http })
    }

    /// Returns the connection of the signed-in profile.
    pub async fn connection(&self) -> CommandResult<Arc<Connection>> {
        self.connection
            .lock()
            .await
            .clone()
            .ok_or_else(|| CommandError::new("not signed in; sign in on the Sign-in screen first"))
    }

    /// Returns the chosen patient: the one picked on the Patient screen, else
    /// the patient context of a clinician sign-in.
    pub fn chosen_patient(&self) -> CommandResult<PatientView> {
        lock(&self.patient)
            .clone()
            .ok_or_else(|| CommandError::new("no patient chosen; choose one on the Patient screen first"))
    }

    pub fn engine_options(&self) -> EngineOptions {
        let settings = lock(&self.settings);
        EngineOptions {
            parts_in_flight: settings.parts_in_flight,
            ranges_in_flight: settings.parts_in_flight,
            ..EngineOptions::default()
        }
    }
}

/// The signed-in profile: session, transfer engine and signed log.
pub struct Connection {
    pub context: ProfileContext,
    pub session: Session,
    pub engine: Engine,
    pub log: Arc<Mutex<TransferLog>>,
}

impl Connection {
    /// Opens the profile's journal (`journal.sqlite`, shared with the CLI)
    /// and transfer log in its data folder.
    pub async fn open(session: Session, options: EngineOptions) -> CommandResult<Connection> {
        let context = session.context().clone();
        let data_dir = context.dirs.profile_data_dir(&context.profile.name);
        std::fs::create_dir_all(&data_dir)
            .map_err(|error| CommandError::new(format!("failed to create {}: {error}", data_dir.display())))?;

        let grants = GrantClient::new(session.grant_api()?, context.http.clone(), Arc::new(session.clone()));
        let engine = Engine::new(data_dir.join(JOURNAL_FILE), grants, options)?;

        let log_path = data_dir.join(LOG_FILE);
        let store = context.store.clone();
        let log_options = OpenOptions::new(device_name(), format!("profile/{}/transfer-log-key", context.profile.name));
        let log = tokio::task::spawn_blocking(move || TransferLog::open(log_path, store, log_options))
            .await
            .map_err(|error| CommandError::new(format!("opening the transfer log stopped: {error}")))??;

        Ok(Connection { context, session, engine, log: Arc::new(Mutex::new(log)) })
    }

    /// Returns a connection with the same session and log and a new engine
    /// with `options`. Transfers that the old engine runs stop where they are.
    pub fn with_engine_options(&self, options: EngineOptions) -> CommandResult<Connection> {
        let data_dir = self.context.dirs.profile_data_dir(&self.context.profile.name);
        let grants = GrantClient::new(self.session.grant_api()?, self.context.http.clone(), Arc::new(self.session.clone()));
        let engine = Engine::new(data_dir.join(JOURNAL_FILE), grants, options)?;
        Ok(Connection {
            context: self.context.clone(),
            session: self.session.clone(),
            engine,
            log: self.log.clone(),
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.context.dirs.profile_data_dir(&self.context.profile.name).join(LOG_FILE)
    }

    /// The signed-in user as the log records it.
    pub fn actor(&self) -> Actor {
        let info = self.session.info();
        let subject = info
            .fhir_user
            .as_deref()
            .and_then(|reference| reference.rsplit('/').next())
            .unwrap_or("unknown")
            .to_owned();
        Actor { fhir_user: info.fhir_user, subject }
    }

    /// Appends an entry to the signed log on a blocking thread. A failure is
    /// logged, not returned: the transfer it describes has already happened.
    pub async fn append_log(&self, mut entry: NewEntry) {
        if entry.actor.is_none() {
            entry.actor = Some(self.actor());
        }
        let log = self.log.clone();
        let event = entry.event.name();
        let result = tokio::task::spawn_blocking(move || lock(&log).append(entry)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(event, error = %crate::error::error_chain(&error), "appending to the transfer log failed"),
            Err(error) => tracing::error!(event, %error, "the transfer log append stopped"),
        }
    }
}

/// Name of this workstation in log entries: the host name, else `workstation`.
fn device_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "workstation".to_owned())
}

/// Who is signed in, as the UI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub profile: String,
    pub fhir_base_url: String,
    pub fhir_user: Option<String>,
    pub kind: SignInKind,
    /// Patient in context of a clinician sign-in.
    pub patient: Option<String>,
    pub signed_in_at: String,
}

impl From<SessionInfo> for SessionView {
    fn from(info: SessionInfo) -> Self {
        Self {
            profile: info.profile,
            fhir_base_url: info.fhir_base_url.to_string(),
            fhir_user: info.fhir_user,
            kind: info.kind,
            patient: info.patient,
            signed_in_at: info.signed_in_at.to_string(),
        }
    }
}
