//! The transfer journal shared by two processes: claims keep a transfer
//! with the live process that runs it, and a process killed in the middle
//! of its writes leaves a journal that opens and reads consistently.
//!
//! The other process is this test executable run again with
//! `FERRY_JOURNAL_CHILD` set (see [`child_works_on_the_journal_named_in_its_environment`]).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_core::grant::{GrantClient, StaticAccessToken};
use ferry_core::journal::{Claimant, Direction, Journal, PartRecord, PartState, TransferRecord, TransferState};
use ferry_core::secrets::Secret;
use ferry_core::transfer::{Engine, EngineOptions, TransferError};

const CHILD: &str = "FERRY_JOURNAL_CHILD";
const CHILD_TEST: &str = "child_works_on_the_journal_named_in_its_environment";
const PARTS: u32 = 200;

/// Entry point of the child process; does nothing in a normal test run.
#[test]
fn child_works_on_the_journal_named_in_its_environment() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let journal = Journal::open(std::env::var("FERRY_JOURNAL_PATH").unwrap()).unwrap();
    let id = std::env::var("FERRY_JOURNAL_TRANSFER").unwrap();
    match mode.as_str() {
        "claim" => {
            journal.claim(&id, &Claimant::current()).unwrap().unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        "confirm-parts" => {
            journal.set_state(&id, TransferState::Running, None).unwrap();
            for number in 1..=PARTS {
                journal.set_part(&id, number, PartState::Sent, None, None).unwrap();
                journal
                    .set_part(
                        &id,
                        number,
                        PartState::Confirmed,
                        None,
                        Some(&format!("\"etag-{number}\"")),
                    )
                    .unwrap();
            }
            std::thread::sleep(Duration::from_secs(120));
        }
        other => panic!("unknown {CHILD} mode {other}"),
    }
}

fn spawn_child(mode: &str, journal: &std::path::Path, id: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD, mode)
        .env("FERRY_JOURNAL_PATH", journal)
        .env("FERRY_JOURNAL_TRANSFER", id)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn new_upload(journal: &Journal, parts: u32) -> String {
    let id = format!("tr_{}", uuid::Uuid::new_v4().simple());
    let mut record = TransferRecord::new(id.clone(), Direction::Upload, "study.zip".into());
    record.size = Some(u64::from(parts) * 5);
    journal.insert(&record).unwrap();
    let parts: Vec<PartRecord> = (1..=parts)
        .map(|number| PartRecord {
            part_number: number,
            offset: u64::from(number - 1) * 5,
            size: 5,
            sha256: None,
            state: PartState::Pending,
            etag: None,
        })
        .collect();
    journal.set_parts(&id, &parts).unwrap();
    id
}

#[test]
fn live_claim_is_kept_until_death() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("journal.sqlite");
    let journal = Journal::open(&path).unwrap();
    let id = new_upload(&journal, 1);
    let mut child = spawn_child("claim", &path, &id);
    let child_pid = child.id();
    wait_until("the child claims the transfer", || {
        journal
            .get(&id)
            .unwrap()
            .claimed_by
            .is_some_and(|claimant| claimant.pid == child_pid)
    });

    let refused = journal.claim(&id, &Claimant::current()).unwrap();
    let holder = refused.expect_err("a live process's claim is kept");
    assert_eq!(holder.pid, child_pid);
    assert!(holder.is_alive());
    journal.release(&id, &Claimant::current()).unwrap();
    assert_eq!(
        journal.get(&id).unwrap().claimed_by.map(|claimant| claimant.pid),
        Some(child_pid)
    );

    child.kill().unwrap();
    // Until its parent reaps it, the killed child is a zombie that still
    // owns its process id; its claim is stale all the same.
    wait_until("the killed child becomes a zombie", || {
        let stat = std::fs::read_to_string(format!("/proc/{child_pid}/stat")).unwrap_or_default();
        stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
    });
    assert!(!holder.is_alive(), "an unreaped zombie counts as alive");
    child.wait().unwrap();

    assert!(!holder.is_alive());
    journal
        .claim(&id, &Claimant::current())
        .unwrap()
        .expect("a dead process's claim is taken over");
    assert_eq!(journal.get(&id).unwrap().claimed_by, Some(Claimant::current()));
}

#[tokio::test]
async fn engine_skips_transfers_claimed_elsewhere() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("journal.sqlite");
    let journal = Journal::open(&path).unwrap();
    let id = new_upload(&journal, 1);
    journal.set_state(&id, TransferState::Running, None).unwrap();
    let mut child = spawn_child("claim", &path, &id);
    let child_pid = child.id();
    wait_until("the child claims the transfer", || {
        journal.get(&id).unwrap().claimed_by.is_some()
    });
    // The grant API is never reached: the engine stops at the claim.
    let grants = GrantClient::new(
        "http://127.0.0.1:9/grant/v1".parse().unwrap(),
        reqwest::Client::new(),
        std::sync::Arc::new(StaticAccessToken(Secret::new("unused"))),
    );
    let engine = Engine::new(&path, grants, EngineOptions::default()).unwrap();

    let resumed = engine.resume_all().unwrap();
    let error = engine.resume(&id).unwrap_err();

    assert!(
        resumed.is_empty(),
        "resume_all took a transfer that another process runs"
    );
    assert!(
        matches!(error, TransferError::ClaimedElsewhere { pid, .. } if pid == child_pid),
        "{error}"
    );
    assert!(error.to_string().contains(&child_pid.to_string()), "{error}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_writer_keeps_committed_writes() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("journal.sqlite");
    let journal = Journal::open(&path).unwrap();
    let id = new_upload(&journal, PARTS);
    drop(journal);
    let mut child = spawn_child("confirm-parts", &path, &id);
    let observer = Journal::open(&path).unwrap();
    wait_until("the child confirmed some parts", || {
        observer
            .parts(&id)
            .unwrap()
            .iter()
            .filter(|part| part.state == PartState::Confirmed)
            .count()
            >= 20
    });

    child.kill().unwrap();
    child.wait().unwrap();
    drop(observer);

    let journal = Journal::open(&path).unwrap();
    let record = journal.get(&id).unwrap();
    let parts = journal.parts(&id).unwrap();
    assert_eq!(record.state, TransferState::Running);
    assert_eq!(parts.len(), PARTS as usize);
    let confirmed = parts
        .iter()
        .take_while(|part| part.state == PartState::Confirmed)
        .count();
    assert!(confirmed >= 20);
    for part in &parts[..confirmed] {
        assert_eq!(
            part.etag.as_deref(),
            Some(format!("\"etag-{}\"", part.part_number).as_str())
        );
    }
    // At most one part was between "sent" and "confirmed" at the kill; the
    // rest were never touched.
    let after: Vec<PartState> = parts[confirmed..].iter().map(|part| part.state).collect();
    let sent = after.iter().take_while(|state| **state == PartState::Sent).count();
    assert!(sent <= 1, "{sent} parts in state sent");
    assert!(
        after[sent..].iter().all(|state| *state == PartState::Pending),
        "{after:?}"
    );
}
