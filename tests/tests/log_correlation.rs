//! A transfer's whole sequence, reconstructed from the client's signed log
//! (`ferry log show`) and the gateway's audit (`ferry log audit`) by the
//! correlation id both carry, for an upload and a download. Also the
//! checkpoints the gateway countersigns along the way, checked on another
//! machine with the exported verification bundle. The tests run the built
//! `ferry` binary against a sandbox gateway started by each test and need a
//! Secret Service, which scripts/test provides; without one they are skipped.

use serde_json::Value;

use ferry_tests::cli::{SignedIn, describe, events, ferry, has_credential_store, run, write_pattern_file};

const MIB: u64 = 1024 * 1024;

fn skip_without_credential_store() -> bool {
    if has_credential_store() {
        return false;
    }
    eprintln!("skipped: no Secret Service (DBUS_SESSION_BUS_ADDRESS is unset); run the tests with scripts/test");
    true
}

/// Returns the client log's entries from `ferry --json log show`.
fn log_entries(env: &SignedIn) -> Vec<Value> {
    let shown = run(env.ferry().args(["--json", "log", "show"]));
    assert!(shown.status.success(), "{}", describe(&shown));
    let log: Value = serde_json::from_slice(&shown.stdout).expect("one JSON document");
    log["entries"].as_array().cloned().unwrap_or_default()
}

/// Returns the gateway's steps of one correlation id as (recorded, step, outcome).
fn gateway_steps(env: &SignedIn, correlation_id: &str) -> Vec<(String, String, String)> {
    let audit = run(env.ferry().args(["--json", "log", "audit", correlation_id]));
    assert!(audit.status.success(), "{}", describe(&audit));
    let bundle: Value = serde_json::from_slice(&audit.stdout).expect("one JSON document");
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let event = &entry["resource"];
            let step = event["subtype"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|coding| coding["code"].as_str())
                .last()
                .unwrap_or_default()
                .to_owned();
            (
                event["recorded"].as_str().unwrap_or_default().to_owned(),
                step,
                event["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Merges the client's entries and the gateway's steps of one correlation id
/// by time, each named `client:EVENT` or `gateway:STEP`.
fn merged_sequence(entries: &[Value], steps: &[(String, String, String)], correlation_id: &str) -> Vec<(jiff::Timestamp, String)> {
    let mut sequence: Vec<(jiff::Timestamp, String)> = Vec::new();
    for entry in entries.iter().filter(|entry| entry["correlation_id"] == correlation_id) {
        let time: jiff::Timestamp = entry["time"].as_str().unwrap().parse().unwrap();
        sequence.push((time, format!("client:{}", entry["event"]["type"].as_str().unwrap())));
    }
    for (recorded, step, _) in steps {
        sequence.push((recorded.parse().unwrap(), format!("gateway:{step}")));
    }
    sequence.sort_by_key(|(time, _)| *time);
    sequence
}

/// Returns the position of `name` in the sequence, failing with the sequence.
fn position(sequence: &[(jiff::Timestamp, String)], name: &str) -> usize {
    sequence
        .iter()
        .position(|(_, step)| step == name)
        .unwrap_or_else(|| panic!("{name} is missing from {sequence:#?}"))
}

#[test]
fn upload_and_download_reconstructed_by_correlation_id() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("ct-export.bin");
    write_pattern_file(&source, 6 * MIB + 11);

    let upload = run(env.ferry().args(["--json", "upload", "--patient", "pat-001", "--part-size", "5"]).arg(&source));
    assert!(upload.status.success(), "{}", describe(&upload));
    let uploaded = &events(&upload.stdout, "uploaded")[0];
    let upload_id = uploaded["correlation_id"].as_str().unwrap().to_owned();
    let document_id = uploaded["document_id"].as_str().unwrap().to_owned();
    let folder = env.home.path().join("downloads");
    let download = run(env.ferry().args(["--json", "download", &document_id, "--to"]).arg(&folder));
    assert!(download.status.success(), "{}", describe(&download));
    let download_id = events(&download.stdout, "downloaded")[0]["correlation_id"].as_str().unwrap().to_owned();
    assert_ne!(upload_id, download_id);

    let entries = log_entries(&env);
    let signed_in: jiff::Timestamp = entries
        .iter()
        .find(|entry| entry["event"]["type"] == "signed_in")
        .and_then(|entry| entry["time"].as_str())
        .expect("the sign-in is in the log")
        .parse()
        .unwrap();

    // Upload: authorized, part URLs issued, parts accepted by the store,
    // completed at the gateway, then completed and verified at the client.
    let upload_steps = gateway_steps(&env, &upload_id);
    assert!(upload_steps.iter().all(|(_, _, outcome)| outcome == "0"), "{upload_steps:?}");
    let upload_sequence = merged_sequence(&entries, &upload_steps, &upload_id);
    assert!(upload_sequence[0].0 >= signed_in, "the user signed in first: {upload_sequence:#?}");
    let authorized = position(&upload_sequence, "gateway:authorize-upload");
    let part_urls = position(&upload_sequence, "gateway:part-urls");
    // The first store access is the gateway creating the multipart upload;
    // the last one before completion is a part the client sent.
    let stored = upload_sequence
        .iter()
        .rposition(|(_, step)| step == "gateway:store-access")
        .unwrap_or_else(|| panic!("no store access in {upload_sequence:#?}"));
    let completed_at_gateway = position(&upload_sequence, "gateway:complete");
    let completed = position(&upload_sequence, "client:completed");
    let verified = position(&upload_sequence, "client:verified");
    assert!(authorized < part_urls, "{upload_sequence:#?}");
    assert!(part_urls < stored, "{upload_sequence:#?}");
    assert!(stored < completed_at_gateway, "{upload_sequence:#?}");
    assert!(completed_at_gateway < completed, "{upload_sequence:#?}");
    assert!(completed < verified, "{upload_sequence:#?}");

    // Download: authorized, URL issued, object read through the store,
    // then completed and verified at the client.
    let download_steps = gateway_steps(&env, &download_id);
    let download_sequence = merged_sequence(&entries, &download_steps, &download_id);
    let authorized = position(&download_sequence, "gateway:authorize-download");
    let url_issued = position(&download_sequence, "gateway:download-url");
    let read = position(&download_sequence, "gateway:store-access");
    let completed = position(&download_sequence, "client:completed");
    let verified = position(&download_sequence, "client:verified");
    assert!(authorized < url_issued, "{download_sequence:#?}");
    assert!(url_issued < read, "{download_sequence:#?}");
    assert!(read < completed, "{download_sequence:#?}");
    assert!(completed < verified, "{download_sequence:#?}");
    let downloaded = entries
        .iter()
        .find(|entry| entry["correlation_id"] == download_id.as_str() && entry["event"]["type"] == "completed")
        .unwrap();
    assert_eq!(downloaded["object"], format!("DocumentReference/{document_id}"));
    assert_eq!(downloaded["direction"], "download");
}

#[test]
fn checkpoints_verify_on_another_machine() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let source = env.home.path().join("report.bin");
    write_pattern_file(&source, 3000);
    let upload = run(env.ferry().args(["upload", "--patient", "pat-002"]).arg(&source));
    assert!(upload.status.success(), "{}", describe(&upload));

    let verified = run(env.ferry().args(["--json", "log", "verify"]));
    assert!(verified.status.success(), "{}", describe(&verified));
    let report: Value = serde_json::from_slice(&verified.stdout).expect("one JSON document");
    let stderr = String::from_utf8_lossy(&verified.stderr);
    assert!(stderr.contains("The gateway countersigned seq"), "{stderr}");
    let log_path = env.home.path().join(format!("data/profiles/{}/transfer-log.ndjson", env.profile));
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    let checkpoints = log_text.lines().filter(|line| line.starts_with(r#"{"kind":"checkpoint""#)).count();
    assert!(checkpoints >= 3, "sign-in, upload and verify each checkpoint: {checkpoints}");
    assert!(report["last_checkpoint"].as_u64().is_some(), "{report}");

    let out = env.home.path().join("audit.ndjson");
    let exported = run(env.ferry().args(["log", "export", "--format", "fhir", "--out"]).arg(&out));
    assert!(exported.status.success(), "{}", describe(&exported));
    let bundle: Value = serde_json::from_slice(&std::fs::read(env.home.path().join("audit.ndjson.bundle.json")).unwrap()).unwrap();
    assert_eq!(bundle["gateway_keys"].as_array().map(Vec::len), Some(1), "{bundle}");

    // Another machine: a new home with only the exported files, no sign-in
    // and no gateway.
    let auditor = tempfile::tempdir().unwrap();
    for name in ["audit.ndjson.bundle.json", "audit.ndjson.log.ndjson"] {
        std::fs::copy(env.home.path().join(name), auditor.path().join(name)).unwrap();
    }
    let checked = run(ferry(auditor.path()).args(["--json", "log", "verify", "--bundle"]).arg(auditor.path().join("audit.ndjson.bundle.json")));
    assert!(checked.status.success(), "{}", describe(&checked));
    let report: Value = serde_json::from_slice(&checked.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["last_checkpoint"].as_u64().is_some(), "{report}");

    let copy = auditor.path().join("audit.ndjson.log.ndjson");
    let text = std::fs::read_to_string(&copy).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&copy, lines[..lines.len() - 3].join("\n") + "\n").unwrap();
    let cut = run(ferry(auditor.path()).args(["log", "verify", "--bundle"]).arg(auditor.path().join("audit.ndjson.bundle.json")));
    assert!(!cut.status.success(), "{}", describe(&cut));
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(stderr.contains("did not verify"), "{stderr}");
}

#[test]
fn confirmed_mismatch_is_in_both_logs() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let archive = env.home.path().join("sample.zip");
    let script = ferry_tests::workspace_root().join("scripts/make-sample-archive.py");
    let made = std::process::Command::new("python3").arg(&script).arg(&archive).output().expect("python3 runs");
    assert!(
        made.status.success(),
        "{} failed (pydicom is installed by scripts/setup): {}",
        script.display(),
        String::from_utf8_lossy(&made.stderr)
    );

    // A folder, which ferry packs into an archive with a manifest.
    let study = env.home.path().join("study");
    let extracted = std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])"])
        .arg(&archive)
        .arg(&study)
        .output()
        .expect("python3 runs");
    assert!(extracted.status.success(), "{}", String::from_utf8_lossy(&extracted.stderr));

    // The sample study's patient is FERRY-0001 (pat-004), not pat-002.
    let reason = "outside study, identity checked by phone";
    let upload = run(env
        .ferry()
        .args(["--json", "upload", "--patient", "pat-002", "--confirm-patient-mismatch", reason])
        .arg(&study));
    assert!(upload.status.success(), "{}", describe(&upload));
    let uploaded = &events(&upload.stdout, "uploaded")[0];
    let correlation_id = uploaded["correlation_id"].as_str().unwrap().to_owned();
    let document_id = uploaded["document_id"].as_str().unwrap().to_owned();

    let entries = log_entries(&env);
    let confirmed = entries
        .iter()
        .find(|entry| entry["event"]["type"] == "patient_mismatch_confirmed")
        .unwrap_or_else(|| panic!("no confirmation in the client log: {entries:#?}"));
    assert_eq!(confirmed["event"]["reason"], reason);
    assert_eq!(confirmed["patient"], "Patient/pat-002");
    // Written once the grant exists, so an auditor joins it to the gateway's record.
    assert_eq!(confirmed["correlation_id"], correlation_id.as_str());
    assert_eq!(confirmed["actor"]["fhir_user"].as_str().map(|user| user.ends_with("Practitioner/tech-okafor")), Some(true));

    let audit = run(env.ferry().args(["--json", "log", "audit", &correlation_id]));
    assert!(audit.status.success(), "{}", describe(&audit));
    let bundle: Value = serde_json::from_slice(&audit.stdout).expect("one JSON document");
    let gateway_confirmation = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| &entry["resource"])
        .find(|event| {
            event["subtype"].as_array().into_iter().flatten().any(|coding| coding["code"] == "patient-mismatch-confirmed")
        })
        .unwrap_or_else(|| panic!("no confirmation in the gateway's audit: {bundle}"));
    let detail = gateway_confirmation["outcomeDesc"].as_str().unwrap_or_default();
    assert!(detail.contains(reason), "{gateway_confirmation}");
    assert!(detail.contains("FERRY-0001"), "{gateway_confirmation}");

    // The study comes back and unpacks with every instance checked.
    let folder = env.home.path().join("back");
    let download = run(env.ferry().args(["--json", "download", &document_id, "--unpack", "--to"]).arg(&folder));
    assert!(download.status.success(), "{}", describe(&download));
    let unpacked = events(&download.stdout, "unpacked");
    assert_eq!(unpacked.len(), 1, "{}", describe(&download));
    assert!(unpacked[0]["files"].as_u64().unwrap() >= 2, "{}", unpacked[0]);
    let unpacked_folder = std::path::PathBuf::from(unpacked[0]["folder"].as_str().unwrap());
    assert!(unpacked_folder.starts_with(&folder), "{unpacked_folder:?}");
    let written = walk_count(&unpacked_folder) as u64;
    assert_eq!(written, unpacked[0]["files"].as_u64().unwrap() + 1, "the instances and the manifest");
}

/// Counts the files below `folder`.
fn walk_count(folder: &std::path::Path) -> usize {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { walk_count(&path) } else { 1 })
        .sum()
}
