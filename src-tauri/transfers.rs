//! Following transfers for the UI: progress events, the end of each
//! transfer in the signed log, and a notification when a long one ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::journal::{Direction, TransferRecord, TransferState};
use ferry_core::log::{self, Event, NewEntry};
use ferry_core::transfer::{Progress, TransferHandle, TransferOutcome};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager};
use tauri_plugin_notification::NotificationExt;

use crate::state::{AppState, Connection, Finished, lock};

/// Event carrying a [`TransferView`] each time a transfer progresses.
pub const PROGRESS_EVENT: &str = "transfer-progress";
/// Minimum interval between two progress events of one transfer while its
/// state stays the same: at most 10 events per second.
const MIN_EVENT_INTERVAL: Duration = Duration::from_millis(100);
/// Transfers that run at least this long raise a system notification at their end.
const LONG_TRANSFER: Duration = Duration::from_secs(30);

/// One transfer as the Transfers screen shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    pub id: String,
    pub direction: Direction,
    pub state: TransferState,
    pub file_name: String,
    pub size: Option<u64>,
    pub bytes_done: u64,
    pub bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
    /// The failure in words, for a failed transfer.
    pub error: Option<String>,
    pub patient: Option<String>,
    pub document_id: Option<String>,
    /// Where a finished download landed.
    pub destination_path: Option<String>,
    pub updated_at: String,
    /// Reason that a transfer the journal lists as active does not run in
    /// this app, with the action that continues it.
    pub stalled: Option<String>,
}

impl TransferView {
    /// Combines the journal's record with the last progress report.
    pub fn new(record: &TransferRecord, progress: Option<&Progress>) -> Self {
        let completed = record.state == TransferState::Completed;
        let bytes_done = match progress {
            _ if completed => record.size.unwrap_or(0),
            Some(progress) => progress.bytes_done,
            None => 0,
        };
        let size = record.size.or_else(|| progress.map(|progress| progress.bytes_total).filter(|total| *total > 0));
        let live = progress.filter(|progress| !progress.state.is_final() && !record.state.is_final());
        Self {
            id: record.id.clone(),
            direction: record.direction,
            state: live.map_or(record.state, |progress| progress.state),
            file_name: record.file_name.clone(),
            size,
            bytes_done,
            bytes_per_second: live.map_or(0.0, |progress| progress.bytes_per_second),
            eta_seconds: live.and_then(|progress| progress.eta).map(|eta| eta.as_secs_f64()),
            error: record.error.clone(),
            patient: record.patient.clone(),
            document_id: record.document_id.clone(),
            destination_path: record.destination_path.as_ref().map(|path| path.display().to_string()),
            updated_at: record.updated_at.clone(),
            stalled: None,
        }
    }
}

/// Returns why `record`, which the journal lists as active, does not run in
/// this app, or `None` when it is not active or this app runs it.
pub fn stalled_reason(record: &TransferRecord, running_here: bool) -> Option<String> {
    let active = matches!(
        record.state,
        TransferState::Queued | TransferState::Running | TransferState::WaitingForNetwork | TransferState::Verifying
    );
    if !active || running_here {
        return None;
    }
    let claimant = record.claimed_by.as_ref().filter(|claimant| claimant.pid != std::process::id() && claimant.is_alive());
    Some(match claimant {
        Some(claimant) => format!(
            "Another Ferry program (process {}) is running this transfer. Wait for it to finish there, \
             or close that program and press Resume.",
            claimant.pid
        ),
        None => "Stopped when Ferry last closed and not running now. Press Resume to continue it.".to_owned(),
    })
}

/// Lists every transfer in the journal, newest first.
pub fn list(state: &AppState, connection: &Connection) -> crate::error::CommandResult<Vec<TransferView>> {
    let records = connection.engine.list()?;
    let progress = lock(&state.progress);
    let mut views: Vec<TransferView> = records
        .iter()
        .map(|record| {
            let mut view = TransferView::new(record, progress.get(&record.id));
            view.stalled = stalled_reason(record, connection.engine.handle(&record.id).is_some());
            view
        })
        .collect();
    views.reverse();
    Ok(views)
}

/// Follows a started transfer on a task until it ends.
pub fn follow(app: AppHandle, connection: Arc<Connection>, handle: TransferHandle) {
    tauri::async_runtime::spawn(async move {
        let started = Instant::now();
        forward_progress(&app, &connection, &handle).await;
        let result = handle.wait().await;
        let record = connection.engine.get(handle.id()).ok();
        if let Some(record) = &record {
            settle_progress(&app, handle.id(), record.state);
        }
        emit_view(&app, &connection, handle.id(), None);
        finish(&app, &connection, handle.id(), record, result, started.elapsed()).await;
    });
}

/// Emits progress until the transfer's progress channel closes, which
/// happens when it ends.
async fn forward_progress(app: &AppHandle, connection: &Connection, handle: &TransferHandle) {
    let mut receiver = handle.progress();
    let mut last_emit: Option<(Instant, TransferState)> = None;
    let mut waiter = std::pin::pin!(handle.wait());
    loop {
        let report = receiver.borrow_and_update().clone();
        let due = match last_emit {
            None => true,
            Some((time, state)) => state != report.state || time.elapsed() >= MIN_EVENT_INTERVAL,
        };
        if due {
            last_emit = Some((Instant::now(), report.state));
            emit_view(app, connection, handle.id(), Some(report));
        }
        tokio::select! {
            changed = receiver.changed() => if changed.is_err() { return },
            _ = &mut waiter => return,
        }
    }
}

/// Gives the last progress report of an ended transfer the journal's state
/// and no speed. The report can still contain `running` when the transfer
/// paused, because its progress channel closes before a last report is
/// read, and the window would then show a paused transfer as running.
fn settle_progress(app: &AppHandle, id: &str, state: TransferState) {
    let app_state = app.state::<AppState>();
    let mut progress = lock(&app_state.progress);
    if let Some(report) = progress.get_mut(id) {
        report.state = state;
        report.bytes_per_second = 0.0;
        report.eta = None;
    }
}

fn emit_view(app: &AppHandle, connection: &Connection, id: &str, progress: Option<Progress>) {
    let state = app.state::<AppState>();
    if let Some(progress) = progress {
        lock(&state.progress).insert(id.to_owned(), progress);
    }
    let Ok(record) = connection.engine.get(id) else { return };
    let view = TransferView::new(&record, lock(&state.progress).get(id));
    if let Err(error) = app.emit(PROGRESS_EVENT, &view) {
        tracing::warn!(transfer = id, %error, "failed to send a progress event to the window");
    }
}

/// Records the end of a transfer: in the app's state, in the signed log,
/// and, for a long transfer, in a system notification.
async fn finish(
    app: &AppHandle,
    connection: &Connection,
    id: &str,
    record: Option<TransferRecord>,
    result: ferry_core::transfer::TransferResult,
    elapsed: Duration,
) {
    let file_name = record.as_ref().map(|record| record.file_name.clone()).unwrap_or_default();
    let mut entry = NewEntry::new(Event::Completed);
    if let Some(record) = &record {
        entry.direction = Some(match record.direction {
            Direction::Upload => log::Direction::Upload,
            Direction::Download => log::Direction::Download,
        });
        entry.patient = record.patient.as_ref().map(|patient| format!("Patient/{patient}"));
        entry.file_name = Some(record.file_name.clone());
        entry.size = record.size;
        entry.sha256 = record.sha256.clone();
        entry.correlation_id = record.correlation_id.clone();
        entry.object = record.document_id.as_ref().map(|document| format!("DocumentReference/{document}"));
    }

    let finished = match &result {
        Ok(TransferOutcome::Uploaded { document_id, receipt }) => {
            entry.object = Some(format!("DocumentReference/{document_id}"));
            entry.receipt = serde_json::to_value(receipt).ok();
            if let Some(source) = record.as_ref().and_then(|record| record.source_path.as_deref()) {
                remove_staged(connection, source);
            }
            Finished { outcome: "uploaded", detail: Some(format!("DocumentReference/{document_id}")), error: None }
        }
        Ok(TransferOutcome::Downloaded { path, size, sha256 }) => {
            entry.size = Some(*size);
            entry.sha256 = Some(sha256.clone());
            Finished { outcome: "downloaded", detail: Some(path.display().to_string()), error: None }
        }
        Ok(TransferOutcome::Paused) => {
            entry.event = Event::Paused;
            Finished { outcome: "paused", detail: None, error: None }
        }
        Ok(TransferOutcome::Cancelled) => {
            entry.event = Event::Cancelled;
            Finished { outcome: "cancelled", detail: None, error: None }
        }
        Err(error) => {
            let reason = crate::error::error_chain(error.as_ref());
            entry.event = Event::Failed { reason: reason.clone() };
            Finished { outcome: "failed", detail: None, error: Some(reason) }
        }
    };
    tracing::info!(transfer = id, outcome = finished.outcome, seconds = elapsed.as_secs_f64(), "transfer ended");
    connection.append_log(entry).await;

    if let Some((title, body)) = notification_for(&file_name, &finished, elapsed) {
        notify(app, title, body);
    }
    lock(&app.state::<AppState>().finished).insert(id.to_owned(), finished);
}

/// Deletes an archive that the app packed into the staging folder, once its
/// upload completed. A failure is logged: the upload itself succeeded.
fn remove_staged(connection: &Connection, source: &std::path::Path) {
    if let Err(error) = ferry_core::study::staging::remove_staged(&connection.staging_dir(), source) {
        tracing::warn!(path = %source.display(), %error, "failed to delete a packed archive after its upload");
    }
}

/// Returns the title and body of the system notification for a transfer
/// that ended after `elapsed`, or `None` for a short transfer and for a
/// pause or cancellation, which the user started.
fn notification_for(file_name: &str, finished: &Finished, elapsed: Duration) -> Option<(String, String)> {
    if elapsed < LONG_TRANSFER {
        return None;
    }
    match finished.outcome {
        "failed" => Some((
            format!("{file_name} failed"),
            finished.error.clone().unwrap_or_else(|| "The transfer failed; see the Transfers screen.".to_owned()),
        )),
        outcome @ ("uploaded" | "downloaded") => {
            Some((format!("{file_name} {outcome}"), finished.detail.clone().unwrap_or_default()))
        }
        _ => None,
    }
}

fn notify(app: &AppHandle, title: String, body: String) {
    if let Err(error) = app.notification().builder().title(title).body(body).show() {
        tracing::warn!(%error, "failed to show a system notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(outcome: &'static str, detail: Option<&str>, error: Option<&str>) -> Finished {
        Finished { outcome, detail: detail.map(str::to_owned), error: error.map(str::to_owned) }
    }

    fn record(state: TransferState) -> TransferRecord {
        let mut record = TransferRecord::new("tr_1".to_owned(), Direction::Upload, "ct.zip".to_owned());
        record.state = state;
        record
    }

    #[test]
    fn interrupted_transfer_not_run_here_is_stalled_with_a_way_out() {
        let mut running = record(TransferState::Running);
        running.claimed_by = Some(ferry_core::journal::Claimant { pid: u32::MAX, start: "gone".to_owned() });
        let reason = stalled_reason(&running, false).expect("a running record that no process runs is stalled");
        assert!(reason.contains("Press Resume"), "{reason}");
        assert!(stalled_reason(&record(TransferState::Queued), false).is_some());
    }

    #[test]
    fn transfer_run_here_or_ended_is_not_stalled() {
        assert_eq!(stalled_reason(&record(TransferState::Running), true), None);
        for state in [TransferState::Paused, TransferState::Failed, TransferState::Completed, TransferState::Cancelled] {
            assert_eq!(stalled_reason(&record(state), false), None, "{state:?}");
        }
    }

    #[test]
    fn long_upload_notifies_its_document() {
        let done = finished("uploaded", Some("DocumentReference/doc-1"), None);
        let notification = notification_for("ct.zip", &done, LONG_TRANSFER);
        assert_eq!(notification, Some(("ct.zip uploaded".to_owned(), "DocumentReference/doc-1".to_owned())));
    }

    #[test]
    fn long_download_notifies_its_path() {
        let done = finished("downloaded", Some("/home/u/ct.zip"), None);
        let notification = notification_for("ct.zip", &done, LONG_TRANSFER * 2);
        assert_eq!(notification, Some(("ct.zip downloaded".to_owned(), "/home/u/ct.zip".to_owned())));
    }

    #[test]
    fn long_failure_notifies_its_reason() {
        let failed = finished("failed", None, Some("the gateway rejected the grant: 403"));
        let notification = notification_for("ct.zip", &failed, LONG_TRANSFER);
        assert_eq!(notification, Some(("ct.zip failed".to_owned(), "the gateway rejected the grant: 403".to_owned())));
    }

    #[test]
    fn short_transfer_does_not_notify() {
        let done = finished("uploaded", Some("DocumentReference/doc-1"), None);
        assert_eq!(notification_for("ct.zip", &done, LONG_TRANSFER - Duration::from_millis(1)), None);
    }

    #[test]
    fn pause_and_cancel_do_not_notify() {
        for outcome in ["paused", "cancelled"] {
            assert_eq!(notification_for("ct.zip", &finished(outcome, None, None), LONG_TRANSFER * 10), None, "{outcome}");
        }
    }
}
