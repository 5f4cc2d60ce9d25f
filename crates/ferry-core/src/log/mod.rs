//! The signed transfer log: a local, append-only, tamper-evident record of
//! every sign-in and transfer, which an auditor can verify with public
//! material only.
//!
//! # Design
//!
//! - **File.** One NDJSON file per profile. Every line is one record
//!   serialized by `serde_json` from a struct with a fixed field order and
//!   no floats ([`record`]). Kinds: `genesis`, `entry`, `seal`, `epoch`,
//!   `checkpoint`, `torn`. All kinds share one sequence number.
//! - **Chain.** Every record's `prev` is the hex SHA-256 of the previous
//!   line's bytes, so the verifier hashes the stored bytes and never
//!   re-serializes.
//! - **Seals.** A `seal` is an Ed25519 signature by the current epoch key
//!   over a domain-separated message holding the log id, the epoch, the
//!   seal's seq and the head hash. The log seals after entries that end a
//!   transfer or a session, when the last seal is older than the seal
//!   interval, on [`TransferLog::seal_now`] and on close, so signing cost
//!   does not grow with every entry.
//! - **Forward security.** The key changes at every [`TransferLog::open`]
//!   and when the epoch is older than the epoch length (hourly by default).
//!   The outgoing key signs the new public key into an `epoch` record, and
//!   only after that record is durable is the outgoing secret replaced in
//!   the secret store. Keys live only in the [`crate::secrets::SecretStore`].
//!   Whoever obtains the current key cannot re-seal records sealed under
//!   earlier keys, and a signature by a later key is detected because the
//!   epoch is part of every signed message and the verifier tracks which
//!   epoch was current at each position.
//! - **Checkpoints.** [`TransferLog::checkpoint_request`] returns the head
//!   and the current epoch key for the gateway to countersign (an ES256 JWS
//!   by the grant API, see [`checkpoint`]);
//!   [`TransferLog::record_checkpoint`] appends the countersigned result.
//!   The verifier uses the gateway's checkpoints to detect a cut tail and
//!   another copy of the file.
//! - **Crash safety.** Each record is written with one `write_all` on an
//!   append-mode file, followed by `sync_data`, under an exclusive advisory
//!   lock, so the app and the CLI never interleave. A process killed
//!   mid-append leaves a line without a newline. The next append ends those
//!   bytes with a newline and appends a `torn` record naming their length
//!   and SHA-256, whose `prev` continues the chain from the last intact
//!   record. The bytes stay in the file and the verifier reports them.
//!
//! # Limits
//!
//! Records after the last seal are protected only by the hash chain until
//! the next seal: whoever holds the current key (or the file before the
//! next seal) can change them, and a countersigned checkpoint is what makes
//! a cut behind it detectable. The verifier reports their count as
//! [`VerifyReport::unsealed_tail`]. Without trusted device keys
//! ([`VerifyOptions::device_keys`]) the verifier can only check that the
//! file is consistent with its own genesis key: a log re-created from
//! scratch under a new key is detected only against the device key the
//! gateway registered.

mod checkpoint;
mod export;
mod keys;
pub mod record;
mod verify;
mod writer;

use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::secrets::SecretStoreError;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointRequest};
pub use export::{BUNDLE_FORMAT, VerificationBundle, export_bundle, export_fhir, recorded_gateway_keys};
pub use record::{Actor, Direction, Event, NewEntry, Record};
pub use verify::{
    EpochPublicKey, ExportedHead, Problem, ProblemKind, VerifyOptions, VerifyReport, verify, verify_bytes,
};
pub use writer::{Head, OpenOptions, TransferLog};

/// Failure to open, append to or read a transfer log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("failed to {stage} at {path}: {source}")]
    Io {
        stage: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the transfer log's signing key could not be used")]
    SecretStore(#[from] SecretStoreError),
    #[error(
        "the signing key of the transfer log is missing from the credential store (entry {entry}); \
         the log cannot be continued: move the log file aside to start a new one"
    )]
    EpochKeyMissing { entry: String },
    #[error(
        "the credential store entry {entry} holds the key of log {key_log_id}, not of log {log_id}; \
         move the log file aside or delete the entry to start a new log"
    )]
    KeyForOtherLog { entry: String, key_log_id: Uuid, log_id: Uuid },
    #[error(
        "the transfer log {path} ends at seq {last_seq}, but its signing key (epoch {epoch}) was introduced at seq {since_seq}: \
         the file was truncated or replaced by an older copy; keep it for the auditor and move it aside"
    )]
    FileBehindKey { path: PathBuf, last_seq: u64, epoch: u64, since_seq: u64 },
    #[error("{path} is not a transfer log: {reason}")]
    NotALog { path: PathBuf, reason: String },
    #[error("the checkpoint for log {log_id} at seq {head_seq} does not belong to the log at {path}")]
    CheckpointMismatch { log_id: Uuid, head_seq: u64, path: PathBuf },
}

impl LogError {
    fn io(stage: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io { stage, path: path.to_path_buf(), source }
    }
}
