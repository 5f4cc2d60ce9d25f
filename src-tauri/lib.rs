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
    let context = tauri::generate_context!("tauri.conf.json");
    let bus_name = instance::bus_name(&context.config().identifier);

    let app = tauri::Builder::default()
        // Registered first, so that a second launch exits before it does
        // anything else and the first instance comes to the front.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| instance::focus_main_window(app)))
        .plugin(
            tauri_plugin_log::Builder::new()
                .level(log::LevelFilter::Info)
                .level_for("ferry_core", log::LevelFilter::Info)
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
/// then the transfers that were interrupted when the app last stopped.
async fn restore_session(app: tauri::AppHandle) {
    let state = app.state::<AppState>();
    let profile = lock(&state.profile).clone();
    let context = match state.profile_context().await {
        Ok(context) => context,
        Err(error) => {
            tracing::warn!(profile, %error, "no sign-in to restore");
            return;
        }
    };
    match ferry_core::login::whoami(&context) {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(profile, error = %error::error_chain(&error), "reading the stored sign-in failed");
            return;
        }
    }
    let session = match ferry_core::login::Session::resume(&context).await {
        Ok(session) => session,
        Err(error) => {
            tracing::warn!(profile, error = %error::error_chain(&error), "resuming the sign-in failed; sign in again");
            let _ = app.emit(commands::SIGN_IN_PROMPT_EVENT, error::error_chain(&error));
            return;
        }
    };
    if let Err(error) = commands::connect(&app, &state, session).await {
        tracing::error!(profile, %error, "opening the profile's journal or log failed");
        let _ = app.emit(commands::SIGN_IN_PROMPT_EVENT, error.message);
    }
}
