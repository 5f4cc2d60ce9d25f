//! SHA-256 of a download computed while its ranges arrive.
//!
//! Ranges complete out of order, but SHA-256 takes bytes in order. A
//! [`RangeDigest`] keeps the part numbers of completed ranges and, on a
//! blocking thread, hashes the contiguous prefix of completed ranges by
//! reading them back from the temporary file, where they are still in the
//! page cache. A completed range waiting for an earlier one uses no
//! memory, so memory stays at one read buffer whatever the range count.
//! The digest therefore covers the bytes as they are on disk, the same as a
//! second pass over the finished file, and ranges found on disk from an
//! earlier run are hashed like any other.
//!
//! A range may be reported complete only when its bytes are written and
//! will not be written again in this run. A range whose attempt failed
//! midway is rewritten by the retry, so it is reported after the retry.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::journal::PartRecord;

/// Read buffer of the hashing thread.
const READ_BUFFER: usize = 1024 * 1024;

/// Size and SHA-256 (lowercase hex) of the bytes hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileDigest {
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

/// Failure of the hashing thread.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RangeDigestError {
    #[error("reading the {size} bytes at offset {offset} back from the temporary file")]
    Read {
        offset: u64,
        size: u64,
        #[source]
        source: io::Error,
    },
    #[error("range {part_number} was never reported complete, so the SHA-256 does not cover it")]
    Missing { part_number: u32 },
    #[error("the hashing thread stopped unexpectedly: {0}")]
    Task(String),
}

/// A range to hash, in file order.
#[derive(Debug, Clone, Copy)]
struct Span {
    part_number: u32,
    offset: u64,
    size: u64,
}

/// The SHA-256 of a file's ranges, fed with completed ranges in any order
/// and hashed in file order on a blocking thread.
pub(crate) struct RangeDigest {
    completed: mpsc::Sender<u32>,
    thread: tokio::task::JoinHandle<Result<FileDigest, RangeDigestError>>,
}

impl RangeDigest {
    /// Starts the hashing thread over `ranges` of `file`. The ranges are
    /// hashed in the order of their offsets, and together they should cover
    /// the file from offset 0 without gaps, as the ranges a download plans
    /// do. Must be called within a Tokio runtime.
    pub(crate) fn start(file: Arc<File>, ranges: &[PartRecord]) -> Self {
        let mut spans: Vec<Span> =
            ranges.iter().map(|range| Span { part_number: range.part_number, offset: range.offset, size: range.size }).collect();
        spans.sort_by_key(|span| span.offset);

        let (completed, receiver) = mpsc::channel();
        let thread = tokio::task::spawn_blocking(move || hash_in_order(&file, &spans, &receiver));
        Self { completed, thread }
    }

    /// Records that range `part_number` is written and will not be written
    /// again. Reporting a range twice has no effect.
    pub(crate) fn complete(&self, part_number: u32) {
        // A send fails only once the thread has dropped the receiver, after a
        // read error or with every range hashed. `finish` returns either one.
        let _ = self.completed.send(part_number);
    }

    /// Waits until every range is hashed and returns the digest. Fails with
    /// [`RangeDigestError::Missing`] when a range was never reported.
    pub(crate) async fn finish(self) -> Result<FileDigest, RangeDigestError> {
        drop(self.completed);
        self.thread.await.map_err(|error| RangeDigestError::Task(error.to_string()))?
    }
}

/// Hashes `spans` in order, each once its part number arrives on `completed`.
/// Completions for later ranges wait in a set until the earlier ones come.
fn hash_in_order(file: &File, spans: &[Span], completed: &mpsc::Receiver<u32>) -> Result<FileDigest, RangeDigestError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; READ_BUFFER];
    let mut waiting = BTreeSet::new();
    let mut size = 0;

    for span in spans {
        while !waiting.remove(&span.part_number) {
            let Ok(part_number) = completed.recv() else {
                return Err(RangeDigestError::Missing { part_number: span.part_number });
            };
            waiting.insert(part_number);
        }
        size += hash_span(file, span, &mut hasher, &mut buffer)?;
    }
    Ok(FileDigest { size, sha256: hex::encode(hasher.finalize()) })
}

/// Feeds the bytes of `span` to `hasher` and returns how many were read,
/// fewer than the span's size when the file ends inside it.
fn hash_span(file: &File, span: &Span, hasher: &mut Sha256, buffer: &mut [u8]) -> Result<u64, RangeDigestError> {
    let mut done = 0;
    while done < span.size {
        let want = buffer.len().min(usize::try_from(span.size - done).unwrap_or(usize::MAX));
        let read = read_at(file, &mut buffer[..want], span.offset + done).map_err(|source| RangeDigestError::Read {
            offset: span.offset,
            size: span.size,
            source,
        })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        done += read as u64;
    }
    Ok(done)
}

/// Reads at `offset` without moving a shared cursor, so the file can be
/// written by other threads meanwhile. Returns 0 at the end of the file.
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        #[cfg(unix)]
        let result = std::os::unix::fs::FileExt::read_at(file, buffer, offset);
        #[cfg(windows)]
        let result = std::os::windows::fs::FileExt::seek_read(file, buffer, offset);
        match result {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::PartState;

    fn ranges(total: u64, range_size: u64) -> Vec<PartRecord> {
        (0..total.div_ceil(range_size))
            .map(|index| PartRecord {
                part_number: u32::try_from(index + 1).unwrap(),
                offset: index * range_size,
                size: range_size.min(total - index * range_size),
                sha256: None,
                state: PartState::Pending,
                etag: None,
            })
            .collect()
    }

    /// Writes a file of `len` bytes that differ from range to range, so
    /// hashing one range in place of another changes the digest.
    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|index| (index * 7 + index / 1000) as u8).collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        (file, bytes)
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn out_of_order_completions_hash_in_file_order() {
        let (file, bytes) = file_of(2_500_000);
        let ranges = ranges(bytes.len() as u64, 300_000);
        let digest = RangeDigest::start(Arc::new(file.reopen().unwrap()), &ranges);

        for part_number in [3, 1, 9, 2, 5, 4, 8, 6, 7] {
            digest.complete(part_number);
        }
        let result = digest.finish().await.unwrap();

        assert_eq!(result.size, bytes.len() as u64);
        assert_eq!(result.sha256, sha256_hex(&bytes));
    }

    #[tokio::test]
    async fn resumed_prefix_and_new_ranges_are_hashed_once() {
        let (file, bytes) = file_of(3 * READ_BUFFER + 17);
        let ranges = ranges(bytes.len() as u64, READ_BUFFER as u64);
        let digest = RangeDigest::start(Arc::new(file.reopen().unwrap()), &ranges);

        // Ranges 1 and 3 were confirmed by an earlier run. Ranges 4 and 2
        // arrive now, and a second report of range 1 changes nothing.
        digest.complete(1);
        digest.complete(3);
        digest.complete(4);
        digest.complete(1);
        digest.complete(2);
        let result = digest.finish().await.unwrap();

        assert_eq!(result.size, bytes.len() as u64);
        assert_eq!(result.sha256, sha256_hex(&bytes));
    }

    #[tokio::test]
    async fn range_never_completed_is_reported_missing() {
        let (file, bytes) = file_of(1000);
        let ranges = ranges(bytes.len() as u64, 100);
        let digest = RangeDigest::start(Arc::new(file.reopen().unwrap()), &ranges);

        for part_number in (1..=10).filter(|number| *number != 6) {
            digest.complete(part_number);
        }
        let error = digest.finish().await.unwrap_err();

        assert!(matches!(error, RangeDigestError::Missing { part_number: 6 }), "{error:?}");
    }

    #[tokio::test]
    async fn short_file_hashes_the_bytes_present() {
        let (file, bytes) = file_of(250);
        let ranges = ranges(400, 100);
        let digest = RangeDigest::start(Arc::new(file.reopen().unwrap()), &ranges);

        for part_number in 1..=4 {
            digest.complete(part_number);
        }
        let result = digest.finish().await.unwrap();

        assert_eq!(result.size, 250);
        assert_eq!(result.sha256, sha256_hex(&bytes));
    }

    #[tokio::test]
    async fn no_ranges_give_the_digest_of_nothing() {
        let (file, _) = file_of(0);
        let digest = RangeDigest::start(Arc::new(file.reopen().unwrap()), &[]);

        let result = digest.finish().await.unwrap();

        assert_eq!(result.size, 0);
        assert_eq!(result.sha256, sha256_hex(b""));
    }
}
