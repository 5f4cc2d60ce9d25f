//! The cleanup task: aborts uploads whose lifetime ended, so that the store
//! deletes their parts and no abandoned part keeps patient data at rest.
//!
//! Uploads stopped by the deny list are aborted when they are denied and
//! keep the status `denied`; this task does not revisit them.
//!
//! Ending an upload removes its data whichever stage it reached: the parts of
//! an open multipart upload, or the object of a multipart upload the store
//! completed before the gateway recorded the completion (see
//! [`remove_upload_data`]).

use std::sync::Arc;

use ferry_api::UploadStatus;
use jiff::Timestamp;
use tokio::task::JoinHandle;

use crate::audit::{AuditAction, AuditRecord, Step};
use crate::grant::GrantService;
use crate::repository::UploadRecord;
use crate::s3::S3Error;

/// Data the store deleted when an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The open multipart upload and its parts.
    Parts,
    /// The object of a multipart upload the store completed before the
    /// gateway recorded the completion.
    Object,
    /// Neither: the upload was removed before.
    Nothing,
}

impl Removed {
    /// Returns a sentence for the audit record of the step that ended the upload.
    pub fn detail(self) -> &'static str {
        match self {
            Removed::Parts => "the store deleted its parts",
            Removed::Object => "the store deleted the object its completion left behind",
            Removed::Nothing => "the store held no parts and no object of it",
        }
    }
}

/// Removes the data of an upload that ends without a recorded completion.
///
/// When the store has no such multipart upload any more (`NoSuchUpload`), a
/// completion may have been cut short after the store completed it: the
/// object then exists, and no DocumentReference points at it. The object key
/// (`uploads/{upload_id}`) belongs to this upload alone, so deleting it
/// removes nothing else. Callers make sure the upload is not completed.
pub async fn remove_upload_data(
    service: &GrantService,
    upload: &UploadRecord,
) -> Result<Removed, S3Error> {
    let key = upload.object_key.as_str();
    if service
        .store
        .abort_multipart_upload(key, &upload.store_upload_id)
        .await?
    {
        return Ok(Removed::Parts);
    }

    if service.store.head_object(key).await?.is_none() {
        return Ok(Removed::Nothing);
    }
    service.store.delete_object(key).await?;
    tracing::warn!(
        upload_id = %upload.id,
        correlation_id = %upload.correlation_id,
        "deleted the object of an upload the store completed but the gateway did not record"
    );
    Ok(Removed::Object)
}

/// Aborts one expired upload on the store and marks it expired. Failures are
/// logged; the next run retries them, because the upload stays listed.
pub async fn expire_upload(service: &GrantService, upload: &UploadRecord) -> bool {
    let removed = match remove_upload_data(service, upload).await {
        Ok(removed) => removed,
        Err(error) => {
            tracing::warn!(upload_id = %upload.id, %error, "failed to abort an expired upload; retrying at the next run");
            return false;
        }
    };

    let changed =
        match service
            .repository
            .transition(&upload.id, UploadStatus::Open, UploadStatus::Expired)
        {
            Ok(changed) => changed,
            Err(error) => {
                tracing::error!(upload_id = %upload.id, %error, "failed to mark an upload expired");
                return false;
            }
        };

    if changed {
        let mut record =
            AuditRecord::new(Step::Expire, AuditAction::Delete, &upload.correlation_id);
        record.patient = Some(upload.patient.clone());
        record.object = Some(upload.object_key.clone());
        record.detail = Some(format!(
            "upload abandoned since {}; {}",
            upload.expires_at,
            removed.detail()
        ));
        service.audit.record_or_log(&record);
        tracing::info!(upload_id = %upload.id, correlation_id = %upload.correlation_id, "expired upload aborted");
    }
    changed
}

/// Aborts every upload whose lifetime ended; returns how many it aborted.
pub async fn run_once(service: &GrantService) -> usize {
    let expired = match service.repository.expired_uploads(Timestamp::now()) {
        Ok(expired) => expired,
        Err(error) => {
            tracing::error!(%error, "failed to list expired uploads");
            return 0;
        }
    };
    let mut aborted = 0;
    for upload in &expired {
        // A completion in progress decides the upload's end itself; its
        // status check expires the upload if the completion fails.
        let lock = service.completion_lock(&upload.id);
        let Ok(_guard) = lock.try_lock() else {
            continue;
        };
        if expire_upload(service, upload).await {
            aborted += 1;
        }
    }
    aborted
}

/// Starts the periodic cleanup task on the current runtime.
pub fn spawn(service: Arc<GrantService>) -> JoinHandle<()> {
    let interval = service.config.cleanup_interval;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let aborted = run_once(&service).await;
            if aborted > 0 {
                tracing::info!(aborted, "cleanup aborted expired uploads");
            }
        }
    })
}
