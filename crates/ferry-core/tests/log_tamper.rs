//! The tamper matrix: every change to a sealed log is detected, and the
//! first problem names the record concerned.

mod log_support;

use std::sync::Arc;

use ferry_core::log::{self, Event, NewEntry, ProblemKind, Record, VerifyReport};
use ferry_core::secrets::{MemorySecretStore, SecretStore};
use log_support::*;

fn first_problem(report: &VerifyReport) -> &ferry_core::log::Problem {
    report.first_problem().unwrap_or_else(|| panic!("no problem reported: {report:#?}"))
}

/// Byte offsets of every scalar value in a JSON line, by dotted path. For a
/// string the offset is its first character inside the quotes.
fn value_offsets(line: &str) -> Vec<(String, usize)> {
    fn walk(line: &str, value: &serde_json::Value, path: &str, from: usize, out: &mut Vec<(String, usize)>) {
        let serde_json::Value::Object(map) = value else { return };
        for (key, child) in map {
            let needle = format!("\"{key}\":");
            let offset = from + line[from..].find(&needle).unwrap() + needle.len();
            let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match child {
                serde_json::Value::Object(_) => walk(line, child, &child_path, offset, out),
                serde_json::Value::String(text) if !text.is_empty() => out.push((child_path, offset + 1)),
                _ => out.push((child_path, offset)),
            }
        }
    }
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    let mut out = Vec::new();
    walk(line, &value, "", 0, &mut out);
    out
}

/// Another byte for `byte`, keeping digits digits and hex letters hex.
fn other_byte(byte: u8) -> u8 {
    match byte {
        b'0'..=b'8' => byte + 1,
        b'9' => b'0',
        b'a'..=b'e' => byte + 1,
        b'f' => b'a',
        b'A'..=b'Y' => byte + 1,
        _ => b'Z',
    }
}

#[test]
fn untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    assert!(report.ok, "{:#?}", report.problems);
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(report.anchored);
    assert_eq!(report.entries, 11);
    assert_eq!(report.epochs.len(), 3);
    assert_eq!(report.unsealed_tail, 0);
    assert_eq!(report.last_checkpoint, Some(sample.checkpoints[1].head_seq));
}

#[test]
fn one_byte_edit_in_any_field_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let original = read_lines(&sample.path);
    let mut cases = 0;

    for (index, line) in original.iter().enumerate() {
        let Record::Entry(entry) = parse(line) else { continue };
        for (field, offset) in value_offsets(line) {
            let mut bytes = line.clone().into_bytes();
            bytes[offset] = other_byte(bytes[offset]);
            let mut lines = original.clone();
            lines[index] = String::from_utf8(bytes).unwrap();
            write_lines(&sample.path, &lines);

            let report = log::verify(&sample.path, &sample.options()).unwrap();

            let problem = first_problem(&report);
            assert_eq!(problem.kind, ProblemKind::Edited, "field {field} of seq {}: {problem:?}", entry.seq);
            assert_eq!(problem.seq, Some(entry.seq), "field {field}: {problem:?}");
            assert_eq!(problem.line, index + 1, "field {field}: {problem:?}");
            assert!(problem.message.contains(&format!("seq {}", entry.seq)), "{}", problem.message);
            assert!(!report.ok);
            cases += 1;
        }
    }
    assert!(cases > 100, "only {cases} edits were tried");
}

#[test]
fn deleted_entry_is_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let mut lines = read_lines(&sample.path);
    let index = line_of_seq(&lines, 4);
    assert!(matches!(parse(&lines[index]), Record::Entry(_)));
    lines.remove(index);
    write_lines(&sample.path, &lines);

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::Missing, "{problem:?}");
    assert_eq!(problem.seq, Some(4));
    assert!(problem.message.contains("seq 4 is missing"), "{}", problem.message);
}

#[test]
fn swapped_entries_are_reported_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let mut lines = read_lines(&sample.path);
    let index = line_of_seq(&lines, 3);
    assert!(matches!(parse(&lines[index + 1]), Record::Entry(_)));
    lines.swap(index, index + 1);
    write_lines(&sample.path, &lines);

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::Reordered, "{problem:?}");
    assert_eq!(problem.seq, Some(3));
    assert!(problem.message.contains("entry seq 4"), "{}", problem.message);
    assert!(problem.message.contains("entry seq 3"), "{}", problem.message);
}

#[test]
fn tail_cut_behind_checkpoint_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let checkpoint_seq = sample.checkpoints[1].head_seq;
    let lines = read_lines(&sample.path);
    let keep = line_of_seq(&lines, checkpoint_seq - 3);
    write_lines(&sample.path, &lines[..=keep]);

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::TruncatedAfterCheckpoint(checkpoint_seq), "{problem:?}");
    assert_eq!(problem.seq, Some(checkpoint_seq));
    assert!(problem.message.contains(&format!("ends at seq {}", checkpoint_seq - 3)), "{}", problem.message);
    assert!(!report.ok);
}

#[test]
fn older_copy_that_went_on_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.ndjson");
    let store = Arc::new(MemorySecretStore::default());
    let mut log = open(&path, &store);
    for entry in upload_entries("corr-1") {
        log.append(entry).unwrap();
    }
    log.close().unwrap();

    // A backup of the file and of the key, taken now.
    let backup = std::fs::read(&path).unwrap();
    let backup_store = Arc::new(MemorySecretStore::default());
    backup_store.set(KEY_ENTRY, &store.get(KEY_ENTRY).unwrap().unwrap()).unwrap();

    // The real history goes on and is checkpointed.
    let mut log = open(&path, &store);
    for entry in failed_download_entries("corr-2") {
        log.append(entry).unwrap();
    }
    let checkpoint = countersign(&log.checkpoint_request().unwrap());
    log.record_checkpoint(checkpoint.clone()).unwrap();
    log.close().unwrap();

    // The backup is restored and used further.
    std::fs::write(&path, &backup).unwrap();
    let mut log = open(&path, &backup_store);
    for _ in 0..10 {
        log.append(NewEntry::new(Event::LogVerified)).unwrap();
    }
    log.close().unwrap();
    let options = log::VerifyOptions {
        checkpoints: vec![checkpoint.clone()],
        gateway_keys: gateway_public_keys(),
        ..Default::default()
    };

    let report = log::verify(&path, &options).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::OlderCopy, "{:#?}", report.problems);
    assert_eq!(problem.seq, Some(checkpoint.head_seq));
    assert!(problem.message.contains("another copy"), "{}", problem.message);
}

#[test]
fn plain_older_copy_is_reported_behind_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let lines = read_lines(&sample.path);
    let first_checkpoint = &sample.checkpoints[0];
    let end = line_of_seq(&lines, first_checkpoint.head_seq + 1);
    write_lines(&sample.path, &lines[..=end]);

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::TruncatedAfterCheckpoint(sample.checkpoints[1].head_seq));
    assert_eq!(report.last_checkpoint, Some(first_checkpoint.head_seq));
}

#[test]
fn opening_an_older_copy_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let lines = read_lines(&sample.path);
    write_lines(&sample.path, &lines[..lines.len() / 2]);

    let store: Arc<dyn SecretStore> = sample.store.clone();
    let error = log::TransferLog::open(&sample.path, store, log::OpenOptions::new("ws-radiology-3", KEY_ENTRY))
        .unwrap_err();

    assert!(matches!(error, log::LogError::FileBehindKey { .. }), "{error}");
    assert!(error.to_string().contains("older copy"), "{error}");
}

#[test]
fn entry_resigned_with_later_epoch_key_is_wrong_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let later_key = current_signing_key(&sample.store);
    let mut lines = read_lines(&sample.path);
    let index = line_of_seq(&lines, 3);
    let Record::Entry(mut entry) = parse(&lines[index]) else { panic!("seq 3 is not an entry") };
    entry.file_name = Some("other-patient.zip".into());
    lines[index] = String::from_utf8(Record::Entry(entry).to_line()).unwrap();
    rechain(&mut lines, index + 1, &later_key);
    write_lines(&sample.path, &lines);
    let first_seal = lines[index..]
        .iter()
        .map(|line| parse(line))
        .find(|record| matches!(record, Record::Seal(_)))
        .unwrap()
        .seq();

    let report = log::verify(&sample.path, &log::VerifyOptions::default()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::WrongEpoch, "{:#?}", report.problems);
    assert_eq!(problem.seq, Some(first_seal));
    assert!(problem.message.contains(&format!("seal seq {first_seal}")), "{}", problem.message);
    assert!(problem.message.contains("epoch 2"), "{}", problem.message);
}

#[test]
fn seal_forged_without_key_is_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let mut lines = read_lines(&sample.path);
    let index = line_of_seq(&lines, 2);
    rechain(&mut lines, index, &stranger);
    write_lines(&sample.path, &lines);

    let report = log::verify(&sample.path, &log::VerifyOptions::default()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::BadSignature, "{:#?}", report.problems);
    assert!(problem.message.contains("seal seq"), "{}", problem.message);
}

#[test]
fn log_recreated_under_new_device_key_is_key_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let bundle = log::export_bundle(&sample.path).unwrap();

    // Someone rewrites the whole history under a key of their own.
    std::fs::remove_file(&sample.path).unwrap();
    let forged = write_sample(dir.path());
    assert_eq!(forged.path, sample.path);

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::KeySwapped, "{:#?}", report.problems);
    assert_eq!(problem.seq, Some(0));
    assert!(problem.message.contains("genesis seq 0"), "{}", problem.message);
    assert!(!report.anchored);

    let against_bundle = log::verify(&sample.path, &bundle.verify_options()).unwrap();
    let kinds: Vec<ProblemKind> = against_bundle.problems.iter().map(|problem| problem.kind).collect();
    assert_eq!(against_bundle.first_problem().unwrap().kind, ProblemKind::KeySwapped);
    assert!(kinds.iter().filter(|kind| **kind == ProblemKind::KeySwapped).count() >= 3, "{kinds:?}");
}

#[test]
fn checkpoint_with_foreign_gateway_signature_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let mut options = sample.options();
    let (signed_part, _) = options.checkpoints[0].jws.rsplit_once('.').unwrap();
    let (_, other_signature) = options.checkpoints[1].jws.rsplit_once('.').unwrap();
    options.checkpoints[0].jws = format!("{signed_part}.{other_signature}");

    let report = log::verify(&sample.path, &options).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::BadSignature, "{problem:?}");
    assert_eq!(problem.seq, Some(sample.checkpoints[0].head_seq));
}

#[test]
fn checkpoint_with_changed_head_fails_gateway_signature() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let mut options = sample.options();
    options.checkpoints[0].head_seq += 1;

    let report = log::verify(&sample.path, &options).unwrap();

    let problem = first_problem(&report);
    assert_eq!(problem.kind, ProblemKind::BadSignature, "{problem:?}");
    assert!(problem.message.contains("countersigned"), "{}", problem.message);
}
