//! The cleanup task: aborts uploads whose lifetime ended, so that the store
//! deletes their parts and no abandoned part keeps patient data at rest.
//!
//! Uploads stopped by the deny list are aborted when they are denied and
//! keep the status `denied`; this task does not revisit them.

use std::sync::Arc;

use ferry_api::UploadStatus;
use jiff::Timestamp;
use tokio::task::JoinHandle;

use crate::audit::{AuditAction, AuditRecord, Step};
use crate::grant::GrantService;
use crate::repository::UploadRecord;

/// Aborts one expired upload on the store and marks it expired. Failures are
/// logged; the next run retries them, because the upload stays listed.
pub async fn expire_upload(service: &GrantService, upload: &UploadRecord) -> bool {
    if let Err(error) = service
        .store
        .abort_multipart_upload(&upload.object_key, &upload.store_upload_id)
        .await
    {
        tracing::warn!(upload_id = %upload.id, %error, "failed to abort an expired upload; retrying at the next run");
        return false;
    }

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
            "upload abandoned since {}; the store deleted its parts",
            upload.expires_at
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
