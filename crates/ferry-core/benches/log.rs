//! Signed transfer log benchmark: durable append latency (median and p99)
//! and verification time of a 100,000-entry log.
//!
//! Run with `cargo bench -p ferry-core --bench log`. The log files go to
//! the system temporary directory, or to `FERRY_BENCH_DIR` when set, so the
//! append numbers measure that directory's disk.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use ferry_core::log::record::{
    self, EntryRecord, EpochRecord, GenesisRecord, LOG_FORMAT, Record, SealRecord, ZERO_HASH, decode_32, line_hash,
};
use ferry_core::log::{Actor, Direction, Event, NewEntry, OpenOptions, TransferLog, VerifyOptions};
use ferry_core::secrets::{MemorySecretStore, SecretStore};

const APPENDS: usize = 2_000;
const VERIFY_ENTRIES: u64 = 100_000;
const ENTRIES_PER_SEAL: u64 = 50;
const ENTRIES_PER_EPOCH: u64 = 10_000;

fn sample_entry(index: usize) -> NewEntry {
    NewEntry {
        event: Event::TransferStarted,
        actor: Some(Actor { fhir_user: Some("Practitioner/dr-lee".into()), subject: "user-7f3a".into() }),
        direction: Some(Direction::Upload),
        patient: Some("Patient/p-100".into()),
        object: Some(format!("DocumentReference/doc-{index}")),
        file_name: Some(format!("series-{index}.zip")),
        size: Some(734_003_200),
        sha256: Some("5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef".into()),
        correlation_id: Some(format!("corr-{index}")),
        receipt: None,
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Appends through the public API: one `write_all` and one `sync_data` per
/// record, plus a seal whenever the 5 second seal interval has passed.
fn bench_append(dir: &std::path::Path) {
    let store: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::default());
    let mut log = TransferLog::open(dir.join("append.ndjson"), store, OpenOptions::new("bench", "bench/key")).unwrap();

    let mut latencies = Vec::with_capacity(APPENDS);
    for index in 0..APPENDS {
        let entry = sample_entry(index);
        let started = Instant::now();
        log.append(entry).unwrap();
        latencies.push(started.elapsed());
    }
    log.close().unwrap();

    latencies.sort();
    println!(
        "durable append, {APPENDS} entries: median {:.3} ms, p99 {:.3} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
}

/// Writes a log of `VERIFY_ENTRIES` entries directly (without fsync per
/// line), sealed every `ENTRIES_PER_SEAL` entries and rotated every
/// `ENTRIES_PER_EPOCH`, then times `verify`.
fn bench_verify(dir: &std::path::Path) {
    let path = dir.join("verify.ndjson");
    let log_id = uuid::Uuid::new_v4();
    let mut key = SigningKey::from_bytes(&[1u8; 32]);
    let public_key = key.verifying_key().to_bytes();
    let genesis = Record::Genesis(GenesisRecord {
        seq: 0,
        prev: ZERO_HASH.into(),
        format: LOG_FORMAT.into(),
        log_id,
        device: "bench".into(),
        time: jiff::Timestamp::now(),
        epoch: 0,
        public_key: hex::encode(public_key),
        gateway_checkpoint: None,
        signature: hex::encode(key.sign(&record::genesis_message(log_id, "bench", &public_key)).to_bytes()),
    });

    let mut output = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut write = |record: &Record| {
        let line = record.to_line();
        output.write_all(&line).unwrap();
        output.write_all(b"\n").unwrap();
        line_hash(&line)
    };
    let mut prev = write(&genesis);
    let mut seq = 0;
    let mut epoch = 0;
    for index in 0..VERIFY_ENTRIES {
        seq += 1;
        let entry = sample_entry(index as usize);
        prev = write(&Record::Entry(EntryRecord {
            seq,
            prev: prev.clone(),
            time: jiff::Timestamp::now(),
            event: entry.event,
            actor: entry.actor,
            device: "bench".into(),
            direction: entry.direction,
            patient: entry.patient,
            object: entry.object,
            file_name: entry.file_name,
            size: entry.size,
            sha256: entry.sha256,
            correlation_id: entry.correlation_id,
            receipt: None,
        }));

        if (index + 1) % ENTRIES_PER_SEAL == 0 {
            seq += 1;
            let head = decode_32(&prev).unwrap();
            let signature = key.sign(&record::seal_message(log_id, epoch, seq, &head));
            prev = write(&Record::Seal(SealRecord {
                seq,
                prev: prev.clone(),
                epoch,
                signature: hex::encode(signature.to_bytes()),
            }));
        }
        if (index + 1) % ENTRIES_PER_EPOCH == 0 {
            seq += 1;
            let next = SigningKey::from_bytes(&[(epoch + 2) as u8; 32]);
            let next_public = next.verifying_key().to_bytes();
            let head = decode_32(&prev).unwrap();
            let signature = key.sign(&record::epoch_message(log_id, epoch + 1, seq, &head, &next_public));
            prev = write(&Record::Epoch(EpochRecord {
                seq,
                prev: prev.clone(),
                time: jiff::Timestamp::now(),
                epoch: epoch + 1,
                public_key: hex::encode(next_public),
                signature: hex::encode(signature.to_bytes()),
            }));
            key = next;
            epoch += 1;
        }
    }
    drop(write);
    output.flush().unwrap();
    drop(output);
    let size = std::fs::metadata(&path).unwrap().len();

    let options = VerifyOptions { device_keys: vec![hex::encode(public_key)], ..VerifyOptions::default() };
    let started = Instant::now();
    let report = ferry_core::log::verify(&path, &options).unwrap();
    let elapsed = started.elapsed();

    assert!(report.ok, "{:?}", report.first_problem());
    assert_eq!(report.entries, VERIFY_ENTRIES);
    println!(
        "verify, {VERIFY_ENTRIES} entries ({} records, {:.1} MB, a seal every {ENTRIES_PER_SEAL} entries): {:.3} s",
        report.records,
        size as f64 / 1e6,
        elapsed.as_secs_f64()
    );
}

fn main() {
    let base = std::env::var_os("FERRY_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    println!("log directory: {}", dir.path().display());

    bench_append(dir.path());
    bench_verify(dir.path());
}
