//! Credential store tests: secrets longer than a store's entry limit, the
//! real Secret Service (gnome-keyring) when the test session has one, the
//! kernel keyring, and the message shown when no store is reachable.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;

use ferry_core::credentials::{
    ChunkedStore, KeyringBackend, KeyringStore, WINDOWS_MAX_SECRET_BYTES,
};
use ferry_core::secrets::{Secret, SecretStore, SecretStoreError};

/// An in-memory store that rejects values longer than its limit, as the
/// Windows Credential Manager does beyond 2,560 bytes. The Credential
/// Manager itself cannot run here, so this stand-in enforces its limit.
struct LimitedStore {
    max_bytes: usize,
    entries: Mutex<HashMap<String, Secret>>,
}

impl LimitedStore {
    fn windows() -> LimitedStore {
        LimitedStore {
            max_bytes: WINDOWS_MAX_SECRET_BYTES,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.lock().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    fn raw(&self, entry: &str) -> Option<String> {
        self.entries
            .lock()
            .unwrap()
            .get(entry)
            .map(|secret| secret.expose().to_owned())
    }
}

impl SecretStore for LimitedStore {
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError> {
        Ok(self.entries.lock().unwrap().get(entry).cloned())
    }

    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError> {
        if secret.expose().len() > self.max_bytes {
            return Err(SecretStoreError::Failed {
                entry: entry.to_owned(),
                message: format!("longer than {} bytes", self.max_bytes),
            });
        }
        self.entries
            .lock()
            .unwrap()
            .insert(entry.to_owned(), secret.clone());
        Ok(())
    }

    fn delete(&self, entry: &str) -> Result<(), SecretStoreError> {
        self.entries.lock().unwrap().remove(entry);
        Ok(())
    }
}

/// A secret of `length` bytes mixing one- and two-byte UTF-8 characters, so
/// that part boundaries fall inside characters unless the split avoids it.
fn long_secret(length: usize) -> String {
    let mut text = String::new();
    let mut index = 0;
    while text.len() < length {
        text.push(if index % 7 == 0 {
            'é'
        } else {
            char::from(b'a' + (index % 26) as u8)
        });
        index += 1;
    }
    text
}

const ENTRY: &str = "profile/st-mary/refresh-token";

#[test]
fn limited_store_rejects_long_secret() {
    let store = LimitedStore::windows();
    let result = store.set(ENTRY, &Secret::new(long_secret(2561)));
    assert!(
        result.is_err(),
        "the stand-in store must enforce the 2,560-byte limit"
    );
}

#[test]
fn chunked_store_round_trips_long_secret() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    let secret = Secret::new(long_secret(10_000));

    store.set(ENTRY, &secret).unwrap();

    assert_eq!(store.get(ENTRY).unwrap(), Some(secret));
    let names = store.inner().names();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(&format!("{ENTRY}#4")), "{names:?}");
    let header = store.inner().raw(ENTRY).unwrap();
    assert!(
        header.starts_with("ferry-chunked/1 parts=4 sha256="),
        "{header}"
    );
}

#[test]
fn chunked_store_keeps_short_secret_whole() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    let secret = Secret::new("short-refresh-token");

    store.set(ENTRY, &secret).unwrap();

    assert_eq!(store.inner().names(), [ENTRY]);
    assert_eq!(
        store.inner().raw(ENTRY).as_deref(),
        Some("short-refresh-token")
    );
    assert_eq!(store.get(ENTRY).unwrap(), Some(secret));
}

#[test]
fn chunked_store_secret_of_exact_limit_is_whole() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    let secret = Secret::new("x".repeat(WINDOWS_MAX_SECRET_BYTES));

    store.set(ENTRY, &secret).unwrap();

    assert_eq!(store.inner().names(), [ENTRY]);
    assert_eq!(store.get(ENTRY).unwrap(), Some(secret));
}

#[test]
fn chunked_store_replacing_long_with_short_removes_parts() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    store.set(ENTRY, &Secret::new(long_secret(8_000))).unwrap();

    store.set(ENTRY, &Secret::new("rotated")).unwrap();

    assert_eq!(store.inner().names(), [ENTRY]);
    assert_eq!(store.get(ENTRY).unwrap(), Some(Secret::new("rotated")));
}

#[test]
fn chunked_store_replacing_with_fewer_parts_removes_extra() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    store.set(ENTRY, &Secret::new(long_secret(10_000))).unwrap();

    let shorter = Secret::new(long_secret(3_000));
    store.set(ENTRY, &shorter).unwrap();

    assert_eq!(
        store.inner().names().len(),
        3,
        "{:?}",
        store.inner().names()
    );
    assert_eq!(store.get(ENTRY).unwrap(), Some(shorter));
}

#[test]
fn chunked_store_delete_removes_every_part() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    store.set(ENTRY, &Secret::new(long_secret(6_000))).unwrap();

    store.delete(ENTRY).unwrap();

    assert!(
        store.inner().names().is_empty(),
        "{:?}",
        store.inner().names()
    );
    assert_eq!(store.get(ENTRY).unwrap(), None);
    store.delete(ENTRY).unwrap();
}

#[test]
fn chunked_store_missing_part_is_an_error() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    store.set(ENTRY, &Secret::new(long_secret(6_000))).unwrap();
    store.inner().delete(&format!("{ENTRY}#2")).unwrap();

    let error = store.get(ENTRY).unwrap_err();

    let message = error.to_string();
    assert!(message.contains("part 2 of 3 is missing"), "{message}");
    assert!(message.contains("sign in again"), "{message}");
}

#[test]
fn chunked_store_altered_part_is_an_error() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    store.set(ENTRY, &Secret::new(long_secret(6_000))).unwrap();
    store
        .inner()
        .set(&format!("{ENTRY}#3"), &Secret::new("tampered"))
        .unwrap();

    let error = store.get(ENTRY).unwrap_err();

    assert!(error.to_string().contains("SHA-256"), "{error}");
}

#[test]
fn chunked_store_secret_looking_like_header_round_trips() {
    let store = ChunkedStore::new(LimitedStore::windows(), WINDOWS_MAX_SECRET_BYTES);
    let secret = Secret::new("ferry-chunked/1 parts=9 sha256=00");

    store.set(ENTRY, &secret).unwrap();

    assert_eq!(store.get(ENTRY).unwrap(), Some(secret));
}

/// Opens the Secret Service of the test session, or returns `None` with a
/// printed reason when the session has none (scripts/test starts one).
fn secret_service() -> Option<KeyringStore> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        eprintln!("skipped: no D-Bus session bus (run the tests through scripts/test)");
        return None;
    }
    match KeyringStore::open(KeyringBackend::SecretService) {
        Ok(store) => Some(store),
        Err(error) => {
            eprintln!("skipped: no usable Secret Service on the session bus: {error}");
            None
        }
    }
}

fn unique_entry(purpose: &str) -> String {
    format!("test/{}/{purpose}", uuid::Uuid::new_v4())
}

#[test]
fn secret_service_round_trips_long_secret() {
    let Some(keyring) = secret_service() else {
        return;
    };
    let store = ChunkedStore::new(keyring, WINDOWS_MAX_SECRET_BYTES);
    let entry = unique_entry("refresh-token");
    let secret = Secret::new(long_secret(7_000));

    store.set(&entry, &secret).unwrap();
    let read = store.get(&entry).unwrap();
    let part = store.inner().get(&format!("{entry}#3")).unwrap();
    store.delete(&entry).unwrap();

    assert_eq!(read, Some(secret));
    assert!(
        part.is_some(),
        "the third part was not stored in the Secret Service"
    );
    assert_eq!(store.get(&entry).unwrap(), None);
    assert_eq!(store.inner().get(&format!("{entry}#1")).unwrap(), None);
}

#[test]
fn secret_service_missing_entry_is_none() {
    let Some(keyring) = secret_service() else {
        return;
    };
    let entry = unique_entry("absent");

    assert_eq!(keyring.get(&entry).unwrap(), None);
    keyring.delete(&entry).unwrap();
}

#[test]
fn kernel_keyring_round_trips_secret() {
    let keyring = match KeyringStore::open(KeyringBackend::Keyutils) {
        Ok(keyring) => keyring,
        Err(error) => {
            eprintln!("skipped: the kernel keyring is not usable here: {error}");
            return;
        }
    };
    let entry = unique_entry("keyutils");
    let secret = Secret::new("kernel-kept-token");

    if let Err(error) = keyring.set(&entry, &secret) {
        // Containers often forbid the keyctl system call.
        eprintln!("skipped: storing in the kernel keyring failed: {error}");
        return;
    }
    let read = keyring.get(&entry).unwrap();
    keyring.delete(&entry).unwrap();

    assert_eq!(read, Some(secret));
    assert_eq!(keyring.get(&entry).unwrap(), None);
}

/// Runs one test of this binary again in a child process with a changed
/// D-Bus address, because the address is read from the environment and
/// changing it in this process would affect tests running in parallel.
fn run_in_child(test: &str, bus_address: Option<&str>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("FERRY_TEST_CHILD", "1");
    match bus_address {
        Some(address) => command.env("DBUS_SESSION_BUS_ADDRESS", address),
        None => command.env_remove("DBUS_SESSION_BUS_ADDRESS"),
    };
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "child test {test} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "child test {test} did not run:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn is_child() -> bool {
    std::env::var_os("FERRY_TEST_CHILD").is_some()
}

fn assert_names_alternatives(error: &SecretStoreError) {
    let SecretStoreError::Unavailable(message) = error else {
        panic!("expected Unavailable, got {error:?}");
    };
    for expected in [
        "org.freedesktop.secrets",
        "gnome-keyring-daemon --unlock --components=secrets",
        "FERRY_KEYRING=keyutils",
    ] {
        assert!(
            message.contains(expected),
            "message lacks {expected:?}: {message}"
        );
    }
}

#[test]
fn missing_session_bus_names_alternatives() {
    if !is_child() {
        run_in_child("missing_session_bus_names_alternatives", None);
        return;
    }
    let error = KeyringStore::open(KeyringBackend::SecretService).unwrap_err();
    assert_names_alternatives(&error);
    assert!(
        error
            .to_string()
            .contains("DBUS_SESSION_BUS_ADDRESS is not set"),
        "{error}"
    );
}

#[test]
fn unreachable_secret_service_names_alternatives() {
    if !is_child() {
        let folder = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}", folder.path().join("no-bus").display());
        run_in_child(
            "unreachable_secret_service_names_alternatives",
            Some(&address),
        );
        return;
    }
    let error = KeyringStore::open(KeyringBackend::SecretService).unwrap_err();
    assert_names_alternatives(&error);
    assert!(error.to_string().contains("no Secret Service"), "{error}");
}
