//! Download grants, signing keys, checkpoints and the audit query.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use ferry_api::{
    Checkpoint, CheckpointRequest, DownloadGrant, DownloadGrantRequest, EpochLink, UploadStatus,
};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::epoch_links::{Anchor, check_epoch_links};
use super::input::{check_fhir_id, check_sha256, check_text, parse_json};
use super::{GrantError, GrantService, GrantState, new_correlation_id, timestamp_after};
use crate::audit::{AuditAction, AuditLog, Step};
use crate::policy::Action;
use crate::repository::RepositoryError;
use crate::tokens::Authenticated;

/// Query parameter that carries a download grant's correlation id in its
/// presigned URL. It is signed with the URL, so the embedded store can
/// attribute the object access it audits to the grant.
pub const CORRELATION_QUERY: &str = "x-ferry-correlation-id";

/// `POST /downloads`.
pub async fn create(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DownloadGrant>, GrantError> {
    let request: DownloadGrantRequest = parse_json(&headers, body)?;
    check_fhir_id("document_id", &request.document_id)?;
    let service = &state.service;
    let correlation_id = new_correlation_id();

    let not_found = || {
        GrantError::not_found(format!(
            "no document '{}' is visible to this token",
            request.document_id
        ))
        .with_correlation(&correlation_id)
    };
    let upload = match service
        .repository
        .upload_by_document(&request.document_id)?
    {
        Some(upload) if upload.status == UploadStatus::Completed => upload,
        _ => return Err(not_found()),
    };
    let Some(completion) = &upload.completion else {
        return Err(not_found());
    };

    let decision = service.authorize(
        &claims,
        Step::AuthorizeDownload,
        Action::Download,
        &upload.patient,
        Some(&upload.object_key),
        &correlation_id,
    )?;
    if !decision.is_allowed() {
        return Err(GrantError::denied(&decision).with_correlation(&correlation_id));
    }

    let now = Timestamp::now();
    let lifetime = service.policy.lifetimes().download_url;
    let url = service.store.presign(
        "GET",
        &upload.object_key,
        &[(CORRELATION_QUERY, &correlation_id)],
        &BTreeMap::new(),
        lifetime,
        now,
    );
    let expires_at = timestamp_after(now, lifetime);
    service
        .issued_downloads
        .insert(&upload.object_key, &correlation_id, expires_at);

    let mut record = service.record_for(
        &claims,
        Step::DownloadUrl,
        AuditAction::Read,
        &correlation_id,
    );
    record.patient = Some(upload.patient.clone());
    record.object = Some(upload.object_key.clone());
    record.references = vec![format!("DocumentReference/{}", completion.document_id)];
    record.detail = Some(format!("presigned GET URL valid until {expires_at}"));
    service.audit.record(&record)?;
    tracing::info!(document_id = %completion.document_id, correlation_id, "download granted");

    Ok(Json(DownloadGrant {
        document_id: completion.document_id.clone(),
        url,
        expires_at,
        size: upload.size,
        sha256: completion.receipt.receipt.sha256.clone(),
        file_name: upload.file_name.clone(),
        media_type: upload.media_type.clone(),
        patient: upload.patient.clone(),
        correlation_id,
    }))
}

/// `GET /keys`: the JWKS of the key that signs receipts and checkpoints.
pub async fn keys(State(state): State<GrantState>) -> Json<Value> {
    Json(state.service.signing_key.jwks())
}

/// `POST /checkpoints`.
pub async fn create_checkpoint(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Checkpoint>, GrantError> {
    let mut request: CheckpointRequest = parse_json(&headers, body)?;
    // The links are evidence for the key check, not part of the head the
    // gateway signs and stores.
    let epoch_links = std::mem::take(&mut request.epoch_links);
    check_device_id(&request.device_id)?;
    check_sha256("head_sha256", &request.head_sha256)?;
    check_text("epoch_public_key", &request.epoch_public_key, 256)?;
    if let Some(log_id) = &request.log_id {
        check_text("log_id", log_id, 64)?;
    }
    if let Some(device_public_key) = &request.device_public_key {
        check_text("device_public_key", device_public_key, 256)?;
    }
    let service = &state.service;
    if let Err(error) = check_log_keys(service, &claims.subject, &request, &epoch_links) {
        let mut record = service.record_for(
            &claims,
            Step::Checkpoint,
            AuditAction::Create,
            &format!("checkpoint:{}", request.device_id),
        );
        record.success = false;
        record.detail = Some(error.body.message.clone());
        service.audit.record_or_log(&record);
        tracing::warn!(device_id = %request.device_id, log_id = ?request.log_id, reason = %error.body.message, "rejected a checkpoint");
        return Err(error);
    }

    let jws = service.signing_key.sign(&request).expose().to_owned();
    let checkpoint = Checkpoint {
        checkpoint: request,
        subject: claims.subject.clone(),
        recorded_at: Timestamp::now(),
        jws,
    };
    let stored = match service.repository.insert_checkpoint(&checkpoint) {
        Ok(stored) => stored,
        Err(error @ RepositoryError::CheckpointConflict { .. }) => {
            return Err(GrantError::conflict(error.to_string()).with_field("seq"));
        }
        Err(error) => return Err(error.into()),
    };

    let correlation_id = format!("checkpoint:{}", stored.checkpoint.device_id);
    let mut record = service.record_for(
        &claims,
        Step::Checkpoint,
        AuditAction::Create,
        &correlation_id,
    );
    record.detail = Some(format!(
        "countersigned checkpoint seq {} of device {}",
        stored.checkpoint.seq, stored.checkpoint.device_id
    ));
    service.audit.record(&record)?;
    Ok(Json(stored))
}

/// Checks a checkpoint against the caller's log it extends.
///
/// A log keeps its device key (epoch 0) for life: once one checkpoint of the
/// log carried it, every later one must carry the same key. Within one epoch
/// the epoch key stays the same. A change of either means another log under
/// the same id: a replaced file or a swapped key. The log only grows: a seq
/// below the latest is a rollback unless it repeats the recorded checkpoint,
/// and epochs never go back as the seq grows. A later epoch's key must be
/// signed by the key of the epoch before it, back to the latest recorded
/// epoch key, as `epoch_links` shows.
fn check_log_keys(
    service: &GrantService,
    subject: &str,
    request: &CheckpointRequest,
    epoch_links: &[EpochLink],
) -> Result<(), GrantError> {
    let repository = &service.repository;
    let device_id = request.device_id.as_str();
    let log_id = request.log_id.as_deref().unwrap_or_default();
    let Some(latest) = repository.latest_checkpoint(subject, device_id, log_id)? else {
        return Ok(());
    };
    let recorded = &latest.checkpoint;
    let log = format!("log '{log_id}' of device '{device_id}'");

    if let Some(pinned) = repository.log_device_key(subject, device_id, log_id)? {
        match &request.device_public_key {
            Some(new_key) if *new_key == pinned => {}
            Some(new_key) => {
                return Err(GrantError::conflict(format!(
                    "{log} was checkpointed with device key {pinned}, not {new_key}; a log keeps \
                     its device key, so restore the log's key or start a new log"
                ))
                .with_field("device_public_key"));
            }
            None => {
                return Err(GrantError::conflict(format!(
                    "{log} was checkpointed with device key {pinned}; every later checkpoint \
                     of the log must carry it in device_public_key"
                ))
                .with_field("device_public_key"));
            }
        }
    }
    if request.seq < recorded.seq {
        let repeated = repository
            .checkpoint_at(subject, device_id, log_id, request.seq)?
            .is_some_and(|stored| stored.checkpoint == *request);
        if repeated {
            return Ok(());
        }
        return Err(GrantError::conflict(format!(
            "{log} was checkpointed at seq {}; a checkpoint at the lower seq {} would roll the \
             log back, and only the checkpoint recorded there may be sent again",
            recorded.seq, request.seq
        ))
        .with_field("seq"));
    }
    if request.epoch == recorded.epoch && request.epoch_public_key != recorded.epoch_public_key {
        return Err(GrantError::conflict(format!(
            "{log} was checkpointed in epoch {} with key {}, not {}; an epoch has one key",
            recorded.epoch, recorded.epoch_public_key, request.epoch_public_key
        ))
        .with_field("epoch_public_key"));
    }
    if request.epoch < recorded.epoch {
        return Err(GrantError::conflict(format!(
            "{log} reached epoch {} at seq {}; a checkpoint at seq {} cannot be in the earlier epoch {}",
            recorded.epoch, recorded.seq, request.seq, request.epoch
        ))
        .with_field("epoch"));
    }
    let anchor = Anchor {
        seq: recorded.seq,
        epoch: recorded.epoch,
        public_key: &recorded.epoch_public_key,
    };
    check_epoch_links(&log, &anchor, request, epoch_links)
}

fn check_device_id(device_id: &str) -> Result<(), GrantError> {
    let valid = !device_id.is_empty()
        && device_id.len() <= 128
        && device_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(GrantError::invalid(
            "device_id",
            "device_id must be 1 to 128 letters, digits, '-', '_' or '.'",
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    device_id: String,
}

/// `GET /checkpoints?device_id=…`: the caller's checkpoints of one device.
pub async fn list_checkpoints(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    query: Result<Query<CheckpointQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Checkpoint>>, GrantError> {
    let Query(query) =
        query.map_err(|rejection| GrantError::invalid("device_id", rejection.body_text()))?;
    check_device_id(&query.device_id)?;
    let checkpoints = state
        .service
        .repository
        .checkpoints(&query.device_id, &claims.subject)?;
    Ok(Json(checkpoints))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    correlation_id: String,
}

/// `GET /audit?correlation_id=…`: a Bundle of the events of one correlation
/// id. A caller sees events only of correlation ids in which it acted, and of
/// those only its own and the gateway's. Another user's events stay hidden,
/// because every user who checkpoints a log of one device id shares its
/// correlation id `checkpoint:{device_id}`.
pub async fn audit(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, GrantError> {
    let Query(query) =
        query.map_err(|rejection| GrantError::invalid("correlation_id", rejection.body_text()))?;
    check_text("correlation_id", &query.correlation_id, 256)?;

    let events = state.service.audit.events_for(&query.correlation_id)?;
    let caller = claims.subject.as_str();
    let events = events
        .into_iter()
        .filter(|event| requesting_user(event).is_none_or(|user| user == caller))
        .collect::<Vec<_>>();
    let caller_acted = events
        .iter()
        .any(|event| requesting_user(event) == Some(caller));
    let events = if caller_acted { events } else { Vec::new() };
    Ok(Json(AuditLog::bundle(events)))
}

/// Returns the subject of the human user who requested an event, or `None`
/// for an event the gateway or the store recorded on its own.
fn requesting_user(event: &Value) -> Option<&str> {
    event["agent"]
        .as_array()?
        .iter()
        .find(|agent| agent["requestor"] == true)?["who"]["identifier"]["value"]
        .as_str()
}
