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

use std::process::Child;
use std::time::{Duration, Instant};

use ferry_tests::cli::{describe, run, sha256_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, MIB, PART_MIB, RequestKind, Rule, SandboxSettings, SeededRng,
    check_one_object_per_upload, check_resent_part_bytes, check_uploaded, finish,
    finished_download_matches, print_figures, repetitions, skip_without_credential_store,
    spawn_piped, uploaded_document_id, write_distinct_file,
};

const PARALLEL: u64 = 2;
/// Time the gateway stays down before it starts again.
const DOWNTIME: Duration = Duration::from_millis(500);
/// Time a transfer gets to finish after the restart.
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);

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
    let output = run(&mut env.upload_command(&first, PARALLEL));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("an upload of {} bytes takes {duration:?}", sizes[0]);

    let mut restarted = 0;
    for index in 1..=repetitions("restarts", 20) {
        let size = 20 * MIB + index * 4099 + 1;
        let path = env.home.path().join(format!("upload-{index}.bin"));
        write_distinct_file(&path, size, index);
        sizes.push(size);

        let delay = Duration::from_millis(rng.below(duration.as_millis() as u64));
        let mut child = spawn_piped(&mut env.upload_command(&path, PARALLEL));
        let was_restarted = restart_while_running(&mut env, &mut child, delay);
        let output = finish(child, FINISH_TIMEOUT);
        eprintln!("upload {index}: restart after {delay:?}, restarted={was_restarted}");
        restarted += u64::from(was_restarted);

        check_uploaded(&output, &path);
    }
    assert!(restarted > 0, "no restart fell inside an upload");

    let states = env.check_transfers_completed();
    assert_eq!(states.len(), sizes.len(), "{states:?}");

    let total: u64 = sizes.iter().sum();
    let bound = restarted * PARALLEL * PART_MIB * MIB;
    let resent = check_resent_part_bytes(&env, total, bound, "were in flight at the restarts");
    check_one_object_per_upload(&env, &sizes);

    print_figures(
        "gateway-restart-upload",
        &Figures::uploads(restarted, &sizes, resent),
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
    let uploaded = run(&mut env.upload_command(&source, PARALLEL));
    assert!(uploaded.status.success(), "{}", describe(&uploaded));
    let document_id = uploaded_document_id(&uploaded);
    let expected = sha256_file(&source);

    // Ranges come back at 4 MiB/s per connection, so a download lasts
    // seconds and a restart lands inside it.
    env.proxy.add_rule(Rule {
        kind: RequestKind::GetObject,
        skip: 0,
        times: u32::MAX,
        action: Action::Throttle(4 * MIB),
    });
    let before = env.proxy.downstream_bytes();
    let folder = env.home.path().join("download-0");
    let started = Instant::now();
    let output = run(&mut env.download_command(&document_id, &folder));
    let duration = started.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    eprintln!("a download of {size} bytes takes {duration:?}");

    let count = repetitions("restarts", 20);
    let mut restarted = 0;
    let mut corrupted = 0;
    for index in 1..=count {
        let folder = env.home.path().join(format!("download-{index}"));
        let delay = Duration::from_millis(rng.below(duration.as_millis() as u64));
        let mut child = spawn_piped(&mut env.download_command(&document_id, &folder));
        let was_restarted = restart_while_running(&mut env, &mut child, delay);
        let output = finish(child, FINISH_TIMEOUT);
        eprintln!("download {index}: restart after {delay:?}, restarted={was_restarted}");
        restarted += u64::from(was_restarted);

        assert!(output.status.success(), "{}", describe(&output));
        if !finished_download_matches(&folder, "study.bin", &expected) {
            corrupted += 1;
        }
    }
    assert!(restarted > 0, "no restart fell inside a download");
    assert_eq!(corrupted, 0, "every download matches the source");
    env.check_transfers_completed();

    let transfers = count + 1;
    let fetched = env.proxy.downstream_bytes() - before;
    print_figures(
        "gateway-restart-download",
        &Figures::downloads(restarted, transfers, size, fetched, corrupted),
    );
}
