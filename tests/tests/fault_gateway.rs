//! A gateway restart in the middle of a transfer: `ferry-gateway sandbox` is
//! killed with SIGKILL at a seeded random instant of a running `ferry upload`
//! or `ferry download` and started again on the same data folder and ports.
//! Its embedded store goes down with it. The running transfer must finish
//! on its own, with the file's SHA-256, one object per upload in the store,
//! no partial file at the destination, and at most the parts in flight sent
//! again.
//!
//! The default suite restarts 3 times per direction; `FERRY_LONG_TESTS=1`
//! restarts 20 times. `FERRY_FAULT_SEED` repeats a run's instants.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::cli::{describe, events, run, sha256_file, write_pattern_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, RequestKind, Rule, SandboxSettings, SeededRng, has_aws_cli,
    long_tests, partial_files, print_figures, skip_without_credential_store,
};

const MIB: u64 = 1024 * 1024;
const PART_MIB: u64 = 5;
const PARALLEL: u64 = 2;
/// Time the gateway stays down before it starts again.
const DOWNTIME: Duration = Duration::from_millis(500);
/// Time a transfer gets to finish after the restart.
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);

fn restarts() -> u64 {
    if long_tests() {
        20
    } else {
        eprintln!("3 restarts; FERRY_LONG_TESTS=1 runs 20");
        3
    }
}

/// Writes a file of `size` bytes whose content differs from every other
/// index's.
fn write_distinct_file(path: &Path, size: u64, index: u64) {
    write_pattern_file(path, size);
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for offset in [0, size / 2, size - 8] {
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&index.to_le_bytes()).unwrap();
    }
}

fn upload_command(env: &FaultSandbox, path: &Path) -> Command {
    let mut command = env.ferry();
    command
        .args(["--json", "upload", "--patient", "pat-001", "--part-size"])
        .arg(PART_MIB.to_string())
        .arg("--parallel")
        .arg(PARALLEL.to_string())
        .arg(path);
    command
}

fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts")
}

/// Waits for `child` to end within [`FINISH_TIMEOUT`], killing it after.
fn finish(child: Child) -> Output {
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(FINISH_TIMEOUT) {
        Ok(output) => output.expect("ferry ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let output = receiver.recv().unwrap().expect("ferry ran");
            panic!(
                "ferry did not finish within {FINISH_TIMEOUT:?} of the restart\n{}",
                describe(&output)
            );
        }
    }
}

/// Waits `delay`, then restarts the gateway if `child` is still running.
/// Returns whether it restarted.
fn restart_while_running(env: &mut FaultSandbox, child: &mut Child, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().expect("the child's state").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().expect("the child's state").is_some() {
        return false;
    }
    env.restart_gateway(DOWNTIME);
    true
}

/// States of the journal's transfers.
fn journal_states(env: &FaultSandbox) -> Vec<String> {
    let listed = run(env.ferry().args(["--json", "transfers"]));
    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    document["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn gateway_restart_mid_upload_loses_nothing() {
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("gateway_restart_upload");
    let mut env = FaultSandbox::start(&SandboxSettings::default());
    // Each part connection moves 4 MiB/s, so an upload lasts seconds and
    // a restart lands inside it.
    env.proxy.add_rule(Rule {
        kind: RequestKind::UploadPart,
        skip: 0,
        times: u32::MAX,
        action: Action::Throttle(4 * MIB),
    });

    // An uninterrupted upload first, to measure how long one takes.
    let first = env.home.path().join("upload-0.bin");
    let mut sizes = vec![20 * MIB + 1];
    write_distinct_file(&first, sizes[0], 0);
    let started = Instant::now();
    let output = run(&mut upload_command(&env, &first));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("an upload of {} bytes takes {duration:?}", sizes[0]);

    let mut restarted = 0;
    for index in 1..=restarts() {
        let size = 20 * MIB + index * 4099 + 1;
        let path = env.home.path().join(format!("upload-{index}.bin"));
        write_distinct_file(&path, size, index);
        sizes.push(size);

        let delay = Duration::from_millis(rng.below(duration.as_millis() as u64));
        let mut child = spawn(upload_command(&env, &path));
        let was_restarted = restart_while_running(&mut env, &mut child, delay);
        let output = finish(child);
        eprintln!("upload {index}: restart after {delay:?}, restarted={was_restarted}");
        restarted += u64::from(was_restarted);

        assert!(output.status.success(), "{}", describe(&output));
        let uploaded = events(&output.stdout, "uploaded");
        assert_eq!(uploaded.len(), 1, "{}", describe(&output));
        assert_eq!(uploaded[0]["sha256"], sha256_file(&path));
    }
    assert!(restarted > 0, "no restart fell inside an upload");

    let states = journal_states(&env);
    assert_eq!(states.len(), sizes.len(), "{states:?}");
    assert!(
        states.iter().all(|state| state == "completed"),
        "unfinished transfers: {states:?}"
    );

    let total: u64 = sizes.iter().sum();
    let resent = env.proxy.upload_part_bytes().saturating_sub(total);
    let bound = restarted * PARALLEL * PART_MIB * MIB;
    assert!(
        resent <= bound,
        "{resent} bytes were sent again; at most {bound} were in flight at the restarts"
    );

    if has_aws_cli() {
        let mut stored: Vec<u64> = env
            .objects()
            .unwrap()
            .iter()
            .map(|(_, size)| *size)
            .collect();
        stored.sort_unstable();
        let mut expected = sizes.clone();
        expected.sort_unstable();
        assert_eq!(
            stored, expected,
            "one whole object per upload, no duplicates"
        );
    } else {
        eprintln!("the aws CLI is missing: the store's listing is not checked");
    }

    print_figures(
        "gateway-restart-upload",
        &Figures {
            runs: restarted,
            transfers: sizes.len() as u64,
            bytes_moved: total,
            bytes_resent: resent,
            lost: 0,
            corrupted: 0,
        },
    );
}

#[test]
fn gateway_restart_mid_download_loses_nothing() {
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("gateway_restart_download");
    let mut env = FaultSandbox::start(&SandboxSettings::default());

    let size = 30 * MIB + 5;
    let source = env.home.path().join("study.bin");
    write_distinct_file(&source, size, 99);
    let uploaded = run(&mut upload_command(&env, &source));
    assert!(uploaded.status.success(), "{}", describe(&uploaded));
    let document_id = events(&uploaded.stdout, "uploaded")[0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = sha256_file(&source);

    // Ranges come back at 4 MiB/s per connection, so a download lasts
    // seconds and a restart lands inside it.
    env.proxy.add_rule(Rule {
        kind: RequestKind::GetObject,
        skip: 0,
        times: u32::MAX,
        action: Action::Throttle(4 * MIB),
    });
    let download = |env: &FaultSandbox, folder: &Path| {
        let mut command = env.ferry();
        command
            .args(["--json", "download", &document_id, "--to"])
            .arg(folder);
        command
    };
    let before = env.proxy.downstream_bytes();
    let folder = env.home.path().join("download-0");
    let started = Instant::now();
    let output = run(&mut download(&env, &folder));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("a download of {size} bytes takes {duration:?}");

    let count = restarts();
    let mut restarted = 0;
    let mut corrupted = 0;
    for index in 1..=count {
        let folder = env.home.path().join(format!("download-{index}"));
        let delay = Duration::from_millis(rng.below(duration.as_millis() as u64));
        let mut child = spawn(download(&env, &folder));
        let was_restarted = restart_while_running(&mut env, &mut child, delay);
        let output = finish(child);
        eprintln!("download {index}: restart after {delay:?}, restarted={was_restarted}");
        restarted += u64::from(was_restarted);

        assert!(output.status.success(), "{}", describe(&output));
        let names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["study.bin"], "only the finished file is left");
        assert!(partial_files(&folder).is_empty());
        if sha256_file(&folder.join("study.bin")) != expected {
            corrupted += 1;
        }
    }
    assert!(restarted > 0, "no restart fell inside a download");
    assert_eq!(corrupted, 0, "every download matches the source");
    let states = journal_states(&env);
    assert!(
        states.iter().all(|state| state == "completed"),
        "unfinished transfers: {states:?}"
    );

    let transfers = count + 1;
    let fetched = env.proxy.downstream_bytes() - before;
    print_figures(
        "gateway-restart-download",
        &Figures {
            runs: restarted,
            transfers,
            bytes_moved: transfers * size,
            bytes_resent: fetched.saturating_sub(transfers * size),
            lost: 0,
            corrupted,
        },
    );
}
