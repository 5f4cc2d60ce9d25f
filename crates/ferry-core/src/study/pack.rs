//! Packing a scanned study into one deterministic zip archive.
//!
//! The same files give the same bytes: entries are sorted by path, every
//! entry is stored (compression method 0, because DICOM pixel data is mostly
//! compressed already and stored data can be streamed and resumed at any
//! offset), timestamps are 1980-01-01 00:00 (the MS-DOS epoch) and
//! permissions are 0644. `MANIFEST.json` is the first entry. ZIP64 records
//! (APPNOTE 6.3.10 section 4.5.3) are written only for entries, offsets or
//! entry counts that need them.
//!
//! The archive is written here rather than by the `zip` crate so that its
//! exact size and every byte are known before any byte is produced: the
//! transfer engine asks for an upload grant with [`PackPlan::archive_size`],
//! then reads the archive through [`PackReader`], which seeks to any offset
//! so an interrupted upload resumes without a temporary copy.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, info_span};

use super::scan::open_zip;
use super::{ScanSource, StudyScan};

/// Name of the manifest entry, always the archive's first entry.
pub const MANIFEST_NAME: &str = "MANIFEST.json";

/// Value of [`Manifest::format`] for this layout.
pub const MANIFEST_FORMAT: &str = "ferry.study-manifest.v1";

/// The per-instance manifest stored as `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub series: Vec<ManifestSeries>,
    /// Every packed file, sorted by path, set-aside files included on
    /// purpose among them (without UIDs).
    pub instances: Vec<ManifestEntry>,
}

/// A series of the archive, enough to register a FHIR `ImagingStudy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub number: Option<i64>,
    pub modality: Option<String>,
    pub description: Option<String>,
    pub instance_count: u64,
}

/// One packed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Entry name in the archive, `/`-separated.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
}

/// Files to pack besides the valid instances.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Paths of set-aside files the user includes on purpose.
    pub include_set_aside: Vec<String>,
}

/// The archive's size and SHA-256 after writing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackSummary {
    pub size: u64,
    pub sha256: String,
    pub entries: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path} is not among the set-aside files of the scan; include only listed paths")]
    NotSetAside { path: String },
    #[error("{path} appears twice in the input; an archive entry name must be unique")]
    DuplicatePath { path: String },
    #[error("{path} collides with the archive's manifest name; rename the file")]
    ReservedName { path: String },
    #[error("reading {path} for packing failed")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} has {actual} bytes but had {expected} when scanned; scan the study again")]
    Changed {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("opening zip input {path} failed")]
    ZipInput {
        path: PathBuf,
        source: Box<super::ScanError>,
    },
    #[error("writing archive {path} failed")]
    Write { path: PathBuf, source: io::Error },
}

/// A planned archive: entry order, manifest and byte layout, computed from a
/// scan by reading every file once to hash it.
#[derive(Debug, Clone)]
pub struct PackPlan {
    inner: Arc<PlanInner>,
}

#[derive(Debug)]
struct PlanInner {
    entries: Vec<PlannedEntry>,
    manifest: Manifest,
    /// Headers, the manifest and the central directory, concatenated.
    meta: Vec<u8>,
    segments: Vec<Segment>,
    size: u64,
}

#[derive(Debug)]
struct PlannedEntry {
    name: String,
    size: u64,
    content: Content,
    sha256: [u8; 32],
    crc32: u32,
}

/// The source of an entry's bytes.
#[derive(Debug, Clone)]
enum Content {
    File(PathBuf),
    /// A stored zip entry: its bytes start at `data_start` in the archive.
    ZipStored {
        archive: PathBuf,
        data_start: u64,
    },
    /// A compressed zip entry, decompressed on each read.
    ZipCompressed {
        archive: PathBuf,
        index: usize,
    },
}

#[derive(Debug)]
struct Segment {
    start: u64,
    len: u64,
    piece: Piece,
}

#[derive(Debug)]
enum Piece {
    Meta(Range<usize>),
    Entry(usize),
}

impl PackPlan {
    /// Plans the archive of `scan`'s instances plus the set-aside files named
    /// in `options`, reading every file once for its SHA-256 and CRC-32.
    pub fn new(scan: &StudyScan, options: &PackOptions) -> Result<PackPlan, PackError> {
        let span = info_span!("study_pack_plan", instances = scan.instances.len());
        let _entered = span.enter();

        let mut wanted: Vec<(String, u64)> = scan
            .instances
            .iter()
            .map(|instance| (instance.path.clone(), instance.size))
            .collect();
        for path in &options.include_set_aside {
            let Some(set_aside) = scan.set_aside.iter().find(|item| &item.path == path) else {
                return Err(PackError::NotSetAside { path: path.clone() });
            };
            wanted.push((set_aside.path.clone(), set_aside.size));
        }
        wanted.sort();
        if let Some(pair) = wanted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(PackError::DuplicatePath {
                path: pair[0].0.clone(),
            });
        }
        if let Some((path, _)) = wanted.iter().find(|(path, _)| path == MANIFEST_NAME) {
            return Err(PackError::ReservedName { path: path.clone() });
        }

        let contents = locate_contents(&scan.source, &wanted)?;
        let entries = hash_all(wanted, contents)?;
        let manifest = build_manifest(scan, &entries);
        let plan = layout(entries, manifest);
        info!(
            size = plan.size,
            entries = plan.entries.len(),
            "archive planned"
        );
        Ok(PackPlan {
            inner: Arc::new(plan),
        })
    }

    /// Exact size of the archive in bytes.
    pub fn archive_size(&self) -> u64 {
        self.inner.size
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Returns a reader over the archive's bytes, positioned at offset 0.
    /// The reader also implements `Seek`.
    pub fn reader(&self) -> PackReader {
        PackReader {
            plan: self.clone(),
            position: 0,
            open: None,
        }
    }

    /// Writes the archive to `dest` through a `.partial` file beside it,
    /// renamed when complete.
    pub fn write_to(&self, dest: &Path) -> Result<PackSummary, PackError> {
        let partial = dest.with_extension("partial");
        let write_error = |source| PackError::Write {
            path: dest.to_owned(),
            source,
        };

        let mut out =
            io::BufWriter::with_capacity(1 << 20, File::create(&partial).map_err(write_error)?);
        let mut reader = self.reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(write_error)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(write_error)?;
            written += n as u64;
        }
        let file = out
            .into_inner()
            .map_err(|error| write_error(error.into_error()))?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        std::fs::rename(&partial, dest).map_err(write_error)?;

        debug_assert_eq!(written, self.archive_size());
        Ok(PackSummary {
            size: written,
            sha256: hex::encode(hasher.finalize()),
            entries: self.inner.entries.len() + 1,
        })
    }
}

/// Packs the scan's instances into one archive at `dest`.
pub fn pack_to_file(scan: &StudyScan, dest: &Path) -> Result<PackSummary, PackError> {
    PackPlan::new(scan, &PackOptions::default())?.write_to(dest)
}

fn locate_contents(
    source: &ScanSource,
    wanted: &[(String, u64)],
) -> Result<Vec<Content>, PackError> {
    match source {
        ScanSource::Folder { path: root } => Ok(wanted
            .iter()
            .map(|(name, _)| Content::File(root.join(name)))
            .collect()),
        ScanSource::Zip { path: archive_path } => {
            let mut archive = open_zip(archive_path).map_err(|source| PackError::ZipInput {
                path: archive_path.clone(),
                source: Box::new(source),
            })?;
            let read_error = |source: zip::result::ZipError| PackError::Read {
                path: archive_path.clone(),
                source: io::Error::other(source),
            };
            let mut contents = Vec::with_capacity(wanted.len());
            for (name, _) in wanted {
                let index = archive
                    .index_for_name(name)
                    .ok_or_else(|| PackError::Read {
                        path: archive_path.join(name),
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "entry not found in zip input",
                        ),
                    })?;
                let entry = archive.by_index_raw(index).map_err(read_error)?;
                let stored =
                    entry.compression() == zip::CompressionMethod::Stored && !entry.encrypted();
                contents.push(match (stored, entry.data_start()) {
                    (true, Some(data_start)) => Content::ZipStored {
                        archive: archive_path.clone(),
                        data_start,
                    },
                    _ => Content::ZipCompressed {
                        archive: archive_path.clone(),
                        index,
                    },
                });
            }
            Ok(contents)
        }
    }
}

/// Opens an entry's bytes at `offset`, checking the size against `size`.
fn open_content(
    content: &Content,
    name: &str,
    size: u64,
    offset: u64,
) -> io::Result<Box<dyn Read + Send>> {
    match content {
        Content::File(path) => {
            let mut file = File::open(path)?;
            let actual = file.metadata()?.len();
            if actual != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{name} has {actual} bytes but had {size} when scanned; scan the study again"
                    ),
                ));
            }
            file.seek(SeekFrom::Start(offset))?;
            Ok(Box::new(BufReader::with_capacity(256 * 1024, file)))
        }
        Content::ZipStored {
            archive,
            data_start,
        } => {
            let mut file = File::open(archive)?;
            file.seek(SeekFrom::Start(data_start + offset))?;
            Ok(Box::new(
                BufReader::with_capacity(256 * 1024, file).take(size - offset),
            ))
        }
        Content::ZipCompressed { archive, index } => {
            // TODO: a compressed zip input entry is decompressed into memory
            // on each open; a streaming decompressor that skips `offset`
            // bytes would bound memory for large multi-frame instances.
            let mut zip = open_zip(archive).map_err(io::Error::other)?;
            let mut entry = zip.by_index(*index).map_err(io::Error::other)?;
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes)?;
            let mut cursor = io::Cursor::new(bytes);
            cursor.set_position(offset);
            Ok(Box::new(cursor))
        }
    }
}

/// SHA-256 and CRC-32 of one entry.
type EntryDigest = ([u8; 32], u32);

/// Reads every entry once, in parallel, for its SHA-256 and CRC-32.
fn hash_all(
    wanted: Vec<(String, u64)>,
    contents: Vec<Content>,
) -> Result<Vec<PlannedEntry>, PackError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let digests: Mutex<Vec<Option<EntryDigest>>> = Mutex::new(vec![None; wanted.len()]);

    std::thread::scope(|scope| -> Result<(), PackError> {
        let workers: Vec<_> = (0..threads.min(wanted.len().max(1)))
            .map(|_| {
                scope.spawn(|| -> Result<(), PackError> {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some((name, size)) = wanted.get(index) else {
                            return Ok(());
                        };
                        let digest = hash_entry(&contents[index], name, *size, &mut buf)?;
                        digests
                            .lock()
                            .expect("no worker panics while holding the lock")[index] =
                            Some(digest);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("hash worker panicked")?;
        }
        Ok(())
    })?;

    let digests = digests
        .into_inner()
        .expect("no worker panics while holding the lock");
    Ok(wanted
        .into_iter()
        .zip(contents)
        .zip(digests)
        .map(|(((name, size), content), digest)| {
            let (sha256, crc32) = digest.expect("every entry was hashed");
            PlannedEntry {
                name,
                size,
                content,
                sha256,
                crc32,
            }
        })
        .collect())
}

fn hash_entry(
    content: &Content,
    name: &str,
    size: u64,
    buf: &mut [u8],
) -> Result<EntryDigest, PackError> {
    let read_error = |source| PackError::Read {
        path: PathBuf::from(name),
        source,
    };
    let mut reader = open_content(content, name, size, 0).map_err(read_error)?;
    let mut sha256 = Sha256::new();
    let mut crc32 = crc32fast::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = reader.read(buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        crc32.update(&buf[..n]);
        total += n as u64;
    }
    if total != size {
        return Err(PackError::Changed {
            path: name.to_owned(),
            expected: size,
            actual: total,
        });
    }
    Ok((sha256.finalize().into(), crc32.finalize()))
}

fn build_manifest(scan: &StudyScan, entries: &[PlannedEntry]) -> Manifest {
    let series = scan
        .studies
        .iter()
        .flat_map(|study| {
            study.series.iter().map(|series| ManifestSeries {
                study_instance_uid: study.study_instance_uid.clone(),
                series_instance_uid: series.uid.clone(),
                number: series.number,
                modality: series.modality.clone(),
                description: series.description.clone(),
                instance_count: series.instance_count,
            })
        })
        .collect();

    let instances = entries
        .iter()
        .map(|entry| {
            let instance = scan
                .instances
                .iter()
                .find(|instance| instance.path == entry.name);
            ManifestEntry {
                path: entry.name.clone(),
                size: entry.size,
                sha256: hex::encode(entry.sha256),
                sop_instance_uid: instance.map(|i| i.sop_instance_uid.clone()),
                sop_class_uid: instance.map(|i| i.sop_class_uid.clone()),
                study_instance_uid: instance.map(|i| i.study_instance_uid.clone()),
                series_instance_uid: instance.map(|i| i.series_instance_uid.clone()),
            }
        })
        .collect();

    Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        series,
        instances,
    }
}

// Zip record constants (APPNOTE 6.3.10 section 4.3).
const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY_SIGNATURE: u32 = 0x0605_4b50;
const ZIP64_END_OF_CENTRAL_DIRECTORY_SIGNATURE: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// General purpose bit 11: the entry name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// 1980-01-01 in MS-DOS date format: (year - 1980) << 9 | month << 5 | day.
const DOS_DATE_1980_01_01: u16 = (1 << 5) | 1;
const DOS_TIME_MIDNIGHT: u16 = 0;
/// Version 1.0 suffices for stored entries; 4.5 is the first with ZIP64.
const VERSION_STORED: u16 = 10;
const VERSION_ZIP64: u16 = 45;
/// Made by: Unix (3) in the high byte, so readers honour the mode bits.
const VERSION_MADE_BY: u16 = (3 << 8) | VERSION_ZIP64;
/// Regular file, permissions 0644, in the high 16 bits of the external attributes.
const EXTERNAL_ATTRIBUTES: u32 = 0o100_644 << 16;
const U32_MARKER: u64 = 0xFFFF_FFFF;
const U16_MARKER: u64 = 0xFFFF;

/// The fields of one entry that its zip headers record.
struct LayoutEntry<'a> {
    name: &'a str,
    size: u64,
    crc32: u32,
}

fn layout(entries: Vec<PlannedEntry>, manifest: Manifest) -> PlanInner {
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).expect("the manifest serializes to JSON");
    let manifest_crc = crc32fast::hash(&manifest_bytes);

    let mut meta = Vec::new();
    let mut segments = Vec::new();
    let mut central = Vec::new();
    let mut offset = 0u64;

    let all = std::iter::once(LayoutEntry {
        name: MANIFEST_NAME,
        size: manifest_bytes.len() as u64,
        crc32: manifest_crc,
    })
    .chain(entries.iter().map(|entry| LayoutEntry {
        name: &entry.name,
        size: entry.size,
        crc32: entry.crc32,
    }));

    let mut count = 0u64;
    for (position, entry) in all.enumerate() {
        let local_offset = offset;
        let local = local_header(&entry);
        push_meta(&mut meta, &mut segments, &mut offset, &local);

        if position == 0 {
            push_meta(&mut meta, &mut segments, &mut offset, &manifest_bytes);
        } else {
            segments.push(Segment {
                start: offset,
                len: entry.size,
                piece: Piece::Entry(position - 1),
            });
            offset += entry.size;
        }

        central.extend_from_slice(&central_header(&entry, local_offset));
        count += 1;
    }

    let central_start = offset;
    let central_size = central.len() as u64;
    push_meta(&mut meta, &mut segments, &mut offset, &central);
    let end = end_records(count, central_start, central_size, offset);
    push_meta(&mut meta, &mut segments, &mut offset, &end);

    PlanInner {
        entries,
        manifest,
        meta,
        segments,
        size: offset,
    }
}

/// Appends `bytes` to the in-memory part of the archive as the next segment.
fn push_meta(meta: &mut Vec<u8>, segments: &mut Vec<Segment>, offset: &mut u64, bytes: &[u8]) {
    let range = meta.len()..meta.len() + bytes.len();
    meta.extend_from_slice(bytes);
    segments.push(Segment {
        start: *offset,
        len: bytes.len() as u64,
        piece: Piece::Meta(range),
    });
    *offset += bytes.len() as u64;
}

fn needs_zip64_size(size: u64) -> bool {
    size >= U32_MARKER
}

fn local_header(entry: &LayoutEntry<'_>) -> Vec<u8> {
    let zip64 = needs_zip64_size(entry.size);
    let mut extra = Vec::new();
    if zip64 {
        extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
        extra.extend_from_slice(&16u16.to_le_bytes());
        extra.extend_from_slice(&entry.size.to_le_bytes());
        extra.extend_from_slice(&entry.size.to_le_bytes());
    }
    let size32 = if zip64 {
        U32_MARKER as u32
    } else {
        entry.size as u32
    };

    let mut out = Vec::with_capacity(30 + entry.name.len() + extra.len());
    out.extend_from_slice(&LOCAL_HEADER_SIGNATURE.to_le_bytes());
    out.extend_from_slice(&(if zip64 { VERSION_ZIP64 } else { VERSION_STORED }).to_le_bytes());
    out.extend_from_slice(&FLAG_UTF8.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // compression method: stored
    out.extend_from_slice(&DOS_TIME_MIDNIGHT.to_le_bytes());
    out.extend_from_slice(&DOS_DATE_1980_01_01.to_le_bytes());
    out.extend_from_slice(&entry.crc32.to_le_bytes());
    out.extend_from_slice(&size32.to_le_bytes()); // compressed size
    out.extend_from_slice(&size32.to_le_bytes()); // uncompressed size
    out.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(&extra);
    out
}

fn central_header(entry: &LayoutEntry<'_>, local_offset: u64) -> Vec<u8> {
    let zip64_size = needs_zip64_size(entry.size);
    let zip64_offset = local_offset >= U32_MARKER;
    // The ZIP64 extra field lists only the overflowing values, in this order
    // (APPNOTE section 4.5.3).
    let mut extra = Vec::new();
    if zip64_size {
        extra.extend_from_slice(&entry.size.to_le_bytes());
        extra.extend_from_slice(&entry.size.to_le_bytes());
    }
    if zip64_offset {
        extra.extend_from_slice(&local_offset.to_le_bytes());
    }
    if !extra.is_empty() {
        let mut header = Vec::with_capacity(4 + extra.len());
        header.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
        header.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        header.extend_from_slice(&extra);
        extra = header;
    }
    let size32 = if zip64_size {
        U32_MARKER as u32
    } else {
        entry.size as u32
    };
    let offset32 = if zip64_offset {
        U32_MARKER as u32
    } else {
        local_offset as u32
    };
    let version_needed = if zip64_size || zip64_offset {
        VERSION_ZIP64
    } else {
        VERSION_STORED
    };

    let mut out = Vec::with_capacity(46 + entry.name.len() + extra.len());
    out.extend_from_slice(&CENTRAL_HEADER_SIGNATURE.to_le_bytes());
    out.extend_from_slice(&VERSION_MADE_BY.to_le_bytes());
    out.extend_from_slice(&version_needed.to_le_bytes());
    out.extend_from_slice(&FLAG_UTF8.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // compression method: stored
    out.extend_from_slice(&DOS_TIME_MIDNIGHT.to_le_bytes());
    out.extend_from_slice(&DOS_DATE_1980_01_01.to_le_bytes());
    out.extend_from_slice(&entry.crc32.to_le_bytes());
    out.extend_from_slice(&size32.to_le_bytes());
    out.extend_from_slice(&size32.to_le_bytes());
    out.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out.extend_from_slice(&0u16.to_le_bytes()); // disk number start
    out.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    out.extend_from_slice(&EXTERNAL_ATTRIBUTES.to_le_bytes());
    out.extend_from_slice(&offset32.to_le_bytes());
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(&extra);
    out
}

/// Encodes the end of central directory record, preceded by the ZIP64 end
/// record and its locator when a count, size or offset overflows.
fn end_records(count: u64, central_start: u64, central_size: u64, end_offset: u64) -> Vec<u8> {
    let zip64 = count >= U16_MARKER || central_start >= U32_MARKER || central_size >= U32_MARKER;
    let mut out = Vec::new();

    if zip64 {
        out.extend_from_slice(&ZIP64_END_OF_CENTRAL_DIRECTORY_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes()); // size of the rest of this record
        out.extend_from_slice(&VERSION_MADE_BY.to_le_bytes());
        out.extend_from_slice(&VERSION_ZIP64.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // this disk
        out.extend_from_slice(&0u32.to_le_bytes()); // disk with the central directory
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&central_size.to_le_bytes());
        out.extend_from_slice(&central_start.to_le_bytes());

        out.extend_from_slice(&ZIP64_LOCATOR_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // disk with the ZIP64 end record
        out.extend_from_slice(&end_offset.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // total disks
    }

    let count16 = count.min(U16_MARKER) as u16;
    let size32 = central_size.min(U32_MARKER) as u32;
    let start32 = central_start.min(U32_MARKER) as u32;
    out.extend_from_slice(&END_OF_CENTRAL_DIRECTORY_SIGNATURE.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // this disk
    out.extend_from_slice(&0u16.to_le_bytes()); // disk with the central directory
    out.extend_from_slice(&count16.to_le_bytes());
    out.extend_from_slice(&count16.to_le_bytes());
    out.extend_from_slice(&size32.to_le_bytes());
    out.extend_from_slice(&start32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

/// A reader over a planned archive. Reading an instance from its first byte
/// to its last checks its SHA-256 against the manifest, so a file changed
/// after planning fails the read with [`io::ErrorKind::InvalidData`].
pub struct PackReader {
    plan: PackPlan,
    position: u64,
    open: Option<OpenEntry>,
}

struct OpenEntry {
    entry: usize,
    reader: Box<dyn Read + Send>,
    /// Offset within the entry of the next byte `reader` returns.
    offset: u64,
    /// Present when reading started at the entry's first byte.
    sha256: Option<Sha256>,
}

impl PackReader {
    fn read_entry(&mut self, entry_index: usize, within: u64, buf: &mut [u8]) -> io::Result<usize> {
        let inner = Arc::clone(&self.plan.inner);
        let entry = &inner.entries[entry_index];
        let reusable = self
            .open
            .as_ref()
            .is_some_and(|open| open.entry == entry_index && open.offset == within);
        if !reusable {
            debug!(entry = %entry.name, offset = within, "opening archive entry");
            self.open = Some(OpenEntry {
                entry: entry_index,
                reader: open_content(&entry.content, &entry.name, entry.size, within)?,
                offset: within,
                sha256: (within == 0).then(Sha256::new),
            });
        }
        let open = self.open.as_mut().expect("an entry was just opened");

        let n = open.reader.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended before its {} bytes; scan the study again",
                    entry.name, entry.size
                ),
            ));
        }
        if let Some(sha256) = open.sha256.as_mut() {
            sha256.update(&buf[..n]);
        }
        open.offset += n as u64;

        if open.offset == entry.size {
            let finished = self.open.take().expect("the entry is open");
            if let Some(sha256) = finished.sha256 {
                let actual: [u8; 32] = sha256.finalize().into();
                if actual != entry.sha256 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} changed after it was hashed (SHA-256 {} instead of {}); scan the study again",
                            entry.name,
                            hex::encode(actual),
                            hex::encode(entry.sha256)
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }
}

impl Read for PackReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = Arc::clone(&self.plan.inner);
        if buf.is_empty() || self.position >= inner.size {
            return Ok(0);
        }

        let index = inner
            .segments
            .partition_point(|segment| segment.start + segment.len <= self.position);
        let segment = &inner.segments[index];
        let within = self.position - segment.start;
        let wanted = (segment.len - within).min(buf.len() as u64) as usize;

        let n = match &segment.piece {
            Piece::Meta(range) => {
                let start = range.start + within as usize;
                buf[..wanted].copy_from_slice(&inner.meta[start..start + wanted]);
                wanted
            }
            Piece::Entry(entry) => self.read_entry(*entry, within, &mut buf[..wanted])?,
        };
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for PackReader {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let size = self.plan.inner.size;
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let Some(position) = position else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the archive",
            ));
        };
        self.position = position;
        Ok(position)
    }
}
