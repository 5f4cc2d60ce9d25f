//! Upload handlers: create, part URLs, state, complete, abort.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use ferry_api::{
    CompleteUploadRequest, CompletedUpload, ErrorCode, MAX_PART_COUNT, MAX_PART_SIZE,
    MAX_PART_URLS_PER_REQUEST, PartUrl, PartUrls, PartUrlsRequest, Receipt, SignedReceipt,
    StoredPart, UploadGrant, UploadGrantRequest, UploadState, UploadStatus,
};
use jiff::Timestamp;

use super::documents::CompletedDocument;
use super::input::{
    check_dicom_uid, check_fhir_id, check_file_name, check_media_type, check_sha256, check_text,
    parse_json,
};
use super::{GrantError, GrantService, GrantState, new_correlation_id, random_id, timestamp_after};
use crate::audit::{AuditAction, Step};
use crate::policy::{Action, Decision, S3_MAX_OBJECT_SIZE};
use crate::repository::UploadRecord;
use crate::s3::{CompletePart, base64_to_hex, composite_sha256_hex, hex_to_base64};
use crate::tokens::{AccessClaims, Authenticated};

/// `POST /uploads`.
pub async fn create(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UploadGrant>), GrantError> {
    let request: UploadGrantRequest = parse_json(&headers, body)?;
    validate_upload_request(&request)?;
    let service = &state.service;
    let correlation_id = new_correlation_id();
    let upload_id = random_id("upl_");
    let object_key = format!("uploads/{upload_id}");

    let mut decision = service.decide(&claims, Action::Upload, &request.patient, None)?;
    if decision.is_allowed() {
        let file = service.policy.check_file(request.size, &request.media_type);
        if !file.is_allowed() {
            decision = file;
        }
    }
    service.record_decision(
        &claims,
        Step::AuthorizeUpload,
        Action::Upload,
        &decision,
        &request.patient,
        Some(&object_key),
        &correlation_id,
    )?;
    if !decision.is_allowed() {
        return Err(GrantError::denied(&decision).with_correlation(&correlation_id));
    }

    // Refused here, before any byte moves: otherwise the upload would only
    // fail at completion, when the DocumentReference is created.
    let patient_known = service
        .documents
        .has_patient(&request.patient)
        .map_err(|error| GrantError::internal("look up the patient", &error))?;
    if patient_known == Some(false) {
        return Err(GrantError::not_found(format!(
            "Patient/{} does not exist; choose a patient the FHIR server knows (ferry patients lists them)",
            request.patient
        ))
        .with_field("patient")
        .with_correlation(&correlation_id));
    }

    let (part_size, part_count) = plan_parts(
        request.size,
        request.part_size,
        service.config.min_part_size,
    )?;
    let store_upload_id = service
        .store
        .create_multipart_upload(&object_key, &request.media_type)
        .await
        .map_err(|error| {
            GrantError::store("create the multipart upload", &error)
                .with_correlation(&correlation_id)
        })?;

    let now = Timestamp::now();
    let record = UploadRecord {
        id: upload_id.clone(),
        object_key,
        store_upload_id,
        subject: claims.subject.clone(),
        client_id: claims.client_id.clone(),
        patient: request.patient.clone(),
        file_name: request.file_name.clone(),
        media_type: request.media_type.clone(),
        size: request.size,
        part_size,
        part_count,
        status: UploadStatus::Open,
        correlation_id: correlation_id.clone(),
        created_at: now,
        expires_at: timestamp_after(now, service.policy.lifetimes().upload),
        request,
        completion: None,
    };
    service.repository.insert_upload(&record)?;
    if let Some(confirmation) = &record.request.patient_mismatch_confirmation {
        let mut audit = service.record_for(
            &claims,
            Step::PatientMismatchConfirmed,
            AuditAction::Create,
            &correlation_id,
        );
        audit.patient = Some(record.patient.clone());
        audit.object = Some(record.object_key.clone());
        audit.detail = Some(format!(
            "reason: {}; findings: {}",
            confirmation.reason,
            confirmation.findings.join(" | ")
        ));
        service.audit.record(&audit)?;
    }
    tracing::info!(
        upload_id,
        correlation_id,
        size = record.size,
        part_count,
        "upload granted"
    );

    Ok((
        StatusCode::CREATED,
        Json(UploadGrant {
            upload_id,
            part_size,
            part_count,
            size: record.size,
            expires_at: record.expires_at,
            correlation_id,
        }),
    ))
}

fn validate_upload_request(request: &UploadGrantRequest) -> Result<(), GrantError> {
    check_file_name("file_name", &request.file_name)?;
    if request.size > S3_MAX_OBJECT_SIZE {
        return Err(GrantError::invalid(
            "size",
            format!(
                "size must be at most {S3_MAX_OBJECT_SIZE} bytes (5 TiB); got {}",
                request.size
            ),
        ));
    }
    check_media_type("media_type", &request.media_type)?;
    check_fhir_id("patient", &request.patient)?;
    if request.part_size > MAX_PART_SIZE {
        return Err(GrantError::invalid(
            "part_size",
            format!(
                "part_size must be at most {MAX_PART_SIZE} bytes (5 GiB); got {}",
                request.part_size
            ),
        ));
    }

    if let Some(study) = &request.study {
        check_dicom_uid("study.study_instance_uid", &study.study_instance_uid)?;
        if let Some(description) = &study.description {
            check_text("study.description", description, 1024)?;
        }
        if let Some(started) = &study.started {
            check_text("study.started", started, 64)?;
        }
        if study.series.len() > 10_000 {
            return Err(GrantError::invalid(
                "study.series",
                format!(
                    "study.series must have at most 10000 entries; got {}",
                    study.series.len()
                ),
            ));
        }
        for (index, series) in study.series.iter().enumerate() {
            check_dicom_uid(
                &format!("study.series[{index}].series_instance_uid"),
                &series.series_instance_uid,
            )?;
            let modality = format!("study.series[{index}].modality");
            check_text(&modality, &series.modality, 16)?;
            if let Some(description) = &series.description {
                check_text(
                    &format!("study.series[{index}].description"),
                    description,
                    1024,
                )?;
            }
        }
    }
    if let Some(confirmation) = &request.patient_mismatch_confirmation {
        check_text(
            "patient_mismatch_confirmation.reason",
            &confirmation.reason,
            2048,
        )?;
        if confirmation.findings.len() > 100 {
            return Err(GrantError::invalid(
                "patient_mismatch_confirmation.findings",
                "patient_mismatch_confirmation.findings must have at most 100 entries",
            ));
        }
        for (index, finding) in confirmation.findings.iter().enumerate() {
            check_text(
                &format!("patient_mismatch_confirmation.findings[{index}]"),
                finding,
                2048,
            )?;
        }
    }
    Ok(())
}

/// Keeps the proposed part size unless the store's limits need a larger
/// one: every part but the last at least `min_part_size`, at most
/// `MAX_PART_COUNT` parts. Returns part size and part count.
fn plan_parts(size: u64, proposed: u64, min_part_size: u64) -> Result<(u64, u32), GrantError> {
    let for_count = size.div_ceil(u64::from(MAX_PART_COUNT));
    let part_size = proposed.max(min_part_size.max(1)).max(for_count);
    if part_size > MAX_PART_SIZE {
        return Err(GrantError::invalid(
            "size",
            format!(
                "size {size} needs parts larger than {MAX_PART_SIZE} bytes; the store cannot hold it"
            ),
        ));
    }
    // An empty file is one empty part: S3 completes a multipart upload only
    // with at least one part.
    let part_count = u32::try_from(size.div_ceil(part_size).max(1)).unwrap_or(u32::MAX);
    Ok((part_size, part_count))
}

/// Loads an upload of the caller; another user's upload is "not found".
fn load_upload(
    service: &GrantService,
    claims: &AccessClaims,
    upload_id: &str,
) -> Result<UploadRecord, GrantError> {
    let not_found =
        || GrantError::not_found(format!("no upload '{upload_id}' exists for this user"));
    let well_formed = upload_id.len() <= 64
        && upload_id.starts_with("upl_")
        && upload_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if !well_formed {
        return Err(not_found());
    }
    match service.repository.upload(upload_id)? {
        Some(upload) if upload.subject == claims.subject => Ok(upload),
        _ => Err(not_found()),
    }
}

impl GrantService {
    /// Runs the policy without recording the decision.
    pub(super) fn decide(
        &self,
        claims: &AccessClaims,
        action: Action,
        patient: &str,
        object: Option<&str>,
    ) -> Result<Decision, GrantError> {
        let deny = self.repository.deny_list()?;
        Ok(self
            .policy
            .authorize(&super::principal(claims), action, patient, object, &deny))
    }

    /// Checks that an upload is open and allowed for the caller; a denial
    /// ends the upload and deletes its parts at once.
    async fn check_open(
        &self,
        claims: &AccessClaims,
        upload: &UploadRecord,
    ) -> Result<(), GrantError> {
        self.check_status(upload).await?;

        let decision = self.authorize(
            claims,
            Step::AuthorizeUploadUse,
            Action::Upload,
            &upload.patient,
            Some(&upload.object_key),
            &upload.correlation_id,
        )?;
        if !decision.is_allowed() {
            let newly_denied =
                self.repository
                    .transition(&upload.id, UploadStatus::Open, UploadStatus::Denied)?;
            if newly_denied
                && let Err(error) = crate::cleanup::remove_upload_data(self, upload).await
            {
                // NOTE: the parts stay in the store until its own lifecycle
                // rules remove them; the cleanup task revisits only open uploads.
                tracing::error!(upload_id = %upload.id, %error, "failed to abort a denied upload");
            }
            return Err(GrantError::denied(&decision).with_correlation(&upload.correlation_id));
        }
        Ok(())
    }

    /// Rejects uploads that are no longer open, expiring one whose lifetime ended.
    async fn check_status(&self, upload: &UploadRecord) -> Result<(), GrantError> {
        let correlation_id = upload.correlation_id.as_str();
        match upload.status {
            UploadStatus::Open if Timestamp::now() >= upload.expires_at => {
                crate::cleanup::expire_upload(self, upload).await;
                Err(expired_error(upload))
            }
            UploadStatus::Open => Ok(()),
            UploadStatus::Completed => Err(GrantError::conflict(format!(
                "upload '{}' is already completed; fetch its receipt with GET /uploads/{}",
                upload.id, upload.id
            ))
            .with_correlation(correlation_id)),
            UploadStatus::Aborted => Err(GrantError::conflict(format!(
                "upload '{}' was aborted; start a new upload",
                upload.id
            ))
            .with_correlation(correlation_id)),
            UploadStatus::Expired => Err(expired_error(upload)),
            UploadStatus::Denied => Err(GrantError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!("upload '{}' was stopped by the deny list", upload.id),
            )
            .with_correlation(correlation_id)),
        }
    }
}

fn expired_error(upload: &UploadRecord) -> GrantError {
    GrantError::new(
        StatusCode::GONE,
        ErrorCode::Expired,
        format!(
            "upload '{}' expired at {} and was aborted; start a new upload",
            upload.id, upload.expires_at
        ),
    )
    .with_correlation(&upload.correlation_id)
}

/// `POST /uploads/{upload_id}/part-urls`.
pub async fn part_urls(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    Path(upload_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PartUrls>, GrantError> {
    let service = &state.service;
    let upload = load_upload(service, &claims, &upload_id)?;
    let request: PartUrlsRequest = parse_json(&headers, body)?;
    validate_part_numbers(&request, upload.part_count)
        .map_err(|error| error.with_correlation(&upload.correlation_id))?;
    service.check_open(&claims, &upload).await?;

    let now = Timestamp::now();
    let lifetime = service.policy.lifetimes().part_url;
    // A URL never outlives its upload.
    let remaining = upload.expires_at.duration_since(now).unsigned_abs();
    let lifetime = lifetime.min(remaining);
    let expires_at = timestamp_after(now, lifetime);

    let mut urls = Vec::with_capacity(request.parts.len());
    for part in &request.parts {
        let checksum = hex_to_base64(&part.sha256).expect("validated as 64 hex digits");
        let headers = BTreeMap::from([("x-amz-checksum-sha256".to_owned(), checksum)]);
        let part_number = part.part_number.to_string();
        let url = service.store.presign(
            "PUT",
            &upload.object_key,
            &[
                ("partNumber", &part_number),
                ("uploadId", &upload.store_upload_id),
            ],
            &headers,
            lifetime,
            now,
        );
        urls.push(PartUrl {
            part_number: part.part_number,
            method: "PUT".into(),
            url,
            headers,
            expires_at,
        });
    }

    let mut record = service.record_for(
        &claims,
        Step::PartUrls,
        AuditAction::Create,
        &upload.correlation_id,
    );
    record.patient = Some(upload.patient.clone());
    record.object = Some(upload.object_key.clone());
    let numbers: Vec<String> = request
        .parts
        .iter()
        .map(|part| part.part_number.to_string())
        .collect();
    record.detail = Some(format!(
        "presigned UploadPart URLs for parts {} valid until {expires_at}",
        numbers.join(", ")
    ));
    service.audit.record(&record)?;

    Ok(Json(PartUrls { urls }))
}

fn validate_part_numbers(request: &PartUrlsRequest, part_count: u32) -> Result<(), GrantError> {
    if request.parts.is_empty() || request.parts.len() > MAX_PART_URLS_PER_REQUEST {
        return Err(GrantError::invalid(
            "parts",
            format!(
                "parts must list 1 to {MAX_PART_URLS_PER_REQUEST} parts; got {}",
                request.parts.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, part) in request.parts.iter().enumerate() {
        let field = format!("parts[{index}].part_number");
        if part.part_number == 0 || part.part_number > part_count {
            return Err(GrantError::invalid(
                &field,
                format!(
                    "{field} must be between 1 and {part_count}; got {}",
                    part.part_number
                ),
            ));
        }
        if !seen.insert(part.part_number) {
            return Err(GrantError::invalid(
                &field,
                format!("{field}: part {} is listed twice", part.part_number),
            ));
        }
        check_sha256(&format!("parts[{index}].sha256"), &part.sha256)?;
    }
    Ok(())
}

/// `GET /uploads/{upload_id}`.
pub async fn state(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    Path(upload_id): Path<String>,
) -> Result<Json<UploadState>, GrantError> {
    let service = &state.service;
    let mut upload = load_upload(service, &claims, &upload_id)?;
    if upload.status == UploadStatus::Open && Timestamp::now() >= upload.expires_at {
        crate::cleanup::expire_upload(service, &upload).await;
        upload.status = UploadStatus::Expired;
    }

    let mut parts = Vec::new();
    if upload.status == UploadStatus::Open {
        let decision = service.authorize(
            &claims,
            Step::AuthorizeUploadUse,
            Action::Upload,
            &upload.patient,
            Some(&upload.object_key),
            &upload.correlation_id,
        )?;
        if !decision.is_allowed() {
            return Err(GrantError::denied(&decision).with_correlation(&upload.correlation_id));
        }
        match service
            .store
            .list_parts(&upload.object_key, &upload.store_upload_id)
            .await
        {
            Ok(listed) => {
                parts = listed
                    .into_iter()
                    .map(|part| StoredPart {
                        part_number: part.part_number,
                        etag: part.etag,
                        size: part.size,
                        sha256: part
                            .checksum_sha256
                            .as_deref()
                            .and_then(base64_to_hex)
                            .unwrap_or_default(),
                    })
                    .collect();
            }
            // A completion cut short after the store completed the upload:
            // the store lists no parts any more, so a client shown an open
            // upload would send its parts again into NoSuchUpload. The
            // gateway finishes that completion from its stored request (or
            // waits for one still running) and returns the receipt.
            Err(error) if error.code() == Some("NoSuchUpload") => {
                let completion = spawn_completion(
                    service.clone(),
                    claims.clone(),
                    upload_id.clone(),
                    CompletionSource::Recorded,
                )
                .await?;
                tracing::info!(upload_id, correlation_id = %upload.correlation_id, "finished a completion cut short after the store completed the upload");
                upload.status = UploadStatus::Completed;
                upload.completion = Some(completion);
            }
            Err(error) => {
                return Err(GrantError::store("list the upload's parts", &error)
                    .with_correlation(&upload.correlation_id));
            }
        }
    }

    Ok(Json(UploadState {
        upload_id: upload.id,
        status: upload.status,
        file_name: upload.file_name,
        size: upload.size,
        part_size: upload.part_size,
        part_count: upload.part_count,
        parts,
        expires_at: upload.expires_at,
        correlation_id: upload.correlation_id,
        completed: upload.completion,
    }))
}

/// `DELETE /uploads/{upload_id}`.
pub async fn abort(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    Path(upload_id): Path<String>,
) -> Result<StatusCode, GrantError> {
    let service = &state.service;
    load_upload(service, &claims, &upload_id)?;
    // Under the completion lock: a completion in progress either finishes
    // first (and the upload is completed) or has not begun.
    let lock = service.completion_lock(&upload_id);
    let _guard = lock.lock().await;
    let upload = load_upload(service, &claims, &upload_id)?;
    match upload.status {
        UploadStatus::Completed => {
            return Err(GrantError::conflict(format!(
                "upload '{upload_id}' is completed; a completed upload cannot be aborted"
            ))
            .with_correlation(&upload.correlation_id));
        }
        UploadStatus::Aborted | UploadStatus::Expired => return Ok(StatusCode::NO_CONTENT),
        UploadStatus::Open | UploadStatus::Denied => {}
    }

    let removed = crate::cleanup::remove_upload_data(service, &upload)
        .await
        .map_err(|error| {
            GrantError::store("abort the multipart upload", &error)
                .with_correlation(&upload.correlation_id)
        })?;
    service
        .repository
        .transition(&upload.id, upload.status, UploadStatus::Aborted)?;

    let mut record = service.record_for(
        &claims,
        Step::Abort,
        AuditAction::Delete,
        &upload.correlation_id,
    );
    record.patient = Some(upload.patient.clone());
    record.object = Some(upload.object_key.clone());
    record.detail = Some(format!(
        "upload aborted by its client; {}",
        removed.detail()
    ));
    service.audit.record(&record)?;
    tracing::info!(upload_id, correlation_id = %upload.correlation_id, "upload aborted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /uploads/{upload_id}/complete`.
pub async fn complete(
    State(state): State<GrantState>,
    Authenticated(claims): Authenticated,
    Path(upload_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CompletedUpload>, GrantError> {
    let service = state.service.clone();
    let upload = load_upload(&service, &claims, &upload_id)?;
    let request: CompleteUploadRequest = parse_json(&headers, body)?;
    validate_completion(&request, upload.part_count)
        .map_err(|error| error.with_correlation(&upload.correlation_id))?;

    let completion = spawn_completion(
        service,
        claims,
        upload_id,
        CompletionSource::Client(request),
    )
    .await?;
    Ok(Json(completion))
}

/// The part list and whole-file SHA-256 a completion works from.
enum CompletionSource {
    /// The body of `POST /uploads/{upload_id}/complete`.
    Client(CompleteUploadRequest),
    /// The request an earlier completion stored before it asked the store
    /// to complete the upload.
    Recorded,
}

/// Runs a completion in its own task, so that a client that disconnects
/// after the store completed the upload does not cancel the bookkeeping
/// (read-back check, DocumentReference, receipt) halfway.
async fn spawn_completion(
    service: Arc<GrantService>,
    claims: AccessClaims,
    upload_id: String,
    source: CompletionSource,
) -> Result<CompletedUpload, GrantError> {
    let task =
        tokio::spawn(async move { finish_completion(&service, &claims, &upload_id, source).await });
    match task.await {
        Ok(result) => result,
        Err(error) => Err(GrantError::internal("complete the upload", &error)),
    }
}

/// Completes an upload under its completion lock, or returns the receipt of
/// a completion that finished first.
async fn finish_completion(
    service: &Arc<GrantService>,
    claims: &AccessClaims,
    upload_id: &str,
    source: CompletionSource,
) -> Result<CompletedUpload, GrantError> {
    let lock = service.completion_lock(upload_id);
    let _guard = lock.lock().await;
    // Read again under the lock: a concurrent completion may have finished.
    let upload = load_upload(service, claims, upload_id)?;
    if let Some(completion) = &upload.completion {
        if let CompletionSource::Client(request) = &source
            && completion.receipt.receipt.sha256 != request.sha256
        {
            return Err(GrantError::conflict(format!(
                "upload '{upload_id}' was completed with another whole-file sha256"
            ))
            .with_field("sha256")
            .with_correlation(&upload.correlation_id));
        }
        return Ok(completion.clone());
    }
    service.check_open(claims, &upload).await?;

    let request = match source {
        CompletionSource::Client(request) => request,
        CompletionSource::Recorded => service
            .repository
            .completion_request(upload_id)?
            .ok_or_else(|| {
                GrantError::conflict(format!(
                    "the store no longer has the multipart upload of '{upload_id}' (NoSuchUpload), and the \
                     gateway stored no completion request to finish it from; start a new upload"
                ))
                .with_correlation(&upload.correlation_id)
            })?,
    };

    match complete_upload(service, claims, &upload, &request).await {
        Ok(completion) => Ok(completion),
        Err(error) => {
            // Another gateway over this database may have completed the
            // upload since it was read above. The store then conflicts with
            // this completion: s3s-fs, for one, lists no parts any more.
            if error.status == StatusCode::CONFLICT
                && let Ok(recorded) = completion_recorded_first(service, claims, &upload, &request)
            {
                return Ok(recorded);
            }
            if error.status == StatusCode::CONFLICT {
                let mut record = service.record_for(
                    claims,
                    Step::CompleteRejected,
                    AuditAction::Create,
                    &upload.correlation_id,
                );
                record.success = false;
                record.patient = Some(upload.patient.clone());
                record.object = Some(upload.object_key.clone());
                record.detail = Some(error.body.message.clone());
                service.audit.record_or_log(&record);
            }
            Err(error.with_correlation(&upload.correlation_id))
        }
    }
}

fn validate_completion(request: &CompleteUploadRequest, part_count: u32) -> Result<(), GrantError> {
    check_sha256("sha256", &request.sha256)?;
    if request.parts.len() != part_count as usize {
        return Err(GrantError::invalid(
            "parts",
            format!(
                "parts must list all {part_count} parts of the upload; got {}",
                request.parts.len()
            ),
        ));
    }
    for (index, part) in request.parts.iter().enumerate() {
        let expected = index as u32 + 1;
        if part.part_number != expected {
            let field = format!("parts[{index}].part_number");
            return Err(GrantError::invalid(
                &field,
                format!(
                    "{field} must be {expected}: parts are listed in order from 1; got {}",
                    part.part_number
                ),
            ));
        }
        let etag = format!("parts[{index}].etag");
        check_text(&etag, &part.etag, 1024)?;
        check_sha256(&format!("parts[{index}].sha256"), &part.sha256)?;
    }
    Ok(())
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// The completion proper: compare with the store, complete, verify, register, sign.
async fn complete_upload(
    service: &Arc<GrantService>,
    claims: &AccessClaims,
    upload: &UploadRecord,
    request: &CompleteUploadRequest,
) -> Result<CompletedUpload, GrantError> {
    let key = upload.object_key.as_str();

    // 1. The client's part list must be exactly what the store holds.
    let already_completed = match service.store.list_parts(key, &upload.store_upload_id).await {
        Ok(stored) => {
            compare_parts(upload, request, &stored)?;
            false
        }
        // A completion cut short after the store completed the upload
        // resumes with verification, without completing again. The store
        // built the object from the part list stored before that call, so
        // another part list cannot describe it.
        Err(error) if error.code() == Some("NoSuchUpload") => {
            // A different whole-file SHA-256 is rejected before verification
            // too, because a failed verification would discard the object.
            if let Some(recorded) = service.repository.completion_request(&upload.id)? {
                if recorded.parts != request.parts {
                    return Err(GrantError::conflict(format!(
                        "the store completed upload '{}' with another part list; fetch the upload's state",
                        upload.id
                    ))
                    .with_field("parts"));
                }
                if recorded.sha256 != request.sha256 {
                    return Err(GrantError::conflict(format!(
                        "sha256 {} differs from {}, recorded in the completion request the store \
                         completed upload '{}' from; fetch the upload's state",
                        request.sha256, recorded.sha256, upload.id
                    ))
                    .with_field("sha256"));
                }
            }
            match service.store.head_object(key).await {
                Ok(Some(_)) => true,
                Ok(None) => {
                    return Err(GrantError::conflict(format!(
                        "the store holds neither the multipart upload nor the object of upload '{}'; start a new upload",
                        upload.id
                    )));
                }
                Err(error) => return Err(GrantError::store("look up the object", &error)),
            }
        }
        Err(error) => return Err(GrantError::store("list the upload's parts", &error)),
    };

    // 2. Complete, and compare the store's composite checksum with the part list.
    let parts_sha256 = composite_sha256_hex(request.parts.iter().map(|part| part.sha256.as_str()))
        .expect("part digests were validated as SHA-256 hex");
    if !already_completed {
        service
            .repository
            .record_completion_request(&upload.id, request)?;
        let parts: Vec<CompletePart> = request
            .parts
            .iter()
            .map(|part| CompletePart {
                part_number: part.part_number,
                etag: part.etag.clone(),
                checksum_sha256: hex_to_base64(&part.sha256).expect("validated as SHA-256 hex"),
            })
            .collect();
        let completed = match service
            .store
            .complete_multipart_upload(key, &upload.store_upload_id, &parts)
            .await
        {
            Ok(completed) => completed,
            Err(error)
                if matches!(
                    error.code(),
                    Some("InvalidPart" | "InvalidPartOrder" | "BadDigest" | "InvalidRequest")
                ) =>
            {
                return Err(GrantError::conflict(format!(
                    "the store rejected the part list: {}",
                    error.code().unwrap_or_default()
                ))
                .with_field("parts"));
            }
            Err(error) => return Err(GrantError::store("complete the multipart upload", &error)),
        };
        if let Some(composite) = &completed.checksum_sha256 {
            let reported = composite.split('-').next().and_then(base64_to_hex);
            if reported.as_deref() != Some(parts_sha256.as_str()) {
                discard_object(service, upload).await;
                return Err(GrantError::conflict(
                    "the store's composite checksum does not match the parts' sha256 values; the upload was discarded",
                )
                .with_field("parts"));
            }
        }
    }

    // 3. Confirm size and whole-file SHA-256.
    if service.config.verify_read_back {
        let (size, sha256) = match recorded_sha256(service, key) {
            Some(recorded) => recorded,
            None => service
                .store
                .sha256_object(key)
                .await
                .map_err(|error| GrantError::store("read the object back", &error))?,
        };
        if size != upload.size || sha256 != request.sha256 {
            discard_object(service, upload).await;
            let message = if size != upload.size {
                format!(
                    "the object has {size} bytes, not the {} granted; the upload was discarded",
                    upload.size
                )
            } else {
                "sha256 does not match the object the store holds; the upload was discarded"
                    .to_owned()
            };
            return Err(GrantError::conflict(message).with_field("sha256"));
        }
    } else {
        match service.store.head_object(key).await {
            Ok(Some(head)) if head.size == upload.size => {}
            Ok(_) => {
                discard_object(service, upload).await;
                return Err(GrantError::conflict(format!(
                    "the object does not have the {} bytes granted; the upload was discarded",
                    upload.size
                )));
            }
            Err(error) => return Err(GrantError::store("look up the object", &error)),
        }
    }

    // 4. Register the DocumentReference, sign the receipt, record the completion.
    let completed_at = Timestamp::now();
    let object_url = format!("s3://{}/{key}", service.store.bucket());
    let document = CompletedDocument {
        upload,
        sha256: &request.sha256,
        object_url: &object_url,
        author: &claims.fhir_user,
        completed_at,
    };
    // The serve-mode registry derives the document id from the upload id
    // and keeps an existing row, so gateways over one database that both
    // reach this point register one DocumentReference.
    // NOTE: the sandbox registry assigns ids, so a completion that fails
    // after this call and is retried registers a second DocumentReference.
    let document_id = service
        .documents
        .create(&document)
        .map_err(|error| GrantError::internal("create the DocumentReference", &error))?;

    let receipt = Receipt {
        upload_id: upload.id.clone(),
        document_id: document_id.clone(),
        object: key.to_owned(),
        size: upload.size,
        sha256: request.sha256.clone(),
        parts_sha256,
        part_count: upload.part_count,
        patient: upload.patient.clone(),
        completed_at,
        correlation_id: upload.correlation_id.clone(),
    };
    let jws = service.signing_key.sign(&receipt).expose().to_owned();
    let completion = CompletedUpload {
        document_id: document_id.clone(),
        receipt: SignedReceipt { receipt, jws },
    };
    if !service.repository.complete(&upload.id, &completion)? {
        return completion_recorded_first(service, claims, upload, request);
    }

    let mut record = service.record_for(
        claims,
        Step::Complete,
        AuditAction::Create,
        &upload.correlation_id,
    );
    record.patient = Some(upload.patient.clone());
    record.object = Some(key.to_owned());
    record.references = vec![format!("DocumentReference/{document_id}")];
    record.detail = Some(format!("{} bytes, sha256 {}", upload.size, request.sha256));
    service.audit.record(&record)?;
    tracing::info!(upload_id = %upload.id, document_id, correlation_id = %upload.correlation_id, "upload completed");
    Ok(completion)
}

/// Returns the completion that another gateway over the same database
/// recorded while this one completed the same upload, when it is for the
/// same whole-file SHA-256. Its document id is this completion's too,
/// because the serve-mode registry derives ids from the upload id.
fn completion_recorded_first(
    service: &Arc<GrantService>,
    claims: &AccessClaims,
    upload: &UploadRecord,
    request: &CompleteUploadRequest,
) -> Result<CompletedUpload, GrantError> {
    let current = load_upload(service, claims, &upload.id)?;
    match current.completion {
        Some(recorded) if recorded.receipt.receipt.sha256 == request.sha256 => {
            tracing::info!(upload_id = %upload.id, document_id = %recorded.document_id, correlation_id = %upload.correlation_id, "another gateway recorded this upload's completion first; returning its receipt");
            Ok(recorded)
        }
        _ => Err(GrantError::conflict(format!(
            "upload '{}' changed state during completion; fetch its state and retry",
            upload.id
        ))
        .with_correlation(&upload.correlation_id)),
    }
}

/// Checks the client's part list against the store's: same numbers, ETags,
/// checksums, and sizes that add up to the granted size.
fn compare_parts(
    upload: &UploadRecord,
    request: &CompleteUploadRequest,
    stored: &[crate::s3::ListedPart],
) -> Result<(), GrantError> {
    if stored.len() != request.parts.len() {
        return Err(GrantError::conflict(format!(
            "the store holds {} parts of upload '{}', the request lists {}; fetch the upload's state and send the missing parts",
            stored.len(),
            upload.id,
            request.parts.len()
        ))
        .with_field("parts"));
    }
    for (index, (claimed, held)) in request.parts.iter().zip(stored).enumerate() {
        if claimed.part_number != held.part_number {
            return Err(GrantError::conflict(format!(
                "the store holds no part {}",
                claimed.part_number
            ))
            .with_field(format!("parts[{index}].part_number")));
        }
        // A store that lists no ETags still checks them at completion.
        if !held.etag.is_empty() && unquote(&claimed.etag) != unquote(&held.etag) {
            return Err(GrantError::conflict(format!(
                "part {} has another ETag in the store",
                claimed.part_number
            ))
            .with_field(format!("parts[{index}].etag")));
        }
        if let Some(held_sha256) = held.checksum_sha256.as_deref().and_then(base64_to_hex)
            && held_sha256 != claimed.sha256
        {
            return Err(GrantError::conflict(format!(
                "part {} has another sha256 in the store",
                claimed.part_number
            ))
            .with_field(format!("parts[{index}].sha256")));
        }
        let is_last = index + 1 == stored.len();
        let expected = if is_last {
            upload.size - upload.part_size * (upload.part_count as u64 - 1)
        } else {
            upload.part_size
        };
        if held.size != expected {
            return Err(GrantError::conflict(format!(
                "part {} has {} bytes in the store; it must have {expected}",
                claimed.part_number, held.size
            ))
            .with_field(format!("parts[{index}]")));
        }
    }
    Ok(())
}

/// Returns the size and hex SHA-256 the embedded store recorded for `key`.
///
/// `None` when the gateway uses a third-party store, or when the embedded
/// store has no SHA-256 for the object (completed by an older version) or
/// fails to look it up. The caller then reads the object back.
fn recorded_sha256(service: &GrantService, key: &str) -> Option<(u64, String)> {
    let store = service.embedded_store.as_ref()?;
    match store.head_object(service.store.bucket(), key) {
        Ok(info) => info.sha256.map(|digest| (info.size, hex::encode(digest))),
        Err(error) => {
            tracing::warn!(key, %error, "failed to look up the embedded store's SHA-256; reading the object back");
            None
        }
    }
}

/// Deletes a completed object that failed verification and ends the upload.
async fn discard_object(service: &GrantService, upload: &UploadRecord) {
    if let Err(error) = service.store.delete_object(&upload.object_key).await {
        tracing::error!(upload_id = %upload.id, %error, "failed to delete an object that failed verification");
    }
    if let Err(error) =
        service
            .repository
            .transition(&upload.id, UploadStatus::Open, UploadStatus::Aborted)
    {
        tracing::error!(upload_id = %upload.id, %error, "failed to mark a discarded upload aborted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn proposed_part_size_is_kept_when_valid() {
        assert_eq!(
            plan_parts(100 * MIB, 16 * MIB, 5 * MIB).unwrap(),
            (16 * MIB, 7)
        );
    }

    #[test]
    fn small_part_size_is_raised_to_minimum() {
        assert_eq!(plan_parts(12 * MIB, MIB, 5 * MIB).unwrap(), (5 * MIB, 3));
    }

    #[test]
    fn part_size_is_raised_to_stay_within_part_count() {
        let size = 100_000 * 5 * MIB;

        let (part_size, part_count) = plan_parts(size, 5 * MIB, 5 * MIB).unwrap();

        assert_eq!(part_size, 50 * MIB);
        assert_eq!(part_count, 10_000);
    }
}
