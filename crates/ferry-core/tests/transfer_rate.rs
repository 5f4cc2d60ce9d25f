//! The engine's bandwidth cap against the sandbox gateway and its embedded
//! store on loopback. Each test checks only a lower bound on the elapsed
//! time: a capped transfer cannot finish sooner than its bytes allow, and
//! a slow machine only makes it later.

mod transfer_support;

use std::time::{Duration, Instant};

use ferry_core::transfer::{DownloadOptions, EngineOptions, TransferOutcome, UploadOptions};
use transfer_support::*;

/// 8 MiB per second; the bucket lets a quarter of a second of it (2 MiB)
/// pass at once.
const CAP: u64 = 8 * MIB;
/// 24 MiB at 8 MiB/s, less the 2 MiB burst, takes at least 2.75 s.
const SIZE: usize = 24 * MIB as usize;
const AT_LEAST: Duration = Duration::from_secs(2);

fn capped_options() -> EngineOptions {
    EngineOptions {
        rate_limit: CAP,
        ..test_options()
    }
}

#[tokio::test]
async fn capped_upload_and_download_take_their_time() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let engine = fixture.engine("journal.sqlite", capped_options());
    let bytes = pattern(SIZE);
    let source = fixture.path("study.bin");
    std::fs::write(&source, &bytes).unwrap();

    let started = Instant::now();
    let handle = engine.upload(&source, PATIENT, UploadOptions::default()).await.unwrap();
    let outcome = handle.wait().await.expect("the capped upload completes");
    let upload_elapsed = started.elapsed();
    let TransferOutcome::Uploaded { document_id, .. } = outcome else {
        panic!("upload ended with {outcome:?}")
    };
    assert!(
        upload_elapsed >= AT_LEAST,
        "24 MiB went up in {upload_elapsed:?} under an 8 MiB/s cap"
    );

    let folder = fixture.path("down");
    std::fs::create_dir_all(&folder).unwrap();
    let started = Instant::now();
    let handle = engine
        .download(&document_id, &folder, DownloadOptions::default())
        .await
        .unwrap();
    let outcome = handle.wait().await.expect("the capped download completes");
    let download_elapsed = started.elapsed();
    let TransferOutcome::Downloaded { path, .. } = outcome else {
        panic!("download ended with {outcome:?}")
    };
    assert!(
        download_elapsed >= AT_LEAST,
        "24 MiB came down in {download_elapsed:?} under an 8 MiB/s cap"
    );
    assert_eq!(sha256_file(&path), sha256_hex(&bytes));
}

#[tokio::test]
async fn cap_is_shared_by_concurrent_transfers() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let engine = fixture.engine("journal.sqlite", capped_options());
    let half = pattern(SIZE / 2);
    let first = fixture.path("first.bin");
    let second = fixture.path("second.bin");
    std::fs::write(&first, &half).unwrap();
    std::fs::write(&second, &half).unwrap();

    let started = Instant::now();
    let first = engine.upload(&first, PATIENT, UploadOptions::default()).await.unwrap();
    let second = engine.upload(&second, PATIENT, UploadOptions::default()).await.unwrap();
    first.wait().await.expect("the first upload completes");
    second.wait().await.expect("the second upload completes");
    let elapsed = started.elapsed();

    assert!(
        elapsed >= AT_LEAST,
        "two 12 MiB uploads went up in {elapsed:?} under one 8 MiB/s cap"
    );
}

#[tokio::test]
async fn cap_can_be_lifted_while_running() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let engine = fixture.engine(
        "journal.sqlite",
        EngineOptions {
            rate_limit: 1024,
            ..test_options()
        },
    );
    assert_eq!(engine.rate_limit(), 1024);
    let bytes = pattern(SIZE);
    let source = fixture.path("study.bin");
    std::fs::write(&source, &bytes).unwrap();

    let handle = engine.upload(&source, PATIENT, UploadOptions::default()).await.unwrap();
    engine.set_rate_limit(0);
    let outcome = handle
        .wait()
        .await
        .expect("the upload completes once the cap is lifted");

    assert_eq!(engine.rate_limit(), 0);
    assert!(
        matches!(outcome, TransferOutcome::Uploaded { .. }),
        "upload ended with {outcome:?}"
    );
}
