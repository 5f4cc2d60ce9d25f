//! End-to-end tests of the desktop app's real window against a sandbox
//! gateway: WebDriver (tauri-driver and WebKitWebDriver) clicks and types as
//! a user does. They skip with a message when no display, driver or D-Bus
//! session is available; scripts/test provides all three.

use std::path::Path;
use std::time::Duration;

use ferry_tests::cli::{Sandbox, sha256_file};
use ferry_tests::desktop::{App, Driver, missing_prerequisite, redirect_following_browser, screenshot_path};

/// Starts the driver with the app's folders below `home` and a browser
/// stand-in that completes the sandbox's automatic sign-in.
fn start_driver(home: &Path) -> Driver {
    let browser = redirect_following_browser(home);
    let ferry_home = home.join("ferry");
    Driver::start(&[
        ("FERRY_HOME", ferry_home.as_os_str()),
        ("BROWSER", browser.as_os_str()),
        ("XDG_DATA_HOME", home.join("xdg-data").as_os_str()),
        ("XDG_CACHE_HOME", home.join("xdg-cache").as_os_str()),
        ("XDG_CONFIG_HOME", home.join("xdg-config").as_os_str()),
        ("RUST_LOG", std::ffi::OsStr::new("info")),
    ])
}

/// Adds a profile for the sandbox on the Sign-in screen and signs in as
/// imaging staff.
fn sign_in(app: &App, sandbox: &Sandbox) {
    app.open_screen("signin");
    app.type_into("#profile-name", "test");
    app.type_into("#profile-url", &sandbox.fhir_url);
    app.click("#profile-add");
    app.wait_for("#profile-select option[value='test'][selected]", Duration::from_secs(10));
    app.click("#sign-in");
    app.wait_for("#session-user", Duration::from_secs(60));
    let user = app.text_of("#session-user").unwrap_or_default();
    assert!(user.ends_with("Practitioner/tech-okafor"), "signed in as {user}");
}

/// Finds a patient by name on the Patient screen and chooses them.
fn choose_patient(app: &App, name: &str, id: &str) {
    app.open_screen("patient");
    app.type_into("#patient-query", name);
    app.click("#patient-search");
    app.click(&format!("tr[data-patient-id='{id}'] button.choose-patient"));
    app.wait_for("#header-patient:not(:empty)", Duration::from_secs(10));
    let header = app.text_of("#header-patient").unwrap_or_default();
    assert!(header.contains(&format!("Patient/{id}")), "{header}");
}

/// Writes `size` bytes of a repeating, non-zero pattern.
fn write_file(path: &Path, size: usize) {
    let pattern: Vec<u8> = (0..=250u8).collect();
    let bytes: Vec<u8> = pattern.iter().copied().cycle().take(size).collect();
    std::fs::write(path, bytes).expect("the test file is written");
}

/// Returns the state of a transfer row once it is one of `states`.
fn wait_for_row_state(app: &App, file_name: &str, states: &[&str], timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let state = app.execute(
            "const rows = [...document.querySelectorAll('#transfers-table tbody tr')];\
             const row = rows.find((row) => row.cells[0] && row.cells[0].textContent === arguments[0]);\
             return row ? row.getAttribute('data-state') : null;",
            serde_json::json!([file_name]),
        );
        if let Some(state) = state.as_str().filter(|state| states.contains(state)) {
            return state.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer of {file_name} did not reach {states:?} within {timeout:?}; last state {state}; error box: {:?}",
            app.text_of("#error")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn upload_download_and_log_verify_through_window() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let sandbox = Sandbox::start(&home.path().join("gateway"), "tech-okafor");
    let driver = start_driver(home.path());
    let app = driver.launch();
    app.screenshot(&screenshot_path("signin-before"));

    sign_in(&app, &sandbox);
    app.screenshot(&screenshot_path("signin"));

    choose_patient(&app, "Nwosu", "pat-001");
    app.screenshot(&screenshot_path("patient"));

    // Upload: the path goes to the shell, which reads the file itself.
    let source = home.path().join("discharge-letter.pdf");
    write_file(&source, 3 * 1024 * 1024 + 17);
    app.open_screen("upload");
    app.type_into("#upload-path", &source.display().to_string());
    app.click("#upload-add");
    app.wait_for(".inspection[data-path] dl", Duration::from_secs(20));
    let inspection = app.text_of("#upload-inspection").unwrap_or_default();
    assert!(inspection.contains("discharge-letter.pdf"), "{inspection}");
    assert!(inspection.contains("3.0 MiB"), "{inspection}");
    assert!(inspection.contains("application/pdf"), "{inspection}");
    app.screenshot(&screenshot_path("upload"));
    app.click("#upload-start");
    let state = wait_for_row_state(&app, "discharge-letter.pdf", &["completed", "failed"], Duration::from_secs(60));
    assert_eq!(state, "completed", "the upload failed: {:?}", app.text_of("#transfers-table"));
    app.screenshot(&screenshot_path("transfers"));

    // Download the uploaded document into a chosen folder.
    let folder = home.path().join("downloads");
    std::fs::create_dir_all(&folder).expect("the download folder is created");
    app.open_screen("download");
    app.click("#documents-refresh");
    app.wait_for("#documents-table tbody tr[data-document-id]", Duration::from_secs(20));
    let checked = app.execute(
        "const rows = [...document.querySelectorAll('#documents-table tbody tr[data-document-id]')];\
         const row = rows.find((row) => row.cells[1].textContent === arguments[0]);\
         if (!row) return false; row.querySelector('input.document-select').click(); return true;",
        serde_json::json!(["discharge-letter.pdf"]),
    );
    assert_eq!(checked, serde_json::json!(true), "the uploaded document is listed");
    app.type_into("#download-folder", &folder.display().to_string());
    app.click("#download-start");
    app.wait_for("#download-results li[data-state='completed']", Duration::from_secs(60));
    let saved = app.text_of("#download-results li[data-state='completed']").unwrap_or_default();
    let landed = folder.join("discharge-letter.pdf");
    assert!(saved.contains(&landed.display().to_string()), "{saved}");
    assert_eq!(sha256_file(&landed), sha256_file(&source), "the downloaded file equals the uploaded one");
    app.screenshot(&screenshot_path("download"));

    // Verify the signed log from the UI.
    app.open_screen("log");
    app.click("#log-verify");
    app.wait_for("#log-verified, #log-verify-failed", Duration::from_secs(20));
    let result = app.text_of("#log-verify-result").unwrap_or_default();
    assert!(app.try_find("#log-verified").is_some(), "the log failed verification: {result}");
    let log = app.text_of("#log-table").unwrap_or_default();
    assert!(log.contains("signed in"), "{log}");
    assert!(log.contains("completed"), "{log}");
    assert!(log.contains("discharge-letter.pdf"), "{log}");
    app.screenshot(&screenshot_path("log"));

    app.open_screen("settings");
    app.screenshot(&screenshot_path("settings"));
    app.close();
}
