//! `kill -9` of a process in the middle of a transfer, then resume in
//! another: the transfer finishes with the right SHA-256 and sends again
//! at most the parts or ranges that were in flight.
//!
//! The process killed is this test executable run again with
//! `FERRY_TEST_CHILD` set: [`child_runs_the_transfer_named_in_its_environment`]
//! then runs one transfer over the sandbox that the parent test started.
//! The proxy in front of the store (in the parent) slows the transfer down
//! so the kill lands where the test wants it, and counts the requests.

mod transfer_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::grant::{GrantClient, StaticAccessToken};
use ferry_core::journal::{Journal, PartState, TransferRecord, TransferState};
use ferry_core::secrets::Secret;
use ferry_core::transfer::{DownloadOptions, Engine, TransferOutcome, UploadOptions};
use transfer_support::*;

const CHILD: &str = "FERRY_TEST_CHILD";
const CHILD_TEST: &str = "child_runs_the_transfer_named_in_its_environment";

/// Entry point of the child process; does nothing in a normal test run.
#[tokio::test]
async fn child_runs_the_transfer_named_in_its_environment() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let variable = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let grants = GrantClient::new(
        variable("FERRY_TEST_GRANT_API").parse().unwrap(),
        reqwest::Client::new(),
        Arc::new(StaticAccessToken(Secret::new(variable("FERRY_TEST_TOKEN")))),
    );
    let engine = Engine::new(variable("FERRY_TEST_JOURNAL"), grants, test_options()).unwrap();
    let handle = match mode.as_str() {
        "upload" => {
            engine
                .upload(variable("FERRY_TEST_SOURCE"), PATIENT, UploadOptions::default())
                .await
        }
        "download" => {
            engine
                .download(
                    &variable("FERRY_TEST_SOURCE"),
                    variable("FERRY_TEST_FOLDER"),
                    DownloadOptions::default(),
                )
                .await
        }
        other => panic!("unknown {CHILD} mode {other}"),
    }
    .unwrap();
    let outcome = handle.wait().await;
    panic!("the child was not killed before the transfer ended: {outcome:?}");
}

/// Starts this executable as a child that runs one transfer.
async fn spawn_child(fixture: &Fixture, mode: &str, journal: &Path, source: &str, folder: &Path) -> Child {
    spawn_child_with_grant_api(fixture, fixture.grants.base_url(), mode, journal, source, folder).await
}

/// Starts the child with `grant_api` as the grant API's base URL.
async fn spawn_child_with_grant_api(
    fixture: &Fixture,
    grant_api: &url::Url,
    mode: &str,
    journal: &Path,
    source: &str,
    folder: &Path,
) -> Child {
    let token = fixture.session.access_token().await.unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD, mode)
        .env("FERRY_TEST_GRANT_API", grant_api.as_str())
        .env("FERRY_TEST_TOKEN", token.expose())
        .env("FERRY_TEST_JOURNAL", journal)
        .env("FERRY_TEST_SOURCE", source)
        .env("FERRY_TEST_FOLDER", folder)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the child's transfer satisfies `condition`, then kills the
/// child with SIGKILL and reaps it.
async fn kill_when(
    child: &mut Child,
    journal: &Journal,
    what: &str,
    condition: impl Fn(&TransferRecord, usize) -> bool,
) -> TransferRecord {
    wait_until(what, Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "the child ended before {what}");
        journal.list().unwrap().first().is_some_and(|record| {
            let confirmed = journal
                .parts(&record.id)
                .unwrap()
                .iter()
                .filter(|part| part.state == PartState::Confirmed)
                .count();
            condition(record, confirmed)
        })
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    journal.list().unwrap().remove(0)
}

/// Presigned requests of `method` the proxy saw, counted per part number.
fn requests_per_part(fixture: &Fixture, method: &str) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for request in fixture.proxy().requests() {
        if request.method == method {
            *counts.entry(request.part_number.unwrap_or(0)).or_default() += 1;
        }
    }
    counts
}

async fn resume_one(fixture: &Fixture, journal: &str) -> TransferOutcome {
    let engine = fixture.engine(journal, test_options());
    let handles = engine.resume_all().unwrap();
    assert_eq!(handles.len(), 1, "one interrupted transfer to resume");
    tokio::time::timeout(Duration::from_secs(120), handles[0].wait())
        .await
        .expect("the resumed transfer ends")
        .unwrap_or_else(|error| panic!("the resumed transfer failed: {error}"))
}

#[tokio::test]
async fn upload_killed_midway_resumes() {
    let fixture = Fixture::start(SandboxOptions {
        proxy: true,
        ..SandboxOptions::default()
    })
    .await;
    let bytes = pattern(40 * MIB as usize);
    let source = fixture.path("study.zip");
    std::fs::write(&source, &bytes).unwrap();
    let journal_path = fixture.path("journal.sqlite");
    let journal = Journal::open(&journal_path).unwrap();
    fixture.proxy().throttle(8 * MIB);

    let mut child = spawn_child(
        &fixture,
        "upload",
        &journal_path,
        source.to_str().unwrap(),
        fixture.folder.path(),
    )
    .await;
    let killed = kill_when(&mut child, &journal, "two parts are confirmed", |_, confirmed| {
        confirmed >= 2
    })
    .await;
    assert_eq!(killed.state, TransferState::Running);

    fixture.proxy().throttle(0);
    let outcome = resume_one(&fixture, "journal.sqlite").await;

    let TransferOutcome::Uploaded { receipt, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(receipt.receipt.sha256, sha256_hex(&bytes));
    let puts = requests_per_part(&fixture, "PUT");
    assert_eq!(puts.len(), 8, "every part was sent: {puts:?}");
    let resent = puts.values().filter(|count| **count > 1).count();
    let in_flight = test_options().parts_in_flight;
    assert!(
        resent <= in_flight,
        "{resent} parts sent twice, more than the {in_flight} in flight: {puts:?}"
    );
}

#[tokio::test]
async fn upload_killed_during_completion_resumes() {
    let fixture = Fixture::start(SandboxOptions {
        proxy: true,
        ..SandboxOptions::default()
    })
    .await;
    let bytes = pattern(40 * MIB as usize);
    let source = fixture.path("study.zip");
    std::fs::write(&source, &bytes).unwrap();
    let journal_path = fixture.path("journal.sqlite");
    let journal = Journal::open(&journal_path).unwrap();
    // The child reaches the grant API through a proxy that delays each
    // response by a second. The completion's response therefore arrives a
    // second or more after the request, and the kill lands in that window.
    let gateway = fixture.grants.base_url().socket_addrs(|| None).unwrap()[0];
    let grant_proxy = StoreProxy::start(gateway).await;
    grant_proxy.hold_responses(Duration::from_secs(1));
    let mut grant_api = fixture.grants.base_url().clone();
    grant_api.set_port(Some(grant_proxy.address.port())).unwrap();

    let mut child = spawn_child_with_grant_api(
        &fixture,
        &grant_api,
        "upload",
        &journal_path,
        source.to_str().unwrap(),
        fixture.folder.path(),
    )
    .await;
    let killed = kill_when(&mut child, &journal, "the upload is completing", |record, _| {
        record.state == TransferState::Verifying
    })
    .await;
    assert_eq!(killed.state, TransferState::Verifying);

    let outcome = resume_one(&fixture, "journal.sqlite").await;

    let TransferOutcome::Uploaded { receipt, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(receipt.receipt.sha256, sha256_hex(&bytes));
    let puts = requests_per_part(&fixture, "PUT");
    assert!(
        puts.values().all(|count| *count == 1),
        "parts were sent again after the kill: {puts:?}"
    );
}

#[tokio::test]
async fn download_killed_midway_resumes() {
    let fixture = Fixture::start(SandboxOptions {
        proxy: true,
        ..SandboxOptions::default()
    })
    .await;
    let bytes = pattern(40 * MIB as usize);
    let source = fixture.path("study.zip");
    std::fs::write(&source, &bytes).unwrap();
    let uploader = fixture.engine("upload.sqlite", test_options());
    let outcome = uploader
        .upload(&source, PATIENT, UploadOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let TransferOutcome::Uploaded { document_id, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let folder = fixture.path("out");
    std::fs::create_dir_all(&folder).unwrap();
    let journal_path = fixture.path("journal.sqlite");
    let journal = Journal::open(&journal_path).unwrap();
    fixture.proxy().clear_requests();
    fixture.proxy().throttle(8 * MIB);

    let mut child = spawn_child(&fixture, "download", &journal_path, &document_id, &folder).await;
    let killed = kill_when(&mut child, &journal, "two ranges are confirmed", |_, confirmed| {
        confirmed >= 2
    })
    .await;
    assert_eq!(killed.state, TransferState::Running);
    let temp = killed.temp_path.clone().expect("the journal names the temporary file");
    assert!(temp.exists(), "the temporary file is kept for the resume");

    fixture.proxy().throttle(0);
    let outcome = resume_one(&fixture, "journal.sqlite").await;

    let TransferOutcome::Downloaded { path, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(sha256_file(&path), sha256_hex(&bytes));
    assert!(!temp.exists());
    let gets = requests_per_part(&fixture, "GET").values().sum::<u32>() as usize;
    let ranges = 8;
    let in_flight = test_options().ranges_in_flight;
    assert!(
        gets <= ranges + in_flight,
        "{gets} GETs for {ranges} ranges with {in_flight} in flight"
    );
}
