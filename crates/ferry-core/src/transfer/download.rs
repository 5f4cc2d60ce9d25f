//! Download of one document: ranged `GET`s in flight into a temporary file
//! beside the destination, then verification and an atomic rename.
//!
//! Each range is written with a positional write and flushed before the
//! journal marks it confirmed, so a resumed download fetches only the ranges
//! not confirmed. Requests after the first carry `If-Range` with the
//! object's ETag, so bytes of two versions of an object are never mixed.
//! The bearer token never reaches the store: store requests use a client
//! without an `Authorization` header.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_api::DownloadGrant;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, RANGE, RETRY_AFTER};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::file_sync::FileSync;
use super::names::{numbered_name, safe_file_name, temp_path_for};
use super::range_digest::{RangeDigest, RangeDigestError};
use super::retry::{Activity, with_idle_timeout};
use super::wire::{parse_content_range, read_error_body};
use super::{ExistingFile, TransferContext, TransferError, TransferOutcome, is_expired_url_body, s3_error_summary};
use crate::grant::parse_retry_after;
use crate::journal::{PartRecord, PartState, TransferRecord, TransferState};

/// Bytes of a range gathered before they are written to the temporary file.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Numbered names tried before a download fails with the destination taken.
const MAX_NUMBERED_NAMES: u32 = 9_999;
/// Renewals of the download grant before the download fails.
const MAX_URL_RENEWALS: u32 = 50;

fn io_error(stage: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_owned();
    move |source| TransferError::Io { stage, path, source }
}

pub(crate) async fn run(context: Arc<TransferContext>) -> Result<TransferOutcome, TransferError> {
    let mut record = context.journal.get(&context.id)?;
    let document_id = record.document_id.clone().ok_or_else(|| TransferError::IncompleteRecord {
        id: context.id.clone(),
        detail: "a download without a document id".to_owned(),
    })?;
    context.set_state(TransferState::Running)?;

    let grant = context.gateway(|| context.grants.download(&document_id)).await?;
    let unchanged = record.size == Some(grant.size) && record.sha256.as_deref() == Some(grant.sha256.as_str());
    if !unchanged {
        if let Some(temp) = &record.temp_path {
            let _ = std::fs::remove_file(temp);
        }
        plan(&context, &mut record, &grant)?;
    }
    let size = grant.size;
    let temp = record.temp_path.clone().unwrap_or_default();
    context.bytes_total.store(size, Ordering::Relaxed);

    // `symlink_metadata` does not follow links, so a planted link, dangling
    // or not, counts as existing and is rejected by the reopen.
    let existed = std::fs::symlink_metadata(&temp).is_ok();
    let file = if existed { reopen_temp_file(&temp)? } else { create_temp_file(&temp)? };
    if !existed {
        context.journal.reset_parts(&context.id)?;
    }
    file.set_len(size).map_err(io_error("sizing the temporary file", &temp))?;
    let file = Arc::new(file);

    // Ranges confirmed by an earlier run are hashed too, from the bytes
    // already in the temporary file.
    let ranges = context.journal.parts(&context.id)?;
    let digest = RangeDigest::start(file.clone(), &ranges);
    let ranges: Vec<PartRecord> = ranges
        .into_iter()
        .filter(|range| {
            if range.state == PartState::Confirmed {
                context.add_bytes(range.size);
                digest.complete(range.part_number);
                false
            } else {
                true
            }
        })
        .collect();
    let started = std::time::Instant::now();
    let sync = Arc::new(FileSync::start(file.clone()));
    fetch_ranges(&context, &record, grant, &file, &sync, ranges, &digest).await?;
    drop(sync);
    let fetched = started.elapsed();

    context.set_state(TransferState::Verifying)?;
    let actual = digest.finish().await.map_err(|error| match error {
        RangeDigestError::Read { source, .. } => io_error("verifying", &temp)(source),
        other => TransferError::Task(other.to_string()),
    })?;
    let actual_size = file.metadata().map_err(io_error("verifying", &temp))?.len();
    verify(&context, &record, &temp, actual_size, &actual.sha256)?;
    let verified = started.elapsed();
    file.sync_all().map_err(io_error("flushing the temporary file", &temp))?;
    drop(file);
    let synced = started.elapsed();

    let destination = record.destination_path.clone().unwrap_or_default();
    let policy = ExistingFile::parse(record.existing_file.as_deref());
    let placed = place(&temp, &destination, policy)?;
    record = context.journal.get(&context.id)?;
    record.destination_path = Some(placed.clone());
    record.state = TransferState::Completed;
    record.error = None;
    context.journal.update(&record)?;
    context.set_state(TransferState::Completed)?;
    tracing::debug!(
        transfer = %context.id,
        fetched_ms = fetched.as_millis() as u64,
        verified_ms = verified.as_millis() as u64,
        synced_ms = synced.as_millis() as u64,
        placed_ms = started.elapsed().as_millis() as u64,
        "download phases, elapsed since the first range request"
    );
    tracing::info!(transfer = %context.id, %document_id, path = %placed.display(), "download completed and verified");
    Ok(TransferOutcome::Downloaded { path: placed, size, sha256: record.sha256.unwrap_or_default() })
}

/// Creates a download's temporary file, readable and writable by the owner
/// only on Unix (mode 0600) whatever the umask. `create_new` fails on any
/// existing entry, a symbolic link included, so nothing outside the folder
/// is ever opened through the name.
fn create_temp_file(temp: &Path) -> Result<File, TransferError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(temp).map_err(io_error("creating the temporary file", temp))
}

/// Reopens the temporary file of an interrupted download. On Unix a
/// symbolic link at its path is rejected (`O_NOFOLLOW`), as is anything but
/// a regular file, and the mode is set back to 0600.
fn reopen_temp_file(temp: &Path) -> Result<File, TransferError> {
    let stage = "reopening the temporary file";
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    // TODO: on Windows a symbolic link or junction at the path is still followed.
    let file = options.open(temp).map_err(io_error(stage, temp))?;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = file.metadata().map_err(io_error(stage, temp))?;
        if !metadata.is_file() {
            let source = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a regular file; cancel the download and start it again",
            );
            return Err(io_error(stage, temp)(source));
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io_error(stage, temp))?;
    }
    Ok(file)
}

/// Chooses the destination and the temporary file, and records the ranges.
fn plan(context: &TransferContext, record: &mut TransferRecord, grant: &DownloadGrant) -> Result<(), TransferError> {
    let directory = record.destination_dir.clone().unwrap_or_default();
    let name = safe_file_name(&grant.file_name);
    let policy = ExistingFile::parse(record.existing_file.as_deref());
    let destination = choose_destination(&directory, &name, policy)?;
    let temp = temp_path_for(&destination);

    let range_size = context.options.range_size.max(1);
    let ranges: Vec<PartRecord> = (0..grant.size.div_ceil(range_size))
        .map(|index| {
            let offset = index * range_size;
            PartRecord {
                part_number: u32::try_from(index + 1).unwrap_or(u32::MAX),
                offset,
                size: range_size.min(grant.size - offset),
                sha256: None,
                state: PartState::Pending,
                etag: None,
            }
        })
        .collect();
    context.journal.set_parts(&context.id, &ranges)?;

    record.file_name = destination.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or(name);
    record.size = Some(grant.size);
    record.sha256 = Some(grant.sha256.clone());
    record.media_type = Some(grant.media_type.clone());
    record.patient = Some(grant.patient.clone());
    record.correlation_id = Some(grant.correlation_id.clone());
    record.destination_path = Some(destination);
    record.temp_path = Some(temp);
    record.object_etag = None;
    record.part_size = Some(range_size);
    record.part_count = Some(ranges.len() as u32);
    context.journal.update(record)?;
    Ok(())
}

/// Returns the path a download saves to: `directory/name`, or a numbered
/// variant of it when that exists and `policy` is [`ExistingFile::Rename`].
fn choose_destination(directory: &Path, name: &str, policy: ExistingFile) -> Result<PathBuf, TransferError> {
    let destination = directory.join(name);
    if !destination.exists() || policy == ExistingFile::Overwrite {
        return Ok(destination);
    }
    if policy == ExistingFile::Fail {
        return Err(TransferError::DestinationExists { path: destination });
    }
    for number in 1..=MAX_NUMBERED_NAMES {
        let candidate = directory.join(numbered_name(name, number));
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(TransferError::DestinationExists { path: destination })
}

/// The current download grant, renewed by whichever range task first finds
/// its URL expired.
struct SharedGrant {
    current: tokio::sync::Mutex<(u32, DownloadGrant)>,
}

impl SharedGrant {
    async fn get(&self) -> (u32, DownloadGrant) {
        self.current.lock().await.clone()
    }

    /// Replaces grant `generation` with a new one, unless another task did already.
    async fn renew(&self, context: &TransferContext, generation: u32) -> Result<(), TransferError> {
        let mut current = self.current.lock().await;
        if current.0 != generation {
            return Ok(());
        }
        if generation >= MAX_URL_RENEWALS {
            return Err(TransferError::RetriesExhausted {
                stage: format!("renewing the download URL of document {}", current.1.document_id),
                attempts: generation,
                last: "the URL expired before the download finished".to_owned(),
            });
        }
        let document_id = current.1.document_id.clone();
        let grant = context.gateway(|| context.grants.download(&document_id)).await?;
        if grant.size != current.1.size || grant.sha256 != current.1.sha256 {
            return Err(TransferError::ObjectChanged {
                document_id,
                detail: "a new grant names a different size or SHA-256".to_owned(),
            });
        }
        tracing::info!(transfer = %context.id, url = grant.url.redacted(), "download URL renewed");
        *current = (generation + 1, grant);
        Ok(())
    }
}

/// Fetches `ranges`, several in flight, and reports each confirmed range to
/// `digest`.
async fn fetch_ranges(
    context: &Arc<TransferContext>,
    record: &TransferRecord,
    grant: DownloadGrant,
    file: &Arc<File>,
    sync: &Arc<FileSync>,
    ranges: Vec<PartRecord>,
    digest: &RangeDigest,
) -> Result<(), TransferError> {
    let shared = Arc::new(SharedGrant { current: tokio::sync::Mutex::new((0, grant)) });
    let etag = Arc::new(Mutex::new(record.object_etag.clone()));
    let in_flight = context.options.ranges_in_flight.max(1);
    let mut pending = ranges.into_iter();
    let mut tasks = JoinSet::new();

    loop {
        while tasks.len() < in_flight && context.control() == super::Control::Run {
            let Some(range) = pending.next() else { break };
            let task = fetch_range(context.clone(), shared.clone(), etag.clone(), file.clone(), sync.clone(), range);
            tasks.spawn(task.in_current_span());
        }
        let Some(joined) = tasks.join_next().await else { break };
        let result = joined.map_err(|error| TransferError::Task(error.to_string())).and_then(|result| result);
        match result {
            Ok(part_number) => digest.complete(part_number),
            Err(error) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return Err(error);
            }
        }
    }
    if context.control() != super::Control::Run {
        return Err(TransferError::Interrupted);
    }
    Ok(())
}

/// Records a range's state in the journal on a blocking thread, because the
/// journal flushes each change to disk and would otherwise stall the other
/// ranges on the same runtime thread.
async fn set_range_state(context: &TransferContext, part_number: u32, state: PartState) -> Result<(), TransferError> {
    let journal = context.journal.clone();
    let id = context.id.clone();
    tokio::task::spawn_blocking(move || journal.set_part(&id, part_number, state, None, None))
        .await
        .map_err(|error| TransferError::Task(error.to_string()))?
        .map_err(TransferError::from)
}

/// How one ranged `GET` failed.
enum GetFailure {
    UrlExpired,
    Retryable { status: Option<u16>, retry_after: Option<std::time::Duration>, message: String },
    Fatal(TransferError),
}

/// Fetches one range until it is written and confirmed, and returns its
/// part number.
async fn fetch_range(
    context: Arc<TransferContext>,
    shared: Arc<SharedGrant>,
    etag: Arc<Mutex<Option<String>>>,
    file: Arc<File>,
    sync: Arc<FileSync>,
    range: PartRecord,
) -> Result<u32, TransferError> {
    set_range_state(&context, range.part_number, PartState::Sent).await?;
    let mut attempt = 0;

    loop {
        let (generation, grant) = shared.get().await;
        let margin = jiff::SignedDuration::try_from(context.options.url_expiry_margin).unwrap_or_default();
        if grant.expires_at <= jiff::Timestamp::now() + margin {
            shared.renew(&context, generation).await?;
            continue;
        }

        // The range's write buffer counts against the engine's budget. The
        // permit is taken before the request opens, so waiting for it is
        // not a stalled connection, and given back after the attempt.
        let buffer_bytes = (WRITE_BUFFER as u64).min(range.size);
        let permit = tokio::select! {
            permit = context.budget.acquire(buffer_bytes) => permit,
            () = context.cancelled() => return Err(TransferError::Interrupted),
        };
        let counted = AtomicU64::new(0);
        let attempted = get_range(&context, &grant, &etag, &range, &file, &sync, &counted).await;
        drop(permit);
        let failure = match attempted {
            Ok(()) => {
                set_range_state(&context, range.part_number, PartState::Confirmed).await?;
                context.network_ok()?;
                return Ok(range.part_number);
            }
            Err(failure) => failure,
        };
        context.remove_bytes(counted.load(Ordering::Relaxed));

        match failure {
            GetFailure::UrlExpired => {
                tracing::info!(transfer = %context.id, range = range.part_number, url = grant.url.redacted(), "download URL expired; requesting a new one");
                shared.renew(&context, generation).await?;
            }
            GetFailure::Retryable { status, retry_after, message } => {
                attempt += 1;
                let network = status.is_none();
                if !network && attempt >= context.options.retry.max_attempts {
                    return Err(TransferError::RetriesExhausted {
                        stage: format!("fetching bytes {}-{} from {}", range.offset, range.offset + range.size - 1, grant.url.redacted()),
                        attempts: attempt,
                        last: message,
                    });
                }
                if network {
                    context.set_state(TransferState::WaitingForNetwork)?;
                }
                let delay = context.options.retry.delay(attempt, retry_after);
                tracing::warn!(
                    transfer = %context.id,
                    range = range.part_number,
                    status,
                    delay_ms = delay.as_millis() as u64,
                    attempt,
                    url = grant.url.redacted(),
                    "fetching the range failed, retrying: {message}"
                );
                context.sleep(delay).await?;
            }
            GetFailure::Fatal(error) => return Err(error),
        }
    }
}

/// Fetches one range and writes it into the temporary file as it arrives,
/// in batches of about [`WRITE_BUFFER`] bytes, then waits until its bytes are
/// durable. Memory per range stays at about one write buffer whatever the
/// range size.
async fn get_range(
    context: &TransferContext,
    grant: &DownloadGrant,
    etag: &Mutex<Option<String>>,
    range: &PartRecord,
    file: &Arc<File>,
    sync: &FileSync,
    counted: &AtomicU64,
) -> Result<(), GetFailure> {
    let last = range.offset + range.size - 1;
    let known_etag = etag.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    let mut request = context.store.get(grant.url.expose()).header(RANGE, format!("bytes={}-{last}", range.offset));
    if let Some(tag) = &known_etag {
        request = request.header(IF_RANGE, tag);
    }

    let activity = Activity::new();
    let exchange = async {
        let network = |error: reqwest::Error| GetFailure::Retryable {
            status: None,
            retry_after: None,
            message: error.without_url().to_string(),
        };
        let mut response = request.send().await.map_err(network)?;
        let status = response.status();
        let whole_object = range.offset == 0 && range.size == grant.size;
        if !(status == StatusCode::PARTIAL_CONTENT || (status == StatusCode::OK && whole_object)) {
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            return Err(refusal(grant, range, status, &headers, &body));
        }
        check_response(context, grant, etag, range, status, response.headers())?;

        // Chunks are kept as received and written together, which saves
        // copying them into one buffer first.
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0;
        let mut written = 0u64;
        let mut mark = 0;
        while let Some(chunk) = response.chunk().await.map_err(network)? {
            activity.touch();
            context.throttle(chunk.len() as u64, &activity).await;
            context.add_bytes(chunk.len() as u64);
            counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let received = written + (pending_len + chunk.len()) as u64;
            if received > range.size {
                return Err(wrong_length(range, status, format!("at least {received}")));
            }
            pending_len += chunk.len();
            pending.push(chunk);
            if pending_len >= WRITE_BUFFER {
                write_chunks_at(context, file, std::mem::take(&mut pending), range.offset + written).await?;
                mark = sync.wrote(pending_len as u64);
                written += std::mem::take(&mut pending_len) as u64;
                activity.touch();
            }
        }
        if !pending.is_empty() {
            write_chunks_at(context, file, pending, range.offset + written).await?;
            mark = sync.wrote(pending_len as u64);
            written += pending_len as u64;
        }
        if written != range.size {
            return Err(wrong_length(range, status, written.to_string()));
        }
        sync.durable(mark).await.map_err(|source| GetFailure::Fatal(write_error(context, source)))
    };
    tokio::select! {
        outcome = with_idle_timeout(exchange, &activity, context.options.idle_timeout) => outcome.unwrap_or_else(|| {
            Err(GetFailure::Retryable {
                status: None,
                retry_after: None,
                message: format!("no bytes moved for {} s", context.options.idle_timeout.as_secs()),
            })
        }),
        () = context.cancelled() => Err(GetFailure::Fatal(TransferError::Interrupted)),
    }
}

/// Maps a complete response whose body is not the range's length to a
/// failure. The response ended as the store framed it, so the network
/// worked. The failure carries the response's status, which makes the retry
/// policy's `max_attempts` apply, whereas a connection that breaks mid-body
/// is a network failure raised by the body stream.
fn wrong_length(range: &PartRecord, status: StatusCode, received: String) -> GetFailure {
    GetFailure::Retryable {
        status: Some(status.as_u16()),
        retry_after: None,
        message: format!(
            "the store sent {received} bytes for a range of {} bytes (range {}); the store or a proxy \
             in front of it alters response bodies, so report this to the platform's operators",
            range.size, range.part_number
        ),
    }
}

fn write_error(context: &TransferContext, source: std::io::Error) -> TransferError {
    let path = PathBuf::from(format!("temporary file of transfer {}", context.id));
    TransferError::Io { stage: "writing", path, source }
}

/// Writes `chunks` one after another from `offset` of the temporary file,
/// on a blocking thread.
async fn write_chunks_at(context: &TransferContext, file: &Arc<File>, chunks: Vec<Bytes>, offset: u64) -> Result<(), GetFailure> {
    let file = file.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut offset = offset;
        for chunk in &chunks {
            write_all_at(&file, chunk, offset)?;
            offset += chunk.len() as u64;
        }
        Ok(())
    });
    written
        .await
        .map_err(|error| GetFailure::Fatal(TransferError::Task(error.to_string())))?
        .map_err(|source| GetFailure::Fatal(write_error(context, source)))
}

/// Checks a ranged response's `Content-Range` and the object's ETag
/// before any of its bytes are written, recording the ETag the first time.
fn check_response(
    context: &TransferContext,
    grant: &DownloadGrant,
    etag: &Mutex<Option<String>>,
    range: &PartRecord,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Result<(), GetFailure> {
    let last = range.offset + range.size - 1;
    let header = |name| headers.get(name).and_then(|value: &reqwest::header::HeaderValue| value.to_str().ok());
    if status == StatusCode::PARTIAL_CONTENT {
        let received = header(CONTENT_RANGE).and_then(|value| parse_content_range(value).ok());
        if !received.is_some_and(|received| received.first == range.offset && received.last == last) {
            return Err(GetFailure::Retryable {
                status: Some(status.as_u16()),
                retry_after: None,
                message: format!("the store sent Content-Range {:?} for a request of bytes {}-{last}", header(CONTENT_RANGE), range.offset),
            });
        }
    }
    let Some(received) = header(ETAG) else { return Ok(()) };
    let mut known = etag.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match known.as_deref() {
        Some(known) if known != received => Err(GetFailure::Fatal(TransferError::ObjectChanged {
            document_id: grant.document_id.clone(),
            detail: format!("its ETag changed from {known} to {received}"),
        })),
        Some(_) => Ok(()),
        None => {
            *known = Some(received.to_owned());
            drop(known);
            if let Ok(mut record) = context.journal.get(&context.id) {
                record.object_etag = Some(received.to_owned());
                context.journal.update(&record).map_err(|error| GetFailure::Fatal(error.into()))?;
            }
            Ok(())
        }
    }
}

/// Maps a response other than the range's bytes to a failure.
fn refusal(
    grant: &DownloadGrant,
    range: &PartRecord,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    text: &str,
) -> GetFailure {
    let last = range.offset + range.size - 1;
    if status == StatusCode::OK {
        return GetFailure::Fatal(TransferError::ObjectChanged {
            document_id: grant.document_id.clone(),
            detail: "the store answered a ranged request with the whole object, so If-Range no longer matched".to_owned(),
        });
    }
    if status == StatusCode::FORBIDDEN && is_expired_url_body(text) {
        return GetFailure::UrlExpired;
    }
    let retry_after = headers.get(RETRY_AFTER).and_then(|value| value.to_str().ok()).and_then(parse_retry_after);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        return GetFailure::Retryable { status: Some(status.as_u16()), retry_after, message: s3_error_summary(text) };
    }
    GetFailure::Fatal(TransferError::StoreRejected {
        stage: format!("fetching bytes {}-{last} from {}", range.offset, grant.url.redacted()),
        status: status.as_u16(),
        detail: s3_error_summary(text),
    })
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !bytes.is_empty() {
        let written = file.seek_write(bytes, offset)?;
        bytes = &bytes[written..];
        offset += written as u64;
    }
    Ok(())
}

/// Compares the temporary file's size and SHA-256 with the grant. On a
/// mismatch the temporary file is deleted and every range is set back to
/// pending.
fn verify(
    context: &TransferContext,
    record: &TransferRecord,
    temp: &Path,
    actual_size: u64,
    actual_sha256: &str,
) -> Result<(), TransferError> {
    let expected_size = record.size.unwrap_or(0);
    let expected_sha256 = record.sha256.clone().unwrap_or_default();
    if actual_size == expected_size && actual_sha256.eq_ignore_ascii_case(&expected_sha256) {
        return Ok(());
    }
    let _ = std::fs::remove_file(temp);
    context.journal.reset_parts(&context.id)?;
    let mut reset = context.journal.get(&context.id)?;
    reset.object_etag = None;
    context.journal.update(&reset)?;
    Err(TransferError::DigestMismatch {
        document_id: record.document_id.clone().unwrap_or_default(),
        expected_size,
        expected_sha256,
        actual_size,
        actual_sha256: actual_sha256.to_owned(),
    })
}

/// Moves the verified temporary file into place and flushes the folder.
/// Without [`ExistingFile::Overwrite`] a file that appeared at the
/// destination meanwhile is kept: the hard link that places the file fails
/// rather than replacing it.
fn place(temp: &Path, destination: &Path, policy: ExistingFile) -> Result<PathBuf, TransferError> {
    let directory = destination.parent().unwrap_or(Path::new(".")).to_owned();
    let name = destination.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let placed = if policy == ExistingFile::Overwrite {
        std::fs::rename(temp, destination).map_err(io_error("moving the download into place at", destination))?;
        destination.to_owned()
    } else {
        let mut number = 0;
        loop {
            let candidate = if number == 0 { destination.to_owned() } else { directory.join(numbered_name(&name, number)) };
            match std::fs::hard_link(temp, &candidate) {
                Ok(()) => {
                    std::fs::remove_file(temp).map_err(io_error("removing the temporary file", temp))?;
                    break candidate;
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    if policy == ExistingFile::Fail || number >= MAX_NUMBERED_NAMES {
                        return Err(TransferError::DestinationExists { path: candidate });
                    }
                    number += 1;
                }
                // File systems without hard links: check, then rename.
                Err(_) if !candidate.exists() => {
                    std::fs::rename(temp, &candidate).map_err(io_error("moving the download into place at", &candidate))?;
                    break candidate;
                }
                Err(error) => return Err(io_error("moving the download into place at", &candidate)(error)),
            }
        }
    };
    sync_directory(&directory);
    Ok(placed)
}

/// Flushes a folder's entries so a rename survives a power cut (Unix only;
/// Windows has no equivalent for folders).
fn sync_directory(directory: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(directory) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = directory;
}

/// Removes a cancelled download's temporary file.
pub(crate) fn discard(record: &TransferRecord) {
    if let Some(temp) = &record.temp_path {
        let _ = std::fs::remove_file(temp);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_temp_file_is_owner_only() {
        let folder = tempfile::tempdir().unwrap();
        let temp = folder.path().join(".scan.zip.0123456789abcdef.ferry-part");

        create_temp_file(&temp).unwrap();

        assert_eq!(mode(&temp), 0o600, "mode {:o}", mode(&temp));
    }

    #[test]
    fn new_temp_file_rejects_dangling_symlink() {
        let folder = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("created-through-link");
        let temp = folder.path().join(".scan.zip.0123456789abcdef.ferry-part");
        std::os::unix::fs::symlink(&target, &temp).unwrap();

        let error = create_temp_file(&temp).unwrap_err();

        let TransferError::Io { source, .. } = &error else { panic!("unexpected error {error}") };
        assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists, "{error}");
        assert!(!target.exists(), "the link was followed");
    }

    #[test]
    fn reopened_temp_file_rejects_symlink() {
        let folder = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim.txt");
        std::fs::write(&target, b"unchanged").unwrap();
        let temp = folder.path().join(".scan.zip.0123456789abcdef.ferry-part");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, &temp).unwrap();

        let error = reopen_temp_file(&temp).unwrap_err();

        assert!(error.to_string().starts_with("reopening the temporary file"), "{error}");
        assert_eq!(std::fs::read(&target).unwrap(), b"unchanged");
        assert_eq!(mode(&target), 0o644, "the target's mode changed");
    }

    #[test]
    fn reopened_temp_file_becomes_owner_only() {
        let folder = tempfile::tempdir().unwrap();
        let temp = folder.path().join(".scan.zip.0123456789abcdef.ferry-part");
        std::fs::write(&temp, b"partial").unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644)).unwrap();

        reopen_temp_file(&temp).unwrap();

        assert_eq!(mode(&temp), 0o600, "mode {:o}", mode(&temp));
    }

    #[test]
    fn reopened_temp_file_rejects_folder() {
        let folder = tempfile::tempdir().unwrap();
        let temp = folder.path().join(".scan.zip.0123456789abcdef.ferry-part");
        std::fs::create_dir(&temp).unwrap();

        let error = reopen_temp_file(&temp).unwrap_err();

        assert!(error.to_string().starts_with("reopening the temporary file"), "{error}");
    }
}
