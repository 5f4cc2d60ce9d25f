//! The desktop app's transfer queue survives the app being closed or
//! killed mid-upload: on the next start the app resumes the sign-in and
//! the upload, which completes, as the Transfers screen shows.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::cli::Sandbox;
use ferry_tests::desktop::{App, Driver, missing_prerequisite, redirect_following_browser};

/// Size of the uploaded file: large enough that the upload is still
/// running when the test stops the app.
const FILE_SIZE: u64 = 1024 * 1024 * 1024;
const FILE_NAME: &str = "ct-export.bin";

fn start_driver(home: &Path) -> Driver {
    let browser = redirect_following_browser(home);
    Driver::start(&[
        ("FERRY_HOME", home.join("ferry").as_os_str()),
        ("BROWSER", browser.as_os_str()),
        ("RUST_LOG", std::ffi::OsStr::new("info")),
    ])
}

/// Returns the free bytes of the file system holding `path`, from `df`.
fn free_bytes(path: &Path) -> Option<u64> {
    let output = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().ok()?;
    String::from_utf8_lossy(&output.stdout).lines().nth(1)?.trim().parse().ok()
}

/// Signs in, chooses Patient/pat-001, sends one part at a time, and starts
/// the upload of a 1 GiB file.
fn start_upload(app: &App, sandbox: &Sandbox, source: &Path) {
    app.open_screen("signin");
    app.type_into("#profile-name", "test");
    app.type_into("#profile-url", &sandbox.fhir_url);
    app.click("#profile-add");
    app.wait_for("#profile-select option[value='test'][selected]", Duration::from_secs(10));
    app.click("#sign-in");
    app.wait_for("#session-user", Duration::from_secs(60));

    app.open_screen("settings");
    app.type_into("#settings-parts", "1");
    app.click("#settings-save");
    app.wait_for("#settings-status:not(:empty)", Duration::from_secs(10));

    app.open_screen("patient");
    app.type_into("#patient-query", "Nwosu");
    app.click("#patient-search");
    app.click("tr[data-patient-id='pat-001'] button.choose-patient");
    app.wait_for("#header-patient:not(:empty)", Duration::from_secs(10));

    app.open_screen("upload");
    app.type_into("#upload-path", &source.display().to_string());
    app.click("#upload-add");
    app.wait_for(".inspection[data-path] dl", Duration::from_secs(20));
    app.click("#upload-start");
}

/// Returns the state and bytes done of the upload's row, if it is shown.
fn row(app: &App) -> Option<(String, u64)> {
    let value = app.execute(
        "const rows = [...document.querySelectorAll('#transfers-table tbody tr')];\
         const row = rows.find((row) => row.cells[0] && row.cells[0].textContent === arguments[0]);\
         if (!row) return null;\
         const bar = row.querySelector('progress');\
         return [row.getAttribute('data-state'), bar && bar.value ? bar.value : 0];",
        serde_json::json!([FILE_NAME]),
    );
    let state = value.get(0)?.as_str()?.to_owned();
    let fraction = value.get(1)?.as_f64()?;
    Some((state, (fraction * FILE_SIZE as f64) as u64))
}

/// Waits until the upload is running with some bytes sent and returns them.
fn wait_until_running(app: &App) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((state, done)) = row(app) {
            assert_ne!(state, "completed", "the upload finished before the app could be stopped; use a larger file");
            assert_ne!(state, "failed", "the upload failed: {:?}", app.text_of("#transfers-table"));
            if state == "running" && done > 0 {
                return done;
            }
        }
        assert!(Instant::now() < deadline, "the upload did not start within 120 s: {:?}", app.text_of("#error"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the upload is done and returns the states seen on the way.
fn wait_until_done(app: &App) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Vec::new();
    app.open_screen("transfers");
    loop {
        if let Some((state, _)) = row(app) {
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            match state.as_str() {
                "completed" => return seen,
                "failed" => panic!("the resumed upload failed: {:?}", app.text_of("#transfers-table")),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "the resumed upload did not finish within 300 s; states seen: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How the test stops the app mid-upload.
enum Stop {
    /// The WebDriver session ends, which closes the window.
    Close,
    /// SIGKILL, as a crash or a power cut would.
    Kill,
}

fn upload_resumes_after(stop: Stop) {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let free = free_bytes(home.path()).unwrap_or(0);
    if free < 3 * FILE_SIZE {
        eprintln!("skipped: {free} bytes free in {}, need {}", home.path().display(), 3 * FILE_SIZE);
        return;
    }
    let source = home.path().join(FILE_NAME);
    let file = std::fs::File::create(&source).expect("the test file is created");
    file.set_len(FILE_SIZE).expect("the test file gets its size");
    drop(file);

    let sandbox = Sandbox::start(&home.path().join("gateway"), "tech-okafor");
    let driver = start_driver(home.path());
    let app = driver.launch();
    start_upload(&app, &sandbox, &source);
    let sent = wait_until_running(&app);
    assert!(sent < FILE_SIZE, "stopped before the end of the upload");

    let driver = match stop {
        Stop::Close => {
            app.close();
            driver
        }
        Stop::Kill => {
            let pid = app.app_pid().expect("the app's process is found below tauri-driver");
            let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            assert!(status.is_ok_and(|status| status.success()), "kill -KILL {pid} failed");
            drop(app);
            drop(driver);
            start_driver(home.path())
        }
    };

    let app = driver.launch();
    let states = wait_until_done(&app);
    assert_eq!(states.last().map(String::as_str), Some("completed"), "states seen: {states:?}");
    let rows = app.execute("return document.querySelectorAll('#transfers-table tbody tr').length;", serde_json::json!([]));
    assert_eq!(rows, serde_json::json!(1), "the resumed upload is the same transfer, not a new one");
    app.close();
}

/// The app is reopened right after its window closed, while the closed
/// instance may still be shutting down: the new launch must become the
/// running instance, not forward to the exiting one.
#[test]
fn upload_resumes_after_window_closed() {
    upload_resumes_after(Stop::Close);
}

#[test]
fn upload_resumes_after_app_killed() {
    upload_resumes_after(Stop::Kill);
}
