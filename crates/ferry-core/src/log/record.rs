//! The records of the log file, one JSON object per line, and the byte
//! strings their signatures cover.
//!
//! The canonical bytes of a record are the bytes of its line without the
//! trailing `\n`, exactly as written. Every record is serialized by
//! `serde_json` from the structs below, whose field order is fixed and which
//! hold no floating-point numbers; the verifier hashes the stored bytes and
//! never re-serializes them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::checkpoint::Checkpoint;

/// Format name written into the genesis record.
pub const LOG_FORMAT: &str = "ferry-transfer-log/1";

/// The `prev` value of the genesis record, which has no predecessor.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Genesis(GenesisRecord),
    Entry(EntryRecord),
    Seal(SealRecord),
    Epoch(EpochRecord),
    Checkpoint(CheckpointRecord),
    Torn(TornRecord),
}

impl Record {
    pub fn seq(&self) -> u64 {
        match self {
            Record::Genesis(r) => r.seq,
            Record::Entry(r) => r.seq,
            Record::Seal(r) => r.seq,
            Record::Epoch(r) => r.seq,
            Record::Checkpoint(r) => r.seq,
            Record::Torn(r) => r.seq,
        }
    }

    /// Hex SHA-256 of the previous record's line.
    pub fn prev(&self) -> &str {
        match self {
            Record::Genesis(r) => &r.prev,
            Record::Entry(r) => &r.prev,
            Record::Seal(r) => &r.prev,
            Record::Epoch(r) => &r.prev,
            Record::Checkpoint(r) => &r.prev,
            Record::Torn(r) => &r.prev,
        }
    }

    /// The value of the `kind` field.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::Genesis(_) => "genesis",
            Record::Entry(_) => "entry",
            Record::Seal(_) => "seal",
            Record::Epoch(_) => "epoch",
            Record::Checkpoint(_) => "checkpoint",
            Record::Torn(_) => "torn",
        }
    }

    /// Serializes the record into its line, without the trailing newline.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing these structs cannot fail: all map keys are strings.
        serde_json::to_vec(self).expect("log records serialize to JSON")
    }
}

/// The first record: names the log and introduces the epoch 0 public key,
/// which is the device's key for this log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenesisRecord {
    pub seq: u64,
    pub prev: String,
    pub format: String,
    pub log_id: Uuid,
    pub device: String,
    pub time: Timestamp,
    pub epoch: u64,
    /// Hex Ed25519 public key of epoch 0.
    pub public_key: String,
    /// A gateway checkpoint known when the log was created, kept as the
    /// gateway sent it.
    pub gateway_checkpoint: Option<serde_json::Value>,
    /// Hex Ed25519 signature by the epoch 0 key over [`genesis_message`].
    pub signature: String,
}

/// An event of a sign-in or a transfer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub seq: u64,
    pub prev: String,
    pub time: Timestamp,
    pub event: Event,
    pub actor: Option<Actor>,
    pub device: String,
    pub direction: Option<Direction>,
    /// FHIR reference of the patient, for example `Patient/123`.
    pub patient: Option<String>,
    /// FHIR reference of the object, for example `DocumentReference/abc`.
    pub object: Option<String>,
    pub file_name: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Hex SHA-256 of the file's content.
    pub sha256: Option<String>,
    /// The grant's correlation id, shared with the gateway's audit records.
    pub correlation_id: Option<String>,
    /// The gateway's signed receipt of a completed upload, kept as sent.
    pub receipt: Option<serde_json::Value>,
}

/// A signature over the chain head by the current epoch's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealRecord {
    pub seq: u64,
    /// The head being sealed: hex SHA-256 of the line before this one.
    pub prev: String,
    pub epoch: u64,
    /// Hex Ed25519 signature over [`seal_message`].
    pub signature: String,
}

/// A key rotation: the new epoch's public key, signed by the previous
/// epoch's key. The signature also covers `prev`, so it seals the head too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub seq: u64,
    pub prev: String,
    pub time: Timestamp,
    /// The epoch that starts with this record.
    pub epoch: u64,
    pub public_key: String,
    /// Hex Ed25519 signature by the key of epoch `epoch - 1` over
    /// [`epoch_message`].
    pub signature: String,
}

/// A head countersigned by the gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub seq: u64,
    pub prev: String,
    pub time: Timestamp,
    pub checkpoint: Checkpoint,
}

/// Marks the bytes of an interrupted append, which stay in the file on the
/// lines before this record. The chain continues from the record before
/// those bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TornRecord {
    pub seq: u64,
    pub prev: String,
    pub time: Timestamp,
    /// Length of the skipped bytes, including the newline that ends them.
    pub skipped_bytes: u64,
    /// Hex SHA-256 of the skipped bytes.
    pub skipped_sha256: String,
}

/// What happened. Serialized as an object whose `type` names the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    SignedIn,
    SignedOut,
    GrantIssued,
    TransferStarted,
    Paused,
    Resumed,
    Completed,
    Verified,
    Failed { reason: String },
    Cancelled,
    LogVerified,
    PatientMismatchConfirmed { reason: String },
}

impl Event {
    /// The value of the `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::SignedIn => "signed_in",
            Event::SignedOut => "signed_out",
            Event::GrantIssued => "grant_issued",
            Event::TransferStarted => "transfer_started",
            Event::Paused => "paused",
            Event::Resumed => "resumed",
            Event::Completed => "completed",
            Event::Verified => "verified",
            Event::Failed { .. } => "failed",
            Event::Cancelled => "cancelled",
            Event::LogVerified => "log_verified",
            Event::PatientMismatchConfirmed { .. } => "patient_mismatch_confirmed",
        }
    }

    /// Whether the event ends a transfer or a session, after which the log
    /// seals its head.
    pub fn is_boundary(&self) -> bool {
        matches!(
            self,
            Event::SignedIn
                | Event::SignedOut
                | Event::Completed
                | Event::Verified
                | Event::Failed { .. }
                | Event::Cancelled
        )
    }
}

/// The signed-in user: the SMART `fhirUser` claim and the token subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub fhir_user: Option<String>,
    pub subject: String,
}

/// Direction of a transfer as seen from the workstation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upload,
    Download,
}

/// The caller's part of an entry; the log adds seq, time, device and prev.
/// It holds no tokens and no signed URLs, and must not be given any.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub event: Event,
    pub actor: Option<Actor>,
    pub direction: Option<Direction>,
    pub patient: Option<String>,
    pub object: Option<String>,
    pub file_name: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub correlation_id: Option<String>,
    pub receipt: Option<serde_json::Value>,
}

impl NewEntry {
    /// An entry with only the event set.
    pub fn new(event: Event) -> Self {
        Self {
            event,
            actor: None,
            direction: None,
            patient: None,
            object: None,
            file_name: None,
            size: None,
            sha256: None,
            correlation_id: None,
            receipt: None,
        }
    }
}

/// Returns the hex SHA-256 of a line's bytes (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

const GENESIS_DOMAIN: &[u8] = b"ferry-transfer-log/v1/genesis\0";
const SEAL_DOMAIN: &[u8] = b"ferry-transfer-log/v1/seal\0";

/// Decodes a 32-byte hex value, or `None` when it is not one.
pub fn decode_32(hex_value: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_value).ok()?;
    bytes.try_into().ok()
}

/// Bytes signed by the epoch 0 key in the genesis record: the domain, the
/// log id, the device id (length-prefixed) and the public key.
pub fn genesis_message(log_id: Uuid, device: &str, public_key: &[u8; 32]) -> Vec<u8> {
    let mut message = GENESIS_DOMAIN.to_vec();
    message.extend_from_slice(log_id.as_bytes());
    message.extend_from_slice(&(device.len() as u64).to_be_bytes());
    message.extend_from_slice(device.as_bytes());
    message.extend_from_slice(public_key);
    message
}

/// Bytes signed by a seal: the domain, the log id, the epoch, the seal's own
/// seq and the head hash (big-endian integers). The epoch inside the message
/// keeps a later epoch's signature from passing as an earlier one.
pub fn seal_message(log_id: Uuid, epoch: u64, seq: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut message = SEAL_DOMAIN.to_vec();
    message.extend_from_slice(log_id.as_bytes());
    message.extend_from_slice(&epoch.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(head);
    message
}

/// Bytes signed by the outgoing key at a rotation: the domain, the log id,
/// the new epoch, the record's seq, the head hash and the new public key.
/// The layout is [`ferry_api::epoch_message`], which the gateway checks too.
pub fn epoch_message(
    log_id: Uuid,
    new_epoch: u64,
    seq: u64,
    head: &[u8; 32],
    new_public_key: &[u8; 32],
) -> Vec<u8> {
    ferry_api::epoch_message(log_id.as_bytes(), new_epoch, seq, head, new_public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_line_has_fixed_field_order() {
        let record = Record::Entry(EntryRecord {
            seq: 3,
            prev: ZERO_HASH.to_owned(),
            time: "2025-01-02T03:04:05Z".parse().unwrap(),
            event: Event::Failed { reason: "disk full".into() },
            actor: None,
            device: "ws-1".into(),
            direction: Some(Direction::Upload),
            patient: None,
            object: None,
            file_name: None,
            size: Some(10),
            sha256: None,
            correlation_id: None,
            receipt: None,
        });

        let line = String::from_utf8(record.to_line()).unwrap();

        assert!(line.starts_with(r#"{"kind":"entry","seq":3,"prev":"000"#), "{line}");
        assert!(line.contains(r#""event":{"type":"failed","reason":"disk full"}"#), "{line}");
        let parsed: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, record);
    }

    #[test]
    fn seal_message_differs_per_epoch() {
        let log_id = Uuid::nil();
        let head = [7u8; 32];

        assert_ne!(seal_message(log_id, 1, 5, &head), seal_message(log_id, 2, 5, &head));
    }
}
