//! End-to-end tests of the desktop app's controls beyond the main round
//! trip: a study's series table and patient guard verdict, two study
//! folders of the same name uploaded at once, the pause, resume, retry and
//! cancel buttons of a running transfer, and the single-instance rule.
//! They skip with a message when no display, driver or D-Bus session is
//! available; scripts/test provides all three.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::cli::{Sandbox, binary};
use ferry_tests::desktop::{App, Driver, missing_prerequisite, redirect_following_browser, screenshot_path};
use ferry_tests::workspace_root;

/// Returns the app's environment: its folders below `home` and a browser
/// stand-in that completes the sandbox's automatic sign-in.
fn app_env(home: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("FERRY_HOME", home.join("ferry")),
        ("BROWSER", redirect_following_browser(home)),
        ("XDG_DATA_HOME", home.join("xdg-data")),
        ("XDG_CACHE_HOME", home.join("xdg-cache")),
        ("XDG_CONFIG_HOME", home.join("xdg-config")),
    ]
}

fn start_driver(home: &Path) -> Driver {
    let env = app_env(home);
    let pairs: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(name, value)| (*name, value.as_os_str())).collect();
    Driver::start(&pairs)
}

/// Adds a profile for the sandbox, signs in as imaging staff and chooses
/// the patient found by `name` with the id `patient`.
fn sign_in_and_choose_patient(app: &App, sandbox: &Sandbox, name: &str, patient: &str) {
    app.open_screen("signin");
    app.type_into("#profile-name", "test");
    app.type_into("#profile-url", &sandbox.fhir_url);
    app.click("#profile-add");
    app.wait_for("#profile-select option[value='test'][selected]", Duration::from_secs(10));
    app.click("#sign-in");
    app.wait_for("#session-user", Duration::from_secs(60));

    app.open_screen("patient");
    app.type_into("#patient-query", name);
    app.click("#patient-search");
    app.click(&format!("tr[data-patient-id='{patient}'] button.choose-patient"));
    app.wait_for("#header-patient:not(:empty)", Duration::from_secs(10));
}

/// Types `path` on the Upload screen and waits for its inspection.
fn add_upload_path(app: &App, path: &Path) {
    app.open_screen("upload");
    app.type_into("#upload-path", &path.display().to_string());
    app.click("#upload-add");
    app.wait_for(&format!(".inspection[data-path='{}']", path.display()), Duration::from_secs(60));
}

/// Returns the state of the transfer row of `file_name`, if shown.
fn row_state(app: &App, file_name: &str) -> Option<String> {
    let state = app.execute(
        "const rows = [...document.querySelectorAll('#transfers-table tbody tr')];\
         const row = rows.find((row) => row.cells[0] && row.cells[0].textContent === arguments[0]);\
         return row ? row.getAttribute('data-state') : null;",
        serde_json::json!([file_name]),
    );
    state.as_str().map(str::to_owned)
}

/// Waits until the row of `file_name` is in one of `states` and returns it.
fn wait_for_state(app: &App, file_name: &str, states: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let state = row_state(app, file_name);
        if let Some(state) = state.as_deref().filter(|state| states.contains(state)) {
            return state.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{file_name} did not reach {states:?} within {timeout:?}; last state {state:?}; row: {:?}; error box: {:?}",
            app.text_of("#transfers-table tbody"),
            app.text_of("#error"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A signed-in app running one upload of a 40 MiB file, with one part in
/// flight and a 1024 KiB/s cap: about 40 s of transfer, so the row's
/// buttons act on a running upload.
struct SlowUpload {
    app: App,
    _driver: Driver,
    _sandbox: Sandbox,
    source: PathBuf,
}

impl SlowUpload {
    /// Starts the sandbox and the app below `home`, then the upload of
    /// `home/file_name`, and returns once its row shows `running`.
    fn start(home: &Path, file_name: &str) -> SlowUpload {
        let source = home.join(file_name);
        let file = std::fs::File::create(&source).expect("the test file is created");
        file.set_len(40 * 1024 * 1024).expect("the test file gets its size");
        drop(file);

        let sandbox = Sandbox::start(&home.join("gateway"), "tech-okafor");
        let driver = start_driver(home);
        let app = driver.launch();
        sign_in_and_choose_patient(&app, &sandbox, "Nwosu", "pat-001");
        app.open_screen("settings");
        app.type_into("#settings-parts", "1");
        app.type_into("#settings-cap", "1024");
        app.click("#settings-save");
        app.wait_for("#settings-status:not(:empty)", Duration::from_secs(10));

        add_upload_path(&app, &source);
        app.click("#upload-start");
        wait_for_state(&app, file_name, &["running"], Duration::from_secs(120));
        SlowUpload { app, _driver: driver, _sandbox: sandbox, source }
    }
}

/// Counts the entries with `event` in the signed logs of the app's profiles.
fn signed_log_events(home: &Path, event: &str) -> usize {
    let profiles = home.join("ferry/data/profiles");
    let needle = format!("\"{event}\"");
    let mut count = 0;
    for profile in std::fs::read_dir(&profiles).expect("the app's profiles folder exists") {
        let log = profile.expect("a profile folder entry").path().join("transfer-log.ndjson");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        count += text.lines().filter(|line| line.contains(&needle)).count();
    }
    count
}

/// Clicks the row's button for `action` (pause, resume, retry or cancel).
fn click_row_button(app: &App, file_name: &str, action: &str) {
    let clicked = app.execute(
        "const rows = [...document.querySelectorAll('#transfers-table tbody tr')];\
         const row = rows.find((row) => row.cells[0] && row.cells[0].textContent === arguments[0]);\
         const button = row && row.querySelector('button.transfer-' + arguments[1]);\
         if (!button) return false; button.click(); return true;",
        serde_json::json!([file_name, action]),
    );
    assert_eq!(
        clicked,
        serde_json::json!(true),
        "no {action} button on the row of {file_name}: {:?}",
        app.text_of("#transfers-table tbody")
    );
}

/// Returns the computed `display` of the row that requests a reason to
/// override the patient guard.
fn reason_row_display(app: &App) -> String {
    let display = app.execute(
        "return getComputedStyle(document.getElementById('upload-reason-row')).display;",
        serde_json::json!([]),
    );
    display.as_str().unwrap_or_default().to_owned()
}

/// Runs scripts/make-test-study.py for the named layouts into `out`.
fn make_studies(out: &Path, layouts: &[&str]) -> bool {
    let mut command = Command::new("python3");
    command.arg(workspace_root().join("scripts/make-test-study.py")).arg(out).args(["--ct-instances", "6"]);
    for layout in layouts {
        command.args(["--only", layout]);
    }
    match command.status() {
        Ok(status) if status.success() => true,
        outcome => {
            eprintln!("skipped: scripts/make-test-study.py failed ({outcome:?}); install pydicom with pip");
            false
        }
    }
}

#[test]
fn study_shows_series_and_guard_verdict() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let studies = home.path().join("studies");
    if !make_studies(&studies, &["ct-study", "wrong-patient"]) {
        return;
    }
    let sandbox = Sandbox::start(&home.path().join("gateway"), "tech-okafor");
    let driver = start_driver(home.path());
    let app = driver.launch();
    // The sandbox's Patient/pat-004 is the patient of the generated studies.
    sign_in_and_choose_patient(&app, &sandbox, "Müller", "pat-004");

    // The study of the chosen patient: three series and a matching verdict.
    let matching = studies.join("ct-study");
    add_upload_path(&app, &matching);
    let series_rows = app.execute(
        "return [...document.querySelectorAll('#upload-inspection table')]\
           .filter((table) => table.caption && table.caption.textContent === 'Series')\
           .map((table) => table.tBodies[0].rows.length);",
        serde_json::json!([]),
    );
    assert_eq!(series_rows, serde_json::json!([3]), "one series table with three rows");
    let series = app.text_of("#upload-inspection table").unwrap_or_default();
    assert!(series.contains("CT"), "the modality is shown: {series}");
    assert!(app.try_find("#guard-verdict.verdict-ok").is_some(), "{:?}", app.text_of("#guard-verdict"));
    assert_eq!(reason_row_display(&app), "none", "no reason is requested for a matching study");
    assert!(app.try_find("#upload-start:not([disabled])").is_some(), "the matching study can be uploaded");
    app.screenshot(&screenshot_path("upload-study"));

    // Another patient's study: the guard blocks it and requests a reason.
    app.click("#upload-clear");
    let wrong = studies.join("wrong-patient");
    add_upload_path(&app, &wrong);
    app.wait_for("#guard-verdict.verdict-bad", Duration::from_secs(10));
    let verdict = app.text_of("#guard-verdict").unwrap_or_default();
    assert!(verdict.contains("blocked"), "{verdict}");
    assert!(verdict.contains("FERRY-9999"), "the verdict names the Patient ID in the files: {verdict}");
    assert_ne!(reason_row_display(&app), "none", "a reason is requested");
    app.screenshot(&screenshot_path("upload-study-blocked"));
    app.close();
}

/// Counts the transfer rows of `file_name` in `state`.
fn rows_in_state(app: &App, file_name: &str, state: &str) -> u64 {
    let count = app.execute(
        "return [...document.querySelectorAll('#transfers-table tbody tr')]\
           .filter((row) => row.cells[0] && row.cells[0].textContent === arguments[0]\
             && row.getAttribute('data-state') === arguments[1]).length;",
        serde_json::json!([file_name, state]),
    );
    count.as_u64().unwrap_or(0)
}

/// Returns the SHA-256 of every completed transfer of `file_name` in the
/// signed log at `path`.
fn completed_sha256(path: &Path, file_name: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["event"]["type"] == "completed" && entry["file_name"] == file_name)
        .filter_map(|entry| entry["sha256"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn same_named_study_folders_upload_apart() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    // Two exports whose folders are both called `ct-study`, with different
    // instance counts so that their archives differ.
    let mut folders = Vec::new();
    for (export, instances) in [("export-a", "4"), ("export-b", "5")] {
        let out = home.path().join(export);
        let status = Command::new("python3")
            .arg(workspace_root().join("scripts/make-test-study.py"))
            .arg(&out)
            .args(["--ct-instances", instances, "--only", "ct-study"])
            .status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("skipped: scripts/make-test-study.py failed ({status:?}); install pydicom with pip");
            return;
        }
        folders.push(out.join("ct-study"));
    }
    let sandbox = Sandbox::start(&home.path().join("gateway"), "tech-okafor");
    let driver = start_driver(home.path());
    let app = driver.launch();
    sign_in_and_choose_patient(&app, &sandbox, "Müller", "pat-004");

    for folder in &folders {
        add_upload_path(&app, folder);
    }
    app.click("#upload-start");
    let deadline = Instant::now() + Duration::from_secs(120);
    while rows_in_state(&app, "ct-study.zip", "completed") < 2 {
        assert!(
            Instant::now() < deadline,
            "the two uploads did not complete within 120 s; rows: {:?}; error box: {:?}",
            app.text_of("#transfers-table tbody"),
            app.text_of("#error"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The app appends a transfer's `completed` entry after it shows the
    // row as completed and after it removes the packed archive.
    let log_path = home.path().join("ferry/data/profiles/test/transfer-log.ndjson");
    let uploaded = loop {
        let uploaded = completed_sha256(&log_path, "ct-study.zip");
        if uploaded.len() >= 2 || Instant::now() >= deadline {
            break uploaded;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    app.close();

    let distinct: std::collections::HashSet<&String> = uploaded.iter().collect();
    assert_eq!(uploaded.len(), 2, "two completed entries in the signed log: {uploaded:?}");
    assert_eq!(distinct.len(), 2, "the two folders were uploaded as one archive: {uploaded:?}");
    let staging = home.path().join("ferry/data/profiles/test/staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|entries| entries.map(|entry| entry.expect("a staging entry").path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging keeps packed archives after their upload: {left:?}");
}

#[test]
fn transfer_buttons_pause_resume_retry_cancel() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let file_name = "slow-scan.bin";
    let slow = SlowUpload::start(home.path(), file_name);
    let app = &slow.app;
    let source = &slow.source;
    let long = Duration::from_secs(120);

    click_row_button(app, file_name, "pause");
    wait_for_state(app, file_name, &["paused"], long);
    assert!(app.try_find("#transfers-table button.transfer-resume").is_some(), "a paused row offers Resume");
    app.screenshot(&screenshot_path("transfers-paused"));

    click_row_button(app, file_name, "resume");
    wait_for_state(app, file_name, &["running"], long);

    // A transfer whose source went missing fails with its reason; once the
    // file is back, Retry runs it again.
    click_row_button(app, file_name, "pause");
    wait_for_state(app, file_name, &["paused"], long);
    let moved = home.path().join("moved-away.bin");
    std::fs::rename(&source, &moved).expect("the source is moved away");
    click_row_button(app, file_name, "resume");
    wait_for_state(app, file_name, &["failed"], long);
    let reason = app.text_of("#transfers-table tbody tr[data-state='failed'] .reason").unwrap_or_default();
    assert!(!reason.is_empty(), "a failed row shows its reason");
    std::fs::rename(&moved, &source).expect("the source is moved back");
    click_row_button(app, file_name, "retry");
    wait_for_state(app, file_name, &["running"], long);

    click_row_button(app, file_name, "cancel");
    wait_for_state(app, file_name, &["cancelled"], long);
    let cancelled = signed_log_events(home.path(), "cancelled");
    assert_eq!(cancelled, 1, "the signed log records the cancel of a running transfer once");
    let buttons = app.execute(
        "return document.querySelectorAll('#transfers-table tbody tr[data-state=\"cancelled\"] button').length;",
        serde_json::json!([]),
    );
    assert_eq!(buttons, serde_json::json!(0), "a cancelled row offers no action");
    slow.app.close();
}

#[test]
fn cancel_of_paused_transfer_is_logged() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let file_name = "paused-scan.bin";
    let slow = SlowUpload::start(home.path(), file_name);
    let app = &slow.app;
    let long = Duration::from_secs(120);
    click_row_button(app, file_name, "pause");
    wait_for_state(app, file_name, &["paused"], long);

    // No task runs a paused transfer, so the command itself writes the
    // entry that a running transfer's task would write when it stops.
    click_row_button(app, file_name, "cancel");
    wait_for_state(app, file_name, &["cancelled"], long);
    assert_eq!(signed_log_events(home.path(), "paused"), 1, "the signed log records the pause");
    assert_eq!(signed_log_events(home.path(), "cancelled"), 1, "the signed log records the cancel");
    slow.app.close();
}

#[test]
fn second_launch_focuses_first_and_exits() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let driver = start_driver(home.path());
    let app = driver.launch();

    let mut second = Command::new(binary("ferry-desktop"));
    for (name, value) in app_env(home.path()) {
        second.env(name, value);
    }
    let mut child = second.spawn().expect("a second ferry-desktop starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the second launch's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second launch still runs after 60 s; it should forward to the first and exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the second launch exits with success: {status}");

    let log = home.path().join("ferry/data/logs/ferry-desktop.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("a second launch was forwarded to this instance"),
        "the first instance brings its window to the front; its log {}:\n{text}",
        log.display()
    );
    let ready = app.execute("return document.body.getAttribute('data-ready');", serde_json::json!([]));
    assert_eq!(ready, serde_json::json!("true"), "the first window still responds");
    app.close();
}

#[test]
fn zoom_200_reflows_with_labelled_controls() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let driver = start_driver(home.path());
    let app = driver.launch();

    let unlabelled = app.execute(
        "return [...document.querySelectorAll('input, select, button')]\
           .filter((control) => !(control.labels && control.labels.length) \
             && !control.getAttribute('aria-label') && !control.textContent.trim())\
           .map((control) => control.id || control.outerHTML);",
        serde_json::json!([]),
    );
    assert_eq!(unlabelled, serde_json::json!([]), "every control has a label, an aria-label or text");

    app.open_screen("settings");
    app.execute(
        "const zoom = document.getElementById('settings-zoom'); zoom.value = '200';\
         zoom.dispatchEvent(new Event('change'));",
        serde_json::json!([]),
    );
    // A 1280 px wide window at 200 % is a layout viewport of 640 CSS px.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.execute("return window.innerWidth;", serde_json::json!([])).as_u64().is_none_or(|width| width > 700) {
        assert!(Instant::now() < deadline, "the zoom did not apply within 10 s: {:?}", app.text_of("#error"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // WebKitWebDriver computes click points without the page zoom, so the
    // menu buttons are pressed from the page.
    for screen in ["upload", "transfers"] {
        app.execute(
            "document.querySelector(`nav button[data-screen='${arguments[0]}']`).click();",
            serde_json::json!([screen]),
        );
        app.wait_for(&format!("#screen-{screen}:not([hidden])"), Duration::from_secs(5));
        app.screenshot(&screenshot_path(&format!("zoom-200-{screen}")));
    }

    let layout = app.execute(
        "const nav = document.querySelector('nav').getBoundingClientRect();\
         const main = document.querySelector('main').getBoundingClientRect();\
         return {scroll: document.documentElement.scrollWidth, width: window.innerWidth,\
                 navAboveMain: nav.bottom <= main.top + 1};",
        serde_json::json!([]),
    );
    let scroll = layout["scroll"].as_u64().unwrap_or(u64::MAX);
    let width = layout["width"].as_u64().unwrap_or(0);
    assert!(scroll <= width, "no horizontal scrolling at 200 %: {layout}");
    assert_eq!(layout["navAboveMain"], serde_json::json!(true), "the menu moves above the screen: {layout}");
    app.close();
}

/// Returns the process id that owns `name` on the session bus, if any.
fn bus_name_owner(name: &str) -> Option<u32> {
    let output = Command::new("dbus-send")
        .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
        .args(["org.freedesktop.DBus.GetConnectionUnixProcessID", &format!("string:{name}")])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().find_map(|line| line.trim().strip_prefix("uint32 ")?.parse().ok())
}

/// Waits until `name` is owned by `pid` on the session bus.
fn wait_for_owner(name: &str, pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while bus_name_owner(name) != Some(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} does not own {name} after {timeout:?}; the owner is {:?}",
            bus_name_owner(name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a reader thread that forwards the lines of `stream`, echoed to
/// stderr with `label`, to the returned channel.
fn line_channel(stream: impl std::io::Read + Send + 'static, label: &'static str) -> std::sync::mpsc::Receiver<String> {
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("{label}: {line}");
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

/// Waits for a line containing `needle`; returns `false` after `timeout`.
fn wait_for_line(received: &std::sync::mpsc::Receiver<String>, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A launch that forwards to an instance which dies before it replies (as
/// when the window closes and the process ends) waits until the bus name
/// is free, then starts as the running instance instead of failing.
#[test]
fn launch_during_exit_waits_then_starts() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    const BUS_NAME: &str = "org.ferry.desktop.SingleInstance";
    let home = tempfile::tempdir().expect("a temporary folder");
    let launch = |stderr: std::process::Stdio| {
        let mut command = Command::new(binary("ferry-desktop"));
        for (name, value) in app_env(home.path()) {
            command.env(name, value);
        }
        command.stdout(std::process::Stdio::null()).stderr(stderr).spawn().expect("ferry-desktop starts")
    };

    // The first instance is stopped, so the second launch's forwarding
    // stays unanswered until the test kills the first.
    let mut first = launch(std::process::Stdio::null());
    wait_for_owner(BUS_NAME, first.id(), Duration::from_secs(60));
    let stopped = Command::new("kill").args(["-STOP", &first.id().to_string()]).status();
    assert!(stopped.is_ok_and(|status| status.success()), "kill -STOP {} failed", first.id());

    let mut monitor = Command::new("dbus-monitor")
        .args(["--session", "interface='org.SingleInstance.DBus'"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dbus-monitor starts");
    let calls = line_channel(monitor.stdout.take().expect("dbus-monitor's stdout"), "dbus-monitor");
    // dbus-monitor prints its own NameAcquired signal once it listens.
    assert!(wait_for_line(&calls, "NameAcquired", Duration::from_secs(10)), "dbus-monitor did not start");

    let mut second = launch(std::process::Stdio::piped());
    let messages = line_channel(second.stderr.take().expect("the second launch's stderr"), "second launch");
    let forwarded = wait_for_line(&calls, "member=ExecuteCallback", Duration::from_secs(60));
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(forwarded, "the second launch did not forward to the first within 60 s");

    first.kill().expect("the stopped first instance is killed");
    first.wait().expect("the first instance is reaped");
    assert!(
        wait_for_line(&messages, "waiting until the exiting instance releases", Duration::from_secs(30)),
        "the second launch did not report that it waits for the exiting instance"
    );
    wait_for_owner(BUS_NAME, second.id(), Duration::from_secs(60));
    assert!(second.try_wait().expect("the second launch's status").is_none(), "the second launch keeps running");

    second.kill().expect("the second instance is stopped");
    second.wait().expect("the second instance is reaped");
}
