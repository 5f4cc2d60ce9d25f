/// Commands of the app, as `lib.rs` registers them. tauri-build generates an
/// `allow-NAME` permission for each, which `capabilities/` must grant.
const COMMANDS: &[&str] = &[
    "profiles_list",
    "profile_add",
    "profile_select",
    "session_get",
    "session_problem",
    "sign_in",
    "sign_out",
    "patient_search",
    "patient_choose",
    "patient_get",
    "upload_inspect",
    "upload_start",
    "documents_list",
    "download_start",
    "transfers_list",
    "transfer_pause",
    "transfer_resume",
    "transfer_cancel",
    "log_show",
    "log_verify",
    "settings_get",
    "settings_set",
];

fn main() {
    let attributes =
        tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    tauri_build::try_build(attributes).expect("tauri-build failed");
}
