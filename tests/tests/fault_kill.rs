//! `kill -9` of `ferry upload` and `ferry download` at seeded random
//! instants, then `ferry resume`: every transfer finishes, the store holds
//! exactly one whole object per upload, the destination folders hold no
//! partial files, and the bytes sent again stay within the parts in flight.
//!
//! The default suite kills 3 times per direction; `FERRY_LONG_TESTS=1`
//! kills 20 times. `FERRY_FAULT_SEED` repeats a run's instants.

use std::time::{Duration, Instant};

use ferry_tests::cli::{describe, run, sha256_file};
use ferry_tests::fault::{
    FaultSandbox, Figures, MIB, PART_MIB, SandboxSettings, SeededRng, check_one_object_per_upload,
    check_resent_part_bytes, finished_download_matches, print_figures, repetitions,
    skip_without_credential_store, spawn_piped, uploaded_document_id, wait_or_kill,
    write_distinct_file,
};

const PARALLEL: u64 = 2;

#[test]
fn killed_uploads_resume_without_lost_or_duplicate_objects() {
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("killed_uploads");
    let env = FaultSandbox::start(&SandboxSettings::default());
    let count = repetitions("kill instants", 20);

    // An uninterrupted upload first, to measure how long one takes.
    let mut sizes = Vec::new();
    let first = env.home.path().join("upload-0.bin");
    let size = 12 * MIB + 1;
    write_distinct_file(&first, size, 0);
    sizes.push(size);
    let started = Instant::now();
    let output = run(&mut env.upload_command(&first, PARALLEL));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("an upload of {size} bytes takes {duration:?}");

    let mut killed = 0;
    for index in 1..=count {
        let size = 12 * MIB + index * 4099 + 1;
        let path = env.home.path().join(format!("upload-{index}.bin"));
        write_distinct_file(&path, size, index);
        sizes.push(size);
        let span = duration.as_millis() as u64 + 300;
        let delay = Duration::from_millis(rng.below(span));
        let (was_killed, output) =
            wait_or_kill(spawn_piped(&mut env.upload_command(&path, PARALLEL)), delay);
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
        let in_journal = env
            .transfers()
            .iter()
            .any(|record| record.file_name == name);
        if in_journal {
            env.resume();
        } else {
            // Killed before the journal recorded the transfer: nothing to
            // resume, so the user starts the upload again.
            let again = run(&mut env.upload_command(&path, PARALLEL));
            assert!(again.status.success(), "{}", describe(&again));
        }
    }

    let records = env.transfers();
    let unfinished: Vec<_> = records
        .iter()
        .filter(|record| record.state != "completed")
        .collect();
    assert!(unfinished.is_empty(), "unfinished transfers: {records:?}");
    assert_eq!(records.len(), sizes.len(), "{records:?}");

    let total: u64 = sizes.iter().sum();
    let bound = killed * PARALLEL * PART_MIB * MIB;
    let resent = check_resent_part_bytes(&env, total, bound, "were in flight at the kills");

    let mut lost = 0;
    if let Some(stored) = check_one_object_per_upload(&env, &sizes) {
        lost = sizes.len().saturating_sub(stored) as u64;
        eprintln!(
            "multipart uploads left open for the gateway's cleanup: {:?}",
            env.open_multipart_uploads()
        );
    }

    print_figures(
        "kill-9-upload",
        &Figures {
            lost,
            ..Figures::uploads(killed, &sizes, resent)
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
    let count = repetitions("kill instants", 20);

    let size = 40 * MIB + 5;
    let source = env.home.path().join("study.bin");
    write_distinct_file(&source, size, 99);
    let uploaded = run(&mut env.upload_command(&source, PARALLEL));
    assert!(uploaded.status.success(), "{}", describe(&uploaded));
    let document_id = uploaded_document_id(&uploaded);
    let expected = sha256_file(&source);
    let before = env.proxy.downstream_bytes();

    let folder = env.home.path().join("download-0");
    let started = Instant::now();
    let output = run(&mut env.download_command(&document_id, &folder));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("a download of {size} bytes takes {duration:?}");

    let mut killed = 0;
    let mut corrupted = 0;
    for index in 1..=count {
        let folder = env.home.path().join(format!("download-{index}"));
        let span = duration.as_millis() as u64 + 300;
        let delay = Duration::from_millis(rng.below(span));
        let (was_killed, output) = wait_or_kill(
            spawn_piped(&mut env.download_command(&document_id, &folder)),
            delay,
        );
        eprintln!("download {index}: kill after {delay:?}, killed={was_killed}");
        if was_killed {
            killed += 1;
            let pending = env
                .transfers()
                .iter()
                .filter(|record| record.direction == "download" && record.state != "completed")
                .count();
            if pending > 0 {
                env.resume();
            } else if !folder.join("study.bin").exists() {
                let again = run(&mut env.download_command(&document_id, &folder));
                assert!(again.status.success(), "{}", describe(&again));
            }
        } else {
            assert!(output.status.success(), "{}", describe(&output));
        }
        if !finished_download_matches(&folder, "study.bin", &expected) {
            corrupted += 1;
        }
    }
    assert_eq!(corrupted, 0, "every download matches the source");
    env.check_transfers_completed();

    let transfers = count + 1;
    let fetched = env.proxy.downstream_bytes() - before;
    print_figures(
        "kill-9-download",
        &Figures::downloads(killed, transfers, size, fetched, corrupted),
    );
}
