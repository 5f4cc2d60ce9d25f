//! The operating system's credential store as a [`SecretStore`].
//!
//! Backends, through `keyring-core` and one store crate per platform:
//! - Linux and other Unix systems: the Secret Service on the D-Bus session
//!   bus (`org.freedesktop.secrets`, served by gnome-keyring or KeePassXC).
//!   With `FERRY_KEYRING=keyutils`, Linux uses the user keyring of the
//!   kernel key retention service instead (see [`kernel_keyring`]), whose
//!   keys live in kernel memory only: they are shared by the user's
//!   processes and lost at reboot.
//! - macOS: the login keychain.
//! - Windows: the Credential Manager, which stores at most 2,560 bytes per
//!   credential; [`ChunkedStore`] splits longer secrets.
//!
//! When no backend is reachable, [`open_credential_store`] fails with
//! [`SecretStoreError::Unavailable`] and says how to provide one. There is
//! deliberately no fallback to a plain file.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use sha2::{Digest, Sha256};

use crate::secrets::{Secret, SecretStore, SecretStoreError};

#[cfg(target_os = "linux")]
pub mod kernel_keyring;

/// Service name under which every Ferry entry is stored.
pub const SERVICE: &str = "ferry";
/// Environment variable that selects the credential store backend.
pub const KEYRING_ENV: &str = "FERRY_KEYRING";
/// Maximum size of one credential blob in the Windows Credential Manager
/// (`CRED_MAX_CREDENTIAL_BLOB_SIZE`).
pub const WINDOWS_MAX_SECRET_BYTES: usize = 2560;

/// How to provide a credential store on Linux, appended to the messages of
/// [`SecretStoreError::Unavailable`].
pub const LINUX_ALTERNATIVES: &str = "start a Secret Service, for example gnome-keyring: \
     `dbus-run-session -- sh -c 'echo -n PASSWORD | gnome-keyring-daemon --unlock --components=secrets; ferry login'`, \
     or keep the sign-in in the kernel's user keyring until reboot with FERRY_KEYRING=keyutils";

/// A credential store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringBackend {
    /// The Secret Service on the D-Bus session bus.
    SecretService,
    /// The Linux kernel key retention service (keyutils).
    Keyutils,
    /// The macOS keychain or the Windows Credential Manager.
    Native,
}

impl KeyringBackend {
    /// Returns the backend named by `FERRY_KEYRING` (`secret-service`,
    /// `keyutils` or `native`), or the platform's default.
    pub fn from_env() -> Result<KeyringBackend, SecretStoreError> {
        match std::env::var(KEYRING_ENV) {
            Ok(value) if !value.is_empty() => KeyringBackend::parse(&value),
            _ => Ok(KeyringBackend::platform_default()),
        }
    }

    pub fn parse(name: &str) -> Result<KeyringBackend, SecretStoreError> {
        match name {
            "secret-service" => Ok(KeyringBackend::SecretService),
            "keyutils" => Ok(KeyringBackend::Keyutils),
            "native" => Ok(KeyringBackend::Native),
            other => Err(SecretStoreError::Unavailable(format!(
                "{KEYRING_ENV}={other} is not a known credential store; use secret-service, keyutils or native"
            ))),
        }
    }

    pub fn platform_default() -> KeyringBackend {
        if cfg!(any(target_os = "macos", target_os = "windows")) {
            KeyringBackend::Native
        } else {
            KeyringBackend::SecretService
        }
    }

    /// Maximum secret size of one entry, in bytes.
    pub fn max_secret_bytes(self) -> usize {
        match self {
            KeyringBackend::Native if cfg!(target_os = "windows") => WINDOWS_MAX_SECRET_BYTES,
            // The Secret Service and the macOS keychain have no practical
            // limit.
            #[cfg(target_os = "linux")]
            KeyringBackend::Keyutils => kernel_keyring::MAX_SECRET_BYTES,
            _ => 1 << 20,
        }
    }
}

/// Opens the credential store selected by `FERRY_KEYRING` (or the platform
/// default), wrapped in a [`ChunkedStore`] with that backend's size limit.
pub fn open_credential_store() -> Result<ChunkedStore<KeyringStore>, SecretStoreError> {
    let backend = KeyringBackend::from_env()?;
    let store = KeyringStore::open(backend)?;
    Ok(ChunkedStore::new(store, backend.max_secret_bytes()))
}

/// A [`SecretStore`] over the operating system's credential store. Through
/// `keyring-core`, entries use the service [`SERVICE`] and the entry name as
/// the user; the kernel keyring uses [`kernel_keyring`] directly.
///
/// Calls block on D-Bus or system APIs; async callers run them with
/// `tokio::task::spawn_blocking`.
pub struct KeyringStore {
    store: Backing,
    backend: KeyringBackend,
}

/// The store behind a [`KeyringStore`].
enum Backing {
    /// The Secret Service, the macOS keychain or the Windows Credential
    /// Manager.
    Core(Arc<CredentialStore>),
    #[cfg(target_os = "linux")]
    UserKeyring(kernel_keyring::UserKeyring),
}

impl std::fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringStore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl KeyringStore {
    /// Connects to the backend. On Linux this checks that a Secret Service
    /// responds on the session bus, or that the kernel lets this user open
    /// the user keyring.
    pub fn open(backend: KeyringBackend) -> Result<KeyringStore, SecretStoreError> {
        let store = connect(backend)?;
        tracing::debug!(?backend, "credential store opened");
        Ok(KeyringStore { store, backend })
    }

    pub fn backend(&self) -> KeyringBackend {
        self.backend
    }

    fn entry(&self, store: &Arc<CredentialStore>, name: &str) -> Result<Entry, SecretStoreError> {
        Entry::new_in_store(store, SERVICE, name).map_err(|error| self.failure(name, error))
    }

    fn failure(&self, entry: &str, error: keyring_core::Error) -> SecretStoreError {
        match error {
            keyring_core::Error::NoStorageAccess(cause) => {
                let advice = match self.backend {
                    KeyringBackend::SecretService => {
                        "unlock the Secret Service's default collection and try again"
                    }
                    KeyringBackend::Keyutils => {
                        "check that this user may use the kernel keyring (`keyctl show @u`)"
                    }
                    KeyringBackend::Native => "unlock the system's credential store and try again",
                };
                SecretStoreError::Unavailable(format!(
                    "the credential store refused access to entry {entry} ({cause}); {advice}"
                ))
            }
            other => SecretStoreError::Failed {
                entry: entry.to_owned(),
                message: other.to_string(),
            },
        }
    }
}

impl SecretStore for KeyringStore {
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError> {
        let store = match &self.store {
            Backing::Core(store) => store,
            #[cfg(target_os = "linux")]
            Backing::UserKeyring(keyring) => return keyring.get(entry),
        };
        match self.entry(store, entry)?.get_secret() {
            Ok(bytes) => String::from_utf8(bytes)
                .map(|text| Some(Secret::new(text)))
                .map_err(|_| SecretStoreError::Failed {
                    entry: entry.to_owned(),
                    message: "the stored value is not UTF-8 text; delete it with `ferry logout`"
                        .to_owned(),
                }),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(error) => Err(self.failure(entry, error)),
        }
    }

    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError> {
        let store = match &self.store {
            Backing::Core(store) => store,
            #[cfg(target_os = "linux")]
            Backing::UserKeyring(keyring) => return keyring.set(entry, secret),
        };
        self.entry(store, entry)?
            .set_secret(secret.expose().as_bytes())
            .map_err(|error| self.failure(entry, error))
    }

    fn delete(&self, entry: &str) -> Result<(), SecretStoreError> {
        let store = match &self.store {
            Backing::Core(store) => store,
            #[cfg(target_os = "linux")]
            Backing::UserKeyring(keyring) => return keyring.delete(entry),
        };
        match self.entry(store, entry)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(error) => Err(self.failure(entry, error)),
        }
    }
}

#[cfg(target_os = "linux")]
fn connect(backend: KeyringBackend) -> Result<Backing, SecretStoreError> {
    match backend {
        KeyringBackend::SecretService => connect_secret_service().map(Backing::Core),
        KeyringBackend::Keyutils => kernel_keyring::UserKeyring::open().map(Backing::UserKeyring),
        KeyringBackend::Native => Err(SecretStoreError::Unavailable(format!(
            "{KEYRING_ENV}=native names no store on Linux; {LINUX_ALTERNATIVES}"
        ))),
    }
}

#[cfg(all(
    unix,
    not(any(
        target_os = "linux",
        target_os = "macos",
        target_os = "ios",
        target_os = "android"
    ))
))]
fn connect(backend: KeyringBackend) -> Result<Backing, SecretStoreError> {
    match backend {
        KeyringBackend::SecretService => connect_secret_service().map(Backing::Core),
        other => Err(SecretStoreError::Unavailable(format!(
            "the credential store {other:?} does not exist on this system; start a Secret Service such as gnome-keyring"
        ))),
    }
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn connect_secret_service() -> Result<Arc<CredentialStore>, SecretStoreError> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|address| address.is_empty()) {
        return Err(SecretStoreError::Unavailable(format!(
            "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set), so no Secret Service \
             (org.freedesktop.secrets) is reachable; {LINUX_ALTERNATIVES}"
        )));
    }
    let store = zbus_secret_service_keyring_store::Store::new().map_err(|error| {
        SecretStoreError::Unavailable(format!(
            "no Secret Service (org.freedesktop.secrets) responds on the D-Bus session bus: {error}; {LINUX_ALTERNATIVES}"
        ))
    })?;
    Ok(store)
}

#[cfg(target_os = "macos")]
fn connect(backend: KeyringBackend) -> Result<Backing, SecretStoreError> {
    match backend {
        KeyringBackend::Native => apple_native_keyring_store::keychain::Store::new()
            .map(|store| Backing::Core(store as Arc<CredentialStore>))
            .map_err(|error| {
                SecretStoreError::Unavailable(format!("the macOS keychain is not usable: {error}"))
            }),
        other => Err(SecretStoreError::Unavailable(format!(
            "the credential store {other:?} does not exist on macOS; unset {KEYRING_ENV}"
        ))),
    }
}

#[cfg(target_os = "windows")]
fn connect(backend: KeyringBackend) -> Result<Backing, SecretStoreError> {
    match backend {
        KeyringBackend::Native => windows_native_keyring_store::Store::new()
            .map(|store| Backing::Core(store as Arc<CredentialStore>))
            .map_err(|error| {
                SecretStoreError::Unavailable(format!(
                    "the Windows Credential Manager is not usable: {error}"
                ))
            }),
        other => Err(SecretStoreError::Unavailable(format!(
            "the credential store {other:?} does not exist on Windows; unset {KEYRING_ENV}"
        ))),
    }
}

/// Prefix of the value stored under the main entry of a chunked secret.
const CHUNK_HEADER_PREFIX: &str = "ferry-chunked/1 ";

/// A [`SecretStore`] wrapper that stores a secret longer than `max_bytes`
/// in numbered entries `{entry}#1`, `{entry}#2`, ..., each at most
/// `max_bytes` long. The main entry then contains a header
/// `ferry-chunked/1 parts=N sha256=HEX`, and reading checks the joined
/// parts against that SHA-256, so a half-written secret is reported as an
/// error, never returned.
///
/// Secrets that fit are stored unchanged under the main entry.
#[derive(Debug)]
pub struct ChunkedStore<S> {
    inner: S,
    max_bytes: usize,
}

impl<S: SecretStore> ChunkedStore<S> {
    /// Wraps `inner`. `max_bytes` must leave room for the header (at least
    /// 128 bytes).
    pub fn new(inner: S, max_bytes: usize) -> ChunkedStore<S> {
        assert!(
            max_bytes >= 128,
            "a chunk limit of {max_bytes} bytes leaves no room for the header"
        );
        ChunkedStore { inner, max_bytes }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn part_entry(entry: &str, index: usize) -> String {
        format!("{entry}#{index}")
    }

    /// Returns the number of parts named by a stored header, or `None` for a
    /// secret stored whole.
    fn stored_part_count(&self, entry: &str) -> Result<Option<usize>, SecretStoreError> {
        match self.inner.get(entry)? {
            Some(value) => match parse_header(value.expose()) {
                Some(header) => Ok(Some(header.parts)),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    fn delete_parts(&self, entry: &str, from: usize, to: usize) -> Result<(), SecretStoreError> {
        for index in from..=to {
            self.inner.delete(&Self::part_entry(entry, index))?;
        }
        Ok(())
    }
}

impl<S: SecretStore> SecretStore for ChunkedStore<S> {
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError> {
        let Some(value) = self.inner.get(entry)? else {
            return Ok(None);
        };
        let Some(header) = parse_header(value.expose()) else {
            return Ok(Some(value));
        };

        let mut joined = String::new();
        for index in 1..=header.parts {
            let part = self
                .inner
                .get(&Self::part_entry(entry, index))?
                .ok_or_else(|| {
                    inconsistent(
                        entry,
                        &format!("part {index} of {} is missing", header.parts),
                    )
                })?;
            joined.push_str(part.expose());
        }
        if hex::encode(Sha256::digest(joined.as_bytes())) != header.sha256 {
            return Err(inconsistent(
                entry,
                "the parts do not match the header's SHA-256",
            ));
        }
        Ok(Some(Secret::new(joined)))
    }

    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError> {
        let text = secret.expose();
        let old_parts = self.stored_part_count(entry)?.unwrap_or(0);

        // A short secret that happens to start like a header is chunked too,
        // so that reading it back cannot misinterpret it.
        if text.len() <= self.max_bytes && !text.starts_with(CHUNK_HEADER_PREFIX) {
            self.inner.set(entry, secret)?;
            return self.delete_parts(entry, 1, old_parts);
        }

        let parts = split_at_char_boundaries(text, self.max_bytes);
        for (index, part) in parts.iter().enumerate() {
            self.inner
                .set(&Self::part_entry(entry, index + 1), &Secret::new(*part))?;
        }
        let header = format!(
            "{CHUNK_HEADER_PREFIX}parts={} sha256={}",
            parts.len(),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
        self.inner.set(entry, &Secret::new(header))?;
        tracing::debug!(entry, parts = parts.len(), "secret stored in parts");

        if old_parts > parts.len() {
            self.delete_parts(entry, parts.len() + 1, old_parts)?;
        }
        Ok(())
    }

    fn delete(&self, entry: &str) -> Result<(), SecretStoreError> {
        let parts = self.stored_part_count(entry)?.unwrap_or(0);
        self.inner.delete(entry)?;
        self.delete_parts(entry, 1, parts)
    }
}

struct ChunkHeader {
    parts: usize,
    sha256: String,
}

fn parse_header(value: &str) -> Option<ChunkHeader> {
    let fields = value.strip_prefix(CHUNK_HEADER_PREFIX)?;
    let mut parts = None;
    let mut sha256 = None;
    for field in fields.split(' ') {
        match field.split_once('=') {
            Some(("parts", count)) => parts = count.parse::<usize>().ok(),
            Some(("sha256", digest)) => sha256 = Some(digest.to_owned()),
            _ => {}
        }
    }
    Some(ChunkHeader {
        parts: parts?,
        sha256: sha256?,
    })
}

fn inconsistent(entry: &str, detail: &str) -> SecretStoreError {
    SecretStoreError::Failed {
        entry: entry.to_owned(),
        message: format!(
            "the secret stored in parts is inconsistent: {detail}; sign in again to replace it"
        ),
    }
}

/// Splits `text` into pieces of at most `max_bytes` bytes without cutting
/// a UTF-8 character.
fn split_at_char_boundaries(text: &str, max_bytes: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max_bytes);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_characters_whole() {
        let text = "aé".repeat(100);
        let pieces = split_at_char_boundaries(&text, 129);
        assert!(pieces.iter().all(|piece| piece.len() <= 129));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn header_parses_fields() {
        let header = parse_header("ferry-chunked/1 parts=3 sha256=abcd").unwrap();
        assert_eq!(header.parts, 3);
        assert_eq!(header.sha256, "abcd");
        assert!(parse_header("ferry-chunked/1 parts=x sha256=abcd").is_none());
        assert!(parse_header("plain refresh token").is_none());
    }

    #[test]
    fn unknown_backend_name_is_rejected() {
        let error = KeyringBackend::parse("file").unwrap_err();
        assert!(error.to_string().contains("FERRY_KEYRING=file"), "{error}");
    }
}
