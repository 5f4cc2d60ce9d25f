//! The Ferry desktop app: a thin Tauri shell over `ferry-core`.

/// Builds and runs the Tauri application until its last window closes.
pub fn run() {
    tauri::Builder::default()
        .run(tauri::generate_context!("tauri.conf.json"))
        .expect("the Tauri application failed to start");
}
