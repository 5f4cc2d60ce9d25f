//! `ferry` as a binary: help text, exit codes and messages for bad input.
//! These tests need no gateway.

use ferry_tests::cli::{describe, ferry, run};

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
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "130 "] {
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
