//! `kill -9` of the desktop app at seeded random instants of one upload:
//! after each kill the app is started again, resumes the upload on its
//! own, and is killed again, until the last start lets it finish. The
//! store must then hold exactly one object with the file's bytes, and the
//! bytes sent again stay within the part in flight at each kill.
//!
//! The default suite kills 3 times; `FERRY_LONG_TESTS=1` kills 20 times.
//! `FERRY_FAULT_SEED` repeats a run's instants.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::cli::{sha256_file, write_pattern_file};
use ferry_tests::desktop::{App, Driver, missing_prerequisite, redirect_following_browser};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, RequestKind, Rule, SandboxSettings, SeededRng, has_aws_cli,
    long_tests, print_figures, skip_without_credential_store,
};

const MIB: u64 = 1024 * 1024;
const FILE_NAME: &str = "mr-series.bin";
const FILE_SIZE: u64 = 60 * MIB + 13;
/// Upload rate of each part connection through the store's proxy: the
/// upload lasts about 15 s, so the kills land inside it.
const PART_RATE: u64 = 4 * MIB;

fn kills() -> u64 {
    if long_tests() {
        20
    } else {
        eprintln!("3 kills; FERRY_LONG_TESTS=1 runs 20");
        3
    }
}

fn start_driver(home: &Path) -> Driver {
    let browser = redirect_following_browser(home);
    Driver::start(&[
        ("FERRY_HOME", home.join("app").as_os_str()),
        ("BROWSER", browser.as_os_str()),
        ("RUST_LOG", std::ffi::OsStr::new("info")),
    ])
}

/// Signs in, chooses Patient/pat-001, sends one part at a time, and starts
/// the upload of `source`.
fn start_upload(app: &App, fhir_url: &str, source: &Path) {
    app.open_screen("signin");
    app.type_into("#profile-name", "fault");
    app.type_into("#profile-url", fhir_url);
    app.click("#profile-add");
    app.wait_for(
        "#profile-select option[value='fault'][selected]",
        Duration::from_secs(10),
    );
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

/// Returns the state of the upload's row on the Transfers screen, if shown.
fn row_state(app: &App) -> Option<String> {
    let value = app.execute(
        "const rows = [...document.querySelectorAll('#transfers-table tbody tr')];\
         const row = rows.find((row) => row.cells[0] && row.cells[0].textContent === arguments[0]);\
         return row ? row.getAttribute('data-state') : null;",
        serde_json::json!([FILE_NAME]),
    );
    value.as_str().map(str::to_owned)
}

/// Waits until the upload's row shows one of `states` and returns it;
/// `context` adds what the store saw to a failure message.
fn wait_for_state(
    app: &App,
    states: &[&str],
    timeout: Duration,
    context: &dyn Fn() -> String,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(state) = row_state(app) {
            assert_ne!(
                state,
                "failed",
                "the upload failed: {:?}",
                app.text_of("#transfers-table")
            );
            assert_ne!(
                state,
                "stalled",
                "the app does not run the upload: {:?}; {:?}",
                app.text_of("#transfers-table"),
                app.text_of("#header-session")
            );
            if states.contains(&state.as_str()) {
                return state;
            }
            last = Some(state);
        }
        assert!(
            Instant::now() < deadline,
            "the upload did not reach {states:?} within {timeout:?}; last state {last:?}; \
             table {:?}; header {:?}; error {:?}; {}",
            app.text_of("#transfers-table"),
            app.text_of("#header-session"),
            app.text_of("#error"),
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn desktop_upload_survives_kill_9_at_random_instants() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("desktop_kills");
    let env = FaultSandbox::start(&SandboxSettings::default());
    env.proxy.add_rule(Rule {
        kind: RequestKind::UploadPart,
        skip: 0,
        times: u32::MAX,
        action: Action::Throttle(PART_RATE),
    });
    let source = env.home.path().join(FILE_NAME);
    write_pattern_file(&source, FILE_SIZE);

    let context = || {
        let parts: Vec<_> = env
            .proxy
            .upload_parts()
            .iter()
            .map(|seen| (seen.part_number, seen.body_forwarded, seen.body_length))
            .collect();
        format!("part requests (number, forwarded, length): {parts:?}")
    };
    let mut driver = start_driver(env.home.path());
    let mut app = driver.launch();
    start_upload(&app, &env.fhir_url, &source);
    app.open_screen("transfers");
    wait_for_state(&app, &["running"], Duration::from_secs(120), &context);

    let mut killed = 0;
    for index in 1..=kills() {
        let delay = Duration::from_millis(200 + rng.below(3_000));
        std::thread::sleep(delay);
        if row_state(&app).as_deref() == Some("completed") {
            eprintln!("kill {index}: the upload finished first");
            break;
        }
        let pid = app
            .app_pid()
            .expect("the app's process is found below tauri-driver");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        assert!(
            status.is_ok_and(|status| status.success()),
            "kill -KILL {pid} failed"
        );
        killed += 1;
        eprintln!("kill {index}: after {delay:?}; {}", context());
        drop(app);
        drop(driver);

        driver = start_driver(env.home.path());
        app = driver.launch();
        app.open_screen("transfers");
        wait_for_state(
            &app,
            &["running", "completed"],
            Duration::from_secs(120),
            &context,
        );
    }
    wait_for_state(&app, &["completed"], Duration::from_secs(300), &context);
    let rows = app.execute(
        "return document.querySelectorAll('#transfers-table tbody tr').length;",
        serde_json::json!([]),
    );
    assert_eq!(
        rows,
        serde_json::json!(1),
        "the resumed upload is the same transfer, not a new one"
    );
    app.close();
    assert!(killed > 0, "no kill fell inside the upload");

    let parts = env.proxy.upload_parts();
    let largest_part = parts.iter().map(|seen| seen.body_length).max().unwrap_or(0);
    let resent = env.proxy.upload_part_bytes().saturating_sub(FILE_SIZE);
    let bound = killed * largest_part;
    assert!(
        resent <= bound,
        "{resent} bytes were sent again; at most {bound} were in flight at the kills"
    );

    let mut corrupted = 0;
    if has_aws_cli() {
        let objects = env.objects().unwrap();
        assert_eq!(objects.len(), 1, "one object in the store: {objects:?}");
        assert_eq!(objects[0].1, FILE_SIZE, "the object has the file's size");
        let copy = env.home.path().join("stored-copy.bin");
        let copy_text = copy.display().to_string();
        env.s3api(&["get-object", "--key", &objects[0].0, &copy_text])
            .expect("the aws CLI runs");
        if sha256_file(&copy) != sha256_file(&source) {
            corrupted += 1;
        }
        assert_eq!(corrupted, 0, "the stored object has the file's bytes");
    } else {
        eprintln!("the aws CLI is missing: the store's object is not checked");
    }

    print_figures(
        "kill-9-desktop-upload",
        &Figures {
            runs: killed,
            transfers: 1,
            bytes_moved: FILE_SIZE,
            bytes_resent: resent,
            lost: 0,
            corrupted,
        },
    );
}
