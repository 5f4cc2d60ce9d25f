//! Credential store tests: secrets longer than a store's entry limit, the
//! real Secret Service (gnome-keyring) when the test session has one, the
//! kernel keyring, and the message shown when no store is reachable.
//!
//! Every test that writes to a real store deletes what it wrote through an
//! [`EntryGuard`], also when an assertion fails.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;

use ferry_core::credentials::{
    ChunkedStore, KEYRING_ENV, KeyringBackend, KeyringStore, WINDOWS_MAX_SECRET_BYTES,
    open_credential_store,
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

/// Deletes an entry, and the parts of a chunked entry, from a store when
/// dropped, so that a failing test leaves no secret behind.
struct EntryGuard<'a, S: SecretStore> {
    store: &'a S,
    entry: String,
    parts: usize,
}

impl<'a, S: SecretStore> EntryGuard<'a, S> {
    fn new(store: &'a S, entry: &str) -> EntryGuard<'a, S> {
        EntryGuard {
            store,
            entry: entry.to_owned(),
            parts: 0,
        }
    }

    /// Also deletes the numbered entries `{entry}#1` to `{entry}#parts`.
    fn with_parts(mut self, parts: usize) -> EntryGuard<'a, S> {
        self.parts = parts;
        self
    }
}

impl<S: SecretStore> Drop for EntryGuard<'_, S> {
    fn drop(&mut self) {
        let names = std::iter::once(self.entry.clone())
            .chain((1..=self.parts).map(|index| format!("{}#{index}", self.entry)));
        for name in names {
            if let Err(error) = self.store.delete(&name) {
                eprintln!("cleanup: deleting test entry {name} failed: {error}");
            }
        }
    }
}

#[test]
fn secret_service_round_trips_long_secret() {
    let Some(keyring) = secret_service() else {
        return;
    };
    let store = ChunkedStore::new(keyring, WINDOWS_MAX_SECRET_BYTES);
    let entry = unique_entry("refresh-token");
    let _guard = EntryGuard::new(store.inner(), &entry).with_parts(3);
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

/// Opens the kernel keyring backend, or returns `None` with a printed reason
/// when this kernel or container does not allow it.
fn kernel_keyring() -> Option<KeyringStore> {
    match KeyringStore::open(KeyringBackend::Keyutils) {
        Ok(keyring) => Some(keyring),
        Err(error @ SecretStoreError::Unavailable(_)) => {
            // Containers often forbid the keyctl system call.
            eprintln!("skipped: the kernel keyring is not usable here: {error}");
            None
        }
        Err(error) => panic!("opening the kernel keyring failed: {error}"),
    }
}

#[test]
fn kernel_keyring_round_trips_secret() {
    let Some(keyring) = kernel_keyring() else {
        return;
    };
    let entry = unique_entry("keyutils");
    let _guard = EntryGuard::new(&keyring, &entry);
    let secret = Secret::new("kernel-kept-token");

    keyring.set(&entry, &secret).unwrap();
    let read = keyring.get(&entry).unwrap();
    keyring.delete(&entry).unwrap();

    assert_eq!(read, Some(secret));
    assert_eq!(keyring.get(&entry).unwrap(), None);
}

#[test]
fn kernel_keyring_replaces_secret() {
    let Some(keyring) = kernel_keyring() else {
        return;
    };
    let entry = unique_entry("keyutils-rotated");
    let _guard = EntryGuard::new(&keyring, &entry);

    keyring.set(&entry, &Secret::new("first-token")).unwrap();
    keyring.set(&entry, &Secret::new("rotated-token")).unwrap();

    assert_eq!(
        keyring.get(&entry).unwrap(),
        Some(Secret::new("rotated-token"))
    );
    keyring.delete(&entry).unwrap();
    assert_eq!(keyring.get(&entry).unwrap(), None);
    keyring.delete(&entry).unwrap();
}

#[test]
fn kernel_keyring_missing_entry_is_none() {
    let Some(keyring) = kernel_keyring() else {
        return;
    };
    let entry = unique_entry("keyutils-absent");

    assert_eq!(keyring.get(&entry).unwrap(), None);
    keyring.delete(&entry).unwrap();
}

/// Environment variables of the child processes of
/// `kernel_keyring_keeps_secret_between_processes`.
const ROLE_ENV: &str = "FERRY_TEST_KEYRING_ROLE";
const ENTRY_ENV: &str = "FERRY_TEST_KEYRING_ENTRY";
const SECRET_ENV: &str = "FERRY_TEST_KEYRING_SECRET";
const BETWEEN_PROCESSES_TEST: &str = "kernel_keyring_keeps_secret_between_processes";

/// How a child process of the test is started.
#[derive(Debug, Clone, Copy)]
enum Launcher {
    /// With the test process's keyrings. When the test process has no
    /// session keyring of its own, as under cron, the child has none either.
    /// A store in the session keyring lost the secret in that case, because
    /// the kernel attached a new session keyring to the child on its first
    /// write and discarded it at exit.
    Inherited,
    /// Under `keyctl session -`, in a new anonymous session keyring that
    /// ends with the child, as systemd gives each service run
    /// (`KeyringMode=private`).
    NewSession,
}

/// Runs this test binary's `BETWEEN_PROCESSES_TEST` again as a child that
/// stores (`role` "store") or reads and compares (`role` "read") `secret`
/// under `entry`, through the same store the `ferry` command opens.
fn run_keyring_child(launcher: Launcher, role: &str, entry: &str, secret: &str) {
    let test_binary = std::env::current_exe().unwrap();
    let test_args = [
        BETWEEN_PROCESSES_TEST,
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut command = match launcher {
        Launcher::Inherited => Command::new(&test_binary),
        Launcher::NewSession => {
            let mut command = Command::new("keyctl");
            command.args(["session", "-"]).arg(&test_binary);
            command
        }
    };
    command
        .args(test_args)
        .env(KEYRING_ENV, "keyutils")
        .env(ROLE_ENV, role)
        .env(ENTRY_ENV, entry)
        .env(SECRET_ENV, secret);

    let output = command
        .output()
        .unwrap_or_else(|error| panic!("starting the {role} child ({launcher:?}) failed: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the {role} child ({launcher:?}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the {role} child ({launcher:?}) ran no test:\n{stdout}"
    );
}

/// Stores or reads the secret named by the environment, in a child process
/// of `kernel_keyring_keeps_secret_between_processes`.
fn keyring_child(role: &str) {
    let entry = std::env::var(ENTRY_ENV).unwrap();
    let expected = Secret::new(std::env::var(SECRET_ENV).unwrap());
    let store = open_credential_store().unwrap();
    match role {
        // A chunked store reads the entry before writing it, the order of
        // calls that lost the secret when it went to the session keyring.
        "store" => store.set(&entry, &expected).unwrap(),
        "read" => {
            let read = store.get(&entry).unwrap();
            assert!(
                read == Some(expected),
                "the reading process did not get the secret that another process stored"
            );
        }
        other => panic!("unknown child role {other}"),
    }
}

/// One process stores a secret and exits; a later process of the same user
/// reads it, with each process started either way of [`Launcher`].
#[test]
fn kernel_keyring_keeps_secret_between_processes() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        keyring_child(&role);
        return;
    }
    let Some(keyring) = kernel_keyring() else {
        return;
    };
    let mut launchers = vec![Launcher::Inherited];
    if Command::new("keyctl").arg("--version").output().is_ok() {
        launchers.push(Launcher::NewSession);
    } else {
        eprintln!("keyctl (package keyutils) is missing: only inherited keyrings are tested");
    }
    let entry = unique_entry("keyutils-between-processes");
    let _guard = EntryGuard::new(&keyring, &entry);

    for &writer in &launchers {
        for &reader in &launchers {
            let secret = format!("refresh-{writer:?}-{reader:?}-{}", uuid::Uuid::new_v4());
            run_keyring_child(writer, "store", &entry, &secret);
            run_keyring_child(reader, "read", &entry, &secret);
            assert_eq!(
                keyring.get(&entry).unwrap(),
                Some(Secret::new(secret)),
                "the test process did not get the secret stored by a {writer:?} child"
            );
        }
    }

    keyring.delete(&entry).unwrap();
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
