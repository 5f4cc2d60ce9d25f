//! What the app holds while it runs: its folders and settings, the chosen
//! profile and patient, and the connection of the signed-in profile (its
//! session, transfer engine and signed transfer log).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_core::activity::ProfileLog;
use ferry_core::fhir::PatientSummary;
use ferry_core::grant::GrantClient;
use ferry_core::log::{Event, NewEntry};
use ferry_core::login::{ProfileContext, Session, SessionInfo, SignInKind};
use ferry_core::profile::{FerryDirs, Profile, Profiles};
use ferry_core::transfer::{Engine, EngineOptions, Progress};
use serde::Serialize;

use crate::error::{CommandError, CommandResult};
use crate::settings::Settings;

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
    pub patient: Mutex<Option<PatientSummary>>,
    /// The last progress report of each transfer followed since start-up.
    pub progress: Mutex<HashMap<String, Progress>>,
    pub finished: Mutex<HashMap<String, Finished>>,
    /// Error that stopped the stored sign-in from resuming at start-up,
    /// kept until the next sign-in succeeds. The window reads it when it has loaded, so an
    /// error raised before the window listens for events is not lost.
    pub restore_error: Mutex<Option<String>>,
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
            restore_error: Mutex::new(None),
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
    pub fn chosen_patient(&self) -> CommandResult<PatientSummary> {
        lock(&self.patient)
            .clone()
            .ok_or_else(|| CommandError::new("no patient chosen; choose one on the Patient screen first"))
    }

    pub fn engine_options(&self) -> EngineOptions {
        let settings = lock(&self.settings);
        EngineOptions {
            parts_in_flight: settings.parts_in_flight,
            ranges_in_flight: settings.parts_in_flight,
            rate_limit: settings.bandwidth_cap_kib.map_or(0, |kib| kib.saturating_mul(1024)),
            ..EngineOptions::default()
        }
    }
}

/// The signed-in profile: session, transfer engine and signed log.
pub struct Connection {
    pub context: ProfileContext,
    pub session: Session,
    pub engine: Engine,
    /// The profile's signed log, the same file and key as the `ferry` CLI's
    /// (see [`ProfileLog`]). Its appends lock the file, so the app and the
    /// CLI may append at the same time.
    pub log: Arc<tokio::sync::Mutex<ProfileLog>>,
}

impl Connection {
    /// Opens the profile's journal and signed transfer log, the files that
    /// the `ferry` CLI uses for the same profile.
    pub async fn open(session: Session, options: EngineOptions) -> CommandResult<Connection> {
        let context = session.context().clone();
        let engine = open_engine(&context, &session, options)?;

        let (dirs, name, store, info) =
            (context.dirs.clone(), context.profile.name.clone(), context.store.clone(), session.info());
        let log = tokio::task::spawn_blocking(move || ProfileLog::open(&dirs, &name, store, Some(&info)))
            .await
            .map_err(|error| CommandError::new(format!("opening the transfer log stopped: {error}")))?
            .map_err(|error| CommandError::from_chain(&error))?;

        Ok(Connection { context, session, engine, log: Arc::new(tokio::sync::Mutex::new(log)) })
    }

    /// Returns a connection with the same session and log and a new engine
    /// with `options`. Transfers that the old engine runs stop where they are.
    pub fn with_engine_options(&self, options: EngineOptions) -> CommandResult<Connection> {
        Ok(Connection {
            context: self.context.clone(),
            session: self.session.clone(),
            engine: open_engine(&self.context, &self.session, options)?,
            log: self.log.clone(),
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.context.dirs.transfer_log_path(&self.context.profile.name)
    }

    /// Returns the folder that study folders are packed into before their upload,
    /// the same folder as the `ferry` CLI's (see [`ferry_core::study::staging`]).
    pub fn staging_dir(&self) -> PathBuf {
        self.context.dirs.profile_data_dir(&self.context.profile.name).join("staging")
    }

    /// Appends an entry to the signed log on a blocking thread; an entry
    /// without an actor gets the signed-in user. After a `completed` entry
    /// the head is checkpointed at the gateway. A failure is logged, not
    /// returned: the transfer it describes has already happened.
    pub async fn append_log(&self, entry: NewEntry) {
        let log = self.log.clone();
        let event = entry.event.name();
        let completed = matches!(entry.event, Event::Completed);
        let result = tokio::task::spawn_blocking(move || log.blocking_lock().append(entry)).await;
        match result {
            Ok(Ok(_)) if completed => self.checkpoint_log().await,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(event, error = %crate::error::error_chain(&error), "appending to the transfer log failed"),
            Err(error) => tracing::error!(event, %error, "the transfer log append stopped"),
        }
    }

    /// Sends the log's head to the gateway for countersigning and records
    /// the checkpoint, as the CLI does at sign-in, after a completed transfer
    /// and when the log is verified. A failure is logged, not returned: the
    /// next checkpoint covers the same entries.
    pub async fn checkpoint_log(&self) {
        let grants = match self.session.grant_api() {
            Ok(grant_api) => GrantClient::new(grant_api, self.context.http.clone(), Arc::new(self.session.clone())),
            Err(error) => {
                tracing::warn!(error = %crate::error::error_chain(&error), "the transfer log was not checkpointed");
                return;
            }
        };
        if let Err(error) = self.log.lock().await.checkpoint(&grants).await {
            tracing::warn!(error = %crate::error::error_chain(&error), "the gateway did not countersign the transfer log's head");
        }
    }
}

/// Builds the transfer engine of a session over the profile's journal.
fn open_engine(context: &ProfileContext, session: &Session, options: EngineOptions) -> CommandResult<Engine> {
    let grants = GrantClient::new(session.grant_api()?, context.http.clone(), Arc::new(session.clone()));
    context.dirs.create_profile_data_dir(&context.profile.name).map_err(|error| {
        CommandError::new(format!(
            "failed to create the profile's data folder in {}: {error}",
            context.dirs.data_dir.display()
        ))
    })?;
    Ok(Engine::new(context.dirs.journal_path(&context.profile.name), grants, options)?)
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
