//! The staging folder, where study folders are packed into zip archives
//! that are kept until their upload completes, so that an interrupted upload
//! resumes from the same bytes.
//!
//! Each pack gets a folder of its own, `{staging}/pack-UUID/{name}.zip`.
//! Two study folders of the same name (PACS exports are often all called
//! `DICOM`) would otherwise pack into one archive, and the second pack would
//! replace the first's archive between its patient check and its upload.

use std::io;
use std::path::{Path, PathBuf};

/// Creates `staging_dir` when missing and, inside it, a new empty folder for
/// one packed archive. On Unix the new folder has mode 0700.
pub fn create_pack_dir(staging_dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(staging_dir)?;

    let pack_dir = staging_dir.join(format!("pack-{}", uuid::Uuid::new_v4().simple()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    // `create` fails when the folder exists, so no two packs share one.
    builder.create(&pack_dir)?;
    Ok(pack_dir)
}

/// Deletes an archive packed into a folder of [`create_pack_dir`] once its
/// upload completed, and then that folder when it is empty. Returns
/// `Ok(false)` and touches nothing when `archive` is not inside
/// `staging_dir`, because the user's own files are uploaded from where
/// they are.
pub fn remove_staged(staging_dir: &Path, archive: &Path) -> io::Result<bool> {
    if !archive.starts_with(staging_dir) {
        return Ok(false);
    }

    std::fs::remove_file(archive)?;
    let pack_dir = archive
        .parent()
        .filter(|folder| folder.parent() == Some(staging_dir));
    if let Some(pack_dir) = pack_dir {
        // `remove_dir` deletes only an empty folder, so a file someone put
        // beside the archive keeps its folder.
        let _ = std::fs::remove_dir(pack_dir);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_dirs_differ_for_each_pack() {
        let staging = tempfile::tempdir().unwrap();
        let staging_dir = staging.path().join("staging");

        let first = create_pack_dir(&staging_dir).unwrap();
        let second = create_pack_dir(&staging_dir).unwrap();

        assert_ne!(first, second);
        assert_eq!(first.parent(), Some(staging_dir.as_path()));
        assert!(second.is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn pack_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let staging = tempfile::tempdir().unwrap();

        let pack_dir = create_pack_dir(staging.path()).unwrap();

        let mode = std::fs::metadata(&pack_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn removing_staged_archive_removes_its_folder() {
        let staging = tempfile::tempdir().unwrap();
        let pack_dir = create_pack_dir(staging.path()).unwrap();
        let archive = pack_dir.join("DICOM.zip");
        std::fs::write(&archive, b"zip").unwrap();

        let removed = remove_staged(staging.path(), &archive).unwrap();

        assert!(removed);
        assert!(!archive.exists());
        assert!(!pack_dir.exists());
        assert!(staging.path().is_dir());
    }

    #[test]
    fn file_outside_staging_is_kept() {
        let staging = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let archive = elsewhere.path().join("DICOM.zip");
        std::fs::write(&archive, b"zip").unwrap();

        let removed = remove_staged(staging.path(), &archive).unwrap();

        assert!(!removed);
        assert!(archive.exists());
    }
}
