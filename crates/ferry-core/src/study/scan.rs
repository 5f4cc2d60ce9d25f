//! Walking an input (folder, disc or zip archive) and classifying its files
//! in parallel, then grouping instances into studies and series.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::{debug, info, info_span, warn};

use super::validate::{Classified, Header, SetAsideReason, classify};
use super::{Duplicate, Instance, Patient, ScanSource, Series, SetAside, Study, StudyScan};

/// Failure to read the input as a whole. Problems with single files are not
/// errors: those files are set aside with a reason.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scan input {path} was not found or cannot be read")]
    Input { path: PathBuf, source: io::Error },
    #[error(
        "scan input {path} is neither a folder nor a zip archive; pass a folder, a mounted disc or a .zip file"
    )]
    UnsupportedInput { path: PathBuf },
    #[error("listing folder {path} failed")]
    ListFolder { path: PathBuf, source: io::Error },
    #[error("reading zip archive {path} failed")]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
}

/// A file to classify: its path relative to the input and where to read it.
struct Candidate {
    relative: Result<String, SetAsideReason>,
    location: Location,
}

enum Location {
    File(PathBuf),
    ZipEntry(usize),
}

/// Scans a folder, a mounted disc or a zip archive with one worker thread
/// per available core.
pub fn scan(path: &Path) -> Result<StudyScan, ScanError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    scan_with_threads(path, threads)
}

/// Scans like [`scan`] with `threads` worker threads (at least one).
pub fn scan_with_threads(path: &Path, threads: usize) -> Result<StudyScan, ScanError> {
    let span = info_span!("study_scan", path = %path.display());
    let _entered = span.enter();

    let metadata = std::fs::metadata(path).map_err(|source| ScanError::Input {
        path: path.to_owned(),
        source,
    })?;
    let (source, candidates) = if metadata.is_dir() {
        let mut candidates = Vec::new();
        walk_folder(path, Path::new(""), &mut candidates)?;
        (
            ScanSource::Folder {
                path: path.to_owned(),
            },
            candidates,
        )
    } else if is_zip(path)? {
        (
            ScanSource::Zip {
                path: path.to_owned(),
            },
            list_zip(path)?,
        )
    } else {
        return Err(ScanError::UnsupportedInput {
            path: path.to_owned(),
        });
    };

    let outcomes = classify_all(&source, &candidates, threads.max(1))?;
    let scan = assemble(source, candidates, outcomes);
    info!(
        instances = scan.instances.len(),
        studies = scan.studies.len(),
        set_aside = scan.set_aside.len(),
        duplicates = scan.duplicates.len(),
        "scan finished"
    );
    Ok(scan)
}

fn is_zip(path: &Path) -> Result<bool, ScanError> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|source| ScanError::Input {
        path: path.to_owned(),
        source,
    })?;
    let is_zip = io::Read::read_exact(&mut file, &mut magic).is_ok()
        && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06");
    Ok(is_zip)
}

/// Lists regular files below `root` recursively. Symbolic links to files are
/// followed; symbolic links to folders are not, so a link cycle cannot loop.
fn walk_folder(root: &Path, relative: &Path, out: &mut Vec<Candidate>) -> Result<(), ScanError> {
    let folder = root.join(relative);
    let entries = std::fs::read_dir(&folder).map_err(|source| ScanError::ListFolder {
        path: folder.clone(),
        source,
    })?;

    for entry in entries {
        let entry = entry.map_err(|source| ScanError::ListFolder {
            path: folder.clone(),
            source,
        })?;
        let path = entry.path();
        let child = relative.join(entry.file_name());
        let Ok(metadata) = std::fs::metadata(&path) else {
            warn!(path = %path.display(), "skipping an entry whose metadata cannot be read");
            continue;
        };

        if metadata.is_dir() {
            if entry.file_type().is_ok_and(|kind| kind.is_symlink()) {
                debug!(path = %path.display(), "not following a symbolic link to a folder");
                continue;
            }
            walk_folder(root, &child, out)?;
        } else if metadata.is_file() {
            out.push(Candidate {
                relative: slash_path(&child),
                location: Location::File(path),
            });
        }
    }
    Ok(())
}

/// Joins path components with `/`; names must be UTF-8 to travel in a zip.
fn slash_path(relative: &Path) -> Result<String, SetAsideReason> {
    let mut parts = Vec::new();
    for component in relative.components() {
        let part = component
            .as_os_str()
            .to_str()
            .ok_or_else(|| SetAsideReason::InvalidPath {
                detail: format!("{} is not valid UTF-8", relative.display()),
            })?;
        parts.push(part);
    }
    Ok(parts.join("/"))
}

fn list_zip(path: &Path) -> Result<Vec<Candidate>, ScanError> {
    let archive = open_zip(path)?;
    let mut candidates = Vec::new();
    for index in 0..archive.len() {
        let relative = match archive.name_for_index(index) {
            None => continue,
            Some(Ok(name)) if name.ends_with('/') => continue,
            Some(Ok(name)) if is_safe_entry_name(&name) => Ok(name.into_owned()),
            Some(Ok(name)) => Err(SetAsideReason::InvalidPath {
                detail: format!("zip entry {name} is absolute or contains `..`"),
            }),
            Some(Err(error)) => Err(SetAsideReason::InvalidPath {
                detail: format!("zip entry #{index} has an unreadable name: {error}"),
            }),
        };
        candidates.push(Candidate {
            relative,
            location: Location::ZipEntry(index),
        });
    }
    Ok(candidates)
}

pub(crate) fn open_zip(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, ScanError> {
    let file = File::open(path).map_err(|source| ScanError::Input {
        path: path.to_owned(),
        source,
    })?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|source| ScanError::Zip {
        path: path.to_owned(),
        source,
    })
}

/// True for a relative `/`-separated name without `.`, `..`, empty, drive
/// or backslash components.
pub(crate) fn is_safe_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && !part.contains(['\\', ':', '\0'])
        })
}

/// The classification of every candidate plus its size, in candidate order.
type Outcome = (u64, Classified);

fn classify_all(
    source: &ScanSource,
    candidates: &[Candidate],
    threads: usize,
) -> Result<Vec<Outcome>, ScanError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> =
        Mutex::new((0..candidates.len()).map(|_| None).collect());
    let threads = threads.min(candidates.len().max(1));

    std::thread::scope(|scope| -> Result<(), ScanError> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), ScanError> {
                    let mut archive = match source {
                        ScanSource::Zip { path } => Some(open_zip(path)?),
                        ScanSource::Folder { .. } => None,
                    };
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(candidate) = candidates.get(index) else {
                            return Ok(());
                        };
                        let outcome = classify_candidate(candidate, archive.as_mut());
                        results
                            .lock()
                            .expect("no worker panics while holding the lock")[index] =
                            Some(outcome);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("scan worker panicked")?;
        }
        Ok(())
    })?;

    Ok(results
        .into_inner()
        .expect("no worker panics while holding the lock")
        .into_iter()
        .map(|outcome| outcome.expect("every candidate was classified"))
        .collect())
}

fn classify_candidate(
    candidate: &Candidate,
    archive: Option<&mut zip::ZipArchive<BufReader<File>>>,
) -> Outcome {
    let name = match &candidate.relative {
        Ok(name) => name.as_str(),
        Err(reason) => return (0, Classified::SetAside(reason.clone())),
    };
    let unreadable = |error: &dyn std::fmt::Display| {
        Classified::SetAside(SetAsideReason::Unreadable {
            detail: error.to_string(),
        })
    };

    match (&candidate.location, archive) {
        (Location::File(path), _) => {
            let file = match File::open(path) {
                Ok(file) => file,
                Err(error) => return (0, unreadable(&error)),
            };
            let size = match file.metadata() {
                Ok(metadata) => metadata.len(),
                Err(error) => return (0, unreadable(&error)),
            };
            (size, classify(file, size, name))
        }
        (Location::ZipEntry(index), Some(archive)) => match archive.by_index(*index) {
            Ok(entry) => {
                let size = entry.size();
                (size, classify(entry, size, name))
            }
            Err(error) => (0, unreadable(&error)),
        },
        (Location::ZipEntry(_), None) => unreachable!("zip entries come with an open archive"),
    }
}

/// Per-study accumulator keyed by series UID.
struct StudyRow {
    study: Study,
    series: BTreeMap<String, Series>,
}

fn assemble(source: ScanSource, candidates: Vec<Candidate>, outcomes: Vec<Outcome>) -> StudyScan {
    let mut instances = Vec::new();
    let mut set_aside = Vec::new();
    let mut directories = Vec::new();
    let mut rows: BTreeMap<(String, Patient), StudyRow> = BTreeMap::new();

    for (candidate, (size, classified)) in candidates.into_iter().zip(outcomes) {
        let path = match candidate.relative {
            Ok(path) => path,
            Err(_) => match &candidate.location {
                Location::File(path) => path.to_string_lossy().into_owned(),
                Location::ZipEntry(index) => format!("zip entry #{index}"),
            },
        };
        match classified {
            Classified::Directory => directories.push(path),
            Classified::SetAside(reason) => set_aside.push(SetAside {
                message: reason.to_string(),
                path,
                size,
                reason,
            }),
            Classified::Instance(header) => {
                add_to_rows(&mut rows, &header, size);
                instances.push(instance_of(path, size, *header));
            }
        }
    }

    instances.sort_by(|a, b| a.path.cmp(&b.path));
    set_aside.sort_by(|a, b| a.path.cmp(&b.path));
    directories.sort();

    let mut studies: Vec<Study> = rows
        .into_values()
        .map(|row| {
            let mut series: Vec<Series> = row.series.into_values().collect();
            series.sort_by(|a, b| (a.number, &a.uid).cmp(&(b.number, &b.uid)));
            Study {
                series,
                ..row.study
            }
        })
        .collect();
    studies.sort_by(|a, b| {
        (&a.study_date, &a.study_instance_uid, &a.patient).cmp(&(
            &b.study_date,
            &b.study_instance_uid,
            &b.patient,
        ))
    });

    StudyScan {
        source,
        studies,
        set_aside,
        duplicates: find_duplicates(&instances),
        directories,
        instances,
    }
}

fn add_to_rows(rows: &mut BTreeMap<(String, Patient), StudyRow>, header: &Header, size: u64) {
    let key = (header.study_instance_uid.clone(), header.patient.clone());
    let row = rows.entry(key).or_insert_with(|| StudyRow {
        study: Study {
            patient: header.patient.clone(),
            study_date: header.study_date.clone(),
            description: header.study_description.clone(),
            accession: header.accession.clone(),
            study_instance_uid: header.study_instance_uid.clone(),
            series: Vec::new(),
            instance_count: 0,
            bytes: 0,
        },
        series: BTreeMap::new(),
    });
    row.study.instance_count += 1;
    row.study.bytes += size;

    let series = row
        .series
        .entry(header.series_instance_uid.clone())
        .or_insert_with(|| Series {
            uid: header.series_instance_uid.clone(),
            number: header.series_number,
            modality: header.modality.clone(),
            description: header.series_description.clone(),
            instance_count: 0,
            bytes: 0,
        });
    series.instance_count += 1;
    series.bytes += size;
}

fn instance_of(path: String, size: u64, header: Header) -> Instance {
    Instance {
        path,
        size,
        sop_instance_uid: header.sop_instance_uid,
        sop_class_uid: header.sop_class_uid,
        study_instance_uid: header.study_instance_uid,
        series_instance_uid: header.series_instance_uid,
        transfer_syntax_uid: header.transfer_syntax_uid,
        instance_number: header.instance_number,
    }
}

/// Lists SOP Instance UIDs carried by more than one instance, sorted by UID.
pub(crate) fn find_duplicates(instances: &[Instance]) -> Vec<Duplicate> {
    let mut paths_by_uid: HashMap<&str, Vec<String>> = HashMap::new();
    for instance in instances {
        paths_by_uid
            .entry(&instance.sop_instance_uid)
            .or_default()
            .push(instance.path.clone());
    }

    let mut duplicates: Vec<Duplicate> = paths_by_uid
        .into_iter()
        .filter(|(_, paths)| paths.len() > 1)
        .map(|(uid, mut paths)| {
            paths.sort();
            Duplicate {
                sop_instance_uid: uid.to_owned(),
                paths,
            }
        })
        .collect();
    duplicates.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    duplicates
}
