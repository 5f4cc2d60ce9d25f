//! Added latency and loss between `ferry` and the store, made by the fault
//! proxy. Every 16 KiB of part bodies and range responses waits 2 ms. In
//! each run one part upload and one range response are cut off at seeded
//! random offsets, as on a lossy link that drops connections. Each run
//! uploads a file and downloads it back.
//!
//! `tc netem` would be the usual tool, but this kernel has no `netem`
//! queueing discipline (docs/reliability.md says more), so the proxy
//! stands in for it.
//!
//! The default suite makes 3 runs; `FERRY_LONG_TESTS=1` makes 10.
//! `FERRY_FAULT_SEED` repeats a run's offsets.

use std::time::Duration;

use ferry_tests::cli::{describe, events, run, sha256_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, MIB, PART_MIB, RequestKind, Rule, SandboxSettings, SeededRng,
    check_one_object_per_upload, check_resent_part_bytes, partial_files, print_figures,
    repetitions, skip_without_credential_store, write_distinct_file,
};

const LATENCY: Duration = Duration::from_millis(2);

#[test]
fn latency_and_random_resets_lose_nothing() {
    if skip_without_credential_store() {
        return;
    }
    let mut rng = SeededRng::from_env("latency_and_resets");
    let env = FaultSandbox::start(&SandboxSettings::default());

    let count = repetitions("runs", 10);
    let mut sizes = Vec::new();
    let mut corrupted = 0;
    let mut downloaded = 0;
    let mut resets = 0;
    for index in 1..=count {
        let size = 12 * MIB + index * 4099 + 1;
        let path = env.home.path().join(format!("lossy-{index}.bin"));
        write_distinct_file(&path, size, index);
        sizes.push(size);

        // The reset rules come first, so they pick their request before
        // the latency rules do.
        let part_skip = rng.below(3) as u32;
        let part_offset = rng.below(PART_MIB * MIB);
        let range_offset = 1 + rng.below(size);
        eprintln!(
            "run {index}: part request {} cut after {part_offset} body bytes, \
             range response cut after {range_offset} bytes",
            part_skip + 1
        );
        env.proxy.clear_rules();
        env.proxy.add_rule(Rule {
            kind: RequestKind::UploadPart,
            skip: part_skip,
            times: 1,
            action: Action::ResetAfter(part_offset),
        });
        // The gateway checks a completed object against the SHA-256 the
        // embedded store recorded, without a `GET`, so the first `GET` is
        // the download's.
        env.proxy.add_rule(Rule {
            kind: RequestKind::GetObject,
            skip: 0,
            times: 1,
            action: Action::ResetResponseAfter(range_offset),
        });
        for kind in [RequestKind::UploadPart, RequestKind::GetObject] {
            env.proxy.add_rule(Rule {
                kind,
                skip: 0,
                times: u32::MAX,
                action: Action::Latency(LATENCY),
            });
        }

        let uploaded = run(&mut env.upload_command(&path, 2));
        assert!(uploaded.status.success(), "{}", describe(&uploaded));
        let event = &events(&uploaded.stdout, "uploaded")[0];
        assert_eq!(event["sha256"], sha256_file(&path));
        let document_id = event["document_id"].as_str().unwrap().to_owned();

        let folder = env.home.path().join(format!("back-{index}"));
        let before = env.proxy.downstream_bytes();
        let download = run(&mut env.download_command(&document_id, &folder));
        assert!(download.status.success(), "{}", describe(&download));
        downloaded += env.proxy.downstream_bytes() - before;
        assert!(partial_files(&folder).is_empty());
        let name = path.file_name().unwrap();
        if sha256_file(&folder.join(name)) != sha256_file(&path) {
            corrupted += 1;
        }

        let faulted = env
            .proxy
            .seen()
            .iter()
            .filter(|seen| {
                seen.fault
                    .as_deref()
                    .is_some_and(|fault| fault.starts_with("Reset"))
            })
            .count();
        resets = faulted as u64;
    }
    assert_eq!(corrupted, 0, "every download matches its source");
    assert_eq!(resets, 2 * count, "every run met both resets");

    let total: u64 = sizes.iter().sum();
    let bound = count * PART_MIB * MIB;
    let resent = check_resent_part_bytes(&env, total, bound, "were in the cut-off parts");
    check_one_object_per_upload(&env, &sizes);

    print_figures(
        "latency-and-random-resets",
        &Figures {
            runs: resets,
            transfers: 2 * count,
            bytes_moved: 2 * total,
            bytes_resent: resent + downloaded.saturating_sub(total),
            lost: 0,
            corrupted,
        },
    );
}
