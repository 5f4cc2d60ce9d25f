//! `ferry demo` end to end: the sandbox gateway, sign-in, upload in parts,
//! download, byte-for-byte check and the demo profile's signed log, on a
//! machine without a credential store.

use ferry_tests::cli::{describe, ferry, run, workspace_root_dir};

#[test]
fn demo_runs_without_credential_store() {
    let home = tempfile::tempdir().unwrap();
    let work = home.path().join("demo");
    let output = run(ferry(home.path())
        .args(["--json", "demo", "--work-dir"])
        .arg(&work)
        .current_dir(workspace_root_dir())
        .env_remove("DBUS_SESSION_BUS_ADDRESS"));
    assert!(output.status.success(), "{}", describe(&output));

    let stdout = String::from_utf8_lossy(&output.stdout);
    let last_line = stdout.lines().last().expect("NDJSON on stdout");
    let summary: serde_json::Value =
        serde_json::from_str(last_line).expect("the last line is JSON");
    assert_eq!(summary["event"], "demo_completed");
    let profile = summary["profile"].as_str().unwrap().to_owned();
    assert!(profile.starts_with("demo-"), "{summary}");
    assert_eq!(summary["secrets"], "memory");
    assert_eq!(summary["verified"], true);
    assert!(summary["part_count"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(summary["receipt"]["receipt"]["sha256"], summary["sha256"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "secrets of profile {profile} (refresh token, log signing key) are kept in memory"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Patient guard: match"), "{stderr}");
    assert!(
        stderr.contains("Patient guard against Patient/pat-001: blocked, nothing uploaded"),
        "{stderr}"
    );
    let downloaded = std::path::PathBuf::from(summary["downloaded"].as_str().unwrap());
    let archive = std::path::PathBuf::from(summary["archive"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&downloaded).unwrap(),
        std::fs::read(&archive).unwrap()
    );

    // The demo's profile keeps its secrets in memory, so it is no longer
    // signed in: its log is verified with the gateway keys it recorded.
    let verified = run(ferry(home.path()).args(["--profile", &profile, "log", "verify"]));
    assert!(verified.status.success(), "{}", describe(&verified));
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(report.starts_with("OK: "), "{}", describe(&verified));
    assert!(report.contains("last countersigned checkpoint at seq"), "{}", describe(&verified));
}
