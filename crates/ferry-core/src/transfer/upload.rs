//! Upload of one file: create → part URLs → `PUT` parts → complete.
//!
//! The file is read once, in order. A reader task reads one part into a
//! buffer, reused from part to part (see [`BufferPool`]), only when one of
//! `parts_in_flight` slots is free and the engine's budget of buffered bytes
//! has room for the part (see [`BufferBudget`]), hashes it, and
//! feeds the whole-file SHA-256; parts the store already holds are read and
//! hashed but not sent. Parts that are ready together get their URLs in one
//! `part-urls` request.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use ferry_api::{
    CompleteUploadRequest, CompletedPart, CompletedUpload, MAX_PART_URLS_PER_REQUEST, PartChecksum,
    PartUrl, StoredPart, UploadGrantRequest, UploadStatus,
};
use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, ETAG, RETRY_AFTER};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::buffers::{BufferPool, PartBuffer};
#[cfg(doc)]
use super::buffers::BufferBudget;
use super::retry::{Activity, with_idle_timeout};
use super::wire::read_error_body;
use super::{TransferContext, TransferError, TransferOutcome, is_expired_url_body, s3_error_summary};
use crate::grant::{ExpectedReceipt, parse_retry_after, verify_receipt};
use crate::journal::{PartRecord, PartState, TransferRecord, TransferState};

/// Slice of a part buffer handed to the HTTP stack at a time; progress and
/// the idle timeout advance per slice.
const BODY_SLICE: usize = 256 * 1024;
/// Renewals of one part's URL before the upload fails; each renewal follows
/// an expiry, so many in a row mean a clock or store problem.
const MAX_URL_RENEWALS: u32 = 20;

/// A part read and hashed, waiting to be sent. Its permit frees a reader
/// slot when the part is dropped.
struct ReadyPart {
    number: u32,
    bytes: Bytes,
    sha256: String,
    _slot: OwnedSemaphorePermit,
}

/// Returns the source file's modification time in nanoseconds since the
/// Unix epoch.
pub(crate) fn mtime_ns(metadata: &std::fs::Metadata) -> Option<i64> {
    let modified = metadata.modified().ok()?;
    let since_epoch = modified.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_nanos()).ok()
}

/// Fails when the source file's size or modification time differ from the
/// journal's record.
fn check_source(record: &TransferRecord, path: &Path) -> Result<(), TransferError> {
    let metadata = std::fs::metadata(path).map_err(|source| TransferError::Io {
        stage: "reading the metadata of",
        path: path.to_owned(),
        source,
    })?;
    if Some(metadata.len()) != record.size {
        return Err(TransferError::SourceChanged {
            path: path.to_owned(),
            detail: format!("size was {} bytes, now {} bytes", record.size.unwrap_or(0), metadata.len()),
        });
    }
    if mtime_ns(&metadata) != record.source_mtime_ns {
        return Err(TransferError::SourceChanged {
            path: path.to_owned(),
            detail: "its modification time changed".to_owned(),
        });
    }
    Ok(())
}

pub(crate) async fn run(context: Arc<TransferContext>) -> Result<TransferOutcome, TransferError> {
    let mut record = context.journal.get(&context.id)?;
    let source = record.source_path.clone().ok_or_else(|| TransferError::IncompleteRecord {
        id: context.id.clone(),
        detail: "an upload without a source path".to_owned(),
    })?;
    check_source(&record, &source)?;
    context.bytes_total.store(record.size.unwrap_or(0), Ordering::Relaxed);
    context.set_state(TransferState::Running)?;

    if record.upload_id.is_none() {
        create(&context, &mut record).await?;
    }
    let upload_id = record.upload_id.clone().unwrap_or_default();

    let state = context.gateway(|| context.grants.upload_state(&upload_id)).await?;
    match (state.status, state.completed) {
        (UploadStatus::Open, _) => {}
        (UploadStatus::Completed, Some(completed)) => {
            tracing::info!(transfer = %context.id, %upload_id, "the gateway completed this upload before; checking its receipt");
            return finish(&context, record, completed).await;
        }
        (status, _) => {
            return Err(TransferError::UploadClosed {
                upload_id,
                status: format!("{status:?}").to_lowercase(),
            });
        }
    }

    let parts = reconcile(&context, &state.parts)?;
    let confirmed: u64 = parts.iter().filter(|part| part.state == PartState::Confirmed).map(|part| part.size).sum();
    context.bytes_done.store(confirmed, Ordering::Relaxed);

    let sha256 = send_parts(&context, &record, &source, &upload_id, parts).await?;

    context.set_state(TransferState::Verifying)?;
    let mut record = context.journal.get(&context.id)?;
    record.sha256 = Some(sha256.clone());
    context.journal.update(&record)?;
    let parts = context.journal.parts(&context.id)?;
    let mut completed_parts = Vec::with_capacity(parts.len());
    for part in &parts {
        match (&part.state, &part.etag, &part.sha256) {
            (PartState::Confirmed, Some(etag), Some(part_sha256)) => completed_parts.push(CompletedPart {
                part_number: part.part_number,
                etag: etag.clone(),
                sha256: part_sha256.clone(),
            }),
            _ => {
                return Err(TransferError::IncompleteRecord {
                    id: context.id.clone(),
                    detail: format!("part {} is not confirmed after sending every part", part.part_number),
                });
            }
        }
    }
    let request = CompleteUploadRequest { parts: completed_parts, sha256 };
    let completed = complete(&context, &upload_id, &request).await?;
    finish(&context, record, completed).await
}

/// Sends the completion and retries it like any grant API request, except
/// after a transport error (reset, timeout), when the gateway may have
/// completed the upload and only the response was lost. The retry then
/// requests the upload's state first, which returns the receipt of a
/// completed upload, and completes again only when the state shows no
/// completion. A lost response shows as the HTTP client's idle timeout
/// (`crate::http::HttpOptions::read_timeout`, 60 s by default), because the gateway
/// sends no byte before the completion is done.
async fn complete(
    context: &TransferContext,
    upload_id: &str,
    request: &CompleteUploadRequest,
) -> Result<CompletedUpload, TransferError> {
    let response_lost = std::sync::atomic::AtomicBool::new(false);
    let response_lost = &response_lost;
    context
        .gateway(|| async move {
            if response_lost.load(Ordering::Relaxed) {
                let state = context.grants.upload_state(upload_id).await?;
                if let (UploadStatus::Completed, Some(completed)) = (state.status, state.completed) {
                    tracing::info!(transfer = %context.id, %upload_id, "the completion's response was lost, but the gateway completed the upload");
                    return Ok(completed);
                }
                response_lost.store(false, Ordering::Relaxed);
            }

            let result = context.grants.complete(upload_id, request).await;
            if let Err(error) = &result
                && error.status().is_none()
            {
                response_lost.store(true, Ordering::Relaxed);
            }
            result
        })
        .await
}

/// Creates the upload at the gateway and records it with its parts.
async fn create(context: &TransferContext, record: &mut TransferRecord) -> Result<(), TransferError> {
    let request: UploadGrantRequest = record
        .upload_request
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| TransferError::IncompleteRecord {
            id: context.id.clone(),
            detail: "an upload without its grant request".to_owned(),
        })?;
    let grant = context.gateway(|| context.grants.create_upload(&request)).await?;
    let size = record.size.unwrap_or(0);
    if grant.size != size {
        return Err(TransferError::InconsistentGrant(format!(
            "upload {} is for {} bytes but the file has {size}",
            grant.upload_id, grant.size
        )));
    }

    let parts = plan_parts(size, grant.part_size, grant.part_count)?;
    context.journal.set_parts(&context.id, &parts)?;
    record.upload_id = Some(grant.upload_id.clone());
    record.part_size = Some(grant.part_size);
    record.part_count = Some(grant.part_count);
    record.correlation_id = Some(grant.correlation_id.clone());
    context.journal.update(record)?;
    tracing::info!(
        transfer = %context.id,
        upload_id = %grant.upload_id,
        correlation_id = %grant.correlation_id,
        part_size = grant.part_size,
        part_count = grant.part_count,
        "upload created"
    );
    Ok(())
}

/// Splits `size` bytes into `part_count` parts of `part_size`, the last one
/// shorter. A zero-byte file is one empty part.
fn plan_parts(size: u64, part_size: u64, part_count: u32) -> Result<Vec<PartRecord>, TransferError> {
    let expected = if size == 0 { 1 } else { size.div_ceil(part_size.max(1)) };
    if u64::from(part_count) != expected && !(size == 0 && part_count == 0) {
        return Err(TransferError::InconsistentGrant(format!(
            "{part_count} parts of {part_size} bytes cannot hold {size} bytes exactly"
        )));
    }
    Ok((1..=part_count)
        .map(|number| {
            let offset = u64::from(number - 1) * part_size;
            PartRecord {
                part_number: number,
                offset,
                size: part_size.min(size - offset),
                sha256: None,
                state: PartState::Pending,
                etag: None,
            }
        })
        .collect())
}

/// Marks the parts the store holds with the hash the journal recorded as
/// confirmed, and every other part as pending. Returns the parts.
fn reconcile(context: &TransferContext, stored: &[StoredPart]) -> Result<Vec<PartRecord>, TransferError> {
    let stored: HashMap<u32, &StoredPart> = stored.iter().map(|part| (part.part_number, part)).collect();
    let mut parts = context.journal.parts(&context.id)?;
    for part in &mut parts {
        let held = stored.get(&part.part_number).filter(|held| {
            held.size == part.size && part.sha256.as_deref().is_some_and(|sha| sha.eq_ignore_ascii_case(&held.sha256))
        });
        match held {
            Some(held) => {
                if part.state != PartState::Confirmed || part.etag.as_deref() != Some(&held.etag) {
                    context.journal.set_part(&context.id, part.part_number, PartState::Confirmed, None, Some(&held.etag))?;
                }
                part.state = PartState::Confirmed;
                part.etag = Some(held.etag.clone());
            }
            None if part.state != PartState::Pending => {
                context.journal.set_part(&context.id, part.part_number, PartState::Pending, None, None)?;
                part.state = PartState::Pending;
            }
            None => {}
        }
    }
    Ok(parts)
}

/// Reads every part, sends those not confirmed, and returns the whole-file
/// SHA-256. Returns [`TransferError::Interrupted`] after a pause once the
/// parts in flight are done.
async fn send_parts(
    context: &Arc<TransferContext>,
    record: &TransferRecord,
    source: &Path,
    upload_id: &str,
    parts: Vec<PartRecord>,
) -> Result<String, TransferError> {
    let in_flight = context.options.parts_in_flight.max(1);
    let (ready_sender, mut ready) = mpsc::channel(in_flight);
    let slots = Arc::new(Semaphore::new(in_flight));
    let buffers = BufferPool::new(in_flight, context.budget.clone());
    let reader = tokio::spawn(
        read_parts(context.clone(), record.clone(), source.to_owned(), parts, ready_sender, slots, buffers)
            .in_current_span(),
    );

    let mut sends = JoinSet::new();
    let mut reading = true;
    let failure = loop {
        tokio::select! {
            next = ready.recv(), if reading => match next {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_PART_URLS_PER_REQUEST {
                        match ready.try_recv() {
                            Ok(part) => batch.push(part),
                            Err(_) => break,
                        }
                    }
                    match request_urls(context, upload_id, &batch).await {
                        Ok(mut urls) => {
                            for part in batch {
                                let url = urls.remove(&part.number);
                                let task = send_part(context.clone(), upload_id.to_owned(), part, url);
                                sends.spawn(task.in_current_span());
                            }
                        }
                        Err(error) => break Some(error),
                    }
                }
                None => reading = false,
            },
            Some(joined) = sends.join_next() => match joined {
                Ok(Ok(())) => {}
                Ok(Err(error)) => break Some(error),
                Err(error) => break Some(TransferError::Task(error.to_string())),
            },
            else => break None,
        }
    };

    if let Some(error) = failure {
        reader.abort();
        sends.abort_all();
        while sends.join_next().await.is_some() {}
        return Err(error);
    }
    match reader.await {
        Ok(Ok(Some(sha256))) => Ok(sha256),
        Ok(Ok(None)) => Err(TransferError::Interrupted),
        Ok(Err(error)) => Err(error),
        Err(error) => Err(TransferError::Task(error.to_string())),
    }
}

/// Reads the file part by part, hashing each part and the whole file.
/// Returns `None` when a pause or cancel stopped the reading.
async fn read_parts(
    context: Arc<TransferContext>,
    record: TransferRecord,
    source: PathBuf,
    parts: Vec<PartRecord>,
    ready: mpsc::Sender<ReadyPart>,
    slots: Arc<Semaphore>,
    buffers: Arc<BufferPool>,
) -> Result<Option<String>, TransferError> {
    let open_error = |source_error| TransferError::Io { stage: "opening", path: source.clone(), source: source_error };
    let file = Arc::new(File::open(&source).map_err(open_error)?);
    let mut whole = Sha256::new();

    for part in parts {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
            () = context.interrupted() => return Ok(None),
        };
        let length = usize::try_from(part.size).map_err(|_| {
            TransferError::InconsistentGrant(format!("a part of {} bytes does not fit in memory", part.size))
        })?;
        // Waiting here for the budget leaves no request open, so the idle
        // timeout cannot fire while other transfers hold the budget.
        let buffer = tokio::select! {
            buffer = buffers.take(length) => buffer,
            () = context.interrupted() => return Ok(None),
        };
        let file = file.clone();
        let path = source.clone();
        let offset = part.offset;
        let buffers = buffers.clone();
        let (bytes, sha256, hasher) =
            tokio::task::spawn_blocking(move || read_part(&file, &path, offset, buffer, whole, &buffers))
            .await
            .map_err(|error| TransferError::Task(error.to_string()))??;
        whole = hasher;

        if part.sha256.as_deref().is_some_and(|recorded| recorded != sha256) {
            return Err(TransferError::SourceChanged {
                path: source.clone(),
                detail: format!("part {} no longer has the SHA-256 recorded when it was first read", part.part_number),
            });
        }
        if part.state == PartState::Confirmed {
            continue;
        }
        context.journal.set_part(&context.id, part.part_number, PartState::Pending, Some(&sha256), None)?;
        let ready_part = ReadyPart { number: part.part_number, bytes, sha256, _slot: slot };
        if ready.send(ready_part).await.is_err() {
            return Ok(None);
        }
    }

    check_source(&record, &source)?;
    Ok(Some(hex::encode(whole.finalize())))
}

/// Fills `part` from `offset`, returning its bytes with their SHA-256 and
/// the whole-file hasher fed with them.
fn read_part(
    file: &File,
    path: &Path,
    offset: u64,
    mut part: PartBuffer,
    mut whole: Sha256,
    buffers: &Arc<BufferPool>,
) -> Result<(Bytes, String, Sha256), TransferError> {
    read_exact_at(file, &mut part.buffer, offset).map_err(|source| match source.kind() {
        std::io::ErrorKind::UnexpectedEof => TransferError::SourceChanged {
            path: path.to_owned(),
            detail: "it is shorter than when the transfer began".to_owned(),
        },
        _ => TransferError::Io { stage: "reading", path: path.to_owned(), source },
    })?;
    let sha256 = hex::encode(Sha256::digest(&part.buffer));
    whole.update(&part.buffer);
    Ok((buffers.freeze(part), sha256, whole))
}

#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(windows)]
pub(crate) fn read_exact_at(file: &File, mut buffer: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buffer.is_empty() {
        match file.seek_read(buffer, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            read => {
                buffer = &mut buffer[read..];
                offset += read as u64;
            }
        }
    }
    Ok(())
}

/// Requests URLs for a batch of parts, keyed by part number.
async fn request_urls(
    context: &TransferContext,
    upload_id: &str,
    batch: &[ReadyPart],
) -> Result<BTreeMap<u32, PartUrl>, TransferError> {
    let checksums: Vec<PartChecksum> = batch
        .iter()
        .map(|part| PartChecksum { part_number: part.number, sha256: part.sha256.clone() })
        .collect();
    let urls = context.gateway(|| context.grants.part_urls(upload_id, &checksums)).await?;
    Ok(urls.into_iter().map(|url| (url.part_number, url)).collect())
}

/// How one `PUT` of a part failed.
enum PutFailure {
    UrlExpired,
    Retryable { status: Option<u16>, retry_after: Option<std::time::Duration>, message: String },
    Fatal(TransferError),
}

/// Sends one part until the store confirms it, renewing its URL when it
/// expires and retrying transient failures.
async fn send_part(
    context: Arc<TransferContext>,
    upload_id: String,
    part: ReadyPart,
    url: Option<PartUrl>,
) -> Result<(), TransferError> {
    context.journal.set_part(&context.id, part.number, PartState::Sent, None, None)?;
    let mut url = url;
    let mut attempt = 0;
    let mut renewals = 0;

    loop {
        let current = match url.take() {
            Some(current) if !expires_soon(&context, &current) => current,
            _ => {
                renewals += 1;
                if renewals > MAX_URL_RENEWALS {
                    return Err(TransferError::RetriesExhausted {
                        stage: format!("renewing the URL of part {}", part.number),
                        attempts: renewals - 1,
                        last: "the URL expired before the store accepted the part".to_owned(),
                    });
                }
                renew_url(&context, &upload_id, &part).await?
            }
        };

        let counted = Arc::new(AtomicU64::new(0));
        let failure = match put_part(&context, &part, &current, &counted).await {
            Ok(etag) => {
                context.journal.set_part(&context.id, part.number, PartState::Confirmed, None, Some(&etag))?;
                context.network_ok()?;
                return Ok(());
            }
            Err(failure) => failure,
        };
        let handed_over = counted.load(Ordering::Relaxed);
        context.remove_bytes(handed_over);

        // A request that lost its response after the whole body went out may
        // have stored the part, so the upload's state is requested before
        // sending the bytes again.
        let body_sent = handed_over >= part.bytes.len() as u64;
        if body_sent
            && matches!(failure, PutFailure::Retryable { status: None, .. })
            && let Some(etag) = stored_etag(&context, &upload_id, &part).await
        {
            tracing::info!(transfer = %context.id, part = part.number, "part already stored; its response was lost, so it is not sent again");
            context.add_bytes(part.bytes.len() as u64);
            context.journal.set_part(&context.id, part.number, PartState::Confirmed, None, Some(&etag))?;
            context.network_ok()?;
            return Ok(());
        }

        match failure {
            PutFailure::UrlExpired => {
                tracing::info!(transfer = %context.id, part = part.number, url = current.url.redacted(), "part URL expired; requesting a new one");
            }
            PutFailure::Retryable { status, retry_after, message } => {
                attempt += 1;
                let network = status.is_none();
                if !network && attempt >= context.options.retry.max_attempts {
                    return Err(TransferError::RetriesExhausted {
                        stage: format!("sending part {} to {}", part.number, current.url.redacted()),
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
                    part = part.number,
                    status,
                    delay_ms = delay.as_millis() as u64,
                    attempt,
                    url = current.url.redacted(),
                    "sending the part failed, retrying: {message}"
                );
                context.sleep(delay).await?;
                url = Some(current);
            }
            PutFailure::Fatal(error) => return Err(error),
        }
    }
}

/// Returns the ETag of `part` when the upload's state at the gateway lists
/// it with the same size and SHA-256, and `None` when it does not or the
/// gateway cannot be asked.
async fn stored_etag(context: &TransferContext, upload_id: &str, part: &ReadyPart) -> Option<String> {
    let state = match context.grants.upload_state(upload_id).await {
        Ok(state) => state,
        Err(error) => {
            tracing::debug!(transfer = %context.id, part = part.number, "requesting the upload's state failed; the part is sent again: {error}");
            return None;
        }
    };
    state
        .parts
        .into_iter()
        .find(|held| {
            held.part_number == part.number
                && held.size == part.bytes.len() as u64
                && held.sha256.eq_ignore_ascii_case(&part.sha256)
        })
        .map(|held| held.etag)
}

fn expires_soon(context: &TransferContext, url: &PartUrl) -> bool {
    let margin = jiff::SignedDuration::try_from(context.options.url_expiry_margin).unwrap_or_default();
    url.expires_at <= jiff::Timestamp::now() + margin
}

async fn renew_url(context: &TransferContext, upload_id: &str, part: &ReadyPart) -> Result<PartUrl, TransferError> {
    let checksums = [PartChecksum { part_number: part.number, sha256: part.sha256.clone() }];
    let urls = context.gateway(|| context.grants.part_urls(upload_id, &checksums)).await?;
    urls.into_iter()
        .find(|url| url.part_number == part.number)
        .ok_or_else(|| TransferError::InconsistentGrant(format!("no URL for part {} in the gateway's response", part.number)))
}

/// Sends the part once. The body goes out in slices so that progress and
/// the idle timeout follow the bytes actually taken by the connection.
async fn put_part(
    context: &Arc<TransferContext>,
    part: &ReadyPart,
    url: &PartUrl,
    counted: &Arc<AtomicU64>,
) -> Result<String, PutFailure> {
    let method = reqwest::Method::from_bytes(url.method.as_bytes()).map_err(|_| {
        PutFailure::Fatal(TransferError::InconsistentGrant(format!("part URL method {:?} is not an HTTP method", url.method)))
    })?;
    let activity = Activity::for_body(part.bytes.len() as u64);
    let body = sliced_body(part.bytes.clone(), activity.clone(), context.clone(), counted.clone());
    let mut request = context
        .store
        .request(method, url.url.expose())
        .header(CONTENT_LENGTH, part.bytes.len());
    for (name, value) in &url.headers {
        request = request.header(name, value);
    }

    let exchange = async {
        let response = request.body(body).send().await?;
        let status = response.status();
        let etag = response.headers().get(ETAG).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|value| value.to_str().ok()).and_then(parse_retry_after);
        let body = read_error_body(response).await;
        Ok::<_, reqwest::Error>((status, etag, retry_after, body))
    };
    let outcome = tokio::select! {
        outcome = with_idle_timeout(exchange, &activity, context.options.idle_timeout) => outcome,
        () = context.cancelled() => return Err(PutFailure::Fatal(TransferError::Interrupted)),
    };

    let (status, etag, retry_after, body) = match outcome {
        None => {
            return Err(PutFailure::Retryable {
                status: None,
                retry_after: None,
                message: format!("no bytes moved for {} s", context.options.idle_timeout.as_secs()),
            });
        }
        Some(Err(error)) => {
            return Err(PutFailure::Retryable { status: None, retry_after: None, message: error.without_url().to_string() });
        }
        Some(Ok(response)) => response,
    };

    if status.is_success() {
        return etag.ok_or_else(|| {
            PutFailure::Fatal(TransferError::StoreRejected {
                stage: format!("sending part {}", part.number),
                status: status.as_u16(),
                detail: "the response has no ETag header".to_owned(),
            })
        });
    }
    if status == reqwest::StatusCode::FORBIDDEN && is_expired_url_body(&body) {
        return Err(PutFailure::UrlExpired);
    }
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS || status == reqwest::StatusCode::REQUEST_TIMEOUT {
        return Err(PutFailure::Retryable { status: Some(status.as_u16()), retry_after, message: s3_error_summary(&body) });
    }
    Err(PutFailure::Fatal(TransferError::StoreRejected {
        stage: format!("sending part {} to {}", part.number, url.url.redacted()),
        status: status.as_u16(),
        detail: s3_error_summary(&body),
    }))
}

fn sliced_body(bytes: Bytes, activity: Activity, context: Arc<TransferContext>, counted: Arc<AtomicU64>) -> reqwest::Body {
    if bytes.is_empty() {
        return reqwest::Body::from(bytes);
    }
    let slices: Vec<Bytes> = (0..bytes.len())
        .step_by(BODY_SLICE)
        .map(|start| bytes.slice(start..(start + BODY_SLICE).min(bytes.len())))
        .collect();
    let stream = futures::stream::iter(slices).then(move |slice| {
        let activity = activity.clone();
        let context = context.clone();
        let counted = counted.clone();
        async move {
            context.throttle(slice.len() as u64, &activity).await;
            activity.handed_over(slice.len() as u64);
            context.add_bytes(slice.len() as u64);
            counted.fetch_add(slice.len() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(slice)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// Verifies the gateway's receipt against the journal and records the
/// completed upload.
async fn finish(
    context: &TransferContext,
    mut record: TransferRecord,
    completed: CompletedUpload,
) -> Result<TransferOutcome, TransferError> {
    context.set_state(TransferState::Verifying)?;
    let upload_id = record.upload_id.clone().unwrap_or_default();
    let parts = context.journal.parts(&context.id)?;
    let part_sha256: Vec<String> = parts.iter().map(|part| part.sha256.clone().unwrap_or_default()).collect();
    let sha256 = record.sha256.clone().ok_or_else(|| TransferError::IncompleteRecord {
        id: context.id.clone(),
        detail: "a completed upload without the whole-file SHA-256".to_owned(),
    })?;
    let patient = record.patient.clone().ok_or_else(|| TransferError::IncompleteRecord {
        id: context.id.clone(),
        detail: "a completed upload without the patient it was for".to_owned(),
    })?;
    let expected = ExpectedReceipt {
        upload_id: &upload_id,
        size: record.size.unwrap_or(0),
        sha256: &sha256,
        part_sha256: &part_sha256,
        patient: &patient,
        document_id: &completed.document_id,
    };
    let keys = context.gateway(|| context.grants.keys()).await?;
    verify_receipt(&completed.receipt, &expected, &keys)
        .map_err(|source| TransferError::Receipt { upload_id: upload_id.clone(), source })?;

    record.document_id = Some(completed.document_id.clone());
    record.receipt = serde_json::to_string(&completed.receipt).ok();
    record.state = TransferState::Completed;
    record.error = None;
    context.journal.update(&record)?;
    context.set_state(TransferState::Completed)?;
    tracing::info!(transfer = %context.id, %upload_id, document_id = %completed.document_id, "upload completed and its receipt verified");
    Ok(TransferOutcome::Uploaded { document_id: completed.document_id, receipt: completed.receipt })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_file_exactly() {
        let parts = plan_parts(40 * 1024 * 1024 + 1, 16 * 1024 * 1024, 3).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].offset, 32 * 1024 * 1024);
        assert_eq!(parts[2].size, 8 * 1024 * 1024 + 1);
        assert_eq!(parts.iter().map(|part| part.size).sum::<u64>(), 40 * 1024 * 1024 + 1);
    }

    #[test]
    fn zero_byte_file_is_one_empty_part() {
        let parts = plan_parts(0, 16 * 1024 * 1024, 1).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].size, 0);
    }

    #[test]
    fn inconsistent_part_count_is_rejected() {
        assert!(plan_parts(100, 10, 3).is_err());
    }
}
