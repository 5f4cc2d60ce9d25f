//! The Ferry desktop app: a thin Tauri shell over `ferry-core`.
//!
//! Commands (`commands`) call the core and return plain data; progress
//! reaches the window as events (`transfers`). File bytes never cross the
//! bridge: the UI passes paths and the core reads and sends the files.

mod commands;
mod error;
mod instance;
mod settings;
mod state;
mod study;
mod transfers;

use tauri::{Emitter, Manager, RunEvent, WindowEvent};
use tauri_plugin_log::{Target, TargetKind};

use crate::state::{AppState, lock};

/// The commands the UI may call; `build.rs` lists the same names so that
/// the capability file can grant each one.
macro_rules! app_commands {
    () => {
        tauri::generate_handler![
            commands::profiles_list,
            commands::profile_add,
            commands::profile_select,
            commands::session_get,
            commands::session_problem,
            commands::sign_in,
            commands::sign_out,
            commands::patient_search,
            commands::patient_choose,
            commands::patient_get,
            commands::upload_inspect,
            commands::upload_start,
            commands::documents_list,
            commands::download_start,
            commands::transfers_list,
            commands::transfer_pause,
            commands::transfer_resume,
            commands::transfer_cancel,
            commands::log_show,
            commands::log_verify,
            commands::settings_get,
            commands::settings_set,
        ]
    };
}

/// Builds and runs the Tauri application until its last window closes.
pub fn run() {
    let state = match AppState::load() {
        Ok(state) => state,
        Err(error) => {
            eprintln!("ferry-desktop cannot start: {error}");
            std::process::exit(1);
        }
    };
    let log_dir = state.dirs.data_dir.join("logs");
    let context = tauri::generate_context!("tauri.conf.json");
    let bus_name = instance::bus_name(&context.config().identifier);

    let app = tauri::Builder::default()
        // Registered first, so that a second launch exits before it does
        // anything else and the first instance comes to the front.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| instance::focus_main_window(app)))
        .plugin(
            // The log file goes to Ferry's data folder (below `FERRY_HOME`
            // when it is set), beside the journal it describes, rather
            // than to one folder shared by every Ferry home.
            tauri_plugin_log::Builder::new()
                .clear_targets()
                .targets([
                    Target::new(TargetKind::Stdout),
                    Target::new(TargetKind::Folder { path: log_dir, file_name: Some("ferry-desktop".to_owned()) }),
                ])
                .level(log::LevelFilter::Info)
                .level_for("ferry_core", log::LevelFilter::Info)
                // zbus logs each D-Bus handshake at info, with its raw bytes.
                .level_for("zbus", log::LevelFilter::Warn)
                .level_for("tracing::span", log::LevelFilter::Warn)
                .build(),
        )
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_opener::init())
        .manage(state)
        .invoke_handler(app_commands!())
        .setup(|app| {
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(restore_session(handle));
            Ok(())
        })
        .build(context);
    let app = match app {
        Ok(app) => app,
        // The plugin's setup fails mostly when forwarding to the running
        // instance failed because that instance is exiting. Its other
        // failures (an invalid bus name, a lost bus) end after the bounded
        // restarts.
        Err(tauri::Error::PluginInitialization(plugin, message)) if plugin == "single-instance" => {
            instance::relaunch_after_exiting_instance(&bus_name, &message)
        }
        Err(error) => {
            eprintln!("ferry-desktop cannot start: the Tauri application failed to initialise: {error}");
            std::process::exit(1);
        }
    };

    app.run(|handle, event| match event {
        RunEvent::WindowEvent { label, event: WindowEvent::CloseRequested { .. } | WindowEvent::Destroyed, .. }
            if label == "main" =>
        {
            instance::release(handle);
        }
        RunEvent::ExitRequested { .. } => instance::release(handle),
        _ => {}
    });
}

/// Resumes the selected profile's sign-in from its stored refresh token,
/// then the transfers that were interrupted when the app last stopped. A
/// failure is kept in the state for the window, which may not listen for
/// events yet, and is also sent as a sign-in prompt.
async fn restore_session(app: tauri::AppHandle) {
    let state = app.state::<AppState>();
    let profile = lock(&state.profile).clone();
    let problem = |message: String| {
        *lock(&state.restore_error) = Some(message.clone());
        let _ = app.emit(commands::SIGN_IN_PROMPT_EVENT, message);
        // A window that has loaded reads the session and its error again.
        let _ = app.emit(commands::SESSION_EVENT, None::<state::SessionView>);
    };
    let context = match state.profile_context().await {
        Ok(context) => context,
        Err(error) => {
            tracing::warn!(profile, %error, "no sign-in to restore");
            problem(format!("The stored sign-in of {profile} could not be read: {error}. Sign in again."));
            return;
        }
    };
    match ferry_core::login::whoami(&context) {
        Ok(Some(_)) => {}
        Ok(None) => {
            tracing::info!(profile, "no stored sign-in; the app starts signed out");
            return;
        }
        Err(error) => {
            let chain = error::error_chain(&error);
            tracing::warn!(profile, error = %chain, "reading the stored sign-in failed");
            problem(format!("The stored sign-in of {profile} could not be read: {chain}. Sign in again."));
            return;
        }
    }
    let session = match ferry_core::login::Session::resume(&context).await {
        Ok(session) => session,
        Err(error) => {
            let chain = error::error_chain(&error);
            tracing::warn!(profile, error = %chain, "resuming the sign-in failed; sign in again");
            problem(format!("Resuming the sign-in of {profile} failed: {chain}. Sign in again to continue the transfers."));
            return;
        }
    };
    if let Err(error) = commands::connect(&app, &state, session).await {
        tracing::error!(profile, %error, "opening the profile's journal or log failed");
        problem(error.message);
    }
}
