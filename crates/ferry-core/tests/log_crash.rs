//! Crash safety: interrupted appends stay visible as torn bytes and the
//! chain continues after them.

mod log_support;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};

use ferry_core::log::{self, Event, NewEntry, OpenOptions, ProblemKind, Record, TransferLog};
use ferry_core::secrets::{Secret, SecretStore, SecretStoreError};
use log_support::*;

const CHILD_DIR_VAR: &str = "FERRY_LOG_CRASH_CHILD_DIR";
const CHILD_ROUND_VAR: &str = "FERRY_LOG_CRASH_CHILD_ROUND";

/// A secret store in files, so that keys outlive the child processes this
/// test kills. The product keeps keys only in the OS credential store; no
/// credential store is shared between processes on this test machine.
struct FileSecretStore {
    dir: PathBuf,
}

impl FileSecretStore {
    fn file(&self, entry: &str) -> PathBuf {
        self.dir.join(entry.replace('/', "%"))
    }
}

impl SecretStore for FileSecretStore {
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError> {
        match fs::read_to_string(self.file(entry)) {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(SecretStoreError::Failed { entry: entry.into(), message: error.to_string() }),
        }
    }

    /// Writes a temporary file and renames it over the entry, so a killed
    /// process leaves either the old or the new secret.
    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError> {
        let failed = |error: std::io::Error| SecretStoreError::Failed { entry: entry.into(), message: error.to_string() };
        fs::create_dir_all(&self.dir).map_err(failed)?;
        let temporary = self.dir.join(format!(".{}.tmp", std::process::id()));
        let mut file = fs::File::create(&temporary).map_err(failed)?;
        file.write_all(secret.expose().as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        fs::rename(&temporary, self.file(entry)).map_err(failed)
    }

    fn delete(&self, entry: &str) -> Result<(), SecretStoreError> {
        match fs::remove_file(self.file(entry)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(SecretStoreError::Failed { entry: entry.into(), message: error.to_string() })
            }
            _ => Ok(()),
        }
    }
}

fn open_with_files(dir: &Path) -> TransferLog {
    let store: Arc<dyn SecretStore> = Arc::new(FileSecretStore { dir: dir.join("keys") });
    TransferLog::open(dir.join("transfer-log.ndjson"), store, OpenOptions::new("ws-crash", KEY_ENTRY)).unwrap()
}

/// A large entry, so that a kill often lands inside the write.
fn crash_entry(round: u32, index: u32) -> NewEntry {
    let mut entry = NewEntry::new(if index % 4 == 3 { Event::Completed } else { Event::TransferStarted });
    entry.file_name = Some(format!("round-{round}-{index}.dcm"));
    entry.receipt = Some(serde_json::json!({ "padding": "r".repeat(4 * 1024 * 1024) }));
    entry
}

/// Runs only as a child of `kill_during_appends_loses_no_entry`: appends
/// until killed, printing each seq once its append is durable.
#[test]
#[ignore = "child process of kill_during_appends_loses_no_entry"]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else { return };
    let round: u32 = std::env::var(CHILD_ROUND_VAR).unwrap().parse().unwrap();
    let mut log = open_with_files(Path::new(&dir));
    let mut stdout = std::io::stdout();
    for index in 0.. {
        let head = log.append(crash_entry(round, index)).unwrap();
        writeln!(stdout, "appended {} round-{round}-{index}.dcm", head.seq).unwrap();
        stdout.flush().unwrap();
    }
}

/// Returns true when the file ends without a newline, that is while an
/// append is writing its line.
fn is_write_in_progress(path: &Path) -> bool {
    let Ok(mut file) = fs::File::open(path) else { return false };
    let len = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let mut last = [0u8; 1];
    if len == 0 || file.seek(SeekFrom::Start(len - 1)).is_err() || file.read_exact(&mut last).is_err() {
        return false;
    }
    last[0] != b'\n'
}

/// Parses a child's `appended SEQ NAME` line.
fn parse_acknowledgement(line: &str) -> Option<(u64, String)> {
    let mut words = line.split(' ');
    if words.next() != Some("appended") {
        return None;
    }
    let seq = words.next()?.parse().ok()?;
    let name = words.next()?.to_owned();
    Some((seq, name))
}

/// Kills the child of each round while it appends. The child first reports
/// a random count of durable appends (1 to 3). The test then polls the log
/// until a line is half written or the next append is reported, and kills.
/// Every wait is for the child's output, so a loaded machine only slows
/// the test down.
#[test]
fn kill_during_appends_loses_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("transfer-log.ndjson");
    let mut acknowledged: HashMap<u64, String> = HashMap::new();

    for round in 0..10u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "crash_child_appends_until_killed", "--nocapture"])
            .env(CHILD_DIR_VAR, dir.path())
            .env(CHILD_ROUND_VAR, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(acknowledgement) = parse_acknowledgement(&line) {
                    let _ = sender.send(acknowledgement);
                }
            }
        });

        let appends_before_kill = rand::random_range(1..=3);
        for count in 0..appends_before_kill {
            let Ok((seq, name)) = receiver.recv() else {
                panic!("round {round}: the child exited after {count} appends, before it was killed");
            };
            acknowledged.insert(seq, name);
        }
        loop {
            if is_write_in_progress(&log_path) {
                break;
            }
            match receiver.try_recv() {
                Ok((seq, name)) => {
                    acknowledged.insert(seq, name);
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("round {round}: the child exited before it was killed")
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acknowledged.extend(receiver.try_iter());
    }

    let mut log = open_with_files(dir.path());
    let device_key = log.device_public_key().to_owned();
    log.append(NewEntry::new(Event::LogVerified)).unwrap();
    log.close().unwrap();
    let options = log::VerifyOptions { device_keys: vec![device_key], ..Default::default() };
    let report = log::verify(dir.path().join("transfer-log.ndjson"), &options).unwrap();

    let non_torn: Vec<_> = report.problems.iter().filter(|problem| problem.kind != ProblemKind::Torn).collect();
    assert!(non_torn.is_empty(), "{non_torn:#?}");
    assert!(report.ok);
    assert_eq!(report.unsealed_tail, 0);

    let content = fs::read(dir.path().join("transfer-log.ndjson")).unwrap();
    let entries: HashMap<u64, String> = content
        .split(|byte| *byte == b'\n')
        .filter_map(|line| serde_json::from_slice::<Record>(line).ok())
        .filter_map(|record| match record {
            Record::Entry(entry) => Some((entry.seq, entry.file_name.unwrap_or_default())),
            _ => None,
        })
        .collect();
    for (seq, name) in acknowledged.iter() {
        assert_eq!(entries.get(seq), Some(name), "acknowledged entry seq {seq} was lost");
    }
    // Whether a kill lands inside an append is chance, so the count of torn
    // lines is only reported; `half_written_line_is_torn_and_chain_continues`
    // covers the torn path deterministically.
    let torn = report.problems.len();
    println!("{} entries acknowledged, {torn} torn lines reported", acknowledged.len());
}

#[test]
fn half_written_line_is_torn_and_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let before = read_lines(&sample.path).len();
    let half = r#"{"kind":"entry","seq":99,"prev":"ab12","time":"2025-"#;
    fs::OpenOptions::new().append(true).open(&sample.path).unwrap().write_all(half.as_bytes()).unwrap();

    let torn_report = log::verify(&sample.path, &sample.options()).unwrap();

    assert_eq!(torn_report.problems.len(), 1, "{:#?}", torn_report.problems);
    assert_eq!(torn_report.problems[0].kind, ProblemKind::Torn);
    assert_eq!(torn_report.problems[0].line, before + 1);
    assert!(torn_report.problems[0].message.contains("interrupted append"));
    assert!(torn_report.ok);

    let mut log = open(&sample.path, &sample.store);
    let mut signed_in = NewEntry::new(Event::SignedIn);
    signed_in.actor = Some(actor());
    log.append(signed_in).unwrap();
    log.close().unwrap();
    let lines = read_lines(&sample.path);
    let report = log::verify(&sample.path, &sample.options()).unwrap();

    assert_eq!(lines[before], half, "the torn bytes stay in the file");
    assert!(matches!(parse(&lines[before + 1]), Record::Torn(_)));
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert_eq!(report.problems[0].kind, ProblemKind::Torn);
    assert_eq!(report.problems[0].line, before + 1);
    assert!(report.ok);
    assert_eq!(report.entries, 12);
    assert_eq!(report.unsealed_tail, 0);
}

#[test]
fn torn_bytes_edited_after_marking_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    fs::OpenOptions::new().append(true).open(&sample.path).unwrap().write_all(b"{\"kind\":\"ent").unwrap();
    open(&sample.path, &sample.store).close().unwrap();
    let mut lines = read_lines(&sample.path);
    let torn_line = lines.iter().position(|line| line == "{\"kind\":\"ent").unwrap();
    lines[torn_line] = "{\"kind\":\"enX".into();
    write_lines(&sample.path, &lines);

    let report = log::verify(&sample.path, &sample.options()).unwrap();

    let problem = report.first_problem().unwrap();
    assert_eq!(problem.kind, ProblemKind::Edited, "{:#?}", report.problems);
    assert_eq!(problem.line, torn_line + 1, "{problem:?}");
}
