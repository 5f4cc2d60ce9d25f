//! Checkpoints: a log head countersigned by the gateway.
//!
//! The client sends a [`CheckpointRequest`] (the head, and the current
//! epoch's public key so the gateway learns every key as it is introduced).
//! The gateway signs [`checkpoint_message`] with its Ed25519 key and returns
//! a [`Checkpoint`], which the client appends to the log and which the
//! gateway keeps. An auditor holding the gateway's checkpoints detects a log
//! cut behind one of them, or a log replaced by another copy.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::record::decode_32;

const CHECKPOINT_DOMAIN: &[u8] = b"ferry-transfer-log/v1/checkpoint\0";

/// The head a client asks the gateway to countersign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    pub log_id: Uuid,
    pub device: String,
    pub head_seq: u64,
    /// Hex SHA-256 of the line at `head_seq`.
    pub head_hash: String,
    /// The epoch current at the head.
    pub epoch: u64,
    /// Hex Ed25519 public key of that epoch.
    pub epoch_public_key: String,
    /// Hex Ed25519 public key of epoch 0, the device's key for this log.
    pub device_public_key: String,
}

/// A head countersigned by the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: Uuid,
    pub head_seq: u64,
    pub head_hash: String,
    pub epoch: u64,
    pub epoch_public_key: String,
    /// The gateway's name for the key that signed, kept as sent.
    pub gateway_key_id: String,
    /// Hex Ed25519 signature over [`checkpoint_message`], kept as sent.
    pub gateway_signature: String,
}

/// A gateway public key that countersigns checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayKey {
    pub key_id: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
}

/// Bytes the gateway signs: the domain, the log id, the head seq, the head
/// hash, the epoch and the epoch's public key (big-endian integers). Returns
/// `None` when a hash or key is not 32 bytes of hex.
pub fn checkpoint_message(
    log_id: Uuid,
    head_seq: u64,
    head_hash: &str,
    epoch: u64,
    epoch_public_key: &str,
) -> Option<Vec<u8>> {
    let head = decode_32(head_hash)?;
    let key = decode_32(epoch_public_key)?;

    let mut message = CHECKPOINT_DOMAIN.to_vec();
    message.extend_from_slice(log_id.as_bytes());
    message.extend_from_slice(&head_seq.to_be_bytes());
    message.extend_from_slice(&head);
    message.extend_from_slice(&epoch.to_be_bytes());
    message.extend_from_slice(&key);
    Some(message)
}

impl CheckpointRequest {
    /// Countersigns the request: the gateway side of a checkpoint. Returns
    /// `None` when the request's hash or key is malformed.
    pub fn countersign(&self, key_id: &str, gateway_key: &SigningKey) -> Option<Checkpoint> {
        let message = checkpoint_message(
            self.log_id,
            self.head_seq,
            &self.head_hash,
            self.epoch,
            &self.epoch_public_key,
        )?;
        let signature = gateway_key.sign(&message);

        Some(Checkpoint {
            log_id: self.log_id,
            head_seq: self.head_seq,
            head_hash: self.head_hash.clone(),
            epoch: self.epoch,
            epoch_public_key: self.epoch_public_key.clone(),
            gateway_key_id: key_id.to_owned(),
            gateway_signature: hex::encode(signature.to_bytes()),
        })
    }
}

impl Checkpoint {
    /// Checks the gateway's signature with the key whose id matches.
    pub fn verify_signature(&self, keys: &[GatewayKey]) -> Result<(), String> {
        let Some(key) = keys.iter().find(|key| key.key_id == self.gateway_key_id) else {
            return Err(format!("no gateway key with id {:?} is known", self.gateway_key_id));
        };
        let key = decode_32(&key.public_key)
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
            .ok_or_else(|| format!("gateway key {:?} is not an Ed25519 public key", key.key_id))?;
        let signature = hex::decode(&self.gateway_signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or("the gateway signature is not 64 bytes of hex")?;
        let message = checkpoint_message(
            self.log_id,
            self.head_seq,
            &self.head_hash,
            self.epoch,
            &self.epoch_public_key,
        )
        .ok_or("the head hash or epoch key is not 32 bytes of hex")?;

        key.verify(&message, &signature)
            .map_err(|_| format!("the signature does not verify with gateway key {:?}", self.gateway_key_id))
    }
}
