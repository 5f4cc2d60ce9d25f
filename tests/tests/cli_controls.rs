//! `ferry transfers pause|cancel`, offline waits, and the exit codes and
//! messages of commands that name something missing or reach a stopped
//! gateway. Each test runs the binaries against a sandbox gateway started
//! for it and signs in through the real login flow. So the tests need a
//! Secret Service for the refresh token, which scripts/test provides, and
//! without one they are skipped with a message.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};

use ferry_tests::cli::{SignedIn, describe, has_credential_store, run, write_pattern_file};

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

/// Starts a slow upload (capped at 64 KiB/s) and returns the child and the
/// transfer id once the upload reports the state `running`.
fn start_slow_upload(env: &SignedIn, name: &str) -> (Child, String) {
    let source = env.home.path().join(name);
    write_pattern_file(&source, 2 * MIB);
    let mut child = env
        .ferry()
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--limit-rate",
            "64K",
        ])
        .arg(&source)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry upload starts");
    let stdout = child.stdout.take().unwrap();
    let transfer_id = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|event| event["event"] == "progress" && event["state"] == "running")
        .and_then(|event| event["transfer_id"].as_str().map(str::to_owned))
        .expect("the upload reports the state running");
    (child, transfer_id)
}

/// Kills the process that runs an upload, as a crash would.
fn kill(mut child: Child) {
    child.kill().expect("SIGKILL is sent");
    child.wait().unwrap();
}

fn listed_state(env: &SignedIn, transfer_id: &str) -> String {
    let listed = run(env.ferry().args(["--json", "transfers"]));
    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    document["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["transfer_id"] == transfer_id)
        .unwrap_or_else(|| panic!("transfer {transfer_id} is not listed: {document}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Returns the log entries whose event type is `event`.
fn log_entries(env: &SignedIn, event: &str) -> Vec<serde_json::Value> {
    let shown = run(env.ferry().args(["--json", "log", "show"]));
    assert!(shown.status.success(), "{}", describe(&shown));
    let log: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("one JSON document");
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["event"]["type"] == event)
        .cloned()
        .collect()
}

#[test]
fn killed_upload_is_listed_as_interrupted() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let (child, transfer_id) = start_slow_upload(&env, "killed.bin");

    assert_eq!(listed_state(&env, &transfer_id), "running");
    kill(child);

    assert_eq!(listed_state(&env, &transfer_id), "interrupted");
}

#[test]
fn cancel_appends_cancelled_entry_to_log() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let (child, transfer_id) = start_slow_upload(&env, "cancelled.bin");
    kill(child);

    let cancelled = run(env.ferry().args(["transfers", "cancel", &transfer_id]));
    assert!(cancelled.status.success(), "{}", describe(&cancelled));

    assert_eq!(listed_state(&env, &transfer_id), "cancelled");
    let entries = log_entries(&env, "cancelled");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["file_name"], "cancelled.bin");
    assert_eq!(entries[0]["direction"], "upload");
    assert_eq!(entries[0]["patient"], "Patient/pat-001");
    let verified = run(env.ferry().args(["log", "verify"]));
    assert!(verified.status.success(), "{}", describe(&verified));
}

#[test]
fn pause_appends_paused_entry_to_log() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let (child, transfer_id) = start_slow_upload(&env, "paused.bin");
    kill(child);

    let paused = run(env.ferry().args(["transfers", "pause", &transfer_id]));
    assert!(paused.status.success(), "{}", describe(&paused));

    assert_eq!(listed_state(&env, &transfer_id), "paused");
    let entries = log_entries(&env, "paused");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["file_name"], "paused.bin");
}

#[test]
fn upload_pauses_after_offline_timeout_and_exits_5() {
    if skip_without_credential_store() {
        return;
    }
    let SignedIn {
        home,
        sandbox,
        profile,
    } = SignedIn::start("tech-okafor", "imaging-staff");
    let source = home.path().join("offline.bin");
    write_pattern_file(&source, 2 * MIB);
    let mut child = ferry_tests::cli::ferry(home.path())
        .args([
            "--profile",
            &profile,
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--limit-rate",
            "64K",
            "--offline-timeout",
            "3s",
        ])
        .arg(&source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry upload starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let transfer_id = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|event| event["event"] == "progress" && event["state"] == "running")
        .and_then(|event| event["transfer_id"].as_str().map(str::to_owned))
        .expect("the upload reports the state running");

    drop(sandbox);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let finished = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);

    assert_eq!(finished.status.code(), Some(5), "{stderr}");
    assert!(
        rest.iter()
            .any(|line| line.contains("\"event\":\"paused\"")),
        "no paused event: {rest:?}"
    );
    let waiting_lines = stderr.matches("cannot be reached; retrying").count();
    assert_eq!(waiting_lines, 1, "{stderr}");
    let retry_warnings = stderr.matches("retrying:").count();
    assert!(
        retry_warnings <= 1,
        "{retry_warnings} retry warnings: {stderr}"
    );
    assert!(stderr.contains("--offline-timeout"), "{stderr}");
    assert!(stderr.contains("run `ferry resume`"), "{stderr}");

    let listed = run(ferry_tests::cli::ferry(home.path()).args([
        "--profile",
        &profile,
        "--json",
        "transfers",
    ]));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let record = document["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["transfer_id"] == transfer_id.as_str())
        .cloned()
        .expect("the upload is in the journal");
    assert_eq!(record["state"], "paused", "{record}");
}

#[test]
fn documents_of_unknown_patient_exit_7() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");

    let listed = run(env
        .ferry()
        .args(["--json", "documents", "--patient", "pat-999"]));

    assert_eq!(listed.status.code(), Some(7), "{}", describe(&listed));
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains("Patient/pat-999 does not exist"),
        "{stderr}"
    );
    let error: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("one JSON document");
    assert_eq!(error["error"]["kind"], "not_found");
}

#[test]
fn documents_name_patient_as_reference() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");

    let listed = run(env
        .ferry()
        .args(["--json", "documents", "--patient", "pat-002"]));

    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("one JSON document");
    assert_eq!(document["patient"], "Patient/pat-002");
}

#[test]
fn blocked_study_names_each_uid_once() {
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
    let scanned = run(env.ferry().args(["--json", "scan"]).arg(&archive));
    assert!(scanned.status.success(), "{}", describe(&scanned));
    let scan: serde_json::Value = serde_json::from_slice(&scanned.stdout).unwrap();
    let study = &scan["scan"]["studies"][0];
    let mut uids = vec![study["study_instance_uid"].as_str().unwrap().to_owned()];
    for series in study["series"].as_array().unwrap() {
        uids.push(series["uid"].as_str().unwrap().to_owned());
    }

    let blocked = run(env
        .ferry()
        .args(["upload", "--patient", "pat-001"])
        .arg(&archive));

    assert_eq!(blocked.status.code(), Some(6), "{}", describe(&blocked));
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    for uid in &uids {
        assert_eq!(stderr.matches(uid.as_str()).count(), 1, "{uid}: {stderr}");
    }
    let findings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("  - "))
        .collect();
    assert!(findings.len() >= 2, "{stderr}");
    assert!(
        findings.iter().any(|line| line.contains("FERRY-0001")),
        "{stderr}"
    );
    assert!(stderr.contains("--confirm-patient-mismatch"), "{stderr}");
}

#[test]
fn log_verify_explains_changed_gateway_keys() {
    if skip_without_credential_store() {
        return;
    }
    let SignedIn {
        home,
        sandbox,
        profile,
    } = SignedIn::start("tech-okafor", "imaging-staff");
    let address = sandbox
        .fhir_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    drop(sandbox);

    // A new data folder on the same address is a sandbox data reset: the
    // gateway has new signing keys and no record of the sign-in.
    let mut reset = ferry_tests::cli::sandbox_command(
        &address,
        &home.path().join("gateway-after-reset"),
        "tech-okafor",
    )
    .spawn()
    .expect("ferry-gateway starts again");
    let lines = ferry_tests::cli::stdout_lines(&mut reset);
    lines
        .iter()
        .find(|line| line.contains("/fhir"))
        .expect("the new sandbox prints its FHIR URL");
    ferry_tests::cli::sign_in(home.path(), &profile, "imaging-staff");

    let verified =
        run(ferry_tests::cli::ferry(home.path()).args(["--profile", &profile, "log", "verify"]));
    let _ = reset.kill();
    let _ = reset.wait();

    assert_eq!(verified.status.code(), Some(4), "{}", describe(&verified));
    let stderr = String::from_utf8_lossy(&verified.stderr);
    assert!(!stderr.contains("Some("), "{stderr}");
    assert!(
        stderr.contains("which is not among the gateway's current keys"),
        "{stderr}"
    );
    assert!(
        stderr.contains("verifies with the gateway keys recorded in it"),
        "{stderr}"
    );
    assert!(stderr.contains("--log"), "{stderr}");
}

#[test]
fn logout_keeps_token_when_server_is_down() {
    if skip_without_credential_store() {
        return;
    }
    let SignedIn {
        home,
        sandbox,
        profile,
    } = SignedIn::start("tech-okafor", "imaging-staff");
    drop(sandbox);
    let ferry = || {
        let mut command = ferry_tests::cli::ferry(home.path());
        command.args(["--profile", &profile]);
        command
    };

    let refused = run(ferry().arg("logout"));

    assert_eq!(refused.status.code(), Some(5), "{}", describe(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the token is kept"), "{stderr}");
    assert!(stderr.contains("ferry logout --local"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    let still_signed_in = run(ferry().arg("whoami"));
    assert!(
        still_signed_in.status.success(),
        "{}",
        describe(&still_signed_in)
    );

    let local = run(ferry().args(["logout", "--local"]));

    assert!(local.status.success(), "{}", describe(&local));
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(stderr.contains("stays valid there"), "{stderr}");
    let signed_out = run(ferry().arg("whoami"));
    assert_eq!(
        signed_out.status.code(),
        Some(3),
        "{}",
        describe(&signed_out)
    );
}

#[test]
fn usage_error_prints_json_error() {
    let home = tempfile::tempdir().unwrap();

    let rejected = run(ferry_tests::cli::ferry(home.path()).args(["--json", "upload", "--bogus"]));

    assert_eq!(rejected.status.code(), Some(2), "{}", describe(&rejected));
    let error: serde_json::Value =
        serde_json::from_slice(&rejected.stdout).expect("one JSON document");
    assert_eq!(error["error"]["kind"], "usage");
    assert_eq!(error["error"]["exit_code"], 2);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("--bogus"), "{message}");
}

#[test]
fn download_of_unknown_document_leaves_no_folder() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let folder = env.home.path().join("not-created");

    let download = run(env
        .ferry()
        .args(["--json", "download", "doc-does-not-exist", "--to"])
        .arg(&folder));

    assert_eq!(download.status.code(), Some(7), "{}", describe(&download));
    assert!(!folder.exists(), "{} was created", folder.display());
    let failed = ferry_tests::cli::events(&download.stdout, "failed");
    assert_eq!(failed.len(), 1, "{}", describe(&download));
    let stdout = String::from_utf8_lossy(&download.stdout);
    let errors = stdout
        .lines()
        .filter(|line| line.starts_with("{\"error\""))
        .count();
    assert_eq!(errors, 1, "{stdout}");
}

#[test]
fn log_audit_of_unknown_id_exits_7() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");

    let audit = run(env.ferry().args(["log", "audit", "no-such-correlation-id"]));

    assert_eq!(audit.status.code(), Some(7), "{}", describe(&audit));
    let stderr = String::from_utf8_lossy(&audit.stderr);
    assert!(stderr.contains("no audit records"), "{stderr}");
}
