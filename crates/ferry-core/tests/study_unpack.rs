//! Unpacking plain zips, which carry no Ferry manifest, and hostile zips:
//! names leaving the folder, symbolic links, duplicate names, zip bombs,
//! entries larger than declared, corrupt bytes and links in the destination.

mod study_support;

use std::io::Write as _;
use std::path::Path;

use ferry_core::study::{MAX_EXPANSION_RATIO, UnpackError, unpack};
use study_support::{generate, sha256_file, zip_folder};
use zip::write::SimpleFileOptions;

const MIB: usize = 1024 * 1024;

/// Writes a zip of `(name, bytes)` entries with the zip crate, deflated.
fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

/// Replaces every occurrence of `from` in the file with `to` (same length),
/// so that local headers and central directory records change together.
fn patch_bytes(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let mut found = 0;
    let mut index = 0;
    while let Some(offset) = bytes[index..]
        .windows(from.len())
        .position(|window| window == from)
    {
        let start = index + offset;
        bytes[start..start + from.len()].copy_from_slice(to);
        index = start + from.len();
        found += 1;
    }
    assert!(found > 0, "{from:?} is not in {}", path.display());
    std::fs::write(path, bytes).unwrap();
}

/// Sets the uncompressed size of every central directory record to `size`.
fn patch_central_sizes(path: &Path, size: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut patched = 0;
    for start in 0..bytes.len().saturating_sub(28) {
        if bytes[start..start + 4] == *b"PK\x01\x02" {
            bytes[start + 24..start + 28].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert!(patched > 0, "no central directory record");
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn plain_zip_unpacks_without_manifest() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "30"]) else {
        return;
    };
    let folder = generated.path("ct-study");
    let archive = generated.dir.path().join("plain.zip");
    zip_folder(&folder, &archive);
    let dest = generated.dir.path().join("unpacked");

    let summary = unpack(&archive, &dest).unwrap();

    assert!(summary.manifest.is_none());
    assert_eq!(summary.files, 30);
    let mut total = 0;
    for series in ["series1", "series2", "series3"] {
        for entry in std::fs::read_dir(folder.join(series)).unwrap() {
            let original = entry.unwrap().path();
            let relative = original.strip_prefix(&folder).unwrap();
            let unpacked = dest.join(relative);
            assert_eq!(
                sha256_file(&unpacked),
                sha256_file(&original),
                "{}",
                relative.display()
            );
            total += std::fs::metadata(&original).unwrap().len();
        }
    }
    assert_eq!(summary.bytes, total);
}

#[test]
fn plain_zip_with_folders_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("folders.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let options = SimpleFileOptions::default();
    writer.add_directory("empty/", options).unwrap();
    writer.add_directory("study/", options).unwrap();
    writer.start_file("study/IM1.dcm", options).unwrap();
    writer.write_all(b"instance").unwrap();
    writer.finish().unwrap();
    let dest = dir.path().join("out");

    let summary = unpack(&archive, &dest).unwrap();

    assert_eq!(summary.files, 1);
    assert_eq!(summary.bytes, 8);
    assert!(dest.join("empty").is_dir());
    assert_eq!(
        std::fs::read(dest.join("study/IM1.dcm")).unwrap(),
        b"instance"
    );
}

#[test]
fn zip_rejects_windows_device_names() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let cases = [
        "NUL.dcm",
        "nul",
        "CON",
        "study/COM1.dcm",
        "LPT9.tar.gz",
        "AUX/IM1.dcm",
        "study/IM1.dcm.",
        "study/IM1.dcm ",
        "study./IM1.dcm",
    ];
    for hostile in cases {
        let archive = dir.path().join("devices.zip");
        write_zip(&archive, &[(hostile, b"x")]);

        let error = unpack(&archive, &dest).unwrap_err();

        assert!(
            matches!(&error, UnpackError::UnsafeEntry { name } if name == hostile),
            "{hostile:?}: {error}"
        );
        assert!(
            error.to_string().contains("names a Windows device"),
            "{hostile:?}: {error}"
        );
        assert!(!dest.exists(), "{hostile:?}: nothing is written");
    }
}

#[test]
fn zip_accepts_names_near_device_names() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("near.zip");
    let names = ["NULL.dcm", "CONSOLE/IM1.dcm", "COM10.dcm", "study/.hidden"];
    let entries: Vec<(&str, &[u8])> = names.iter().map(|name| (*name, b"x".as_slice())).collect();
    write_zip(&archive, &entries);
    let dest = dir.path().join("out");

    let summary = unpack(&archive, &dest).unwrap();

    assert_eq!(summary.files, names.len());
    for name in names {
        assert!(dest.join(name).is_file(), "{name} was not unpacked");
    }
}

#[test]
fn plain_zip_rejects_escaping_names() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    // Same-length stand-ins are written first, then patched into the names,
    // because the zip crate's writer rejects these names itself.
    let cases: [(&str, &str); 4] = [
        ("xx/evil.dcm", "../evil.dcm"),
        ("xetc/evil.dcm", "/etc/evil.dcm"),
        ("a/xx/xx/evil.dcm", "a/../../evil.dcm"),
        ("xxxevil.dcm", "C:\\evil.dcm"),
    ];
    for (stand_in, hostile) in cases {
        let archive = dir.path().join("evil.zip");
        write_zip(&archive, &[(stand_in, b"x")]);
        patch_bytes(&archive, stand_in.as_bytes(), hostile.as_bytes());

        let error = unpack(&archive, &dest).unwrap_err();

        assert!(
            matches!(&error, UnpackError::UnsafeEntry { name } if name == hostile),
            "{hostile}: {error}"
        );
        assert!(!dir.path().join("evil.dcm").exists());
        assert!(!dest.exists(), "{hostile}: nothing is written");
    }
}

#[test]
fn plain_zip_rejects_symbolic_links() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let archive = dir.path().join("link.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let options = SimpleFileOptions::default();
    writer
        .add_symlink("link", outside.to_str().unwrap(), options)
        .unwrap();
    writer.start_file("link/planted.dcm", options).unwrap();
    writer.write_all(b"x").unwrap();
    writer.finish().unwrap();
    let dest = dir.path().join("out");

    let error = unpack(&archive, &dest).unwrap_err();

    assert!(
        matches!(&error, UnpackError::LinkEntry { name } if name == "link"),
        "{error}"
    );
    assert!(!outside.join("planted.dcm").exists());
    assert!(!dest.exists(), "nothing is written");
}

#[test]
fn file_and_folder_of_same_name_are_rejected() {
    // Two entries with one exact name never reach `unpack`, because the zip
    // crate keeps only the last of them. A file and a folder entry of the
    // same name do.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("twice.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let options = SimpleFileOptions::default();
    writer.start_file("series1", options).unwrap();
    writer.write_all(b"x").unwrap();
    writer.add_directory("series1/", options).unwrap();
    writer.finish().unwrap();
    let dest = dir.path().join("out");

    let error = unpack(&archive, &dest).unwrap_err();

    assert!(
        matches!(&error, UnpackError::DuplicateEntry { name } if name == "series1/"),
        "{error}"
    );
    assert!(!dest.exists(), "nothing is written");
}

#[test]
fn zip_bomb_is_rejected_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bomb.zip");
    let zeros = vec![0u8; 64 * MIB];
    write_zip(&archive, &[("a.dcm", &zeros), ("b.dcm", &zeros)]);
    let archive_bytes = std::fs::metadata(&archive).unwrap().len();
    assert!(
        archive_bytes * MAX_EXPANSION_RATIO < 128 * MIB as u64,
        "deflate shrinks zeros by more than the limit"
    );
    let dest = dir.path().join("out");

    let error = unpack(&archive, &dest).unwrap_err();

    assert!(
        matches!(
            &error,
            UnpackError::ExpansionLimit { declared, archive_bytes: size }
                if *declared == 128 * MIB as u64 && *size == archive_bytes
        ),
        "{error}"
    );
    assert!(error.to_string().contains("zip bomb"), "{error}");
    assert!(!dest.exists(), "nothing is written");
}

#[test]
fn entry_larger_than_declared_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("liar.zip");
    let zeros = vec![0u8; MIB];
    write_zip(&archive, &[("liar.dcm", &zeros)]);
    patch_central_sizes(&archive, 1000);
    let dest = dir.path().join("out");

    let error = unpack(&archive, &dest).unwrap_err();

    // The zip crate stops reading at the declared size, so the CRC-32 of
    // the first 1000 bytes fails.
    assert!(
        matches!(&error, UnpackError::ReadEntry { name, .. } if name == "liar.dcm"),
        "{error}"
    );
    assert!(!dest.join("liar.dcm").exists(), "the file is removed");
}

#[test]
fn corrupt_entry_fails_its_crc() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("corrupt.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    writer
        .start_file(
            "a.dcm",
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
    writer.write_all(b"original instance bytes").unwrap();
    writer.finish().unwrap();
    patch_bytes(&archive, b"original", b"tampered");
    let dest = dir.path().join("out");

    let error = unpack(&archive, &dest).unwrap_err();

    assert!(
        matches!(&error, UnpackError::ReadEntry { name, .. } if name == "a.dcm"),
        "{error}"
    );
    assert!(!dest.join("a.dcm").exists(), "the file is removed");
}

#[cfg(unix)]
#[test]
fn link_in_destination_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("series1")).unwrap();
    let archive = dir.path().join("study.zip");
    write_zip(&archive, &[("series1/IM1.dcm", b"x")]);

    let error = unpack(&archive, &dest).unwrap_err();

    assert!(
        matches!(&error, UnpackError::LinkInDestination { path } if *path == dest.join("series1")),
        "{error}"
    );
    assert!(!outside.join("IM1.dcm").exists());
}

#[cfg(unix)]
#[test]
fn destination_that_is_a_link_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = dir.path().join("ct-study");
    std::os::unix::fs::symlink(&outside, &dest).unwrap();
    let archive = dir.path().join("ct-study.zip");
    write_zip(&archive, &[("IM1.dcm", b"x"), ("series1/IM2.dcm", b"y")]);

    let error = unpack(&archive, &dest).unwrap_err();

    assert!(
        matches!(&error, UnpackError::LinkInDestination { path } if *path == dest),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a file was written through the link"
    );
}
