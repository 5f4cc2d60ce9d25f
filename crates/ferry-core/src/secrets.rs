//! Storage for long-lived secrets: refresh tokens and the transfer log's
//! device signing keys. Access tokens never come here; they stay in memory.
//!
//! The desktop app and the CLI use the operating system's credential store
//! (see `SecretStore` implementations). Nothing in this module writes a
//! secret to a plain file.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// A secret value whose `Debug` output never shows the contents.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret itself, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Failure of a credential store.
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    /// No credential store is reachable on this machine, for example a
    /// headless Linux session without a Secret Service.
    #[error("no credential store is available: {0}")]
    Unavailable(String),
    #[error("the credential store failed on entry {entry}: {message}")]
    Failed { entry: String, message: String },
}

/// A place that keeps secrets by name (service `ferry`, one entry per profile
/// and purpose, for example `profile/sandbox/refresh-token`).
pub trait SecretStore: Send + Sync {
    /// Returns the stored secret, or `None` when the entry does not exist.
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError>;
    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError>;
    /// Deletes the entry; deleting a missing entry succeeds.
    fn delete(&self, entry: &str) -> Result<(), SecretStoreError>;
}

/// A store that keeps secrets in this process's memory only, lost when it
/// exits. Used by `ferry demo` on machines without a credential store and by
/// tests; never as a silent fallback for a real profile.
#[derive(Default)]
pub struct MemorySecretStore {
    entries: Mutex<HashMap<String, Secret>>,
}

impl SecretStore for MemorySecretStore {
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError> {
        Ok(self.entries.lock().expect("secret map lock").get(entry).cloned())
    }

    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError> {
        self.entries
            .lock()
            .expect("secret map lock")
            .insert(entry.to_owned(), secret.clone());
        Ok(())
    }

    fn delete(&self, entry: &str) -> Result<(), SecretStoreError> {
        self.entries.lock().expect("secret map lock").remove(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let secret = Secret::new("refresh-abc");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
    }

    #[test]
    fn memory_store_round_trips_and_deletes() {
        let store = MemorySecretStore::default();
        store.set("profile/demo/refresh-token", &Secret::new("r1")).unwrap();
        assert_eq!(
            store.get("profile/demo/refresh-token").unwrap(),
            Some(Secret::new("r1"))
        );
        store.delete("profile/demo/refresh-token").unwrap();
        assert_eq!(store.get("profile/demo/refresh-token").unwrap(), None);
    }
}
