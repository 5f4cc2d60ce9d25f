//! Shared helpers of the transfer log tests: a sample log written through
//! the public API, a stand-in gateway key, and line rewriting for attacks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use ferry_core::log::record::{decode_32, epoch_message, line_hash, seal_message};
use ferry_core::log::{
    Actor, Checkpoint, CheckpointRequest, Direction, Event, NewEntry, OpenOptions, Record, TransferLog, VerifyOptions,
};
use ferry_core::secrets::{MemorySecretStore, SecretStore};
use jsonwebtoken::jwk::{Jwk, JwkSet};

pub const KEY_ENTRY: &str = "profile/test/transfer-log-key";

/// The gateway's ES256 key, the one its grant API countersigns checkpoints
/// with, loaded from a folder that lives as long as the test process.
pub fn gateway_key() -> &'static ferry_gateway::tokens::SigningKey {
    static KEY: std::sync::OnceLock<ferry_gateway::tokens::SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let folder = tempfile::tempdir().unwrap().keep();
        ferry_gateway::tokens::SigningKey::load_or_generate(&folder).unwrap()
    })
}

/// The gateway's JWKS keys, as `GET /grant/v1/keys` publishes them.
pub fn gateway_public_keys() -> Vec<Jwk> {
    let jwks: JwkSet = serde_json::from_value(gateway_key().jwks()).unwrap();
    jwks.keys
}

/// Countersigns a head the way the gateway's `POST /checkpoints` does, and
/// accepts the result the way the client does.
pub fn countersign(request: &CheckpointRequest) -> Checkpoint {
    let wire = request.to_wire();
    let jws = gateway_key().sign(&wire).expose().to_owned();
    let countersigned = ferry_api::Checkpoint {
        checkpoint: wire,
        subject: "user-7f3a".into(),
        recorded_at: jiff::Timestamp::now(),
        jws,
    };
    Checkpoint::from_countersigned(request, countersigned, &JwkSet { keys: gateway_public_keys() }).unwrap()
}

pub fn actor() -> Actor {
    Actor { fhir_user: Some("Practitioner/dr-lee".into()), subject: "user-7f3a".into() }
}

/// An upload's entries, with every field set.
pub fn upload_entries(correlation_id: &str) -> Vec<NewEntry> {
    let base = NewEntry {
        event: Event::GrantIssued,
        actor: Some(actor()),
        direction: Some(Direction::Upload),
        patient: Some("Patient/p-100".into()),
        object: Some("DocumentReference/doc-1".into()),
        file_name: Some("ct-chest.zip".into()),
        size: Some(734_003_200),
        sha256: Some("5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef".into()),
        correlation_id: Some(correlation_id.into()),
        receipt: None,
    };
    let mut started = base.clone();
    started.event = Event::TransferStarted;
    let mut completed = base.clone();
    completed.event = Event::Completed;
    completed.receipt = Some(serde_json::json!({
        "upload_id": "u-81",
        "etag": "\"9b2cf535f27731c974343645a3985328\"",
        "gateway_signature": "c2lnbmVk",
    }));
    let mut verified = base.clone();
    verified.event = Event::Verified;
    vec![base, started, completed, verified]
}

/// A download's entries ending in a failure.
pub fn failed_download_entries(correlation_id: &str) -> Vec<NewEntry> {
    let mut base = upload_entries(correlation_id)[0].clone();
    base.direction = Some(Direction::Download);
    base.object = Some("DocumentReference/doc-2".into());
    base.file_name = Some("mr-head.zip".into());
    let mut started = base.clone();
    started.event = Event::TransferStarted;
    let mut paused = base.clone();
    paused.event = Event::Paused;
    let mut resumed = base.clone();
    resumed.event = Event::Resumed;
    let mut failed = base.clone();
    failed.event = Event::Failed { reason: "the signed URL expired".into() };
    vec![base, started, paused, resumed, failed]
}

pub fn open(path: &Path, store: &Arc<MemorySecretStore>) -> TransferLog {
    let store: Arc<dyn SecretStore> = store.clone();
    TransferLog::open(path, store, OpenOptions::new("ws-radiology-3", KEY_ENTRY)).expect("open the log")
}

/// A sample log of three sessions (three epochs) with an upload, a
/// checkpoint after it, a failed download and a sign-out.
pub struct Sample {
    pub path: PathBuf,
    pub store: Arc<MemorySecretStore>,
    pub checkpoints: Vec<Checkpoint>,
    pub device_key: String,
}

impl Sample {
    pub fn options(&self) -> VerifyOptions {
        VerifyOptions {
            device_keys: vec![self.device_key.clone()],
            checkpoints: self.checkpoints.clone(),
            gateway_keys: gateway_public_keys(),
            ..VerifyOptions::default()
        }
    }
}

pub fn write_sample(dir: &Path) -> Sample {
    let path = dir.join("profiles/test/transfer-log.ndjson");
    let store = Arc::new(MemorySecretStore::default());
    let mut checkpoints = Vec::new();

    let mut log = open(&path, &store);
    let device_key = log.device_public_key().to_owned();
    let mut signed_in = NewEntry::new(Event::SignedIn);
    signed_in.actor = Some(actor());
    log.append(signed_in).unwrap();
    for entry in upload_entries("corr-upload-1") {
        log.append(entry).unwrap();
    }
    let request = log.checkpoint_request().unwrap();
    let checkpoint = countersign(&request);
    log.record_checkpoint(checkpoint.clone()).unwrap();
    checkpoints.push(checkpoint);
    log.close().unwrap();

    let mut log = open(&path, &store);
    for entry in failed_download_entries("corr-download-2") {
        log.append(entry).unwrap();
    }
    let request = log.checkpoint_request().unwrap();
    let checkpoint = countersign(&request);
    log.record_checkpoint(checkpoint.clone()).unwrap();
    checkpoints.push(checkpoint);
    log.close().unwrap();

    let mut log = open(&path, &store);
    let mut signed_out = NewEntry::new(Event::SignedOut);
    signed_out.actor = Some(actor());
    log.append(signed_out).unwrap();
    log.close().unwrap();

    Sample { path, store, checkpoints, device_key }
}

/// The lines of a log file, without their newlines.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut content = lines.join("\n");
    content.push('\n');
    std::fs::write(path, content).unwrap();
}

pub fn parse(line: &str) -> Record {
    serde_json::from_str(line).unwrap()
}

/// Index of the line with the given seq.
pub fn line_of_seq(lines: &[String], seq: u64) -> usize {
    lines.iter().position(|line| parse(line).seq() == seq).unwrap()
}

/// Rewrites the `prev` fields from line `from` on so the chain is
/// consistent again, re-signing seals and epoch records with `signer`, as
/// an attacker holding that key would.
pub fn rechain(lines: &mut [String], from: usize, signer: &SigningKey) {
    let Record::Genesis(genesis) = parse(&lines[0]) else { panic!("line 1 is not a genesis record") };
    for index in from.max(1)..lines.len() {
        let prev = line_hash(lines[index - 1].as_bytes());
        let head = decode_32(&prev).unwrap();
        let record = match parse(&lines[index]) {
            Record::Entry(mut entry) => {
                entry.prev = prev;
                Record::Entry(entry)
            }
            Record::Seal(mut seal) => {
                seal.prev = prev;
                let message = seal_message(genesis.log_id, seal.epoch, seal.seq, &head);
                seal.signature = hex::encode(signer.sign(&message).to_bytes());
                Record::Seal(seal)
            }
            Record::Epoch(mut epoch) => {
                epoch.prev = prev;
                let new_key = decode_32(&epoch.public_key).unwrap();
                let message = epoch_message(genesis.log_id, epoch.epoch, epoch.seq, &head, &new_key);
                epoch.signature = hex::encode(signer.sign(&message).to_bytes());
                Record::Epoch(epoch)
            }
            Record::Checkpoint(mut checkpoint) => {
                checkpoint.prev = prev;
                Record::Checkpoint(checkpoint)
            }
            Record::Torn(mut torn) => {
                torn.prev = prev;
                Record::Torn(torn)
            }
            Record::Genesis(genesis) => Record::Genesis(genesis),
        };
        lines[index] = String::from_utf8(record.to_line()).unwrap();
    }
}

/// The current epoch's signing key as kept in the secret store, which is
/// what someone who takes over the workstation obtains.
pub fn current_signing_key(store: &MemorySecretStore) -> SigningKey {
    let secret = store.get(KEY_ENTRY).unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_str(secret.expose()).unwrap();
    let bytes = decode_32(stored["secret_key"].as_str().unwrap()).unwrap();
    SigningKey::from_bytes(&bytes)
}
