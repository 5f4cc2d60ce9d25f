//! Unpacking a study archive into a folder, checking every entry's path and
//! SHA-256 against the archive's manifest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, info_span, warn};

use super::pack::{MANIFEST_NAME, Manifest};
use super::scan::is_safe_entry_name;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("opening archive {path} failed")]
    Open { path: PathBuf, source: io::Error },
    #[error("reading archive {path} failed; the file is not a valid zip archive")]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("archive has no {MANIFEST_NAME}; it was not packed by Ferry")]
    MissingManifest,
    #[error("{MANIFEST_NAME} in the archive is invalid")]
    InvalidManifest(#[source] serde_json::Error),
    #[error("archive entry {name:?} is absolute or contains `..`; refusing to unpack it")]
    UnsafeEntry { name: String },
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
    #[error("writing {path} failed; unpack into an empty folder")]
    Write { path: PathBuf, source: io::Error },
}

/// The files an unpack wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnpackSummary {
    pub files: usize,
    pub bytes: u64,
    pub manifest: Manifest,
}

/// Unpacks `archive` into `dest_dir`, which is created if missing.
///
/// Entries whose names are absolute or contain `..` are rejected before any
/// file is written; every other entry must be listed in the manifest, and
/// its SHA-256 and size must match it. Existing files are never
/// overwritten. A file that fails its check is removed and the unpack stops.
pub fn unpack(archive: &Path, dest_dir: &Path) -> Result<UnpackSummary, UnpackError> {
    let span = info_span!("study_unpack", archive = %archive.display());
    let _entered = span.enter();

    let file = File::open(archive).map_err(|source| UnpackError::Open {
        path: archive.to_owned(),
        source,
    })?;
    let zip_error = |source| UnpackError::Zip {
        path: archive.to_owned(),
        source,
    };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(zip_error)?;

    for index in 0..zip.len() {
        let name = match zip.name_for_index(index) {
            Some(Ok(name)) => name.into_owned(),
            Some(Err(_)) | None => format!("#{index}"),
        };
        let file_name = name.strip_suffix('/').unwrap_or(&name);
        if !is_safe_entry_name(file_name) {
            return Err(UnpackError::UnsafeEntry { name });
        }
    }

    let manifest: Manifest = {
        let mut entry = zip.by_name(MANIFEST_NAME).map_err(|error| match error {
            zip::result::ZipError::FileNotFound => UnpackError::MissingManifest,
            other => zip_error(other),
        })?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|source| zip_error(source.into()))?;
        serde_json::from_slice(&bytes).map_err(UnpackError::InvalidManifest)?
    };
    for listed in &manifest.instances {
        if !is_safe_entry_name(&listed.path) {
            return Err(UnpackError::UnsafeEntry {
                name: listed.path.clone(),
            });
        }
    }

    write_dir(dest_dir)?;
    let mut files = 0;
    let mut bytes = 0;
    let mut seen = std::collections::HashSet::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(zip_error)?;
        let name = entry.name().map_err(zip_error)?.into_owned();
        if name.ends_with('/') {
            write_dir(&dest_dir.join(name.trim_end_matches('/')))?;
            continue;
        }
        let expected = if name == MANIFEST_NAME {
            None
        } else {
            let listed = manifest
                .instances
                .iter()
                .find(|listed| listed.path == name)
                .ok_or_else(|| UnpackError::UnlistedEntry { name: name.clone() })?;
            Some(listed)
        };

        let target = dest_dir.join(&name);
        if let Some(parent) = target.parent() {
            write_dir(parent)?;
        }
        let (size, sha256) = write_new_file(&mut entry, &target)?;

        if let Some(listed) = expected {
            let mismatch = if size != listed.size {
                Some(UnpackError::SizeMismatch {
                    name: name.clone(),
                    expected: listed.size,
                    actual: size,
                })
            } else if sha256 != listed.sha256 {
                Some(UnpackError::ChecksumMismatch {
                    name: name.clone(),
                    expected: listed.sha256.clone(),
                    actual: sha256,
                })
            } else {
                None
            };
            if let Some(error) = mismatch {
                if let Err(remove_error) = fs::remove_file(&target) {
                    warn!(path = %target.display(), error = %remove_error, "removing a corrupt unpacked file failed");
                }
                return Err(error);
            }
            seen.insert(name);
            files += 1;
            bytes += size;
        }
    }

    if let Some(missing) = manifest
        .instances
        .iter()
        .find(|listed| !seen.contains(&listed.path))
    {
        return Err(UnpackError::MissingEntry {
            name: missing.path.clone(),
        });
    }

    info!(files, bytes, "archive unpacked");
    Ok(UnpackSummary {
        files,
        bytes,
        manifest,
    })
}

fn write_dir(path: &Path) -> Result<(), UnpackError> {
    fs::create_dir_all(path).map_err(|source| UnpackError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Copies `reader` into a new file, returning its size and SHA-256 in hex.
fn write_new_file(reader: &mut impl Read, target: &Path) -> Result<(u64, String), UnpackError> {
    let write_error = |source| UnpackError::Write {
        path: target.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(write_error)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(write_error)?;
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
