//! A transfer that another live process has claimed in the journal is not
//! run by the desktop app: its row says so, names the process, and offers
//! Resume, which continues the upload once that process has exited.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_core::journal::{Claimant, Journal};
use ferry_core::profile::{FerryDirs, ProfileName};
use ferry_tests::cli::write_pattern_file;
use ferry_tests::desktop::{App, Driver, missing_prerequisite, redirect_following_browser};
use ferry_tests::fault::{Action, FaultSandbox, RequestKind, Rule, SandboxSettings, skip_without_credential_store};

const MIB: u64 = 1024 * 1024;
const FILE_NAME: &str = "claimed-series.bin";
const FILE_SIZE: u64 = 40 * MIB;
/// Upload rate of each part through the store's proxy: the upload lasts
/// about 10 s, so the app is killed while it runs.
const PART_RATE: u64 = 4 * MIB;

fn start_driver(home: &Path) -> Driver {
    let browser = redirect_following_browser(home);
    Driver::start(&[
        ("FERRY_HOME", home.join("app").as_os_str()),
        ("BROWSER", browser.as_os_str()),
        ("RUST_LOG", std::ffi::OsStr::new("info")),
    ])
}

/// Returns the state of the upload's row and the row's text, if shown.
fn row(app: &App) -> Option<(String, String)> {
    let value = app.execute(
        "const rows = [...document.querySelectorAll('#transfers-table tbody tr')];\
         const row = rows.find((row) => row.cells[0] && row.cells[0].textContent === arguments[0]);\
         return row ? [row.getAttribute('data-state'), row.textContent] : null;",
        serde_json::json!([FILE_NAME]),
    );
    Some((value.get(0)?.as_str()?.to_owned(), value.get(1)?.as_str()?.to_owned()))
}

/// Waits until the upload's row shows `state` and returns the row's text.
fn wait_for_row(app: &App, state: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some((shown, text)) = row(app) {
            assert_ne!(shown, "failed", "the upload failed: {text}");
            if shown == state {
                return text;
            }
            last = Some((shown, text));
        }
        assert!(Instant::now() < deadline, "the upload's row did not show {state} within {timeout:?}; last {last:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Returns the claimant that the journal records for the live process
/// `pid`: the boot id and the start time in clock ticks (`/proc/PID/stat`,
/// field 22), as the journal computes them.
fn claimant_of(pid: u32) -> Claimant {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
    let start_ticks = after_name.split_whitespace().nth(19).expect("the start time field");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("the boot id");
    Claimant { pid, start: format!("{}:{start_ticks}", boot_id.trim()) }
}

/// A child process that is killed and reaped when dropped, so that a
/// failed assertion leaves no process behind.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn transfer_claimed_elsewhere_shows_not_running() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());
    env.proxy.add_rule(Rule { kind: RequestKind::UploadPart, skip: 0, times: u32::MAX, action: Action::Throttle(PART_RATE) });
    let source = env.home.path().join(FILE_NAME);
    write_pattern_file(&source, FILE_SIZE);

    let driver = start_driver(env.home.path());
    let app = driver.launch();
    app.open_screen("signin");
    app.type_into("#profile-name", "fault");
    app.type_into("#profile-url", &env.fhir_url);
    app.click("#profile-add");
    app.wait_for("#profile-select option[value='fault'][selected]", Duration::from_secs(10));
    app.click("#sign-in");
    app.wait_for("#session-user", Duration::from_secs(60));
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
    app.open_screen("transfers");
    wait_for_row(&app, "running", Duration::from_secs(60));

    let pid = app.app_pid().expect("the app's process is found below tauri-driver");
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    assert!(status.is_ok_and(|status| status.success()), "kill -KILL {pid} failed");
    wait_until_exited(pid, Duration::from_secs(10));
    drop(app);
    drop(driver);

    // A live process other than the app takes the killed app's claim.
    let holder = ChildGuard(std::process::Command::new("sleep").arg("600").spawn().expect("sleep starts"));
    let holder_pid = holder.0.id();
    let dirs = FerryDirs::under(&env.home.path().join("app"));
    let journal = Journal::open(dirs.journal_path(&ProfileName::new("fault").unwrap())).expect("the journal opens");
    let record = journal.list().expect("the journal lists").into_iter().find(|record| record.file_name == FILE_NAME);
    let record = record.expect("the upload is in the journal");
    let claimed = journal.claim(&record.id, &claimant_of(holder_pid)).expect("the claim is written");
    assert!(claimed.is_ok(), "the killed app's claim is stale and taken over: {claimed:?}");

    let driver = start_driver(env.home.path());
    let app = driver.launch();
    app.open_screen("transfers");
    let text = wait_for_row(&app, "stalled", Duration::from_secs(60));
    assert!(text.contains("Not running"), "the row names its state: {text}");
    assert!(text.contains(&format!("process {holder_pid}")), "the row names the process that runs it: {text}");

    drop(holder);
    app.click(".transfer-resume");
    wait_for_row(&app, "completed", Duration::from_secs(120));
    app.close();
}

/// Waits until process `pid` has exited: gone, or a zombie that its parent
/// has not reaped yet. A signal is delivered asynchronously, so the process
/// can still run for a moment after `kill` returns.
fn wait_until_exited(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still runs {timeout:?} after SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}
