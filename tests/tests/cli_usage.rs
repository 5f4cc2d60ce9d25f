//! `ferry` as a binary: help text, exit codes and messages for bad input.
//! The tests up to `json_error_is_one_document_on_stdout` need no gateway.
//! The ones after it sign in to a sandbox gateway that each test starts.
//! They keep the refresh token in a Secret Service, which scripts/test
//! provides, and are skipped with a message without one.

use std::process::Output;

use ferry_tests::cli::{
    SignedIn, describe, events, ferry, has_credential_store, run, write_pattern_file,
};

fn skip_without_credential_store() -> bool {
    if has_credential_store() {
        return false;
    }
    eprintln!(
        "skipped: no Secret Service (DBUS_SESSION_BUS_ADDRESS is unset); run the tests with scripts/test"
    );
    true
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Uploads a small file for pat-001 and returns its DocumentReference id.
fn upload_small_file(env: &SignedIn) -> (String, Output) {
    let source = env.home.path().join("report.bin");
    write_pattern_file(&source, 1000);
    let upload = run(env
        .ferry()
        .args(["--json", "upload", "--patient", "pat-001"])
        .arg(&source));
    assert!(upload.status.success(), "{}", describe(&upload));
    let uploaded = events(&upload.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(&upload));
    let document_id = uploaded[0]["document_id"].as_str().unwrap().to_owned();
    (document_id, upload)
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let output = run(ferry(home.path()).arg("--help"));
    assert!(output.status.success(), "{}", describe(&output));

    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "login",
        "logout",
        "whoami",
        "profiles",
        "upload",
        "download",
        "documents",
        "patients",
        "transfers",
        "resume",
        "scan",
        "log",
        "demo",
    ] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "`{command}` is missing from --help:\n{help}"
        );
    }
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "130 "] {
        assert!(
            help.lines().any(|line| line.trim_start().starts_with(code)),
            "exit code {code}is missing from --help:\n{help}"
        );
    }
}

#[test]
fn parallel_zero_is_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let output = run(ferry(home.path()).args(["upload", "study.zip", "--parallel", "0"]));

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--parallel"), "{stderr}");
    assert!(stderr.contains("out of range"), "{stderr}");
}

#[test]
fn missing_upload_path_is_named() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-such-study.zip");
    let output = run(ferry(home.path()).arg("upload").arg(&missing));

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[test]
fn unknown_profile_is_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let output = run(ferry(home.path()).args(["--profile", "nowhere", "whoami"]));

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("profile 'nowhere' does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`ferry profiles add nowhere FHIR_BASE_URL`"),
        "{stderr}"
    );
}

#[test]
fn profiles_add_and_list_as_json() {
    let home = tempfile::tempdir().unwrap();
    let added = run(ferry(home.path()).args([
        "profiles",
        "add",
        "hospital",
        "https://fhir.hospital.example/r4",
    ]));
    assert!(added.status.success(), "{}", describe(&added));

    let listed = run(ferry(home.path()).args(["--json", "profiles"]));
    assert!(listed.status.success(), "{}", describe(&listed));
    let document: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("stdout is one JSON document");
    let names: Vec<&str> = document["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|profile| profile["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sandbox", "hospital"]);
    assert_eq!(document["default"], "sandbox");
}

#[test]
fn plain_http_profile_is_rejected() {
    let home = tempfile::tempdir().unwrap();
    let output = run(ferry(home.path()).args(["profiles", "add", "bad", "http://fhir.example/r4"]));

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http://fhir.example/r4"), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
}

#[test]
fn json_error_is_one_document_on_stdout() {
    let home = tempfile::tempdir().unwrap();
    let output = run(ferry(home.path()).args(["--json", "--profile", "nowhere", "whoami"]));

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON document");
    assert_eq!(document["error"]["exit_code"], 2);
    assert!(
        document["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
}

#[test]
fn unknown_document_is_not_found() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let folder = env.home.path().join("downloads");

    let download = run(env
        .ferry()
        .args(["download", "no-such-document", "--to"])
        .arg(&folder));

    assert_eq!(download.status.code(), Some(7), "{}", describe(&download));
    let stderr = stderr_of(&download);
    assert!(stderr.contains("no-such-document"), "{stderr}");
    assert!(stderr.contains("`ferry documents`"), "{stderr}");
}

#[test]
fn error_is_printed_once() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let folder = env.home.path().join("downloads");

    let download = run(env
        .ferry()
        .args(["download", "no-such-document", "--to"])
        .arg(&folder));

    assert!(!download.status.success(), "{}", describe(&download));
    let stderr = stderr_of(&download);
    let mentions = stderr.matches("no document 'no-such-document'").count();
    assert_eq!(mentions, 1, "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {stderr:?}");
}

#[test]
fn unknown_transfer_is_not_found() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");

    let resume = run(env.ferry().args(["transfers", "resume", "tr_unknown"]));

    assert_eq!(resume.status.code(), Some(7), "{}", describe(&resume));
    let stderr = stderr_of(&resume);
    assert!(stderr.contains("tr_unknown"), "{stderr}");
    assert!(stderr.contains("`ferry transfers`"), "{stderr}");
}

#[test]
fn existing_destination_names_overwrite() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let (document_id, _) = upload_small_file(&env);
    let folder = env.home.path().join("downloads");
    let first = run(env.ferry().args(["download", &document_id, "--to"]).arg(&folder));
    assert!(first.status.success(), "{}", describe(&first));

    let second = run(env.ferry().args(["download", &document_id, "--to"]).arg(&folder));

    assert_eq!(second.status.code(), Some(2), "{}", describe(&second));
    let stderr = stderr_of(&second);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");
    let replaced = run(env
        .ferry()
        .args(["download", &document_id, "--overwrite", "--to"])
        .arg(&folder));
    assert!(replaced.status.success(), "{}", describe(&replaced));
}

#[test]
fn one_part_upload_says_part() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("report.bin");
    write_pattern_file(&source, 1000);

    let upload = run(env.ferry().args(["upload", "--patient", "pat-001"]).arg(&source));

    assert!(upload.status.success(), "{}", describe(&upload));
    let stderr = stderr_of(&upload);
    assert!(stderr.contains(": 1 part,"), "{stderr}");
    assert!(!stderr.contains("1 parts"), "{stderr}");
}

#[test]
fn log_verify_result_is_on_stdout() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    upload_small_file(&env);

    let verify = run(env.ferry().args(["log", "verify"]));

    assert!(verify.status.success(), "{}", describe(&verify));
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(stdout.starts_with("OK: "), "{}", describe(&verify));
    assert!(stdout.contains(" verified: "), "{stdout}");
    assert!(!stderr_of(&verify).contains("OK: "), "{}", describe(&verify));
}

#[test]
fn unknown_patient_is_not_found() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("report.bin");
    write_pattern_file(&source, 10);

    let upload = run(env.ferry().args(["upload", "--patient", "pat-404"]).arg(&source));

    assert_eq!(upload.status.code(), Some(7), "{}", describe(&upload));
    let stderr = stderr_of(&upload);
    assert!(stderr.contains("Patient/pat-404 does not exist"), "{stderr}");
    assert!(stderr.contains("ferry patients"), "{stderr}");
}

#[test]
fn profiles_remove_names_kept_log_folder() {
    let home = tempfile::tempdir().unwrap();
    let added = run(ferry(home.path()).args(["profiles", "add", "hospital", "https://fhir.hospital.example/r4"]));
    assert!(added.status.success(), "{}", describe(&added));
    // The log of a profile that has moved files; its content does not matter here.
    let data = home.path().join("data/profiles/hospital");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("transfer-log.ndjson"), b"").unwrap();

    let removed = run(ferry(home.path()).args(["profiles", "remove", "hospital"]));
    assert!(removed.status.success(), "{}", describe(&removed));
    let text = format!("{}{}", String::from_utf8_lossy(&removed.stdout), stderr_of(&removed));
    assert!(text.contains("Removed profile hospital."), "{text}");
    assert!(text.contains("signed transfer log and journal stay in"), "{text}");
    assert!(text.contains(&data.display().to_string()), "the message names the kept folder: {text}");
    assert!(data.join("transfer-log.ndjson").exists(), "the log stays on disk");
}
