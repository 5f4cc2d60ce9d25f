//! Appending to the log: [`TransferLog`].

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::Signer;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::checkpoint::{Checkpoint, CheckpointRequest};
use super::keys::{EpochKey, KeySlot};
use super::record::{
    self, CheckpointRecord, EntryRecord, EpochRecord, GenesisRecord, LOG_FORMAT, NewEntry, Record,
    SealRecord, TornRecord, ZERO_HASH, decode_32, line_hash,
};
use super::LogError;
use crate::secrets::SecretStore;

/// How a [`TransferLog`] is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Device id written into every entry (and into the genesis record of a
    /// new log).
    pub device: String,
    /// Secret store entry holding the current epoch key, for example
    /// `profile/sandbox/transfer-log-key`.
    pub key_entry: String,
    /// Maximum time an appended entry waits for a seal while entries keep
    /// coming. Entries that end a transfer are sealed at once.
    pub seal_interval: Duration,
    /// Age after which the next append rotates the epoch key.
    pub epoch_length: Duration,
    /// A gateway checkpoint to keep in the genesis record of a new log.
    pub genesis_checkpoint: Option<serde_json::Value>,
}

impl OpenOptions {
    /// Options with a 5 second seal interval and hourly epochs.
    pub fn new(device: impl Into<String>, key_entry: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            key_entry: key_entry.into(),
            seal_interval: Duration::from_secs(5),
            epoch_length: Duration::from_secs(3600),
            genesis_checkpoint: None,
        }
    }
}

/// The last record of the log: its seq and the hex SHA-256 of its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// An open, append-only transfer log of one profile.
///
/// Every append takes an exclusive advisory lock on the file, so the app and
/// the CLI can append to the same log without interleaving. When another
/// process appended since this one last wrote, the append first reads the
/// new tail and the current epoch key.
pub struct TransferLog {
    path: PathBuf,
    file: File,
    store: Arc<dyn SecretStore>,
    options: OpenOptions,
    log_id: Uuid,
    device_public_key: String,
    head: Head,
    /// File length after this process's last write.
    end: u64,
    /// Whether the head is covered by a signature (seal, epoch or genesis).
    head_sealed: bool,
    key: EpochKey,
    epoch_started: Instant,
    last_seal: Instant,
    /// Whether opening finished; `Drop` seals only an opened log.
    opened: bool,
}

impl std::fmt::Debug for TransferLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferLog")
            .field("path", &self.path)
            .field("log_id", &self.log_id)
            .field("head", &self.head)
            .field("epoch", &self.key.epoch)
            .finish_non_exhaustive()
    }
}

/// The last intact record found by [`scan_tail`] and the bytes after it.
struct Tail {
    last: Option<(Record, String)>,
    fragment: Vec<u8>,
}

impl TransferLog {
    /// Opens the log at `path`, creating it with a genesis record when the
    /// file is missing or empty, and starts a new epoch.
    ///
    /// Bytes left by an interrupted append are kept and marked by a `torn`
    /// record before anything else is appended.
    pub fn open(
        path: impl AsRef<Path>,
        store: Arc<dyn SecretStore>,
        options: OpenOptions,
    ) -> Result<Self, LogError> {
        let path = path.as_ref().to_path_buf();
        let _span = tracing::info_span!("transfer_log_open", path = %path.display()).entered();

        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| LogError::io("create the log directory", parent, source))?;
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|source| LogError::io("open the log", &path, source))?;
        file.lock().map_err(|source| LogError::io("lock the log", &path, source))?;

        let result = Self::open_locked(path.clone(), file, store, options);
        if let Ok(log) = &result {
            log.unlock();
        }
        result
    }

    fn open_locked(
        path: PathBuf,
        file: File,
        store: Arc<dyn SecretStore>,
        options: OpenOptions,
    ) -> Result<Self, LogError> {
        let len = file.metadata().map_err(|source| LogError::io("read the log's length", &path, source))?.len();
        if len == 0 {
            return Self::create(path, file, store, options);
        }

        let genesis = read_genesis(&file, &path)?;
        let slot = KeySlot { store: store.as_ref(), entry: &options.key_entry };
        let key = slot.current()?.ok_or_else(|| LogError::EpochKeyMissing { entry: options.key_entry.clone() })?;
        let now = Instant::now();
        let mut log = Self {
            path,
            file,
            store,
            options,
            log_id: genesis.log_id,
            device_public_key: genesis.public_key,
            head: Head { seq: 0, hash: ZERO_HASH.to_owned() },
            end: 0,
            head_sealed: false,
            key,
            epoch_started: now,
            last_seal: now,
            opened: false,
        };

        log.resync()?;
        log.rotate()?;
        log.opened = true;
        Ok(log)
    }

    /// Writes the genesis record of a new log. The key is stored before the
    /// record is written, so a genesis record on disk always has its key.
    fn create(
        path: PathBuf,
        file: File,
        store: Arc<dyn SecretStore>,
        options: OpenOptions,
    ) -> Result<Self, LogError> {
        let log_id = Uuid::new_v4();
        let key = EpochKey::generate(log_id, 0, 0);
        let public_key = key.signing_key.verifying_key().to_bytes();
        let signature = key.signing_key.sign(&record::genesis_message(log_id, &options.device, &public_key));

        let slot = KeySlot { store: store.as_ref(), entry: &options.key_entry };
        slot.clear_pending()?;
        slot.set_current(&key)?;

        let genesis = Record::Genesis(GenesisRecord {
            seq: 0,
            prev: ZERO_HASH.to_owned(),
            format: LOG_FORMAT.to_owned(),
            log_id,
            device: options.device.clone(),
            time: Timestamp::now(),
            epoch: 0,
            public_key: hex::encode(public_key),
            gateway_checkpoint: options.genesis_checkpoint.clone(),
            signature: hex::encode(signature.to_bytes()),
        });
        let now = Instant::now();
        let mut log = Self {
            path,
            file,
            store,
            options,
            log_id,
            device_public_key: hex::encode(public_key),
            head: Head { seq: 0, hash: ZERO_HASH.to_owned() },
            end: 0,
            head_sealed: true,
            key,
            epoch_started: now,
            last_seal: now,
            opened: false,
        };
        log.write_record(&genesis, b"")?;
        log.head_sealed = true;
        log.opened = true;
        sync_parent_dir(&log.path);

        tracing::info!(log_id = %log_id, "created a new transfer log");
        Ok(log)
    }

    /// Appends an entry and returns its head. Entries that end a transfer or
    /// a session are sealed at once; others when the last seal is older than
    /// the seal interval. The epoch rotates first when it is older than the
    /// epoch length.
    pub fn append(&mut self, entry: NewEntry) -> Result<Head, LogError> {
        self.with_lock(|log| {
            log.resync_if_changed()?;
            if log.epoch_started.elapsed() >= log.options.epoch_length {
                log.rotate()?;
            }

            let boundary = entry.event.is_boundary();
            let record = Record::Entry(EntryRecord {
                seq: log.head.seq + 1,
                prev: log.head.hash.clone(),
                time: Timestamp::now(),
                event: entry.event,
                actor: entry.actor,
                device: log.options.device.clone(),
                direction: entry.direction,
                patient: entry.patient,
                object: entry.object,
                file_name: entry.file_name,
                size: entry.size,
                sha256: entry.sha256,
                correlation_id: entry.correlation_id,
                receipt: entry.receipt,
            });
            let head = log.write_record(&record, b"")?;

            if boundary || log.last_seal.elapsed() >= log.options.seal_interval {
                log.seal()?;
            }
            Ok(head)
        })
    }

    /// Seals the head now unless it is already sealed, and returns the head.
    pub fn seal_now(&mut self) -> Result<Head, LogError> {
        self.with_lock(|log| {
            log.resync_if_changed()?;
            if !log.head_sealed {
                log.seal()?;
            }
            Ok(log.head.clone())
        })
    }

    /// Seals the head and returns the request to send to the gateway for
    /// countersigning, with the epoch records since the last checkpoint
    /// record.
    pub fn checkpoint_request(&mut self) -> Result<CheckpointRequest, LogError> {
        let (head, epoch_links) = self.with_lock(|log| {
            log.resync_if_changed()?;
            if !log.head_sealed {
                log.seal()?;
            }
            let links = epoch_links_since_checkpoint(&log.file, &log.path)?;
            Ok((log.head.clone(), links))
        })?;

        Ok(CheckpointRequest {
            log_id: self.log_id,
            device: self.options.device.clone(),
            head_seq: head.seq,
            head_hash: head.hash,
            epoch: self.key.epoch,
            epoch_public_key: self.key.public_key_hex(),
            device_public_key: self.device_public_key.clone(),
            epoch_links,
        })
    }

    /// Appends a checkpoint the gateway countersigned. The gateway's
    /// signature is kept as sent; [`super::verify`] checks it.
    pub fn record_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<Head, LogError> {
        self.with_lock(|log| {
            log.resync_if_changed()?;
            if checkpoint.log_id != log.log_id || checkpoint.head_seq > log.head.seq {
                return Err(LogError::CheckpointMismatch {
                    log_id: checkpoint.log_id,
                    head_seq: checkpoint.head_seq,
                    path: log.path.clone(),
                });
            }

            let record = Record::Checkpoint(CheckpointRecord {
                seq: log.head.seq + 1,
                prev: log.head.hash.clone(),
                time: Timestamp::now(),
                checkpoint,
            });
            log.write_record(&record, b"")
        })
    }

    /// Seals the head and closes the log.
    pub fn close(mut self) -> Result<Head, LogError> {
        self.seal_now()
    }

    pub fn head(&self) -> Head {
        self.head.clone()
    }

    pub fn log_id(&self) -> Uuid {
        self.log_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current epoch number.
    pub fn epoch(&self) -> u64 {
        self.key.epoch
    }

    /// Hex public key of epoch 0, the device's key for this log.
    pub fn device_public_key(&self) -> &str {
        &self.device_public_key
    }

    fn with_lock<T>(&mut self, work: impl FnOnce(&mut Self) -> Result<T, LogError>) -> Result<T, LogError> {
        self.file
            .lock()
            .map_err(|source| LogError::io("lock the log", &self.path, source))?;
        let result = work(self);
        self.unlock();
        result
    }

    fn unlock(&self) {
        if let Err(error) = self.file.unlock() {
            tracing::warn!(path = %self.path.display(), %error, "failed to unlock the transfer log");
        }
    }

    fn resync_if_changed(&mut self) -> Result<(), LogError> {
        let len = self.file_len()?;
        if len != self.end {
            self.resync()?;
        }
        Ok(())
    }

    /// Reads the head from the end of the file, settles the epoch key with
    /// the secret store, and marks bytes of an interrupted append.
    fn resync(&mut self) -> Result<(), LogError> {
        let len = self.file_len()?;
        let tail = scan_tail(&self.file, len).map_err(|source| LogError::io("read the log's tail", &self.path, source))?;
        let Some((last, hash)) = tail.last else {
            return Err(LogError::NotALog { path: self.path.clone(), reason: "no complete record".into() });
        };

        self.head = Head { seq: last.seq(), hash };
        self.head_sealed = matches!(last, Record::Seal(_) | Record::Epoch(_) | Record::Genesis(_));
        self.end = len;
        self.key = self.settle_key(&last)?;

        if !tail.fragment.is_empty() {
            self.mark_torn(&tail.fragment)?;
        }
        Ok(())
    }

    /// Returns the current epoch key after finishing or discarding a
    /// rotation that a stopped process left half done.
    fn settle_key(&self, last: &Record) -> Result<EpochKey, LogError> {
        let slot = KeySlot { store: self.store.as_ref(), entry: &self.options.key_entry };

        if let Some(pending) = slot.pending()? {
            let introduced = matches!(last, Record::Epoch(epoch)
                if epoch.epoch == pending.epoch && epoch.public_key == pending.public_key_hex());
            if introduced && pending.log_id == self.log_id {
                slot.set_current(&pending)?;
                slot.clear_pending()?;
                return Ok(pending);
            }
            slot.clear_pending()?;
        }

        let key = slot.current()?.ok_or_else(|| LogError::EpochKeyMissing { entry: self.options.key_entry.clone() })?;
        if key.log_id != self.log_id {
            return Err(LogError::KeyForOtherLog {
                entry: self.options.key_entry.clone(),
                key_log_id: key.log_id,
                log_id: self.log_id,
            });
        }
        if key.since_seq > last.seq() {
            return Err(LogError::FileBehindKey {
                path: self.path.clone(),
                last_seq: last.seq(),
                epoch: key.epoch,
                since_seq: key.since_seq,
            });
        }
        Ok(key)
    }

    /// Appends a `torn` record that covers the bytes after the last intact
    /// record, ending them with a newline first when they lack one.
    fn mark_torn(&mut self, fragment: &[u8]) -> Result<(), LogError> {
        let prefix: &[u8] = if fragment.ends_with(b"\n") { b"" } else { b"\n" };
        let mut skipped = Sha256::new();
        skipped.update(fragment);
        skipped.update(prefix);

        tracing::warn!(
            path = %self.path.display(),
            bytes = fragment.len(),
            after_seq = self.head.seq,
            "the transfer log ends with an interrupted append; marking it as torn"
        );
        let record = Record::Torn(TornRecord {
            seq: self.head.seq + 1,
            prev: self.head.hash.clone(),
            time: Timestamp::now(),
            skipped_bytes: (fragment.len() + prefix.len()) as u64,
            skipped_sha256: hex::encode(skipped.finalize()),
        });
        self.write_record(&record, prefix)?;
        Ok(())
    }

    /// Starts the next epoch: the outgoing key signs the new public key into
    /// the log, and only then is the outgoing secret replaced in the store.
    fn rotate(&mut self) -> Result<(), LogError> {
        let seq = self.head.seq + 1;
        let next = EpochKey::generate(self.log_id, self.key.epoch + 1, seq);
        let store = Arc::clone(&self.store);
        let entry = self.options.key_entry.clone();
        let slot = KeySlot { store: store.as_ref(), entry: &entry };
        slot.set_pending(&next)?;

        let head = decode_32(&self.head.hash).expect("the head hash is 32 bytes of hex");
        let new_public_key = next.signing_key.verifying_key().to_bytes();
        let message = record::epoch_message(self.log_id, next.epoch, seq, &head, &new_public_key);
        let signature = self.key.signing_key.sign(&message);
        let record = Record::Epoch(EpochRecord {
            seq,
            prev: self.head.hash.clone(),
            time: Timestamp::now(),
            epoch: next.epoch,
            public_key: hex::encode(new_public_key),
            signature: hex::encode(signature.to_bytes()),
        });
        self.write_record(&record, b"")?;

        slot.set_current(&next)?;
        slot.clear_pending()?;
        tracing::debug!(log_id = %self.log_id, epoch = next.epoch, seq, "rotated the transfer log key");

        self.key = next;
        self.head_sealed = true;
        self.epoch_started = Instant::now();
        self.last_seal = Instant::now();
        Ok(())
    }

    fn seal(&mut self) -> Result<(), LogError> {
        let seq = self.head.seq + 1;
        let head = decode_32(&self.head.hash).expect("the head hash is 32 bytes of hex");
        let message = record::seal_message(self.log_id, self.key.epoch, seq, &head);
        let signature = self.key.signing_key.sign(&message);
        let record = Record::Seal(SealRecord {
            seq,
            prev: self.head.hash.clone(),
            epoch: self.key.epoch,
            signature: hex::encode(signature.to_bytes()),
        });
        self.write_record(&record, b"")?;

        self.head_sealed = true;
        self.last_seal = Instant::now();
        Ok(())
    }

    /// Writes `prefix`, the record's line and a newline with one `write_all`
    /// on the append-mode file, then makes the data durable with
    /// `sync_data`. A failed write leaves `end` behind the file length, so
    /// the next append resynchronizes and marks the torn bytes.
    fn write_record(&mut self, record: &Record, prefix: &[u8]) -> Result<Head, LogError> {
        let line = record.to_line();
        let mut buffer = Vec::with_capacity(prefix.len() + line.len() + 1);
        buffer.extend_from_slice(prefix);
        buffer.extend_from_slice(&line);
        buffer.push(b'\n');

        (&self.file)
            .write_all(&buffer)
            .map_err(|source| LogError::io("append to the log", &self.path, source))?;
        self.file
            .sync_data()
            .map_err(|source| LogError::io("flush the log to disk", &self.path, source))?;

        self.end += buffer.len() as u64;
        self.head = Head { seq: record.seq(), hash: line_hash(&line) };
        self.head_sealed = false;
        Ok(self.head.clone())
    }

    fn file_len(&self) -> Result<u64, LogError> {
        Ok(self
            .file
            .metadata()
            .map_err(|source| LogError::io("read the log's length", &self.path, source))?
            .len())
    }
}

impl Drop for TransferLog {
    /// Seals the head on a best-effort basis; `close` reports the error.
    fn drop(&mut self) {
        if self.head_sealed || !self.opened {
            return;
        }
        if let Err(error) = self.seal_now() {
            tracing::warn!(path = %self.path.display(), %error, "failed to seal the transfer log on drop");
        }
    }
}

/// Reads and checks the first line.
fn read_genesis(file: &File, path: &Path) -> Result<GenesisRecord, LogError> {
    let not_a_log = |reason: &str| LogError::NotALog { path: path.to_path_buf(), reason: reason.to_owned() };

    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(|source| LogError::io("read the log", path, source))?;
    let mut first = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = reader.read(&mut chunk).map_err(|source| LogError::io("read the log", path, source))?;
        if read == 0 {
            return Err(not_a_log("the first line is incomplete"));
        }
        if let Some(newline) = chunk[..read].iter().position(|byte| *byte == b'\n') {
            first.extend_from_slice(&chunk[..newline]);
            break;
        }
        first.extend_from_slice(&chunk[..read]);
    }

    match serde_json::from_slice::<Record>(&first) {
        Ok(Record::Genesis(genesis)) if genesis.format == LOG_FORMAT => Ok(genesis),
        _ => Err(not_a_log("the first line is not a genesis record")),
    }
}

/// Returns the epoch records after the last checkpoint record, oldest
/// first. The whole file is read, because the last checkpoint can lie any
/// distance back. Lines that do not parse (torn bytes) are skipped.
fn epoch_links_since_checkpoint(file: &File, path: &Path) -> Result<Vec<ferry_api::EpochLink>, LogError> {
    let mut reader = io::BufReader::new(file);
    reader.seek(SeekFrom::Start(0)).map_err(|source| LogError::io("read the log", path, source))?;

    let mut links = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = io::BufRead::read_until(&mut reader, b'\n', &mut line)
            .map_err(|source| LogError::io("read the log", path, source))?;
        if read == 0 {
            break;
        }
        match serde_json::from_slice::<Record>(line.strip_suffix(b"\n").unwrap_or(&line)) {
            Ok(Record::Checkpoint(_)) => links.clear(),
            Ok(Record::Epoch(epoch)) => links.push(ferry_api::EpochLink {
                epoch: epoch.epoch,
                seq: epoch.seq,
                prev: epoch.prev,
                public_key: epoch.public_key,
                signature: epoch.signature,
            }),
            _ => {}
        }
    }
    Ok(links)
}

/// Finds the last newline-terminated line that parses as a record, reading
/// backwards from the end in growing windows.
fn scan_tail(file: &File, len: u64) -> io::Result<Tail> {
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buffer = vec![0u8; (len - start) as usize];
        let mut reader = file;
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut buffer)?;

        let newlines: Vec<usize> = buffer
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .map(|(index, _)| index)
            .collect();
        for (position, &end) in newlines.iter().enumerate().rev() {
            let line_start = match position {
                0 if start == 0 => 0,
                0 => break,
                _ => newlines[position - 1] + 1,
            };
            let line = &buffer[line_start..end];
            if let Ok(record) = serde_json::from_slice::<Record>(line) {
                return Ok(Tail {
                    last: Some((record, line_hash(line))),
                    fragment: buffer[end + 1..].to_vec(),
                });
            }
        }

        if start == 0 {
            return Ok(Tail { last: None, fragment: buffer });
        }
        window = window.saturating_mul(2);
    }
}

/// Makes a newly created file's directory entry durable. Not possible on
/// every platform; failures are logged and ignored.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        if let Err(error) = File::open(parent).and_then(|dir| dir.sync_all()) {
            tracing::debug!(%error, "failed to sync the log directory");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
