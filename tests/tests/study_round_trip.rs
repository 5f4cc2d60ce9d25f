//! Imaging studies through the `ferry` CLI and a sandbox gateway: scan,
//! upload as a study, download with `--unpack`, and compare every instance
//! by SHA-256 with the original. Studies are generated with pydicom by
//! scripts/make-test-study.py. Like the other CLI tests these need a Secret
//! Service, which scripts/test provides; without one they are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::cli::{
    SignedIn, describe, events, free_bytes, has_credential_store, run, sha256_file,
};

const MIB: u64 = 1024 * 1024;

/// The sandbox patient whose identifier, name and birth date match the
/// generated studies (FERRY-0001, Müller^Jürgen, 1970-01-31).
const MATCHING_PATIENT: &str = "pat-004";

fn skip_without_credential_store() -> bool {
    if has_credential_store() {
        return false;
    }
    eprintln!(
        "skipped: no Secret Service (DBUS_SESSION_BUS_ADDRESS is unset); run the tests with scripts/test"
    );
    true
}

/// Runs scripts/make-test-study.py with `args` into `out`.
fn make_test_study(out: &Path, args: &[&str]) {
    let script = ferry_tests::workspace_root().join("scripts/make-test-study.py");
    let generated = Command::new("python3")
        .arg(&script)
        .arg(out)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        generated.status.success(),
        "{} failed (pydicom is installed by scripts/setup): {}",
        script.display(),
        String::from_utf8_lossy(&generated.stderr)
    );
}

/// SHA-256 of every file below `root`, keyed by its `/`-separated path.
fn sha256_tree(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("the folder is readable") {
            let path = entry.expect("the folder entry is readable").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .expect("the file is below the root")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.insert(relative, sha256_file(&path));
        }
    }
    files
}

/// Uploads `path` for the matching patient and returns the document id.
fn upload_study(env: &SignedIn, path: &Path) -> String {
    let upload = run(env
        .ferry()
        .args(["--json", "upload", "--patient", MATCHING_PATIENT])
        .arg(path));
    assert!(upload.status.success(), "{}", describe(&upload));
    let uploaded = events(&upload.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(&upload));
    uploaded[0]["document_id"]
        .as_str()
        .expect("the uploaded event names the DocumentReference")
        .to_owned()
}

/// Downloads `document_id` into `folder` with `--unpack` and returns the
/// `unpacked` event and the status lines.
fn download_unpacked(
    env: &SignedIn,
    document_id: &str,
    folder: &Path,
) -> (serde_json::Value, String) {
    let download = run(env
        .ferry()
        .args(["--json", "download", document_id, "--unpack", "--to"])
        .arg(folder));
    assert!(download.status.success(), "{}", describe(&download));
    let unpacked = events(&download.stdout, "unpacked");
    assert_eq!(unpacked.len(), 1, "{}", describe(&download));
    (
        unpacked[0].clone(),
        String::from_utf8_lossy(&download.stderr).into_owned(),
    )
}

#[test]
fn two_gib_study_round_trips_with_every_sha256() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let size = 2048 * MIB;
    // The study, the packed copy in staging, the store's object, the
    // downloaded archive and the unpacked folder, plus headroom.
    let needed = 6 * size;
    if free_bytes(env.home.path()).is_some_and(|free| free < needed) {
        eprintln!(
            "skipped: less than {} GiB free for a 2 GiB study, its packed copy, the store's object, the download and the unpacked folder",
            needed / 1024 / MIB
        );
        return;
    }
    let generated = env.home.path().join("generated");
    make_test_study(&generated, &["--large-mib", "2048"]);
    let study = generated.join("large");
    let original = sha256_tree(&study);
    assert_eq!(original.len(), 256, "8 MiB instances make 2 GiB");

    let scanned = run(env.ferry().args(["--json", "scan"]).arg(&study));
    assert!(scanned.status.success(), "{}", describe(&scanned));
    let document: serde_json::Value =
        serde_json::from_slice(&scanned.stdout).expect("one JSON document");
    let scan = &document["scan"];
    assert_eq!(scan["instances"].as_array().unwrap().len(), 256, "{scan}");
    assert_eq!(scan["set_aside"].as_array().unwrap().len(), 0, "{scan}");
    assert_eq!(scan["studies"].as_array().unwrap().len(), 1, "{scan}");
    assert_eq!(scan["studies"][0]["series"].as_array().unwrap().len(), 4);

    let document_id = upload_study(&env, &study);
    let downloads = env.home.path().join("downloads");
    let (unpacked, status) = download_unpacked(&env, &document_id, &downloads);

    assert_eq!(unpacked["has_manifest"], true, "{unpacked}");
    assert_eq!(unpacked["files"], 256, "{unpacked}");
    assert!(
        status.contains("SHA-256 in the archive's manifest"),
        "{status}"
    );
    let folder = PathBuf::from(unpacked["folder"].as_str().unwrap());
    let mut round_tripped = sha256_tree(&folder);
    assert!(
        round_tripped.remove("MANIFEST.json").is_some(),
        "the manifest is unpacked beside the instances"
    );
    assert_eq!(round_tripped.len(), original.len());
    for (path, sha256) in &original {
        assert_eq!(round_tripped.get(path), Some(sha256), "{path}");
    }
}

#[test]
fn plain_zip_unpacks_with_a_note() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    let generated = env.home.path().join("generated");
    make_test_study(&generated, &["--only", "ct-study", "--ct-instances", "30"]);
    let study = generated.join("ct-study");
    let original = sha256_tree(&study);
    // Python's zipfile, not Ferry, writes the zip, so it has no manifest.
    let archive = env.home.path().join("plain-study.zip");
    let zipped = Command::new("python3")
        .args([
            "-c",
            "import os, sys, zipfile\n\
             root, out = sys.argv[1], sys.argv[2]\n\
             with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:\n\
             \x20   for folder, _, files in sorted(os.walk(root)):\n\
             \x20       for name in sorted(files):\n\
             \x20           path = os.path.join(folder, name)\n\
             \x20           z.write(path, os.path.relpath(path, root))\n",
        ])
        .arg(&study)
        .arg(&archive)
        .output()
        .expect("python3 runs");
    assert!(
        zipped.status.success(),
        "{}",
        String::from_utf8_lossy(&zipped.stderr)
    );

    let document_id = upload_study(&env, &archive);
    let downloads = env.home.path().join("downloads");
    let (unpacked, status) = download_unpacked(&env, &document_id, &downloads);

    assert_eq!(unpacked["has_manifest"], false, "{unpacked}");
    assert_eq!(unpacked["files"], 30, "{unpacked}");
    assert!(
        status.contains(
            "no Ferry manifest (MANIFEST.json), so per-instance SHA-256 hashes could not be checked"
        ),
        "{status}"
    );
    let folder = PathBuf::from(unpacked["folder"].as_str().unwrap());
    assert_eq!(sha256_tree(&folder), original);
}

#[test]
fn same_named_folders_upload_in_one_command() {
    if skip_without_credential_store() {
        return;
    }
    let env = SignedIn::start("tech-okafor", "imaging-staff");
    // Each run of the script gives new UIDs, so the two studies differ.
    let mut studies = Vec::new();
    for (generated, count) in [("first", "30"), ("second", "12")] {
        let out = env.home.path().join(generated);
        make_test_study(&out, &["--only", "ct-study", "--ct-instances", count]);
        let study = out.join("DICOM");
        std::fs::rename(out.join("ct-study"), &study).unwrap();
        studies.push(study);
    }
    let originals: Vec<_> = studies.iter().map(|study| sha256_tree(study)).collect();

    let upload = run(env
        .ferry()
        .args(["--json", "upload", "--patient", MATCHING_PATIENT])
        .args(&studies));

    assert!(upload.status.success(), "{}", describe(&upload));
    let uploaded = events(&upload.stdout, "uploaded");
    assert_eq!(uploaded.len(), 2, "{}", describe(&upload));
    let mut round_tripped = Vec::new();
    for (index, event) in uploaded.iter().enumerate() {
        let document_id = event["document_id"].as_str().unwrap();
        let downloads = env.home.path().join(format!("downloads-{index}"));
        let (unpacked, _) = download_unpacked(&env, document_id, &downloads);
        let mut files = sha256_tree(Path::new(unpacked["folder"].as_str().unwrap()));
        assert!(files.remove("MANIFEST.json").is_some(), "{unpacked}");
        round_tripped.push(files);
    }
    for original in &originals {
        assert!(
            round_tripped.contains(original),
            "a study of {} instances was not uploaded as it is",
            original.len()
        );
    }
}
