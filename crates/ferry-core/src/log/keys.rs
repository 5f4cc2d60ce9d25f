//! Epoch signing keys in the secret store.
//!
//! The current epoch's secret lives under the caller's entry name, and a key
//! being introduced lives under `{entry}/next` until the epoch record that
//! introduces it is durable in the log. Nothing here writes a key to a file.

use std::fmt;

use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secrets::{Secret, SecretStore, SecretStoreError};

/// The signing key of one epoch of one log.
pub struct EpochKey {
    pub log_id: Uuid,
    pub epoch: u64,
    /// Seq of the record that introduced the key (genesis or epoch record).
    pub since_seq: u64,
    pub signing_key: SigningKey,
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKey")
            .field("log_id", &self.log_id)
            .field("epoch", &self.epoch)
            .field("since_seq", &self.since_seq)
            .field("signing_key", &"[redacted]")
            .finish()
    }
}

/// The stored form, serialized into a [`Secret`].
#[derive(Serialize, Deserialize)]
struct StoredKey {
    log_id: Uuid,
    epoch: u64,
    since_seq: u64,
    secret_key: String,
}

impl EpochKey {
    /// Generates a key from `rand`'s thread-local generator, a CSPRNG seeded
    /// by the operating system.
    pub fn generate(log_id: Uuid, epoch: u64, since_seq: u64) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let signing_key = SigningKey::from_bytes(&seed);
        seed.fill(0);

        Self { log_id, epoch, since_seq, signing_key }
    }

    /// Hex of the public key.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing_key.verifying_key().to_bytes())
    }

    fn to_secret(&self) -> Secret {
        let stored = StoredKey {
            log_id: self.log_id,
            epoch: self.epoch,
            since_seq: self.since_seq,
            secret_key: hex::encode(self.signing_key.to_bytes()),
        };
        Secret::new(serde_json::to_string(&stored).expect("stored key serializes"))
    }

    fn from_secret(entry: &str, secret: &Secret) -> Result<Self, SecretStoreError> {
        let invalid = || SecretStoreError::Failed {
            entry: entry.to_owned(),
            message: "the stored transfer log key is not valid; delete the entry to start a new log".into(),
        };
        let stored: StoredKey = serde_json::from_str(secret.expose()).map_err(|_| invalid())?;
        let bytes = super::record::decode_32(&stored.secret_key).ok_or_else(invalid)?;

        Ok(Self {
            log_id: stored.log_id,
            epoch: stored.epoch,
            since_seq: stored.since_seq,
            signing_key: SigningKey::from_bytes(&bytes),
        })
    }
}

/// Reads and writes the keys of one log in a secret store.
pub struct KeySlot<'a> {
    pub store: &'a dyn SecretStore,
    pub entry: &'a str,
}

impl KeySlot<'_> {
    fn next_entry(&self) -> String {
        format!("{}/next", self.entry)
    }

    pub fn current(&self) -> Result<Option<EpochKey>, SecretStoreError> {
        self.store
            .get(self.entry)?
            .map(|secret| EpochKey::from_secret(self.entry, &secret))
            .transpose()
    }

    /// Replaces the current key, which erases the previous epoch's secret
    /// from the store.
    pub fn set_current(&self, key: &EpochKey) -> Result<(), SecretStoreError> {
        self.store.set(self.entry, &key.to_secret())
    }

    pub fn pending(&self) -> Result<Option<EpochKey>, SecretStoreError> {
        let entry = self.next_entry();
        self.store
            .get(&entry)?
            .map(|secret| EpochKey::from_secret(&entry, &secret))
            .transpose()
    }

    pub fn set_pending(&self, key: &EpochKey) -> Result<(), SecretStoreError> {
        self.store.set(&self.next_entry(), &key.to_secret())
    }

    pub fn clear_pending(&self) -> Result<(), SecretStoreError> {
        self.store.delete(&self.next_entry())
    }
}
