//! The desktop app's benchmark: launch to an interactive window, idle
//! memory, and memory and UI responsiveness while 20 uploads run. It runs
//! only with `FERRY_DESKTOP_BENCH=1` (scripts/bench-desktop.sh sets it) and
//! prints one line per measure; docs/benchmarks.md records the results.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::cli::Sandbox;
use ferry_tests::desktop::{App, Driver, missing_prerequisite, redirect_following_browser, rss_kib_of_tree};

const TRANSFERS: usize = 20;
/// Size of each uploaded file. The files are sparse, so creating them
/// costs no disk space until the store writes the uploaded parts.
const FILE_SIZE: u64 = 256 * 1024 * 1024;
/// Engine-wide bandwidth cap in KiB/s, so the 20 uploads keep running for
/// the whole measurement instead of finishing early.
const CAP_KIB: &str = "8192";
/// Samples of the round trip of a trivial command.
const ROUND_TRIPS: usize = 50;
/// How long the page records the gaps between animation frames.
const FRAME_WINDOW_MS: u64 = 10_000;

fn start_driver(home: &Path) -> Driver {
    let browser = redirect_following_browser(home);
    Driver::start(&[
        ("FERRY_HOME", home.join("ferry").as_os_str()),
        ("BROWSER", browser.as_os_str()),
        ("XDG_DATA_HOME", home.join("xdg-data").as_os_str()),
        ("XDG_CACHE_HOME", home.join("xdg-cache").as_os_str()),
        ("XDG_CONFIG_HOME", home.join("xdg-config").as_os_str()),
    ])
}

/// Prints the app's RSS and that of the app with its WebKit processes.
fn print_rss(app: &App, label: &str) {
    let pid = app.app_pid().expect("the app's process is found below tauri-driver");
    let tree = rss_kib_of_tree(pid);
    let own = tree.first().map_or(0, |(_, kib)| *kib);
    let total: u64 = tree.iter().map(|(_, kib)| kib).sum();
    println!(
        "bench: {label}: RSS of the app {} MiB; of the app and its {} WebKit processes {} MiB",
        own / 1024,
        tree.len() - 1,
        total / 1024
    );
}

/// Prints the median, 95th percentile and maximum of `samples` in ms.
fn print_distribution(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction).round() as usize];
    println!(
        "bench: {label}: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} samples)",
        at(0.5),
        at(0.95),
        at(1.0),
        samples.len()
    );
}

/// Measures the round trip of `settings_get`, which reads one mutex, from
/// the page: the cost of the IPC bridge and of a busy main thread.
fn command_round_trips(app: &App) -> Vec<f64> {
    let script = format!(
        "const times = []; \
         for (let i = 0; i < {ROUND_TRIPS}; i++) {{ \
           const start = performance.now(); \
           await window.__TAURI__.core.invoke('settings_get'); \
           times.push(performance.now() - start); \
         }} \
         return times;"
    );
    let value = app.execute_async(&script);
    value.as_array().unwrap_or_else(|| panic!("no round trips: {value}")).iter().filter_map(|ms| ms.as_f64()).collect()
}

/// Records the gaps between animation frames in the page for
/// `FRAME_WINDOW_MS`; a long gap is a frame the window could not draw.
fn frame_gaps(app: &App) -> Vec<f64> {
    let script = format!(
        "const gaps = []; let last = performance.now(); const end = last + {FRAME_WINDOW_MS}; \
         await new Promise((resolve) => {{ \
           const frame = (now) => {{ gaps.push(now - last); last = now; \
             if (now < end) requestAnimationFrame(frame); else resolve(); }}; \
           requestAnimationFrame(frame); \
         }}); \
         return gaps;"
    );
    let value = app.execute_async(&script);
    value.as_array().unwrap_or_else(|| panic!("no frame gaps: {value}")).iter().filter_map(|ms| ms.as_f64()).collect()
}

#[test]
fn desktop_bench_launch_idle_and_twenty_transfers() {
    if std::env::var("FERRY_DESKTOP_BENCH").as_deref() != Ok("1") {
        eprintln!("skipped: set FERRY_DESKTOP_BENCH=1 (scripts/bench-desktop.sh does)");
        return;
    }
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let home = tempfile::tempdir().expect("a temporary folder");
    let sandbox = Sandbox::start(&home.path().join("gateway"), "tech-okafor");
    let driver = start_driver(home.path());

    // Launch: from the new-session request to `body[data-ready]`.
    let started = Instant::now();
    let app = driver.launch();
    let launch = started.elapsed();
    let in_page = app.execute("return performance.now();", serde_json::json!([]));
    println!(
        "bench: launch to interactive {:.2} s (WebDriver new session to body[data-ready]); \
         page load to now {:.0} ms",
        launch.as_secs_f64(),
        in_page.as_f64().unwrap_or(f64::NAN)
    );

    std::thread::sleep(Duration::from_secs(5));
    print_rss(&app, "idle, 5 s after launch");
    print_distribution("idle command round trip", command_round_trips(&app));
    print_distribution("idle gap between animation frames", frame_gaps(&app));

    // Sign in, cap the bandwidth and start 20 uploads.
    app.open_screen("signin");
    app.type_into("#profile-name", "bench");
    app.type_into("#profile-url", &sandbox.fhir_url);
    app.click("#profile-add");
    app.wait_for("#profile-select option[value='bench'][selected]", Duration::from_secs(10));
    app.click("#sign-in");
    app.wait_for("#session-user", Duration::from_secs(60));
    app.open_screen("settings");
    app.type_into("#settings-cap", CAP_KIB);
    app.click("#settings-save");
    app.wait_for("#settings-status:not(:empty)", Duration::from_secs(10));
    app.open_screen("patient");
    app.type_into("#patient-query", "Nwosu");
    app.click("#patient-search");
    app.click("tr[data-patient-id='pat-001'] button.choose-patient");
    app.wait_for("#header-patient:not(:empty)", Duration::from_secs(10));

    app.open_screen("upload");
    for index in 0..TRANSFERS {
        let path = home.path().join(format!("scan-{index:02}.bin"));
        let file = std::fs::File::create(&path).expect("a bench file is created");
        file.set_len(FILE_SIZE).expect("the bench file gets its size");
        app.type_into("#upload-path", &path.display().to_string());
        app.click("#upload-add");
        app.wait_for(&format!(".inspection[data-path='{}']", path.display()), Duration::from_secs(30));
    }
    app.click("#upload-start");
    app.wait_for("#screen-transfers:not([hidden])", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running = app.execute(
            "return document.querySelectorAll('#transfers-table tbody tr[data-state=\"running\"]').length;",
            serde_json::json!([]),
        );
        if running.as_u64() == Some(TRANSFERS as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "{running} of {TRANSFERS} uploads running after 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    print_rss(&app, "20 uploads running");
    print_distribution("command round trip with 20 uploads running", command_round_trips(&app));
    print_distribution("gap between animation frames with 20 uploads running", frame_gaps(&app));
    let still_running = app.execute(
        "return document.querySelectorAll('#transfers-table tbody tr[data-state=\"running\"]').length;",
        serde_json::json!([]),
    );
    println!("bench: uploads still running at the end: {still_running}");
    app.close();
}
