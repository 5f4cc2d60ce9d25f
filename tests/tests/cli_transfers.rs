//! `ferry upload`, `download`, `transfers` and `resume` as binaries against
//! a sandbox gateway started by each test, signed in through the real
//! login flow. They need a Secret Service for the refresh token, which
//! scripts/test provides; without one they are skipped with a message.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use ferry_tests::cli::{
    SignedIn, describe, events, free_bytes, has_credential_store, run, sha256_file,
    write_pattern_file,
};

const MIB: u64 = 1024 * 1024;

fn skip_without_credential_store() -> bool {
    if has_credential_store() {
        return false;
    }
    eprintln!(
        "skipped: no Secret Service (DBUS_SESSION_BUS_ADDRESS is unset); run the tests with scripts/test"
    );
    true
}

#[test]
fn upload_and_download_round_trip() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("scan-export.bin");
    write_pattern_file(&source, 12 * MIB + 3);

    let upload = run(env
        .ferry()
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--part-size",
            "5",
        ])
        .arg(&source));
    assert!(upload.status.success(), "{}", describe(&upload));
    let uploaded = events(&upload.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(&upload));
    assert_eq!(uploaded[0]["part_count"], 3);
    assert_eq!(uploaded[0]["size"], 12 * MIB + 3);
    assert_eq!(uploaded[0]["sha256"], sha256_file(&source));
    let document_id = uploaded[0]["document_id"].as_str().unwrap().to_owned();

    let folder = env.home.path().join("downloads");
    let download = run(env
        .ferry()
        .args(["--json", "download", &document_id, "--to"])
        .arg(&folder));
    assert!(download.status.success(), "{}", describe(&download));
    let downloaded = events(&download.stdout, "downloaded");
    assert_eq!(downloaded.len(), 1, "{}", describe(&download));
    let path = folder.join("scan-export.bin");
    assert_eq!(downloaded[0]["path"], path.display().to_string());
    assert_eq!(sha256_file(&path), sha256_file(&source));

    let again = run(env
        .ferry()
        .args(["download", &document_id, "--to"])
        .arg(&folder));
    assert_ne!(again.status.code(), Some(0), "{}", describe(&again));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");

    let overwrite = run(env
        .ferry()
        .args(["download", &document_id, "--overwrite", "--to"])
        .arg(&folder));
    assert!(overwrite.status.success(), "{}", describe(&overwrite));
    assert_eq!(sha256_file(&path), sha256_file(&source));

    let verified = run(env.ferry().args(["log", "verify"]));
    assert!(verified.status.success(), "{}", describe(&verified));
    let shown = run(env.ferry().args(["--json", "log", "show"]));
    assert!(shown.status.success(), "{}", describe(&shown));
    let log: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("one JSON document");
    let entries = log["entries"].as_array().unwrap();
    let completed_upload = entries
        .iter()
        .find(|entry| entry["event"]["type"] == "completed" && entry["direction"] == "upload")
        .unwrap_or_else(|| panic!("no completed upload in the log: {log}"));
    assert_eq!(
        completed_upload["object"],
        format!("DocumentReference/{document_id}")
    );
    assert_eq!(completed_upload["sha256"], sha256_file(&source));
    assert!(
        entries
            .iter()
            .any(|entry| entry["event"]["type"] == "signed_in"),
        "no sign-in in the log: {log}"
    );
}

#[test]
fn documents_lists_uploaded_file() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("report.pdf");
    write_pattern_file(&source, 1000);
    let upload = run(env
        .ferry()
        .args(["--json", "upload", "--patient", "pat-002"])
        .arg(&source));
    assert!(upload.status.success(), "{}", describe(&upload));
    let document_id = events(&upload.stdout, "uploaded")[0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let listed = run(env
        .ferry()
        .args(["--json", "documents", "--patient", "pat-002"]));
    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("one JSON document");
    let ids: Vec<&str> = document["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["document_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&document_id.as_str()), "{document}");
}

#[test]
fn upload_without_patient_is_usage_error() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("a.bin");
    write_pattern_file(&source, 10);

    let upload = run(env.ferry().arg("upload").arg(&source));
    assert_eq!(upload.status.code(), Some(2), "{}", describe(&upload));
    let stderr = String::from_utf8_lossy(&upload.stderr);
    assert!(stderr.contains("--patient"), "{stderr}");
}

#[test]
fn killed_upload_resumes_with_matching_sha256() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let size = 400 * MIB;
    if free_bytes(env.home.path()).is_some_and(|free| free < 4 * size) {
        eprintln!(
            "skipped: less than {} MiB free for the source, the store and the download",
            4 * size / MIB
        );
        return;
    }
    let source = env.home.path().join("large.bin");
    write_pattern_file(&source, size);

    // One part in flight, so the upload takes several seconds.
    let mut child = env
        .ferry()
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--part-size",
            "5",
            "--parallel",
            "1",
        ])
        .arg(&source)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry upload starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut transfer_id = None;
    for line in lines.by_ref() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "progress" && event["bytes_done"].as_u64().unwrap_or(0) >= 20 * MIB {
            transfer_id = event["transfer_id"].as_str().map(str::to_owned);
            break;
        }
    }
    let transfer_id = transfer_id.expect("the upload reported progress past 20 MiB");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the upload finished before it could be killed"
    );
    child.kill().expect("SIGKILL is sent");
    child.wait().unwrap();

    let listed = run(env.ferry().args(["--json", "transfers"]));
    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let record = document["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["transfer_id"] == transfer_id.as_str())
        .expect("the killed upload is in the journal")
        .clone();
    assert_ne!(record["state"], "completed", "{record}");

    let resumed = run(env.ferry().args(["--json", "resume"]));
    assert!(resumed.status.success(), "{}", describe(&resumed));
    let uploaded = events(&resumed.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(&resumed));
    assert_eq!(uploaded[0]["transfer_id"], transfer_id.as_str());
    assert_eq!(uploaded[0]["sha256"], sha256_file(&source));

    let document_id = uploaded[0]["document_id"].as_str().unwrap().to_owned();
    let folder = env.home.path().join("back");
    let download = run(env
        .ferry()
        .args(["download", &document_id, "--to"])
        .arg(&folder));
    assert!(download.status.success(), "{}", describe(&download));
    assert_eq!(sha256_file(&folder.join("large.bin")), sha256_file(&source));

    let nothing = run(env.ferry().arg("resume"));
    assert!(nothing.status.success(), "{}", describe(&nothing));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("Nothing to resume"));
}

#[test]
fn ctrl_c_pauses_upload_and_exits_130() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let size = 300 * MIB;
    if free_bytes(env.home.path()).is_some_and(|free| free < 4 * size) {
        eprintln!(
            "skipped: less than {} MiB free for the source, the store and the download",
            4 * size / MIB
        );
        return;
    }
    let source = env.home.path().join("paused.bin");
    write_pattern_file(&source, size);

    let mut child = env
        .ferry()
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--part-size",
            "5",
            "--parallel",
            "1",
        ])
        .arg(&source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry upload starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "progress" && event["bytes_done"].as_u64().unwrap_or(0) >= 10 * MIB {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the upload finished before Ctrl-C"
    );
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupt.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stdout after Ctrl-C: {rest:?}");
    assert!(
        rest.iter()
            .any(|line| line.contains("\"event\":\"paused\"")),
        "no paused event after Ctrl-C: {rest:?}"
    );

    let resumed = run(env.ferry().args(["--json", "resume"]));
    assert!(resumed.status.success(), "{}", describe(&resumed));
    let uploaded = events(&resumed.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(&resumed));
    assert_eq!(uploaded[0]["sha256"], sha256_file(&source));
}

#[test]
fn study_of_other_patient_is_blocked_until_confirmed() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let archive = env.home.path().join("sample.zip");
    let script = ferry_tests::workspace_root().join("scripts/make-sample-archive.py");
    let made = std::process::Command::new("python3")
        .arg(&script)
        .arg(&archive)
        .output()
        .expect("python3 runs");
    assert!(
        made.status.success(),
        "{} failed (pydicom is installed by scripts/setup): {}",
        script.display(),
        String::from_utf8_lossy(&made.stderr)
    );

    // The sample study's patient is FERRY-0001, not the sandbox's pat-001.
    let blocked = run(env
        .ferry()
        .args(["--json", "upload", "--patient", "pat-001"])
        .arg(&archive));
    assert_eq!(blocked.status.code(), Some(6), "{}", describe(&blocked));
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(stderr.contains("--confirm-patient-mismatch"), "{stderr}");
    assert!(stderr.contains("FERRY-0001"), "{stderr}");

    let listed = run(env.ferry().args(["--json", "transfers"]));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        document["transfers"].as_array().unwrap().len(),
        0,
        "a blocked study started a transfer"
    );

    let confirmed = run(env
        .ferry()
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--confirm-patient-mismatch",
            "sandbox test data",
        ])
        .arg(&archive));
    assert!(confirmed.status.success(), "{}", describe(&confirmed));
    assert_eq!(
        events(&confirmed.stdout, "uploaded").len(),
        1,
        "{}",
        describe(&confirmed)
    );

    let shown = run(env.ferry().args(["--json", "log", "show"]));
    let log: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let confirmation = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["event"]["type"] == "patient_mismatch_confirmed")
        .unwrap_or_else(|| panic!("no confirmation in the log: {log}"));
    assert_eq!(confirmation["event"]["reason"], "sandbox test data");
}
