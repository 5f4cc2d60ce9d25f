//! The whole-object SHA-256 of a multipart upload, computed while its parts
//! arrive instead of at completion.
//!
//! For each open upload the store keeps, in memory only, a running SHA-256
//! over the contiguous run of parts 1..k that it has already stored. After a
//! part is stored, a task on a blocking thread advances the run while part
//! k + 1 is stored, reading it from its data file (usually still in the page
//! cache). Each hashed step records the part's number, size, ETag and
//! SHA-256.
//!
//! A completion takes the running state. It continues from it only when the
//! completed part list starts with exactly the recorded parts: same numbers,
//! sizes, ETags and SHA-256s, in order. Otherwise it hashes every part, as
//! it does when the upload has no state: the store restarted and no part was
//! stored since, or too many other uploads are tracked. Equal part SHA-256s
//! mean equal bytes, so a part uploaded again with the same bytes keeps the
//! run usable, and one uploaded again with other bytes makes the completion
//! hash every part. A part stored after a restart starts a new run from
//! part 1.
//!
//! Data files are never modified after they are written. A step reads the
//! file named by the same database row as the digests it records, so those
//! digests describe the hashed bytes even when the part is replaced
//! meanwhile. A step whose file is gone (replaced and deleted before it was
//! opened) hashes nothing and ends the task, and the next stored part starts
//! another one.
//!
//! Memory: one SHA-256 state and 64 bytes per hashed part (at most 10,000
//! parts) per tracked upload, and at most [`MAX_TRACKED_UPLOADS`] uploads are
//! tracked. Completion, abort and expiry drop an upload's state.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use rusqlite::{OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

use crate::multipart::PartInfo;
use crate::store::{IO_BUFFER_SIZE, Inner, Store};

/// Maximum number of uploads with a running SHA-256. Uploads beyond it are
/// hashed in full at completion.
pub(crate) const MAX_TRACKED_UPLOADS: usize = 64;

/// The running SHA-256 of every tracked upload, by upload id.
#[derive(Default)]
pub(crate) struct HashAhead {
    uploads: Mutex<HashMap<String, Arc<Tracked>>>,
    /// Parts that completions took from a running SHA-256 instead of reading them.
    parts_covered: AtomicU64,
}

struct Tracked {
    state: Mutex<RunningHash>,
    /// Signalled after each step and when the task stops.
    changed: Condvar,
}

struct RunningHash {
    sha256: Sha256,
    size: u64,
    parts: Vec<HashedPart>,
    /// True while a task advances the run.
    advancing: bool,
    /// True when a part was stored after the task last looked the next part
    /// up, so a task that found nothing to hash looks again before it stops.
    recheck: bool,
    /// True once a completion or an abort took the state; a task then stops.
    closed: bool,
}

/// The digests of one part that a step hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HashedPart {
    part_number: u32,
    size: u64,
    md5: [u8; 16],
    sha256: [u8; 32],
}

impl HashedPart {
    /// Returns the digests of a stored part, or `None` when its stored ETag is
    /// not hex MD5 or its SHA-256 is not base64.
    fn of(part: &PartInfo) -> Option<Self> {
        use base64::Engine as _;

        let mut md5 = [0u8; 16];
        hex::decode_to_slice(&part.etag, &mut md5).ok()?;
        let sha256 = base64::engine::general_purpose::STANDARD
            .decode(&part.checksum_sha256)
            .ok()?
            .try_into()
            .ok()?;
        Some(Self {
            part_number: part.part_number,
            size: part.size,
            md5,
            sha256,
        })
    }
}

/// The SHA-256 over the first parts of a completed part list.
pub(crate) struct HashedPrefix {
    /// How many of the listed parts `sha256` covers.
    pub(crate) parts: usize,
    /// Bytes in those parts.
    pub(crate) size: u64,
    pub(crate) sha256: Sha256,
}

/// The running SHA-256 of an upload as a completion took it.
struct RunningPrefix {
    sha256: Sha256,
    size: u64,
    parts: Vec<HashedPart>,
}

impl RunningPrefix {
    /// Returns true when `parts` starts with exactly the hashed parts.
    fn starts(&self, parts: &[(PartInfo, String)]) -> bool {
        self.parts.len() <= parts.len()
            && self
                .parts
                .iter()
                .zip(parts)
                .all(|(hashed, (part, _))| HashedPart::of(part).as_ref() == Some(hashed))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before it can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HashAhead {
    /// Removes an upload's state and returns what it hashed. A task still
    /// hashing a part discards its step.
    fn take(&self, upload_id: &str) -> Option<RunningPrefix> {
        let tracked = lock(&self.uploads).remove(upload_id)?;
        let mut state = lock(&tracked.state);
        state.closed = true;
        tracked.changed.notify_all();
        Some(RunningPrefix {
            sha256: state.sha256.clone(),
            size: state.size,
            parts: std::mem::take(&mut state.parts),
        })
    }

    /// Returns how many parts completions took from a running SHA-256 so far.
    #[cfg(test)]
    pub(crate) fn parts_covered(&self) -> u64 {
        self.parts_covered.load(Ordering::Relaxed)
    }

    /// Drops an upload's state.
    pub(crate) fn forget(&self, upload_id: &str) {
        drop(self.take(upload_id));
    }

    /// Returns the upload's state, adding an empty one when there is room.
    fn tracked(&self, upload_id: &str) -> Option<Arc<Tracked>> {
        let mut uploads = lock(&self.uploads);
        if let Some(tracked) = uploads.get(upload_id) {
            return Some(Arc::clone(tracked));
        }
        if uploads.len() >= MAX_TRACKED_UPLOADS {
            debug!(
                upload_id,
                tracked = uploads.len(),
                "not hashing ahead: too many open uploads are tracked"
            );
            return None;
        }
        let tracked = Arc::new(Tracked {
            state: Mutex::new(RunningHash {
                sha256: Sha256::new(),
                size: 0,
                parts: Vec::new(),
                advancing: false,
                recheck: false,
                closed: false,
            }),
            changed: Condvar::new(),
        });
        uploads.insert(upload_id.to_owned(), Arc::clone(&tracked));
        Some(tracked)
    }

    /// Waits until no task advances the upload's run and returns how many
    /// parts the run covers (0 for an untracked upload).
    #[cfg(test)]
    pub(crate) fn hashed_parts_when_idle(&self, upload_id: &str) -> usize {
        let Some(tracked) = lock(&self.uploads).get(upload_id).cloned() else {
            return 0;
        };
        let state = lock(&tracked.state);
        let state = tracked
            .changed
            .wait_while(state, |state| state.advancing)
            .unwrap_or_else(PoisonError::into_inner);
        state.parts.len()
    }
}

impl Store {
    /// Takes the upload's running SHA-256 for its completion from the stored
    /// `parts` it lists, with their data files. Returns it when it covers the
    /// first listed parts, and otherwise an empty SHA-256 that covers no part.
    pub(crate) fn take_hashed_prefix(
        &self,
        upload_id: &str,
        parts: &[(PartInfo, String)],
    ) -> HashedPrefix {
        let hash_ahead = &self.inner.hash_ahead;
        let Some(running) = hash_ahead.take(upload_id) else {
            return HashedPrefix {
                parts: 0,
                size: 0,
                sha256: Sha256::new(),
            };
        };
        if !running.starts(parts) {
            debug!(
                upload_id,
                hashed_parts = running.parts.len(),
                "the parts hashed ahead differ from the completion's first parts; hashing every part"
            );
            return HashedPrefix {
                parts: 0,
                size: 0,
                sha256: Sha256::new(),
            };
        }
        hash_ahead
            .parts_covered
            .fetch_add(running.parts.len() as u64, Ordering::Relaxed);
        HashedPrefix {
            parts: running.parts.len(),
            size: running.size,
            sha256: running.sha256,
        }
    }

    /// Starts advancing the upload's running SHA-256 after one of its parts
    /// was stored, unless a task already does.
    ///
    /// Call it only after the part's row is committed, because the task looks
    /// parts up in the database.
    pub(crate) fn hash_ahead(&self, upload_id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(tracked) = self.inner.hash_ahead.tracked(upload_id) else {
            return;
        };
        {
            let mut state = lock(&tracked.state);
            if state.closed {
                return;
            }
            if state.advancing {
                state.recheck = true;
                return;
            }
            state.advancing = true;
        }
        let store = Arc::downgrade(&self.inner);
        let upload_id = upload_id.to_owned();
        runtime.spawn_blocking(move || advance(&store, &upload_id, &tracked));
    }

    /// Returns the stored part `part_number` of an upload with its data file.
    fn next_part(&self, upload_id: &str, part_number: u32) -> Option<(PartInfo, String)> {
        let found = self
            .db()
            .query_row(
                "SELECT part_number, size, etag, checksum_sha256, last_modified_ms, data_file FROM parts \
                 WHERE upload_id = ?1 AND part_number = ?2",
                params![upload_id, part_number],
                |row| Ok((crate::multipart::part_from_row(row)?, row.get::<_, String>(5)?)),
            )
            .optional();
        match found {
            Ok(found) => found,
            Err(err) => {
                warn!(upload_id, part_number, error = %err, "failed to look up a part to hash ahead");
                None
            }
        }
    }

    /// Drops the state of an upload that was completed or aborted between
    /// storing a part and starting its task, because no completion or abort
    /// would drop that state.
    fn forget_if_gone(&self, upload_id: &str) {
        let exists = self
            .db()
            .query_row(
                "SELECT 1 FROM uploads WHERE upload_id = ?1",
                [upload_id],
                |_| Ok(()),
            )
            .optional();
        if let Ok(None) = exists {
            self.inner.hash_ahead.forget(upload_id);
        }
    }
}

/// Hashes stored parts k + 1, k + 2, ... into the run until the next part
/// is missing, the state is closed or every handle of the store is dropped.
///
/// The task holds the store only while it looks a part up, and it checks
/// between buffers whether to stop, because a tokio runtime that shuts down
/// waits for its blocking tasks to return.
fn advance(store: &Weak<Inner>, upload_id: &str, tracked: &Tracked) {
    loop {
        let (next, mut sha256) = {
            let mut state = lock(&tracked.state);
            if state.closed {
                state.advancing = false;
                tracked.changed.notify_all();
                return;
            }
            state.recheck = false;
            (state.parts.len() as u32 + 1, state.sha256.clone())
        };

        let found = store.upgrade().and_then(|inner| {
            let store = Store { inner };
            let (part, file) = store.next_part(upload_id, next)?;
            Some((part, store.data_path(&file)))
        });
        let stop = || store.strong_count() == 0 || lock(&tracked.state).closed;
        let step = found.and_then(|(part, path)| {
            let hashed = HashedPart::of(&part)?;
            match hash_file(&path, &mut sha256, stop) {
                Ok(Some(size)) if size == part.size => Some(hashed),
                Ok(Some(size)) => {
                    warn!(
                        upload_id,
                        part_number = next,
                        size,
                        expected = part.size,
                        "part data file has another size than its record; not hashing ahead"
                    );
                    None
                }
                Ok(None) => None,
                // The part was replaced and its file deleted since the lookup.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => {
                    warn!(upload_id, part_number = next, path = %path.display(), error = %err,
                        "failed to read a part to hash ahead");
                    None
                }
            }
        });

        let mut state = lock(&tracked.state);
        match step {
            Some(hashed) if !state.closed => {
                state.sha256 = sha256;
                state.size += hashed.size;
                state.parts.push(hashed);
                tracked.changed.notify_all();
            }
            // The next turn of the loop finds the state closed and stops.
            Some(_) => {}
            // A part stored since the lookup may be the next one.
            None if state.recheck && !state.closed => {}
            None => {
                state.advancing = false;
                tracked.changed.notify_all();
                let closed = state.closed;
                drop(state);
                if !closed && let Some(inner) = store.upgrade() {
                    Store { inner }.forget_if_gone(upload_id);
                }
                return;
            }
        }
    }
}

/// Feeds a file's bytes into `sha256` and returns their count, or `None`
/// when `stop` returned true before the file ended.
fn hash_file(
    path: &Path,
    sha256: &mut Sha256,
    stop: impl Fn() -> bool,
) -> std::io::Result<Option<u64>> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; IO_BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        if stop() {
            return Ok(None);
        }
        let read = match file.read(&mut buffer) {
            Ok(0) => return Ok(Some(total)),
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        sha256.update(&buffer[..read]);
        total += read as u64;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use s3s::checksum::ChecksumHasher;
    use sha2::{Digest as _, Sha256};

    use crate::multipart::CompletedPartRef;
    use crate::store::{MAX_PART_SIZE, Store, StoreOptions};

    const BUCKET: &str = "studies";
    const KEY: &str = "ct/archive.zip";

    fn open(root: &std::path::Path) -> Store {
        let store = Store::open(root, StoreOptions { min_part_size: 1 }).unwrap();
        store.ensure_bucket(BUCKET).unwrap();
        store
    }

    /// Distinct bytes for each part number and version of a part.
    fn part_bytes(part_number: u32, version: u8) -> Vec<u8> {
        let len = 200_000 + part_number as usize * 1_000;
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ (part_number as u8).wrapping_mul(7) ^ version)
            .collect()
    }

    async fn put_part(store: &Store, upload_id: &str, part_number: u32, bytes: &[u8]) -> String {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
        let staged = store
            .stage_body(body, MAX_PART_SIZE, "part", ChecksumHasher::default())
            .await
            .unwrap();
        store
            .commit_part(staged, BUCKET, KEY, upload_id, part_number)
            .unwrap()
            .etag
    }

    fn hashed_parts(store: &Store, upload_id: &str) -> usize {
        store.inner.hash_ahead.hashed_parts_when_idle(upload_id)
    }

    /// Completes the upload with `parts` (number and ETag) and returns the
    /// recorded SHA-256 of the object.
    async fn complete(store: &Store, upload_id: &str, parts: &[(u32, &str)]) -> [u8; 32] {
        let list: Vec<CompletedPartRef> = parts
            .iter()
            .map(|(part_number, etag)| CompletedPartRef {
                part_number: *part_number,
                etag: (*etag).to_owned(),
                checksum_sha256: None,
            })
            .collect();
        store
            .complete_multipart_upload(BUCKET, KEY, upload_id, &list)
            .await
            .unwrap();
        let info = store.head_object(BUCKET, KEY).unwrap();
        let read_back = store.read_object_sha256(BUCKET, KEY).await.unwrap();
        let recorded = info
            .sha256
            .expect("a completion records the object's SHA-256");
        assert_eq!(
            recorded, read_back,
            "recorded SHA-256 differs from the object's bytes"
        );
        recorded
    }

    fn sha256_of(parts: &[&[u8]]) -> [u8; 32] {
        let mut sha256 = Sha256::new();
        for part in parts {
            sha256.update(part);
        }
        sha256.finalize().into()
    }

    #[tokio::test]
    async fn completion_continues_from_parts_hashed_ahead() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let bytes: Vec<Vec<u8>> = (1..=4).map(|n| part_bytes(n, 0)).collect();

        let mut etags = Vec::new();
        for (index, part) in bytes.iter().enumerate() {
            etags.push(put_part(&store, &upload_id, index as u32 + 1, part).await);
        }
        assert_eq!(hashed_parts(&store, &upload_id), 4);
        let list: Vec<(u32, &str)> = etags
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u32 + 1, e.as_str()))
            .collect();
        let recorded = complete(&store, &upload_id, &list).await;

        let parts: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        assert_eq!(recorded, sha256_of(&parts));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 4);
        assert_eq!(
            hashed_parts(&store, &upload_id),
            0,
            "completion drops the state"
        );
    }

    #[tokio::test]
    async fn out_of_order_parts_hashed_in_order() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let bytes: Vec<Vec<u8>> = (1..=4).map(|n| part_bytes(n, 0)).collect();
        let mut etags = vec![String::new(); 4];

        etags[2] = put_part(&store, &upload_id, 3, &bytes[2]).await;
        assert_eq!(hashed_parts(&store, &upload_id), 0, "part 1 is missing");
        etags[0] = put_part(&store, &upload_id, 1, &bytes[0]).await;
        assert_eq!(hashed_parts(&store, &upload_id), 1, "part 2 is missing");
        etags[3] = put_part(&store, &upload_id, 4, &bytes[3]).await;
        assert_eq!(
            hashed_parts(&store, &upload_id),
            1,
            "part 2 is still missing"
        );
        etags[1] = put_part(&store, &upload_id, 2, &bytes[1]).await;
        assert_eq!(hashed_parts(&store, &upload_id), 4);

        let list: Vec<(u32, &str)> = etags
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u32 + 1, e.as_str()))
            .collect();
        let recorded = complete(&store, &upload_id, &list).await;
        let parts: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        assert_eq!(recorded, sha256_of(&parts));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 4);
    }

    #[tokio::test]
    async fn replaced_part_with_other_bytes_rehashed() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let part1 = part_bytes(1, 0);
        let part2 = part_bytes(2, 0);
        let part2_new = part_bytes(2, 1);
        let part3 = part_bytes(3, 0);

        let etag1 = put_part(&store, &upload_id, 1, &part1).await;
        put_part(&store, &upload_id, 2, &part2).await;
        let etag3 = put_part(&store, &upload_id, 3, &part3).await;
        assert_eq!(hashed_parts(&store, &upload_id), 3);
        let etag2 = put_part(&store, &upload_id, 2, &part2_new).await;
        let recorded = complete(&store, &upload_id, &[(1, &etag1), (2, &etag2), (3, &etag3)]).await;

        assert_eq!(recorded, sha256_of(&[&part1, &part2_new, &part3]));
        assert_ne!(recorded, sha256_of(&[&part1, &part2, &part3]));
        assert_eq!(
            store.inner.hash_ahead.parts_covered(),
            0,
            "the run covers the replaced bytes"
        );
    }

    #[tokio::test]
    async fn part_replaced_with_same_bytes_keeps_the_run() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let part1 = part_bytes(1, 0);
        let part2 = part_bytes(2, 0);

        let etag1 = put_part(&store, &upload_id, 1, &part1).await;
        put_part(&store, &upload_id, 2, &part2).await;
        assert_eq!(hashed_parts(&store, &upload_id), 2);
        let etag2 = put_part(&store, &upload_id, 2, &part2).await;
        let recorded = complete(&store, &upload_id, &[(1, &etag1), (2, &etag2)]).await;

        assert_eq!(recorded, sha256_of(&[&part1, &part2]));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 2);
    }

    #[tokio::test]
    async fn completion_of_fewer_parts_rehashes_all() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let bytes: Vec<Vec<u8>> = (1..=4).map(|n| part_bytes(n, 0)).collect();
        let mut etags = Vec::new();
        for (index, part) in bytes.iter().enumerate() {
            etags.push(put_part(&store, &upload_id, index as u32 + 1, part).await);
        }
        assert_eq!(hashed_parts(&store, &upload_id), 4);

        let recorded = complete(
            &store,
            &upload_id,
            &[(1, &etags[0]), (2, &etags[1]), (3, &etags[2])],
        )
        .await;

        assert_eq!(recorded, sha256_of(&[&bytes[0], &bytes[1], &bytes[2]]));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 0);
    }

    #[tokio::test]
    async fn completion_skipping_part_rehashes_all() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let bytes: Vec<Vec<u8>> = (1..=4).map(|n| part_bytes(n, 0)).collect();
        let mut etags = Vec::new();
        for (index, part) in bytes.iter().enumerate() {
            etags.push(put_part(&store, &upload_id, index as u32 + 1, part).await);
        }
        assert_eq!(hashed_parts(&store, &upload_id), 4);

        let recorded = complete(
            &store,
            &upload_id,
            &[(1, &etags[0]), (3, &etags[2]), (4, &etags[3])],
        )
        .await;

        assert_eq!(recorded, sha256_of(&[&bytes[0], &bytes[2], &bytes[3]]));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 0);
    }

    #[tokio::test]
    async fn completion_after_gap_hashes_only_rest() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let part1 = part_bytes(1, 0);
        let part2 = part_bytes(2, 0);
        let part5 = part_bytes(5, 0);

        let etag1 = put_part(&store, &upload_id, 1, &part1).await;
        let etag2 = put_part(&store, &upload_id, 2, &part2).await;
        let etag5 = put_part(&store, &upload_id, 5, &part5).await;
        assert_eq!(hashed_parts(&store, &upload_id), 2, "part 3 is missing");
        let recorded = complete(&store, &upload_id, &[(1, &etag1), (2, &etag2), (5, &etag5)]).await;

        assert_eq!(recorded, sha256_of(&[&part1, &part2, &part5]));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 2);
    }

    #[tokio::test]
    async fn store_restart_between_parts_loses_nothing() {
        let root = tempfile::tempdir().unwrap();
        let part1 = part_bytes(1, 0);
        let part2 = part_bytes(2, 0);
        let part3 = part_bytes(3, 0);
        let (upload_id, etag1, etag2) = {
            let store = open(root.path());
            let upload_id = store
                .create_multipart_upload(BUCKET, KEY, None, &Default::default())
                .unwrap();
            let etag1 = put_part(&store, &upload_id, 1, &part1).await;
            let etag2 = put_part(&store, &upload_id, 2, &part2).await;
            assert_eq!(hashed_parts(&store, &upload_id), 2);
            (upload_id, etag1, etag2)
        };

        let store = open(root.path());
        assert_eq!(
            hashed_parts(&store, &upload_id),
            0,
            "the running SHA-256 is in memory only"
        );
        let etag3 = put_part(&store, &upload_id, 3, &part3).await;
        assert_eq!(
            hashed_parts(&store, &upload_id),
            3,
            "the next stored part starts hashing from part 1"
        );
        let recorded = complete(&store, &upload_id, &[(1, &etag1), (2, &etag2), (3, &etag3)]).await;

        assert_eq!(recorded, sha256_of(&[&part1, &part2, &part3]));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 3);
    }

    #[tokio::test]
    async fn store_restart_before_completion_hashes_every_part() {
        let root = tempfile::tempdir().unwrap();
        let part1 = part_bytes(1, 0);
        let part2 = part_bytes(2, 0);
        let (upload_id, etag1, etag2) = {
            let store = open(root.path());
            let upload_id = store
                .create_multipart_upload(BUCKET, KEY, None, &Default::default())
                .unwrap();
            let etag1 = put_part(&store, &upload_id, 1, &part1).await;
            let etag2 = put_part(&store, &upload_id, 2, &part2).await;
            assert_eq!(hashed_parts(&store, &upload_id), 2);
            (upload_id, etag1, etag2)
        };

        let store = open(root.path());
        let recorded = complete(&store, &upload_id, &[(1, &etag1), (2, &etag2)]).await;

        assert_eq!(recorded, sha256_of(&[&part1, &part2]));
        assert_eq!(store.inner.hash_ahead.parts_covered(), 0);
    }

    #[tokio::test]
    async fn completion_right_after_the_last_part_is_correct() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        let bytes: Vec<Vec<u8>> = (1..=12).map(|n| part_bytes(n, 0)).collect();
        let mut etags = Vec::new();
        for (index, part) in bytes.iter().enumerate() {
            etags.push(put_part(&store, &upload_id, index as u32 + 1, part).await);
        }

        // The task may still be hashing: the completion takes what it has.
        let list: Vec<(u32, &str)> = etags
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u32 + 1, e.as_str()))
            .collect();
        let recorded = complete(&store, &upload_id, &list).await;

        let parts: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        assert_eq!(recorded, sha256_of(&parts));
    }

    #[tokio::test]
    async fn abort_drops_the_running_hash() {
        let root = tempfile::tempdir().unwrap();
        let store = open(root.path());
        let upload_id = store
            .create_multipart_upload(BUCKET, KEY, None, &Default::default())
            .unwrap();
        put_part(&store, &upload_id, 1, &part_bytes(1, 0)).await;
        assert_eq!(hashed_parts(&store, &upload_id), 1);

        store
            .abort_multipart_upload(BUCKET, KEY, &upload_id)
            .unwrap();

        assert!(store.inner.hash_ahead.uploads.lock().unwrap().is_empty());
    }
}
