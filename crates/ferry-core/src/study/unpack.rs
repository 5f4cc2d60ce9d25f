//! Unpacking a study archive into a folder.
//!
//! An archive packed by Ferry carries [`MANIFEST_NAME`]: every entry must be
//! listed in it and match its size and SHA-256. A plain zip, such as a
//! study zipped by another program and uploaded as it is, has no manifest.
//! Its files are checked only against the zip's CRC-32 values, which the
//! zip crate compares at the end of each entry.
//!
//! Both kinds pass the same checks before any file is written: every entry
//! name is relative and free of `..`, no entry is a symbolic link, no name
//! appears twice, and the declared sizes fit [`MAX_EXPANSION_RATIO`]. While
//! writing, an entry that inflates beyond its declared size stops the
//! unpack, and no file is written through a symbolic link in the
//! destination folder or at its name.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, info_span, warn};

use super::pack::{MANIFEST_NAME, Manifest, ManifestEntry};
use super::scan::is_safe_entry_name;
use crate::transfer::is_windows_reserved_name;

/// Maximum bytes an archive may unpack to per byte of archive file.
///
/// Deflate reaches about 1032:1, so a zip bomb is stopped before it writes
/// more than 100 times its own size. Archives packed by Ferry store entries
/// uncompressed (1:1). Deflated DICOM pixel data is estimated to shrink far
/// less than 100:1, so real studies fit.
pub const MAX_EXPANSION_RATIO: u64 = 100;

/// Maximum entries in one archive: 50 times a 10,000-instance study.
pub const MAX_ENTRIES: usize = 500_000;

/// Maximum size of [`MANIFEST_NAME`], which is read into memory: 512 bytes
/// for each of [`MAX_ENTRIES`] instances.
pub const MAX_MANIFEST_BYTES: u64 = 512 * MAX_ENTRIES as u64;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("opening archive {path} failed")]
    Open { path: PathBuf, source: io::Error },
    #[error("reading archive {path} failed; the file is not a valid zip archive")]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{MANIFEST_NAME} in the archive is invalid")]
    InvalidManifest(#[source] serde_json::Error),
    #[error(
        "{MANIFEST_NAME} in the archive has {size} bytes, more than the {MAX_MANIFEST_BYTES} allowed"
    )]
    ManifestTooLarge { size: u64 },
    #[error(
        "archive entry {name:?} is absolute, contains `..`, names a Windows device such as NUL or COM1, \
         or ends in a dot or space; refusing to unpack it"
    )]
    UnsafeEntry { name: String },
    #[error("archive entry {name:?} is a symbolic link; refusing to unpack it")]
    LinkEntry { name: String },
    #[error("archive entry {name:?} appears more than once; refusing to unpack it")]
    DuplicateEntry { name: String },
    #[error(
        "archive has {count} entries, more than the {MAX_ENTRIES} allowed; unpack it with a zip tool after checking its contents"
    )]
    TooManyEntries { count: usize },
    #[error(
        "archive entries declare {declared} bytes, more than {MAX_EXPANSION_RATIO} times the archive's {archive_bytes} bytes; it may be a zip bomb, so it was not unpacked"
    )]
    ExpansionLimit { declared: u64, archive_bytes: u64 },
    #[error(
        "archive entry {name} inflates beyond its declared {declared} bytes; the archive is corrupt or hostile"
    )]
    LargerThanDeclared { name: String, declared: u64 },
    #[error("reading archive entry {name} failed; the archive is corrupt")]
    ReadEntry { name: String, source: io::Error },
    #[error("archive entry {name} is not listed in {MANIFEST_NAME}")]
    UnlistedEntry { name: String },
    #[error("{name} is listed in {MANIFEST_NAME} but missing from the archive")]
    MissingEntry { name: String },
    #[error(
        "{name} has SHA-256 {actual} but the manifest lists {expected}; the archive is corrupt"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("{name} has {actual} bytes but the manifest lists {expected}")]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is a symbolic link; unpack into an empty folder")]
    LinkInDestination { path: PathBuf },
    #[error("writing {path} failed; unpack into an empty folder")]
    Write { path: PathBuf, source: io::Error },
}

/// The files an unpack wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnpackSummary {
    /// Files written, the manifest excluded.
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
    /// The archive's manifest, or `None` for a plain zip, whose files were
    /// checked only against the zip's CRC-32 values.
    pub manifest: Option<Manifest>,
}

/// One archive entry as its central directory record declares it.
struct Entry {
    index: usize,
    name: String,
    is_dir: bool,
    size: u64,
}

/// Unpacks `archive` into `dest_dir`, which is created if missing.
///
/// The checks of the module documentation run before any file is written.
/// With a manifest, every other entry must be listed in it, and its SHA-256
/// and size must match. Existing files are never overwritten. A file that
/// fails its check is removed and the unpack stops.
pub fn unpack(archive: &Path, dest_dir: &Path) -> Result<UnpackSummary, UnpackError> {
    let span = info_span!("study_unpack", archive = %archive.display());
    let _entered = span.enter();

    let open_error = |source| UnpackError::Open {
        path: archive.to_owned(),
        source,
    };
    let file = File::open(archive).map_err(open_error)?;
    let archive_bytes = file.metadata().map_err(open_error)?.len();
    let zip_error = |source| UnpackError::Zip {
        path: archive.to_owned(),
        source,
    };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(zip_error)?;

    let entries = checked_entries(&mut zip, archive_bytes).map_err(|error| match error {
        EntriesError::Zip(source) => zip_error(source),
        EntriesError::Unpack(error) => error,
    })?;
    let manifest = read_manifest(&mut zip, &entries).map_err(|error| match error {
        EntriesError::Zip(source) => zip_error(source),
        EntriesError::Unpack(error) => error,
    })?;
    if manifest.is_none() {
        info!("archive has no {MANIFEST_NAME}; files are checked against CRC-32 only");
    }

    create_dir(dest_dir)?;
    let mut files = 0;
    let mut bytes = 0;
    let mut seen = HashSet::new();
    for entry in &entries {
        if entry.is_dir {
            create_dirs(dest_dir, entry.name.trim_end_matches('/'))?;
            continue;
        }
        let listed = match &manifest {
            Some(_) if entry.name == MANIFEST_NAME => None,
            Some(manifest) => Some(
                manifest
                    .instances
                    .iter()
                    .find(|listed| listed.path == entry.name)
                    .ok_or_else(|| UnpackError::UnlistedEntry {
                        name: entry.name.clone(),
                    })?,
            ),
            None => None,
        };

        let target = create_parents(dest_dir, &entry.name)?;
        let mut reader = zip.by_index(entry.index).map_err(zip_error)?;
        let (size, sha256) = write_new_file(&mut reader, entry, &target)?;

        if let Some(listed) = listed {
            check_listed(listed, &entry.name, size, sha256, &target)?;
        }
        let is_manifest = manifest.is_some() && entry.name == MANIFEST_NAME;
        if !is_manifest {
            seen.insert(entry.name.as_str());
            files += 1;
            bytes += size;
        }
    }

    if let Some(missing) = manifest
        .iter()
        .flat_map(|manifest| &manifest.instances)
        .find(|listed| !seen.contains(listed.path.as_str()))
    {
        return Err(UnpackError::MissingEntry {
            name: missing.path.clone(),
        });
    }

    info!(
        files,
        bytes,
        has_manifest = manifest.is_some(),
        "archive unpacked"
    );
    Ok(UnpackSummary {
        files,
        bytes,
        manifest,
    })
}

enum EntriesError {
    Zip(zip::result::ZipError),
    Unpack(UnpackError),
}

impl From<zip::result::ZipError> for EntriesError {
    fn from(error: zip::result::ZipError) -> Self {
        EntriesError::Zip(error)
    }
}

impl From<UnpackError> for EntriesError {
    fn from(error: UnpackError) -> Self {
        EntriesError::Unpack(error)
    }
}

/// Reads every entry's central directory record and applies the checks
/// that come before writing: safe and unique names, no links, and the
/// entry count and expansion limits.
fn checked_entries<R: Read + io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    archive_bytes: u64,
) -> Result<Vec<Entry>, EntriesError> {
    if zip.len() > MAX_ENTRIES {
        return Err(UnpackError::TooManyEntries { count: zip.len() }.into());
    }

    let mut entries = Vec::with_capacity(zip.len());
    let mut names = HashSet::new();
    let mut declared: u64 = 0;
    for index in 0..zip.len() {
        let record = zip.by_index_raw(index)?;
        let name = record.name()?.into_owned();
        let file_name = name.strip_suffix('/').unwrap_or(&name);
        if !is_portable_entry_name(file_name) {
            return Err(UnpackError::UnsafeEntry { name }.into());
        }
        if record.is_symlink() {
            return Err(UnpackError::LinkEntry { name }.into());
        }
        if !names.insert(file_name.to_owned()) {
            return Err(UnpackError::DuplicateEntry { name }.into());
        }
        declared = declared.saturating_add(record.size());
        entries.push(Entry {
            index,
            is_dir: record.is_dir(),
            size: record.size(),
            name,
        });
    }

    if declared > archive_bytes.saturating_mul(MAX_EXPANSION_RATIO) {
        return Err(UnpackError::ExpansionLimit {
            declared,
            archive_bytes,
        }
        .into());
    }
    Ok(entries)
}

/// True for a safe entry name that every platform can create as written.
/// Windows opens a device for a component such as `NUL.dcm` or `COM1`, and
/// strips a trailing dot or space, so that `a.dcm.` would write `a.dcm`.
// TODO: scan and pack still accept such names, so a study folder holding
// `CON.dcm` on Linux packs into an archive that this check rejects.
fn is_portable_entry_name(name: &str) -> bool {
    is_safe_entry_name(name)
        && name
            .split('/')
            .all(|part| !is_windows_reserved_name(part) && !part.ends_with(['.', ' ']))
}

/// Reads and parses [`MANIFEST_NAME`], or returns `None` when the archive
/// has none. Every path the manifest lists must be a safe entry name.
fn read_manifest<R: Read + io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    entries: &[Entry],
) -> Result<Option<Manifest>, EntriesError> {
    let Some(entry) = entries.iter().find(|entry| entry.name == MANIFEST_NAME) else {
        return Ok(None);
    };
    if entry.size > MAX_MANIFEST_BYTES {
        return Err(UnpackError::ManifestTooLarge { size: entry.size }.into());
    }

    let mut bytes = Vec::new();
    let reader = zip.by_index(entry.index)?;
    reader
        .take(entry.size)
        .read_to_end(&mut bytes)
        .map_err(|source| UnpackError::ReadEntry {
            name: MANIFEST_NAME.to_owned(),
            source,
        })?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(UnpackError::InvalidManifest)?;

    for listed in &manifest.instances {
        if !is_portable_entry_name(&listed.path) {
            return Err(UnpackError::UnsafeEntry {
                name: listed.path.clone(),
            }
            .into());
        }
    }
    Ok(Some(manifest))
}

/// Compares a written file with its manifest entry, removing the file when
/// they differ.
fn check_listed(
    listed: &ManifestEntry,
    name: &str,
    size: u64,
    sha256: String,
    target: &Path,
) -> Result<(), UnpackError> {
    let mismatch = if size != listed.size {
        UnpackError::SizeMismatch {
            name: name.to_owned(),
            expected: listed.size,
            actual: size,
        }
    } else if sha256 != listed.sha256 {
        UnpackError::ChecksumMismatch {
            name: name.to_owned(),
            expected: listed.sha256.clone(),
            actual: sha256,
        }
    } else {
        return Ok(());
    };
    remove_unpacked(target);
    Err(mismatch)
}

fn remove_unpacked(target: &Path) {
    if let Err(error) = fs::remove_file(target) {
        warn!(path = %target.display(), %error, "removing a rejected unpacked file failed");
    }
}

/// Creates the destination folder. A destination that is a symbolic link is
/// rejected like a link below it, because a link planted at the folder's
/// name would send every file of the archive elsewhere.
fn create_dir(path: &Path) -> Result<(), UnpackError> {
    if fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
        return Err(UnpackError::LinkInDestination {
            path: path.to_owned(),
        });
    }
    fs::create_dir_all(path).map_err(|source| UnpackError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Creates each folder of the `/`-separated `relative` path below
/// `dest_dir`, rejecting a component that exists as a symbolic link.
fn create_dirs(dest_dir: &Path, relative: &str) -> Result<PathBuf, UnpackError> {
    let mut path = dest_dir.to_owned();
    for part in relative.split('/') {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(UnpackError::LinkInDestination { path });
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|source| UnpackError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(UnpackError::Write { path, source }),
        }
    }
    Ok(path)
}

/// Creates the folders of the entry `name` and returns the file's path.
fn create_parents(dest_dir: &Path, name: &str) -> Result<PathBuf, UnpackError> {
    match name.rsplit_once('/') {
        Some((parent, file_name)) => Ok(create_dirs(dest_dir, parent)?.join(file_name)),
        None => Ok(dest_dir.join(name)),
    }
}

/// Copies an entry into a new file, returning its size and SHA-256 in hex.
/// Reading stops one byte past the declared size, so a lying entry cannot
/// fill the disk. The zip crate 9.9 already stops at the declared size and
/// then fails the CRC-32, so this bound only guards other readers. The file
/// is removed when reading fails.
fn write_new_file(
    reader: &mut impl Read,
    entry: &Entry,
    target: &Path,
) -> Result<(u64, String), UnpackError> {
    let write_error = |source| UnpackError::Write {
        path: target.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(write_error)?;

    let copied = copy_hashing(&mut reader.take(entry.size + 1), file, target);
    let (size, sha256) = match copied {
        Ok(copied) => copied,
        Err(error) => {
            remove_unpacked(target);
            return Err(match error {
                CopyError::Read(source) => UnpackError::ReadEntry {
                    name: entry.name.clone(),
                    source,
                },
                CopyError::Write(error) => error,
            });
        }
    };
    if size > entry.size {
        remove_unpacked(target);
        return Err(UnpackError::LargerThanDeclared {
            name: entry.name.clone(),
            declared: entry.size,
        });
    }
    Ok((size, sha256))
}

enum CopyError {
    Read(io::Error),
    Write(UnpackError),
}

fn copy_hashing(
    reader: &mut impl Read,
    file: File,
    target: &Path,
) -> Result<(u64, String), CopyError> {
    let write_error = |source| {
        CopyError::Write(UnpackError::Write {
            path: target.to_owned(),
            source,
        })
    };
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write_error)?;
        size += n as u64;
    }
    out.flush().map_err(write_error)?;
    Ok((size, hex::encode(sha256.finalize())))
}
