//! The engine-wide budget of buffered bytes, against the sandbox gateway and
//! its embedded store on loopback. Many transfers started at once share a
//! budget smaller than their parts in flight and wait their turn without
//! failing. The engine's high-water mark shows that the budget was kept.

mod transfer_support;

use std::time::Duration;

use ferry_core::transfer::{DownloadOptions, EngineOptions, TransferOutcome, UploadOptions};
use transfer_support::*;

/// Uploads started at once.
const UPLOADS: usize = 6;
/// Two full parts and a short one of [`PART_SIZE`] each.
const FILE_SIZE: usize = (2 * PART_SIZE + MIB) as usize;
/// Room for two parts, where six uploads with four parts in flight would
/// otherwise buffer 24 parts.
const BUDGET: u64 = 2 * PART_SIZE;

fn budget_options(max_buffered_bytes: u64) -> EngineOptions {
    EngineOptions {
        parts_in_flight: 4,
        ranges_in_flight: 4,
        max_buffered_bytes,
        // Shorter than the wait of the last uploads for their first part:
        // waiting for the budget must not count as a stalled connection.
        idle_timeout: Duration::from_secs(2),
        ..test_options()
    }
}

/// Bytes that differ from file to file as well as from part to part.
fn file_bytes(index: usize) -> Vec<u8> {
    let mut bytes = pattern(FILE_SIZE);
    for (offset, byte) in bytes.iter_mut().enumerate().step_by(4096) {
        *byte ^= (index as u8).wrapping_add(offset as u8);
    }
    bytes
}

#[tokio::test]
async fn small_budget_uploads_arrive_intact() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let engine = fixture.engine("journal.sqlite", budget_options(BUDGET));
    let mut expected = Vec::new();
    let mut handles = Vec::new();
    for index in 0..UPLOADS {
        let bytes = file_bytes(index);
        let source = fixture.path(&format!("study-{index}.bin"));
        std::fs::write(&source, &bytes).unwrap();
        expected.push(sha256_hex(&bytes));
        handles.push(
            engine
                .upload(&source, PATIENT, UploadOptions::default())
                .await
                .unwrap(),
        );
    }

    let mut documents = Vec::new();
    for handle in &handles {
        let outcome = handle
            .wait()
            .await
            .expect("every upload completes within the budget");
        let TransferOutcome::Uploaded { document_id, .. } = outcome else {
            panic!("upload ended with {outcome:?}")
        };
        documents.push(document_id);
    }

    let high_water = engine.buffered_bytes_high_water();
    assert!(
        high_water <= BUDGET,
        "part buffers held {high_water} bytes at once under a budget of {BUDGET}"
    );
    assert!(
        high_water >= PART_SIZE,
        "no part buffer was counted: high-water mark {high_water}"
    );
    wait_until(
        "every part buffer is freed",
        Duration::from_secs(10),
        || engine.buffered_bytes() == 0,
    )
    .await;

    let folder = fixture.path("down");
    std::fs::create_dir_all(&folder).unwrap();
    let downloader = fixture.engine("download.sqlite", test_options());
    for (document_id, sha256) in documents.iter().zip(&expected) {
        let handle = downloader
            .download(document_id, &folder, DownloadOptions::default())
            .await
            .unwrap();
        let outcome = handle
            .wait()
            .await
            .expect("the uploaded document downloads");
        let TransferOutcome::Downloaded { path, .. } = outcome else {
            panic!("download ended with {outcome:?}")
        };
        assert_eq!(
            &sha256_file(&path),
            sha256,
            "{} differs from its source",
            path.display()
        );
    }
}

#[tokio::test]
async fn concurrent_downloads_stay_within_budget() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let uploader = fixture.engine("upload.sqlite", test_options());
    let mut documents = Vec::new();
    for index in 0..3 {
        let bytes = file_bytes(index);
        let source = fixture.path(&format!("study-{index}.bin"));
        std::fs::write(&source, &bytes).unwrap();
        let handle = uploader
            .upload(&source, PATIENT, UploadOptions::default())
            .await
            .unwrap();
        let outcome = handle.wait().await.expect("the upload completes");
        let TransferOutcome::Uploaded { document_id, .. } = outcome else {
            panic!("upload ended with {outcome:?}")
        };
        documents.push((document_id, sha256_hex(&bytes)));
    }

    // Two 1 MiB write buffers, where three downloads with four ranges in
    // flight would otherwise hold twelve.
    let budget = 2 * MIB;
    let engine = fixture.engine("download.sqlite", budget_options(budget));
    let folder = fixture.path("down");
    std::fs::create_dir_all(&folder).unwrap();
    let mut handles = Vec::new();
    for (document_id, _) in &documents {
        handles.push(
            engine
                .download(document_id, &folder, DownloadOptions::default())
                .await
                .unwrap(),
        );
    }
    for (handle, (_, sha256)) in handles.iter().zip(&documents) {
        let outcome = handle
            .wait()
            .await
            .expect("every download completes within the budget");
        let TransferOutcome::Downloaded { path, .. } = outcome else {
            panic!("download ended with {outcome:?}")
        };
        assert_eq!(
            &sha256_file(&path),
            sha256,
            "{} differs from its source",
            path.display()
        );
    }

    let high_water = engine.buffered_bytes_high_water();
    assert!(
        high_water <= budget,
        "range buffers held {high_water} bytes at once under a budget of {budget}"
    );
    assert!(
        high_water >= MIB,
        "no range buffer was counted: high-water mark {high_water}"
    );
    assert_eq!(engine.buffered_bytes(), 0);
}
