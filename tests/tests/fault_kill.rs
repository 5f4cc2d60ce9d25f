//! `kill -9` of `ferry upload` and `ferry download` at seeded random
//! instants, then `ferry resume`: every transfer finishes, the store holds
//! exactly one whole object per upload, the destination folders hold no
//! partial files, and the bytes sent again stay within the parts in flight.
//!
//! The default suite kills 3 times per direction; `FERRY_LONG_TESTS=1`
//! kills 20 times. `FERRY_FAULT_SEED` repeats a run's instants.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::cli::{describe, events, run, sha256_file, write_pattern_file};
use ferry_tests::fault::{
    FaultSandbox, Figures, SandboxSettings, SeededRng, has_aws_cli, long_tests, partial_files,
    print_figures, skip_without_credential_store,
};

const MIB: u64 = 1024 * 1024;
const PART_MIB: u64 = 5;
const PARALLEL: u64 = 2;

fn instants() -> usize {
    if long_tests() {
        20
    } else {
        eprintln!("3 kill instants; FERRY_LONG_TESTS=1 runs 20");
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

fn upload_command(env: &FaultSandbox, path: &Path) -> std::process::Command {
    let mut command = env.ferry();
    command
        .args(["--json", "upload", "--patient", "pat-001", "--part-size"])
        .arg(PART_MIB.to_string())
        .arg("--parallel")
        .arg(PARALLEL.to_string())
        .arg(path);
    command
}

/// Runs `command`, killing it with SIGKILL after `delay` unless it ended.
/// Returns whether it was killed and its output.
fn run_and_kill(mut command: std::process::Command, delay: Duration) -> (bool, Output) {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts");
    let pid = child.id();
    let deadline = Instant::now() + delay;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let remaining = deadline.saturating_duration_since(Instant::now());
    match receiver.recv_timeout(remaining) {
        Ok(output) => (false, output.expect("ferry ran")),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            let output = receiver
                .recv_timeout(Duration::from_secs(30))
                .expect("a killed ferry ends")
                .expect("ferry ran");
            (true, output)
        }
    }
}

/// Transfers in the journal as (state, file name, direction).
fn journal(env: &FaultSandbox) -> Vec<(String, String, String)> {
    let listed = run(env.ferry().args(["--json", "transfers"]));
    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    document["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            (
                record["state"].as_str().unwrap_or_default().to_owned(),
                record["file_name"].as_str().unwrap_or_default().to_owned(),
                record["direction"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Resumes after a kill; returns the NDJSON of the resume.
fn resume(env: &FaultSandbox) -> Output {
    let resumed = run(env.ferry().args(["--json", "resume"]));
    assert!(resumed.status.success(), "{}", describe(&resumed));
    resumed
}

#[test]
fn killed_uploads_resume_without_lost_or_duplicate_objects() {
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("killed_uploads");
    let env = FaultSandbox::start(&SandboxSettings::default());
    let count = instants();

    // An uninterrupted upload first, to measure how long one takes.
    let mut sizes = Vec::new();
    let first = env.home.path().join("upload-0.bin");
    let size = 12 * MIB + 1;
    write_distinct_file(&first, size, 0);
    sizes.push(size);
    let started = Instant::now();
    let output = run(&mut upload_command(&env, &first));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("an upload of {size} bytes takes {duration:?}");

    let mut killed = 0;
    for index in 1..=count as u64 {
        let size = 12 * MIB + index * 4099 + 1;
        let path = env.home.path().join(format!("upload-{index}.bin"));
        write_distinct_file(&path, size, index);
        sizes.push(size);
        let span = duration.as_millis() as u64 + 300;
        let delay = Duration::from_millis(rng.below(span));
        let (was_killed, output) = run_and_kill(upload_command(&env, &path), delay);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let stages: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|event| event["state"].as_str().map(str::to_owned))
            .collect();
        eprintln!(
            "upload {index}: kill after {delay:?}, killed={was_killed}, last state seen {:?}",
            stages.last()
        );
        if !was_killed {
            assert!(output.status.success(), "{}", describe(&output));
            continue;
        }
        killed += 1;
        let in_journal = journal(&env).iter().any(|(_, file, _)| *file == name);
        if in_journal {
            resume(&env);
        } else {
            // Killed before the journal recorded the transfer: nothing to
            // resume, so the user starts the upload again.
            let again = run(&mut upload_command(&env, &path));
            assert!(again.status.success(), "{}", describe(&again));
        }
    }

    let records = journal(&env);
    let unfinished: Vec<_> = records
        .iter()
        .filter(|(state, _, _)| state != "completed")
        .collect();
    assert!(unfinished.is_empty(), "unfinished transfers: {records:?}");
    assert_eq!(records.len(), sizes.len(), "{records:?}");

    let total: u64 = sizes.iter().sum();
    let resent = env.proxy.upload_part_bytes().saturating_sub(total);
    let bound = killed * PARALLEL * PART_MIB * MIB;
    assert!(
        resent <= bound,
        "{resent} bytes were sent again; at most {bound} were in flight at the kills"
    );

    let mut lost = 0;
    if has_aws_cli() {
        let objects = env.objects().unwrap();
        let mut stored: Vec<u64> = objects.iter().map(|(_, size)| *size).collect();
        stored.sort_unstable();
        let mut expected = sizes.clone();
        expected.sort_unstable();
        assert_eq!(
            stored, expected,
            "one whole object per upload, no duplicates"
        );
        lost = expected.len().saturating_sub(stored.len()) as u64;
        eprintln!(
            "multipart uploads left open for the gateway's cleanup: {:?}",
            env.open_multipart_uploads()
        );
    } else {
        eprintln!("the aws CLI is missing: the store's listing is not checked");
    }

    print_figures(
        "kill-9-upload",
        &Figures {
            runs: killed,
            transfers: sizes.len() as u64,
            bytes_moved: total,
            bytes_resent: resent,
            lost,
            corrupted: 0,
        },
    );
}

#[test]
fn killed_downloads_resume_without_partial_files() {
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("killed_downloads");
    let env = FaultSandbox::start(&SandboxSettings::default());
    let count = instants();

    let size = 40 * MIB + 5;
    let source = env.home.path().join("study.bin");
    write_distinct_file(&source, size, 99);
    let uploaded = run(&mut upload_command(&env, &source));
    assert!(uploaded.status.success(), "{}", describe(&uploaded));
    let document_id = events(&uploaded.stdout, "uploaded")[0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = sha256_file(&source);
    let before = env.proxy.downstream_bytes();

    let download = |folder: &Path| {
        let mut command = env.ferry();
        command
            .args(["--json", "download", &document_id, "--to"])
            .arg(folder);
        command
    };
    let folder = env.home.path().join("download-0");
    let started = Instant::now();
    let output = run(&mut download(&folder));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("a download of {size} bytes takes {duration:?}");

    let mut killed = 0;
    let mut corrupted = 0;
    for index in 1..=count {
        let folder = env.home.path().join(format!("download-{index}"));
        let span = duration.as_millis() as u64 + 300;
        let delay = Duration::from_millis(rng.below(span));
        let (was_killed, output) = run_and_kill(download(&folder), delay);
        eprintln!("download {index}: kill after {delay:?}, killed={was_killed}");
        if was_killed {
            killed += 1;
            let pending = journal(&env)
                .iter()
                .filter(|(state, _, direction)| direction == "download" && state != "completed")
                .count();
            if pending > 0 {
                resume(&env);
            } else if !folder.join("study.bin").exists() {
                let again = run(&mut download(&folder));
                assert!(again.status.success(), "{}", describe(&again));
            }
        } else {
            assert!(output.status.success(), "{}", describe(&output));
        }
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
    assert_eq!(corrupted, 0, "every download matches the source");
    let records = journal(&env);
    assert!(
        records.iter().all(|(state, _, _)| state == "completed"),
        "unfinished transfers: {records:?}"
    );

    let transfers = count as u64 + 1;
    let fetched = env.proxy.downstream_bytes() - before;
    let resent = fetched.saturating_sub(transfers * size);
    print_figures(
        "kill-9-download",
        &Figures {
            runs: killed,
            transfers,
            bytes_moved: transfers * size,
            bytes_resent: resent,
            lost: 0,
            corrupted,
        },
    );
}
