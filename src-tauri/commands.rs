//! Tauri commands: thin adapters from the UI to `ferry-core`. The UI passes
//! paths and ids, never file bytes; the core reads and sends the files.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::fhir::{self, DocumentSummary, PatientSummary};
use ferry_core::log::{Event, NewEntry, Record, VerifyOptions};
use ferry_core::login::{self, BrowserLauncher, LoginOptions, LoginPrompt, Session, SignInKind, SystemBrowser};
use ferry_core::profile::{Profile, Profiles};
use ferry_core::transfer::{DownloadOptions, TransferHandle};
use serde::Serialize;
use tauri::{AppHandle, Emitter, State};

use crate::error::{CommandError, CommandResult};
use crate::settings::Settings;
use crate::state::{AppState, Connection, SessionView, lock};
use crate::study::{self, Inspection};
use crate::transfers::{self, TransferView};

/// Event sent when the sign-in state changes, with a `SessionView` or null.
pub const SESSION_EVENT: &str = "session-changed";
/// Event with a sign-in message to show, such as the authorization URL.
pub const SIGN_IN_PROMPT_EVENT: &str = "sign-in-prompt";

#[derive(Debug, Serialize)]
pub struct ProfileView {
    pub name: String,
    pub fhir_base_url: String,
}

#[derive(Debug, Serialize)]
pub struct ProfilesView {
    pub profiles: Vec<ProfileView>,
    pub selected: String,
}

#[tauri::command]
pub fn profiles_list(state: State<'_, AppState>) -> CommandResult<ProfilesView> {
    let profiles = Profiles::load(&state.dirs)?;
    Ok(ProfilesView {
        profiles: profiles
            .list()
            .into_iter()
            .map(|profile| ProfileView { name: profile.name.to_string(), fhir_base_url: profile.fhir_base_url.to_string() })
            .collect(),
        selected: lock(&state.profile).clone(),
    })
}

/// Saves a profile for a FHIR base URL and selects it.
#[tauri::command]
pub fn profile_add(state: State<'_, AppState>, name: String, fhir_base_url: String) -> CommandResult<ProfilesView> {
    let mut profiles = Profiles::load(&state.dirs)?;
    let profile = Profile::new(name.trim(), fhir_base_url.trim(), None)?;
    profiles.insert(profile);
    profiles.save()?;
    select_profile(&state, name.trim())?;
    profiles_list(state)
}

/// Selects the profile the Sign-in screen acts on, and remembers it.
#[tauri::command]
pub fn profile_select(state: State<'_, AppState>, name: String) -> CommandResult<ProfilesView> {
    select_profile(&state, &name)?;
    profiles_list(state)
}

fn select_profile(state: &AppState, name: &str) -> CommandResult<()> {
    let profile = Profiles::load(&state.dirs)?.get(name)?;
    *lock(&state.profile) = profile.name.to_string();
    let mut settings = lock(&state.settings);
    settings.profile = Some(profile.name.to_string());
    settings.save(&state.dirs.config_dir)
}

/// Returns who is signed in, or `None`.
#[tauri::command]
pub async fn session_get(state: State<'_, AppState>) -> CommandResult<Option<SessionView>> {
    Ok(state.connection.lock().await.as_ref().map(|connection| connection.session.info().into()))
}

/// Returns the error that stopped the stored sign-in from resuming at
/// start-up, so that the window can show it beside the sign-in button.
#[tauri::command]
pub fn session_problem(state: State<'_, AppState>) -> Option<String> {
    lock(&state.restore_error).clone()
}

/// Opens the browser that signs in: the programs in `BROWSER` when it is set
/// (as the CLI does), else the system's default browser through the opener
/// plugin.
struct AppBrowser(AppHandle);

impl BrowserLauncher for AppBrowser {
    fn open(&self, url: &url::Url) -> Result<(), login::BrowserError> {
        if std::env::var_os("BROWSER").is_some_and(|value| !value.is_empty()) {
            return SystemBrowser.open(url);
        }
        use tauri_plugin_opener::OpenerExt as _;
        self.0
            .opener()
            .open_url(url.as_str(), None::<&str>)
            .map_err(|error| login::BrowserError::Unavailable(error.to_string()))
    }
}

/// Signs in to the selected profile in the system browser (SMART App
/// Launch with PKCE), then resumes the profile's interrupted transfers.
#[tauri::command]
pub async fn sign_in(app: AppHandle, state: State<'_, AppState>, kind: SignInKind) -> CommandResult<SessionView> {
    let context = state.profile_context().await?;
    let mut options = LoginOptions::new(kind);
    options.browser = Arc::new(AppBrowser(app.clone()));
    let prompt_app = app.clone();
    options.prompt = Arc::new(move |prompt: LoginPrompt| {
        let _ = prompt_app.emit(SIGN_IN_PROMPT_EVENT, prompt.message());
    });

    let session = login::login(&context, options).await?;
    let connection = connect(&app, &state, session).await?;
    connection.append_log(NewEntry::new(Event::SignedIn)).await;
    connection.checkpoint_log().await;
    Ok(connection.session.info().into())
}

/// Opens the connection of a session, makes it current, takes the patient
/// context of a clinician sign-in, and resumes interrupted transfers.
pub async fn connect(app: &AppHandle, state: &AppState, session: Session) -> CommandResult<Arc<Connection>> {
    let connection = Arc::new(Connection::open(session, state.engine_options()).await?);
    let mut patient_summary = None;
    if let Some(patient) = connection.session.info().patient {
        match fhir::read(&connection.session, "Patient", &patient).await {
            Ok(resource) => patient_summary = Some(PatientSummary::from_resource(&resource)),
            Err(error) => tracing::warn!(patient, error = %error, "failed to read the patient in context"),
        }
    }

    // The transfers resume before the connection becomes current, so that
    // the window never lists an interrupted transfer as not running while
    // its task is being started.
    let resumed = connection.engine.resume_all();
    if let Ok(handles) = &resumed {
        tracing::info!(count = handles.len(), "resumed interrupted transfers");
        for handle in handles {
            transfers::follow(app.clone(), connection.clone(), handle.clone());
        }
    }
    *state.connection.lock().await = Some(connection.clone());
    *lock(&state.patient) = patient_summary;
    *lock(&state.restore_error) = None;
    resumed?;
    let _ = app.emit(SESSION_EVENT, Some(SessionView::from(connection.session.info())));
    Ok(connection)
}

/// Signs out: revokes and deletes the refresh token. Running transfers
/// stop where they are and resume at the next sign-in.
#[tauri::command]
pub async fn sign_out(app: AppHandle, state: State<'_, AppState>) -> CommandResult<()> {
    let connection = state.connection.lock().await.take();
    *lock(&state.patient) = None;
    let context = match &connection {
        Some(connection) => {
            connection.append_log(NewEntry::new(Event::SignedOut)).await;
            connection.context.clone()
        }
        None => state.profile_context().await?,
    };
    let report = login::logout(&context).await?;
    if let Some(problem) = report.revocation_problem {
        tracing::warn!(problem, "the refresh token was deleted here but not revoked at the server");
    }
    let _ = app.emit(SESSION_EVENT, None::<SessionView>);
    Ok(())
}

/// Searches the server's `Patient` resources by name; an empty query lists them.
#[tauri::command]
pub async fn patient_search(state: State<'_, AppState>, query: String) -> CommandResult<Vec<PatientSummary>> {
    let connection = state.connection().await?;
    let query = query.trim();
    let params: Vec<(&str, &str)> = if query.is_empty() { Vec::new() } else { vec![("name", query)] };
    let resources = fhir::search(&connection.session, "Patient", &params).await?;
    Ok(resources.iter().map(PatientSummary::from_resource).collect())
}

/// Chooses the patient that uploads and downloads act on. A clinician
/// sign-in allows only its patient in context.
#[tauri::command]
pub async fn patient_choose(state: State<'_, AppState>, id: String) -> CommandResult<PatientSummary> {
    let connection = state.connection().await?;
    if let Some(context) = connection.session.info().patient
        && context != id
    {
        return Err(CommandError::new(format!(
            "this clinician sign-in is for Patient/{context}; sign in again to work for Patient/{id}"
        )));
    }
    let resource = fhir::read(&connection.session, "Patient", &id).await?;
    let patient = PatientSummary::from_resource(&resource);
    *lock(&state.patient) = Some(patient.clone());
    Ok(patient)
}

#[tauri::command]
pub fn patient_get(state: State<'_, AppState>) -> Option<PatientSummary> {
    lock(&state.patient).clone()
}

/// Describes what uploading each path would send: a single file's name,
/// size and type, or a study's series, set-aside files and patient guard verdict.
#[tauri::command]
pub async fn upload_inspect(state: State<'_, AppState>, paths: Vec<PathBuf>) -> CommandResult<Vec<Inspection>> {
    let connection = state.connection().await?;
    let patient = state.chosen_patient()?;
    let mut inspections = Vec::new();
    for path in paths {
        inspections.push(study::inspect(&connection.session, &path, &patient.id).await);
    }
    Ok(inspections)
}

/// Starts uploads of `paths` for the chosen patient. A study that the
/// patient guard blocks is uploaded only with `confirm_reason`.
#[tauri::command]
pub async fn upload_start(
    app: AppHandle,
    state: State<'_, AppState>,
    paths: Vec<PathBuf>,
    confirm_reason: Option<String>,
) -> CommandResult<Vec<String>> {
    let connection = state.connection().await?;
    let patient = state.chosen_patient()?;
    let confirm_reason = confirm_reason.filter(|reason| !reason.trim().is_empty());
    let staging = connection.staging_dir();

    // Every input is checked before the first transfer starts.
    let mut prepared = Vec::new();
    for path in &paths {
        prepared.push(study::prepare(&connection.session, path, &patient.id, confirm_reason.as_deref(), &staging).await?);
    }

    let mut ids = Vec::new();
    for upload in prepared {
        let handle = connection.engine.upload(&upload.file, &patient.id, upload.options).await?;
        let mut entry = NewEntry::new(Event::TransferStarted);
        entry.direction = Some(ferry_core::log::Direction::Upload);
        entry.patient = Some(format!("Patient/{}", patient.id));
        entry.file_name = upload.file.file_name().map(|name| name.to_string_lossy().into_owned());
        entry.size = std::fs::metadata(&upload.file).ok().map(|metadata| metadata.len());
        connection.append_log(entry).await;
        if let Some(reason) = upload.confirmed_reason {
            let mut entry = NewEntry::new(Event::PatientMismatchConfirmed { reason });
            entry.direction = Some(ferry_core::log::Direction::Upload);
            entry.patient = Some(format!("Patient/{}", patient.id));
            entry.file_name = upload.file.file_name().map(|name| name.to_string_lossy().into_owned());
            append_with_correlation_id(connection.clone(), handle.clone(), entry);
        }
        ids.push(started(&app, &connection, handle));
    }
    Ok(ids)
}

/// Appends `entry` once the upload's grant is issued, with the grant's
/// correlation id, so that it joins the gateway's audit record. When the
/// grant request fails, the entry is appended without one.
fn append_with_correlation_id(connection: Arc<Connection>, handle: TransferHandle, mut entry: NewEntry) {
    tauri::async_runtime::spawn(async move {
        entry.correlation_id = ferry_core::activity::grant_correlation_id(&connection.engine, &handle).await;
        connection.append_log(entry).await;
    });
}

fn started(app: &AppHandle, connection: &Arc<Connection>, handle: TransferHandle) -> String {
    let id = handle.id().to_owned();
    transfers::follow(app.clone(), connection.clone(), handle);
    id
}

/// Lists the chosen patient's current `DocumentReference`s.
#[tauri::command]
pub async fn documents_list(state: State<'_, AppState>) -> CommandResult<Vec<DocumentSummary>> {
    let connection = state.connection().await?;
    let patient = state.chosen_patient()?;
    let params = [("patient", patient.id.as_str())];
    let resources = fhir::search(&connection.session, "DocumentReference", &params).await?;
    Ok(resources.iter().map(DocumentSummary::from_resource).collect())
}

/// Starts downloads of documents into `folder`, or into the default
/// download folder of the settings. An existing file is kept and the new
/// one saved as `NAME (1).EXT`.
#[tauri::command]
pub async fn download_start(
    app: AppHandle,
    state: State<'_, AppState>,
    document_ids: Vec<String>,
    folder: Option<PathBuf>,
) -> CommandResult<Vec<String>> {
    let connection = state.connection().await?;
    let folder = folder
        .filter(|folder| !folder.as_os_str().is_empty())
        .or_else(|| lock(&state.settings).download_folder.clone())
        .ok_or_else(|| CommandError::new("no download folder; choose one, or set a default on the Settings screen"))?;
    if document_ids.is_empty() {
        return Err(CommandError::new("no document selected; tick the documents to download"));
    }
    for id in &document_ids {
        if id.trim().is_empty() || id.contains('/') {
            return Err(CommandError::new(format!("'{id}' is not a DocumentReference id")));
        }
    }

    let mut ids = Vec::new();
    for document_id in document_ids {
        let handle = connection.engine.download(&document_id, &folder, DownloadOptions::default()).await?;
        let mut entry = NewEntry::new(Event::TransferStarted);
        entry.direction = Some(ferry_core::log::Direction::Download);
        entry.object = Some(format!("DocumentReference/{document_id}"));
        entry.patient = lock(&state.patient).as_ref().map(|patient| format!("Patient/{}", patient.id));
        connection.append_log(entry).await;
        ids.push(started(&app, &connection, handle));
    }
    Ok(ids)
}

#[tauri::command]
pub async fn transfers_list(state: State<'_, AppState>) -> CommandResult<Vec<TransferView>> {
    let connection = state.connection().await?;
    transfers::list(&state, &connection)
}

#[tauri::command]
pub async fn transfer_pause(state: State<'_, AppState>, id: String) -> CommandResult<()> {
    let connection = state.connection().await?;
    let running = connection.engine.handle(&id).is_some();
    connection.engine.pause(&id)?;
    if !running {
        append_user_action(&connection, &id, Event::Paused).await;
    }
    Ok(())
}

/// Continues a paused, interrupted or failed transfer from where it stopped.
#[tauri::command]
pub async fn transfer_resume(app: AppHandle, state: State<'_, AppState>, id: String) -> CommandResult<()> {
    let connection = state.connection().await?;
    let handle = connection.engine.resume(&id)?;
    let mut entry = NewEntry::new(Event::Resumed);
    entry.file_name = connection.engine.get(&id).ok().map(|record| record.file_name);
    connection.append_log(entry).await;
    started(&app, &connection, handle);
    Ok(())
}

#[tauri::command]
pub async fn transfer_cancel(state: State<'_, AppState>, id: String) -> CommandResult<()> {
    let connection = state.connection().await?;
    let running = connection.engine.handle(&id).is_some();
    connection.engine.cancel(&id).await?;
    if !running {
        append_user_action(&connection, &id, Event::Cancelled).await;
    }
    Ok(())
}

/// Appends the `paused` or `cancelled` entry of a transfer that this app
/// was not running. The task of a running transfer writes its own entry
/// when it stops, so calling this for one would log the action twice.
async fn append_user_action(connection: &Connection, id: &str, event: Event) {
    match connection.engine.get(id) {
        Ok(record) => connection.append_log(ferry_core::activity::transfer_entry(event, &record)).await,
        Err(error) => tracing::warn!(transfer_id = id, %error, "the transfer log has no entry for this action"),
    }
}

/// One entry of the signed log as the Log screen shows it.
#[derive(Debug, Serialize)]
pub struct LogEntryView {
    pub seq: u64,
    pub time: String,
    pub event: String,
    /// The failure or confirmation reason of the event, if any.
    pub reason: Option<String>,
    pub user: Option<String>,
    pub direction: Option<ferry_core::log::Direction>,
    pub patient: Option<String>,
    pub object: Option<String>,
    pub file_name: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Returns the entries of the signed log, oldest first. Filters are
/// applied by the UI.
#[tauri::command]
pub async fn log_show(state: State<'_, AppState>) -> CommandResult<Vec<LogEntryView>> {
    let path = state.connection().await?.log_path();
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|error| CommandError::new(format!("failed to read the transfer log {}: {error}", path.display())))?;
    let entries = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Record>(line).ok())
        .filter_map(|record| match record {
            Record::Entry(entry) => Some(LogEntryView {
                seq: entry.seq,
                time: entry.time.to_string(),
                event: entry.event.name().to_owned(),
                reason: match &entry.event {
                    Event::Failed { reason } | Event::PatientMismatchConfirmed { reason } => Some(reason.clone()),
                    _ => None,
                },
                user: entry.actor.and_then(|actor| actor.fhir_user),
                direction: entry.direction,
                patient: entry.patient,
                object: entry.object,
                file_name: entry.file_name,
                size: entry.size,
                sha256: entry.sha256,
            }),
            _ => None,
        })
        .collect();
    Ok(entries)
}

/// Result of verifying the signed log.
#[derive(Debug, Serialize)]
pub struct LogVerifyView {
    pub ok: bool,
    pub entries: u64,
    pub records: u64,
    pub last_signed_seq: Option<u64>,
    pub unsealed_tail: u64,
    pub problems: Vec<String>,
}

/// Verifies the log's hash chain and signatures, then records that it did.
#[tauri::command]
pub async fn log_verify(state: State<'_, AppState>) -> CommandResult<LogVerifyView> {
    let connection = state.connection().await?;
    let path = connection.log_path();
    let report = tokio::task::spawn_blocking(move || ferry_core::log::verify(&path, &VerifyOptions::default()))
        .await
        .map_err(|error| CommandError::new(format!("verifying the transfer log stopped: {error}")))??;
    connection.append_log(NewEntry::new(Event::LogVerified)).await;
    connection.checkpoint_log().await;
    Ok(LogVerifyView {
        ok: report.ok,
        entries: report.entries,
        records: report.records,
        last_signed_seq: report.last_signed_seq,
        unsealed_tail: report.unsealed_tail,
        problems: report.problems.iter().map(ToString::to_string).collect(),
    })
}

#[tauri::command]
pub fn settings_get(state: State<'_, AppState>) -> Settings {
    lock(&state.settings).clone()
}

/// Saves the settings. A new number of parts in flight applies at once
/// when no transfer runs, else at the next sign-in or start.
#[tauri::command]
pub async fn settings_set(state: State<'_, AppState>, settings: Settings) -> CommandResult<Settings> {
    settings.validate()?;
    let mut saved = settings.clone();
    saved.profile = lock(&state.settings).profile.clone();
    saved.save(&state.dirs.config_dir)?;
    *lock(&state.settings) = saved.clone();

    let mut current = state.connection.lock().await;
    if let Some(connection) = current.as_ref() {
        let busy = transfers::list(&state, connection)?.iter().any(|view| {
            !view.state.is_final() && view.state != ferry_core::journal::TransferState::Paused
        });
        if !busy {
            *current = Some(Arc::new(connection.with_engine_options(state.engine_options())?));
        }
    }
    Ok(saved)
}
