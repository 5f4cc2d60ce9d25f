//! Packing scans into deterministic archives, reading them back with
//! independent zip readers, resuming mid-archive, and unpacking safely.

mod study_support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ferry_core::study::{
    MANIFEST_NAME, Manifest, PackError, PackOptions, PackPlan, UnpackError, pack_to_file, scan,
    unpack,
};
use study_support::{generate, sha256_file, zip_folder};

#[test]
fn same_files_pack_to_same_bytes() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "30"]) else {
        return;
    };
    let scan = scan(&generated.path("ct-study")).unwrap();
    let first = generated.dir.path().join("first.zip");
    let second = generated.dir.path().join("second.zip");

    let plan = PackPlan::new(&scan, &PackOptions::default()).unwrap();
    let summary = pack_to_file(&scan, &first).unwrap();
    pack_to_file(&scan, &second).unwrap();

    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
    assert_eq!(summary.size, plan.archive_size());
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        plan.archive_size()
    );
    assert_eq!(summary.sha256, sha256_file(&first));
    assert_eq!(summary.entries, 31);
}

#[test]
fn zip_input_packs_to_the_folder_bytes() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "20"]) else {
        return;
    };
    let folder = generated.path("ct-study");
    let input = generated.dir.path().join("input.zip");
    zip_folder(&folder, &input);
    let from_folder = generated.dir.path().join("from-folder.zip");
    let from_zip = generated.dir.path().join("from-zip.zip");

    pack_to_file(&scan(&folder).unwrap(), &from_folder).unwrap();
    pack_to_file(&scan(&input).unwrap(), &from_zip).unwrap();

    assert_eq!(
        std::fs::read(&from_folder).unwrap(),
        std::fs::read(&from_zip).unwrap()
    );
}

#[test]
fn archive_reads_back_with_zip_crate() {
    let Some(generated) = generate(&["charsets"], &[]) else {
        return;
    };
    let folder = generated.path("charsets");
    let scan = scan(&folder).unwrap();
    let archive = generated.dir.path().join("study.zip");
    pack_to_file(&scan, &archive).unwrap();

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
    let names: Vec<String> = zip
        .file_names()
        .map(|name| name.unwrap().into_owned())
        .collect();
    assert_eq!(names.len(), 9);

    let manifest: Manifest = {
        let entry = zip.by_index(0).unwrap();
        assert_eq!(entry.name().unwrap(), MANIFEST_NAME);
        serde_json::from_reader(entry).unwrap()
    };
    assert_eq!(manifest.instances.len(), 8);
    assert_eq!(manifest.series.len(), 8);

    for (index, listed) in manifest.instances.iter().enumerate() {
        let mut entry = zip.by_index(index + 1).unwrap();
        assert_eq!(entry.name().unwrap(), listed.path);
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        assert_eq!(entry.unix_mode(), Some(0o100644));
        let modified = entry.last_modified().unwrap();
        assert_eq!(
            (modified.year(), modified.month(), modified.day()),
            (1980, 1, 1)
        );

        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, std::fs::read(folder.join(&listed.path)).unwrap());
        assert_eq!(listed.sha256, sha256_file(&folder.join(&listed.path)));
        let instance = scan
            .instances
            .iter()
            .find(|i| i.path == listed.path)
            .unwrap();
        assert_eq!(
            listed.sop_instance_uid.as_ref(),
            Some(&instance.sop_instance_uid)
        );
    }
}

#[test]
fn archive_passes_python_zipfile_check() {
    let Some(generated) = generate(&["charsets"], &[]) else {
        return;
    };
    let archive = generated.dir.path().join("study.zip");
    pack_to_file(&scan(&generated.path("charsets")).unwrap(), &archive).unwrap();

    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
             assert z.testzip() is None; print('\\n'.join(z.namelist()))",
        ])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "MANIFEST.json\nlatin1/Müller_Jürgen.dcm\nutf8/Øster-Zoë.dcm\nutf8/王小東.dcm\n\
         中文/张小东.dcm\n中文/王小东.dcm\n日本語/ヤマダタロウ.dcm\n日本語/山田太郎.dcm\n\
         한국어/홍길동.dcm\n"
    );
}

#[test]
fn reader_resumes_at_any_offset() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "9"]) else {
        return;
    };
    let scan = scan(&generated.path("ct-study")).unwrap();
    let plan = PackPlan::new(&scan, &PackOptions::default()).unwrap();
    let mut whole = Vec::new();
    plan.reader().read_to_end(&mut whole).unwrap();
    assert_eq!(whole.len() as u64, plan.archive_size());

    let size = plan.archive_size();
    for offset in [0, 1, 100, size / 3, size / 2 + 7, size - 22, size - 1, size] {
        let mut reader = plan.reader();
        reader.seek(SeekFrom::Start(offset)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, whole[offset as usize..], "resumed at offset {offset}");
    }
}

#[test]
fn file_changed_after_planning_fails_the_read() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "3"]) else {
        return;
    };
    let folder = generated.path("ct-study");
    let scan = scan(&folder).unwrap();
    let plan = PackPlan::new(&scan, &PackOptions::default()).unwrap();

    let victim = folder.join(&scan.instances[1].path);
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&victim, bytes).unwrap();

    let error = plan.reader().read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        error.to_string().contains(&scan.instances[1].path),
        "{error}"
    );
    assert!(
        error.to_string().contains("changed after it was hashed"),
        "{error}"
    );
}

#[test]
fn set_aside_file_is_packed_only_on_purpose() {
    let Some(generated) = generate(&["invalid"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("invalid")).unwrap();

    let plain = PackPlan::new(&scan, &PackOptions::default()).unwrap();
    assert!(
        plain
            .manifest()
            .instances
            .iter()
            .all(|e| e.path != "report.pdf")
    );

    let options = PackOptions {
        include_set_aside: vec!["report.pdf".to_owned()],
    };
    let with_pdf = PackPlan::new(&scan, &options).unwrap();
    let pdf = with_pdf
        .manifest()
        .instances
        .iter()
        .find(|e| e.path == "report.pdf")
        .unwrap();
    assert_eq!(pdf.sop_instance_uid, None);
    assert_eq!(pdf.size, 77);

    let unknown = PackOptions {
        include_set_aside: vec!["valid1.dcm".to_owned()],
    };
    assert!(matches!(
        PackPlan::new(&scan, &unknown),
        Err(PackError::NotSetAside { path }) if path == "valid1.dcm"
    ));
}

#[test]
fn unpack_restores_every_instance() {
    let Some(generated) = generate(&["ct-study", "charsets"], &["--ct-instances", "15"]) else {
        return;
    };
    for layout in ["ct-study", "charsets"] {
        let folder = generated.path(layout);
        let archive = generated.dir.path().join(format!("{layout}.zip"));
        let dest = generated.dir.path().join(format!("{layout}-unpacked"));
        let scan = scan(&folder).unwrap();
        pack_to_file(&scan, &archive).unwrap();

        let summary = unpack(&archive, &dest).unwrap();

        assert_eq!(summary.files, scan.instances.len());
        assert_eq!(summary.bytes, scan.instance_bytes());
        for instance in &scan.instances {
            assert_eq!(
                sha256_file(&dest.join(&instance.path)),
                sha256_file(&folder.join(&instance.path)),
                "{}",
                instance.path
            );
        }
        assert!(dest.join(MANIFEST_NAME).is_file());
    }
}

/// Writes a zip whose manifest lists `entries` with the given SHA-256 values.
fn write_crafted_zip(path: &Path, entries: &[(&str, &[u8], String)]) {
    let manifest = serde_json::json!({
        "format": "ferry.study-manifest.v1",
        "series": [],
        "instances": entries.iter().map(|(name, bytes, sha256)| serde_json::json!({
            "path": name, "size": bytes.len(), "sha256": sha256,
            "sop_instance_uid": null, "sop_class_uid": null,
            "study_instance_uid": null, "series_instance_uid": null,
        })).collect::<Vec<_>>(),
    });
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file(MANIFEST_NAME, options).unwrap();
    writer.write_all(manifest.to_string().as_bytes()).unwrap();
    for (name, bytes, _) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn unpack_rejects_entries_escaping_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    for name in [
        "../evil.dcm",
        "/etc/evil.dcm",
        "a/../../evil.dcm",
        "C:\\evil.dcm",
    ] {
        let archive = dir.path().join("evil.zip");
        write_crafted_zip(&archive, &[(name, b"x", sha256_hex(b"x"))]);

        let error = unpack(&archive, &dest).unwrap_err();
        assert!(
            matches!(&error, UnpackError::UnsafeEntry { name: rejected } if rejected == name),
            "{name}: {error}"
        );
        assert!(!dir.path().join("evil.dcm").exists());
        assert!(
            !dest.exists(),
            "nothing is written before the names are checked"
        );
    }
}

#[test]
fn unpack_detects_corrupt_instance() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("corrupt.zip");
    write_crafted_zip(
        &archive,
        &[
            ("a.dcm", b"good", sha256_hex(b"good")),
            ("b.dcm", b"tampered", sha256_hex(b"original")),
        ],
    );
    let dest = dir.path().join("out");

    let error = unpack(&archive, &dest).unwrap_err();
    assert!(
        matches!(&error, UnpackError::ChecksumMismatch { name, .. } if name == "b.dcm"),
        "{error}"
    );
    assert!(!dest.join("b.dcm").exists(), "the corrupt file is removed");
}

#[test]
fn unpack_rejects_entries_missing_from_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("extra.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file(MANIFEST_NAME, options).unwrap();
    writer
        .write_all(br#"{"format":"ferry.study-manifest.v1","series":[],"instances":[]}"#)
        .unwrap();
    writer.start_file("stowaway.dcm", options).unwrap();
    writer.write_all(b"x").unwrap();
    writer.finish().unwrap();

    let error = unpack(&archive, &dir.path().join("out")).unwrap_err();
    assert!(
        matches!(&error, UnpackError::UnlistedEntry { name } if name == "stowaway.dcm"),
        "{error}"
    );
}
