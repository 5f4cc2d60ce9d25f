//! `ProfileLog`, through which the `ferry` CLI and the desktop app both
//! write a profile's signed transfer log: one file and one key entry per
//! profile, whichever front end appends.
//!
//! The credential store is `MemorySecretStore`, shared by the two handles
//! as the OS credential store is shared by the two processes.

use std::sync::Arc;

use ferry_core::activity::ProfileLog;
use ferry_core::log::{
    self, Event, LogError, NewEntry, OpenOptions, Record, TransferLog, VerifyOptions,
};
use ferry_core::login::{SessionInfo, SignInKind};
use ferry_core::profile::{FerryDirs, ProfileName};
use ferry_core::secrets::{MemorySecretStore, SecretStore};

fn session(fhir_user: &str) -> SessionInfo {
    SessionInfo {
        profile: "st-mary".to_owned(),
        fhir_base_url: "https://fhir.st-mary.example/r4".parse().unwrap(),
        fhir_user: Some(fhir_user.to_owned()),
        kind: SignInKind::ImagingStaff,
        patient: None,
        scopes: Vec::new(),
        signed_in_at: jiff::Timestamp::now(),
        refresh_token_stored: true,
        grant_api: None,
    }
}

/// Returns the event name and actor `fhirUser` of each entry of a log.
fn events_and_users(path: &std::path::Path) -> Vec<(&'static str, Option<String>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| match serde_json::from_str::<Record>(line) {
            Ok(Record::Entry(entry)) => Some((
                entry.event.name(),
                entry.actor.and_then(|actor| actor.fhir_user),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn app_and_cli_append_to_one_log() {
    let folder = tempfile::tempdir().unwrap();
    let dirs = FerryDirs::under(folder.path());
    let name = ProfileName::new("st-mary").unwrap();
    let store = Arc::new(MemorySecretStore::default());
    let app_user = session("https://fhir.st-mary.example/r4/Practitioner/dr-rivera");
    let cli_user = session("https://fhir.st-mary.example/r4/Practitioner/tech-okafor");

    // The app keeps its log open while a CLI process opens, appends and closes.
    let mut app = ProfileLog::open(&dirs, &name, store.clone(), Some(&app_user)).unwrap();
    app.append(NewEntry::new(Event::SignedIn)).unwrap();
    let mut cli = ProfileLog::open(&dirs, &name, store.clone(), Some(&cli_user)).unwrap();
    cli.append(NewEntry::new(Event::SignedIn)).unwrap();
    cli.append(NewEntry::new(Event::LogVerified)).unwrap();
    cli.close().unwrap();
    app.append(NewEntry::new(Event::SignedOut)).unwrap();
    let path = app.log().path().to_owned();
    app.close().unwrap();

    assert_eq!(path, dirs.transfer_log_path(&name));
    let report = log::verify(&path, &VerifyOptions::default()).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.entries, 4);
    let written = events_and_users(&path);
    let events: Vec<&str> = written.iter().map(|(event, _)| *event).collect();
    assert_eq!(
        events,
        ["signed_in", "signed_in", "log_verified", "signed_out"]
    );
    assert_eq!(written[0].1, app_user.fhir_user);
    assert_eq!(written[1].1, cli_user.fhir_user);
    assert_eq!(written[2].1, cli_user.fhir_user);
    assert_eq!(written[3].1, app_user.fhir_user);
}

#[test]
fn log_key_uses_device_scoped_entry() {
    let folder = tempfile::tempdir().unwrap();
    let dirs = FerryDirs::under(folder.path());
    let name = ProfileName::new("st-mary").unwrap();
    let store = Arc::new(MemorySecretStore::default());

    let log = ProfileLog::open(&dirs, &name, store.clone(), None).unwrap();
    log.close().unwrap();

    let entry = dirs.transfer_log_key_entry(&name).unwrap();
    assert_eq!(
        entry,
        format!(
            "{}/profile/st-mary/transfer-log-key",
            dirs.device_id().unwrap()
        )
    );
    assert!(store.get(&entry).unwrap().is_some());
    assert!(
        store
            .get("profile/st-mary/transfer-log-key")
            .unwrap()
            .is_none()
    );
}

#[test]
fn legacy_app_key_is_adopted() {
    let folder = tempfile::tempdir().unwrap();
    let dirs = FerryDirs::under(folder.path());
    let name = ProfileName::new("st-mary").unwrap();
    let store = Arc::new(MemorySecretStore::default());
    let path = dirs.transfer_log_path(&name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();

    // Earlier app versions kept the key under an entry without the device id.
    let legacy = OpenOptions::new("workstation", "profile/st-mary/transfer-log-key");
    let mut old_log = TransferLog::open(&path, store.clone(), legacy).unwrap();
    old_log.append(NewEntry::new(Event::SignedIn)).unwrap();
    old_log.close().unwrap();

    let mut log = ProfileLog::open(&dirs, &name, store.clone(), None).unwrap();
    log.append(NewEntry::new(Event::SignedOut)).unwrap();
    log.close().unwrap();

    let report = log::verify(&path, &VerifyOptions::default()).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.entries, 2);
    assert!(
        store
            .get("profile/st-mary/transfer-log-key")
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get(&dirs.transfer_log_key_entry(&name).unwrap())
            .unwrap()
            .is_some()
    );
}

#[test]
fn log_without_its_key_is_rejected() {
    let folder = tempfile::tempdir().unwrap();
    let dirs = FerryDirs::under(folder.path());
    let name = ProfileName::new("st-mary").unwrap();
    let store = Arc::new(MemorySecretStore::default());
    ProfileLog::open(&dirs, &name, store.clone(), None)
        .unwrap()
        .close()
        .unwrap();

    let other_store = Arc::new(MemorySecretStore::default());
    let error = ProfileLog::open(&dirs, &name, other_store, None).unwrap_err();

    assert!(
        matches!(
            error,
            ferry_core::activity::ActivityError::Log(LogError::EpochKeyMissing { .. })
        ),
        "{error:?}"
    );
}
