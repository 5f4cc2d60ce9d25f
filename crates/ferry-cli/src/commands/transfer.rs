//! `ferry upload`, `download`, `transfers` and `resume`.

use std::path::{Path, PathBuf};

use ferry_core::activity;
use ferry_core::journal::{PartState, TransferRecord, TransferState};
use ferry_core::login::{ProfileContext, Session};
use ferry_core::transfer::{
    DownloadOptions, Engine, EngineOptions, ExistingFile, TransferHandle, TransferOutcome,
    UploadOptions,
};
use serde_json::json;

use ferry_core::log::{Direction as LogDirection, Event, NewEntry};

use super::study::prepare_study;
use crate::activity::ActivityLog;
use crate::cli::{DownloadArgs, OfflineArgs, RateArgs, TransfersAction, UploadArgs};
use crate::context;
use crate::exit::{CliError, CliResult, Exit};
use crate::follow::{Followed, exit_of, follow_offline, open_engine, transfer_error};
use crate::output::{Output, count, format_bytes, format_rate, table};

const MIB: u64 = 1024 * 1024;

/// Kind of a path given to `ferry upload`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UploadInput {
    /// A file uploaded as it is.
    File(PathBuf),
    /// A DICOM folder, or a zip archive that may hold a study.
    Study(PathBuf),
}

/// Checks that every path exists, before anything else happens, and sorts
/// files from study folders and zip archives.
fn classify_inputs(paths: &[PathBuf]) -> CliResult<Vec<UploadInput>> {
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).map_err(|error| {
                CliError::usage(format!(
                    "{} cannot be read ({error}); check the path",
                    path.display()
                ))
            })?;
            let is_zip = path
                .extension()
                .is_some_and(|extension| extension.eq_ignore_ascii_case("zip"));
            if metadata.is_dir() || (metadata.is_file() && is_zip) {
                Ok(UploadInput::Study(path.clone()))
            } else if metadata.is_file() {
                Ok(UploadInput::File(path.clone()))
            } else {
                Err(CliError::usage(format!(
                    "{} is neither a file nor a folder; pass files, DICOM folders or zip archives",
                    path.display()
                )))
            }
        })
        .collect()
}

/// Returns the patient of an upload: `--patient`, or the clinician's patient context.
fn upload_patient(session: &Session, requested: Option<String>) -> CliResult<String> {
    let context_patient = session.info().patient;
    match (requested, context_patient) {
        (Some(requested), Some(context)) if requested != context => Err(CliError::usage(format!(
            "--patient {requested} differs from the signed-in patient context Patient/{context}; \
             a clinician sign-in uploads only for that patient"
        ))),
        (Some(requested), _) => Ok(requested),
        (None, Some(context)) => Ok(context),
        (None, None) => Err(CliError::usage(
            "no patient given: imaging staff choose the patient per upload with --patient ID \
             (find the id with `ferry patients --name …`)",
        )),
    }
}

pub async fn upload(profile: Option<&str>, args: UploadArgs, output: Output) -> CliResult<()> {
    let inputs = classify_inputs(&args.paths)?;
    let context = context::profile_context(profile)?;
    let session = context::resume_session(&context).await?;
    let patient = upload_patient(&session, args.patient.clone())?;

    let mut options = EngineOptions::default();
    if let Some(part_size) = args.part_size {
        options.part_size = part_size * MIB;
    }
    if let Some(parallel) = args.parallel {
        options.parts_in_flight = parallel.get();
        options.ranges_in_flight = parallel.get();
    }
    options.rate_limit = args.rate.limit_rate.unwrap_or(0);
    let engine = open_engine(&context, &session, options)?;
    let mut activity = ActivityLog::for_context(&context, Some(&session.info()), output).await;

    let mut handles = Vec::new();
    let mut confirmations = Vec::new();
    for input in inputs {
        let (handle, confirmation) = start_upload(
            &context,
            &session,
            &engine,
            &input,
            &patient,
            &args,
            &mut activity,
            output,
        )
        .await?;
        if let Some(entry) = confirmation {
            confirmations.push((handle.clone(), entry));
        }
        handles.push(handle);
    }

    let log_confirmations = append_confirmations(&engine, confirmations, &mut activity, output);
    let (followed, ()) = tokio::join!(
        follow_offline(&engine, handles, output, args.offline.offline_timeout),
        log_confirmations
    );
    report(&context, &engine, &followed, &mut activity, output);
    close_log(&context, &session, &followed, activity, output).await;
    exit_of(&followed)
}

/// Appends each confirmed patient mismatch to the log as soon as its
/// upload's grant is issued, with the grant's correlation id, so that the
/// entry joins the gateway's audit record of the same confirmation. An
/// upload whose grant request failed gets the entry without an id.
async fn append_confirmations(
    engine: &Engine,
    confirmations: Vec<(TransferHandle, NewEntry)>,
    activity: &mut Option<ActivityLog>,
    output: Output,
) {
    for (handle, mut entry) in confirmations {
        entry.correlation_id = activity::grant_correlation_id(engine, &handle).await;
        if let Some(log) = activity.as_mut() {
            log.append(entry, output);
        }
    }
}

/// Starts one upload. Returns its handle and, for a study uploaded despite
/// a patient mismatch, the log entry of the confirmation, which waits for
/// the grant's correlation id.
#[allow(clippy::too_many_arguments)]
async fn start_upload(
    context: &ProfileContext,
    session: &Session,
    engine: &Engine,
    input: &UploadInput,
    patient: &str,
    args: &UploadArgs,
    activity: &mut Option<ActivityLog>,
    output: Output,
) -> CliResult<(TransferHandle, Option<NewEntry>)> {
    let mut upload_options = UploadOptions::default();
    let mut confirmation_entry = None;
    let file = match input {
        UploadInput::File(path) => path.clone(),
        UploadInput::Study(path) => {
            let prepared = prepare_study(
                session,
                path,
                patient,
                args.confirm_patient_mismatch.as_deref(),
                &staging_dir(context),
                output,
            )
            .await?;
            output.status(format!(
                "{}: {} DICOM instances for Patient/{patient}.",
                path.display(),
                prepared.instance_count
            ));
            if let Some(confirmation) = &prepared.confirmation {
                let mut entry = NewEntry::new(Event::PatientMismatchConfirmed {
                    reason: confirmation.reason.clone(),
                });
                entry.direction = Some(LogDirection::Upload);
                entry.patient = Some(format!("Patient/{patient}"));
                entry.file_name = path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned());
                confirmation_entry = Some(entry);
            }
            upload_options.study = prepared.summary;
            upload_options.patient_mismatch_confirmation = prepared.confirmation;
            upload_options.media_type = Some("application/zip".to_owned());
            prepared.archive
        }
    };

    let handle = engine
        .upload(&file, patient, upload_options)
        .await
        .map_err(|error| transfer_error(&error))?;
    output.status(format!(
        "Uploading {} as transfer {}.",
        file.display(),
        handle.id()
    ));
    if let Some(log) = activity.as_mut() {
        let mut entry = NewEntry::new(Event::TransferStarted);
        entry.direction = Some(LogDirection::Upload);
        entry.patient = Some(format!("Patient/{patient}"));
        entry.file_name = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        entry.size = std::fs::metadata(&file).ok().map(|metadata| metadata.len());
        log.append(entry, output);
    }
    Ok((handle, confirmation_entry))
}

/// Folder for archives packed from study folders, kept until their upload
/// completes so that an interrupted upload resumes from the same bytes.
fn staging_dir(context: &ProfileContext) -> PathBuf {
    context
        .dirs
        .profile_data_dir(&context.profile.name)
        .join("staging")
}

pub async fn download(profile: Option<&str>, args: DownloadArgs, output: Output) -> CliResult<()> {
    let folder = args.to.clone().unwrap_or_else(|| PathBuf::from("."));
    if folder.exists() && !folder.is_dir() {
        return Err(CliError::usage(format!(
            "--to {} is not a folder; pass a folder to download into",
            folder.display()
        )));
    }
    for id in &args.document_ids {
        if id.trim().is_empty() || id.contains('/') {
            return Err(CliError::usage(format!(
                "'{id}' is not a DocumentReference id; pass the id from `ferry documents`, e.g. doc-7f3c2a"
            )));
        }
    }

    let context = context::profile_context(profile)?;
    let session = context::resume_session(&context).await?;
    let options = EngineOptions {
        rate_limit: args.rate.limit_rate.unwrap_or(0),
        ..EngineOptions::default()
    };
    let engine = open_engine(&context, &session, options)?;
    let mut activity = ActivityLog::for_context(&context, Some(&session.info()), output).await;
    let existing_file = if args.overwrite {
        ExistingFile::Overwrite
    } else {
        ExistingFile::Fail
    };

    let folder_is_new = !folder.exists();
    std::fs::create_dir_all(&folder).map_err(|error| {
        CliError::failure(format!("failed to create {}: {error}", folder.display()))
    })?;

    let mut handles = Vec::new();
    for id in &args.document_ids {
        let handle = engine
            .download(id, &folder, DownloadOptions { existing_file })
            .await
            .map_err(|error| transfer_error(&error))?;
        output.status(format!(
            "Downloading {id} into {} as transfer {}.",
            folder.display(),
            handle.id()
        ));
        if let Some(log) = activity.as_mut() {
            let mut entry = NewEntry::new(Event::TransferStarted);
            entry.direction = Some(LogDirection::Download);
            entry.object = Some(format!("DocumentReference/{id}"));
            log.append(entry, output);
        }
        handles.push(handle);
    }

    let followed = follow_offline(&engine, handles, output, args.offline.offline_timeout).await;
    report(&context, &engine, &followed, &mut activity, output);
    close_log(&context, &session, &followed, activity, output).await;
    if folder_is_new {
        // Leaves no empty folder behind when every download failed, for
        // example because no document has the id. `remove_dir` deletes
        // only an empty folder.
        let _ = std::fs::remove_dir(&folder);
    }
    exit_of(&followed).map_err(|mut error| {
        if error.exit == Exit::NotFound {
            error.message.push_str(
                "; run `ferry documents` to list the documents the signed-in user can download",
            );
        }
        error
    })?;
    if args.unpack {
        unpack_downloads(&followed, output).await?;
    }
    Ok(())
}

/// Unpacks every downloaded archive into a folder beside it named after
/// it without its extension (`ct-study.zip` into `ct-study/`), with
/// `ferry_core::study::unpack`. That checks each file's size and SHA-256
/// against the archive's manifest, or only the zip's CRC-32 values when the
/// archive is a plain zip without one, and never overwrites a file.
async fn unpack_downloads(followed: &Followed, output: Output) -> CliResult<()> {
    for finished in &followed.finished {
        let Ok(TransferOutcome::Downloaded { path, .. }) = &finished.result else {
            continue;
        };
        let destination = path.with_extension("");
        let (archive, folder) = (path.clone(), destination.clone());
        let unpacked =
            tokio::task::spawn_blocking(move || ferry_core::study::unpack(&archive, &folder))
                .await
                .map_err(|error| CliError::failure(format!("unpacking stopped: {error}")))?
                .map_err(|error| {
                    CliError::failure(format!(
                        "unpacking {} into {} failed: {}",
                        path.display(),
                        destination.display(),
                        crate::exit::error_chain(&error)
                    ))
                })?;
        let unpacked_files = format!(
            "Unpacked {} files ({}) into {}",
            unpacked.files,
            format_bytes(unpacked.bytes),
            destination.display()
        );
        if unpacked.manifest.is_some() {
            output.status(format!(
                "{unpacked_files}; each matches the size and SHA-256 in the archive's manifest."
            ));
        } else {
            output.status(format!(
                "{unpacked_files}. The archive has no Ferry manifest ({}), so per-instance \
                 SHA-256 hashes could not be checked; each file matches only the zip's CRC-32.",
                ferry_core::study::MANIFEST_NAME
            ));
        }
        output.json_event(&json!({
            "event": "unpacked",
            "transfer_id": finished.transfer_id,
            "archive": path,
            "folder": destination,
            "files": unpacked.files,
            "bytes": unpacked.bytes,
            "has_manifest": unpacked.manifest.is_some(),
        }));
    }
    Ok(())
}

pub async fn transfers(
    profile: Option<&str>,
    action: Option<TransfersAction>,
    output: Output,
) -> CliResult<()> {
    let action = action.unwrap_or(TransfersAction::List);
    if let TransfersAction::List = action {
        // Listing reads the journal only; it needs no sign-in and no secret.
        let dirs = context::ferry_dirs()?;
        let (_, profile) = context::load_profile(&dirs, profile)?;
        let journal = dirs.journal_path(&profile.name);
        return list_transfers(&journal, &profile.name.to_string(), output);
    }

    let context = context::profile_context(profile)?;

    let session = context::resume_session(&context).await?;
    let rate_limit = match &action {
        TransfersAction::Resume { rate, .. } => rate.limit_rate.unwrap_or(0),
        _ => 0,
    };
    let options = EngineOptions {
        rate_limit,
        ..EngineOptions::default()
    };
    let engine = open_engine(&context, &session, options)?;
    match action {
        TransfersAction::List => unreachable!("handled above"),
        TransfersAction::Pause { id } => {
            engine.pause(&id).map_err(|error| transfer_error(&error))?;
            append_user_action(&context, &session, &engine, &id, Event::Paused, output).await;
            output.status(format!(
                "Paused transfer {id}; continue it with `ferry transfers resume {id}`."
            ));
            output.json_result(&json!({ "transfer_id": id, "state": "paused" }));
            Ok(())
        }
        TransfersAction::Cancel { id } => {
            engine
                .cancel(&id)
                .await
                .map_err(|error| transfer_error(&error))?;
            append_user_action(&context, &session, &engine, &id, Event::Cancelled, output).await;
            output.status(format!("Cancelled transfer {id}."));
            output.json_result(&json!({ "transfer_id": id, "state": "cancelled" }));
            Ok(())
        }
        TransfersAction::Resume { id, offline, .. } => {
            let handle = engine.resume(&id).map_err(|error| transfer_error(&error))?;
            let mut activity =
                ActivityLog::for_context(&context, Some(&session.info()), output).await;
            let followed =
                follow_offline(&engine, vec![handle], output, offline.offline_timeout).await;
            report(&context, &engine, &followed, &mut activity, output);
            close_log(&context, &session, &followed, activity, output).await;
            exit_of(&followed)
        }
    }
}

/// Appends the `paused` or `cancelled` entry of a transfer that the user
/// paused or cancelled with `ferry transfers`, so that the log and its FHIR
/// export record the action. The transfer is not running in this process,
/// so no outcome of its task writes the entry instead.
async fn append_user_action(
    context: &ProfileContext,
    session: &Session,
    engine: &Engine,
    id: &str,
    event: Event,
    output: Output,
) {
    let Some(mut log) = ActivityLog::for_context(context, Some(&session.info()), output).await
    else {
        return;
    };
    match engine.get(id) {
        Ok(record) => log.append(activity::transfer_entry(event, &record), output),
        Err(error) => output.status(format!(
            "warning: the transfer log has no entry for transfer {id}: {}",
            crate::exit::error_chain(&error)
        )),
    }
    log.close(output);
}

pub async fn resume(
    profile: Option<&str>,
    rate: RateArgs,
    offline: OfflineArgs,
    output: Output,
) -> CliResult<()> {
    let context = context::profile_context(profile)?;
    let session = context::resume_session(&context).await?;
    let options = EngineOptions {
        rate_limit: rate.limit_rate.unwrap_or(0),
        ..EngineOptions::default()
    };
    let engine = open_engine(&context, &session, options)?;

    // Interrupted transfers (a crash, a lost network) and paused ones, such
    // as those paused by Ctrl-C. Failed transfers stay failed: they are
    // retried one by one with `ferry transfers resume ID`.
    let mut handles = engine
        .resume_all()
        .map_err(|error| transfer_error(&error))?;
    let paused: Vec<TransferRecord> = engine
        .list()
        .map_err(|error| transfer_error(&error))?
        .into_iter()
        .filter(|record| record.state == TransferState::Paused)
        .collect();
    for record in paused {
        if handles.iter().any(|handle| handle.id() == record.id) {
            continue;
        }
        handles.push(
            engine
                .resume(&record.id)
                .map_err(|error| transfer_error(&error))?,
        );
    }

    if handles.is_empty() {
        output.status("Nothing to resume: no interrupted or paused transfers in the journal.");
        output.json_result(&json!({ "resumed": [] }));
        return Ok(());
    }
    output.status(format!("Resuming {}.", count(handles.len() as u64, "transfer", "transfers")));
    let mut activity = ActivityLog::for_context(&context, Some(&session.info()), output).await;
    let followed = follow_offline(&engine, handles, output, offline.offline_timeout).await;
    report(&context, &engine, &followed, &mut activity, output);
    close_log(&context, &session, &followed, activity, output).await;
    exit_of(&followed)
}

fn list_transfers(path: &Path, profile_name: &str, output: Output) -> CliResult<()> {
    if !path.exists() {
        output.status(format!("No transfers yet for profile {profile_name}."));
        output.json_result(&json!({ "transfers": [] }));
        return Ok(());
    }
    let journal = ferry_core::journal::Journal::open(path)
        .map_err(|error| crate::context::journal_error(&error))?;
    let records = journal
        .list()
        .map_err(|error| crate::context::journal_error(&error))?;

    let mut rows = Vec::new();
    let mut documents = Vec::new();
    for record in &records {
        let parts = journal.parts(&record.id).unwrap_or_default();
        let confirmed = parts
            .iter()
            .filter(|part| part.state == PartState::Confirmed)
            .count();
        let state = shown_state(record);
        rows.push(vec![
            record.id.clone(),
            record.direction.as_str().to_owned(),
            state.to_owned(),
            record.file_name.clone(),
            record.size.map(format_bytes).unwrap_or_default(),
            if parts.is_empty() {
                String::new()
            } else {
                format!("{confirmed}/{}", parts.len())
            },
            record.document_id.clone().unwrap_or_default(),
            record.updated_at.clone(),
        ]);
        documents.push(json!({
            "transfer_id": record.id,
            "direction": record.direction,
            "state": state,
            "file_name": record.file_name,
            "size": record.size,
            "parts_confirmed": confirmed,
            "part_count": parts.len(),
            "document_id": record.document_id,
            "patient": record.patient.as_deref().map(activity::patient_reference),
            "sha256": record.sha256,
            "correlation_id": record.correlation_id,
            "error": record.error,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
        }));
    }
    if rows.is_empty() {
        output.status("No transfers in the journal.");
    } else {
        output.text(table(
            &[
                "TRANSFER",
                "DIRECTION",
                "STATE",
                "FILE",
                "SIZE",
                "PARTS",
                "DOCUMENT",
                "UPDATED",
            ],
            &rows,
        ));
        for record in records.iter().filter(|record| record.error.is_some()) {
            output.text(format!(
                "{}: {}",
                record.id,
                record.error.as_deref().unwrap_or_default()
            ));
        }
    }
    output.json_result(&json!({ "transfers": documents }));
    Ok(())
}

/// Returns the state to show for a journal record. A record that the
/// journal lists as running, waiting for the network or verifying (or
/// queued and claimed) is `interrupted` when no live process claims it,
/// because the process that ran it was killed or crashed. Any other record
/// shows the journal's state.
fn shown_state(record: &TransferRecord) -> &'static str {
    let active = match record.state {
        TransferState::Running | TransferState::WaitingForNetwork | TransferState::Verifying => {
            true
        }
        TransferState::Queued => record.claimed_by.is_some(),
        _ => false,
    };
    let claimed = record
        .claimed_by
        .as_ref()
        .is_some_and(|claimant| claimant.is_alive());
    if active && !claimed {
        "interrupted"
    } else {
        record.state.as_str()
    }
}

/// Prints one line (and in JSON mode one event) per finished transfer, and
/// removes archives packed for uploads that completed.
fn report(
    context: &ProfileContext,
    engine: &Engine,
    followed: &Followed,
    activity: &mut Option<ActivityLog>,
    output: Output,
) {
    for finished in &followed.finished {
        let record = engine.get(&finished.transfer_id).ok();
        if let (Some(log), Some(record)) = (activity.as_mut(), &record) {
            log.append_outcome(record, &finished.result, output);
        }
        match &finished.result {
            Ok(TransferOutcome::Uploaded {
                document_id,
                receipt,
            }) => {
                let receipt_body = &receipt.receipt;
                output.status(format!(
                    "Uploaded {} ({}) as DocumentReference/{document_id} for Patient/{}: {}, \
                     SHA-256 {}, receipt verified, correlation id {}, {}.",
                    finished.file_name,
                    format_bytes(receipt_body.size),
                    receipt_body.patient,
                    count(u64::from(receipt_body.part_count), "part", "parts"),
                    receipt_body.sha256,
                    receipt_body.correlation_id,
                    format_rate(receipt_body.size, finished.seconds),
                ));
                output.json_event(&json!({
                    "event": "uploaded",
                    "transfer_id": finished.transfer_id,
                    "file_name": finished.file_name,
                    "document_id": document_id,
                    "size": receipt_body.size,
                    "sha256": receipt_body.sha256,
                    "part_count": receipt_body.part_count,
                    "correlation_id": receipt_body.correlation_id,
                    "seconds": finished.seconds,
                    "receipt": receipt,
                }));
                if let Some(source) = record
                    .as_ref()
                    .and_then(|record| record.source_path.as_deref())
                {
                    remove_staged(context, source);
                }
            }
            Ok(TransferOutcome::Downloaded { path, size, sha256 }) => {
                output.status(format!(
                    "Downloaded {} ({}) to {}: SHA-256 {sha256} verified, {}.",
                    finished.file_name,
                    format_bytes(*size),
                    path.display(),
                    format_rate(*size, finished.seconds),
                ));
                output.json_event(&json!({
                    "event": "downloaded",
                    "transfer_id": finished.transfer_id,
                    "document_id": record.as_ref().and_then(|record| record.document_id.clone()),
                    "path": path,
                    "size": size,
                    "sha256": sha256,
                    "correlation_id": record.as_ref().and_then(|record| record.correlation_id.clone()),
                    "seconds": finished.seconds,
                }));
            }
            Ok(TransferOutcome::Paused) => {
                output.status(format!(
                    "Paused {} (transfer {}); `ferry resume` continues it.",
                    finished.file_name, finished.transfer_id
                ));
                output
                    .json_event(&json!({ "event": "paused", "transfer_id": finished.transfer_id }));
            }
            Ok(TransferOutcome::Cancelled) => {
                output.status(format!(
                    "Cancelled {} (transfer {}).",
                    finished.file_name, finished.transfer_id
                ));
                output.json_event(
                    &json!({ "event": "cancelled", "transfer_id": finished.transfer_id }),
                );
            }
            Err(error) => {
                output.json_event(&json!({
                    "event": "failed",
                    "transfer_id": finished.transfer_id,
                    "file_name": finished.file_name,
                    "message": crate::exit::error_chain(error.as_ref()),
                }));
            }
        }
    }
}

/// Has the gateway countersign the log's head when a transfer completed,
/// then seals and closes the log.
async fn close_log(
    context: &ProfileContext,
    session: &Session,
    followed: &Followed,
    activity: Option<ActivityLog>,
    output: Output,
) {
    let Some(mut log) = activity else { return };
    let completed = followed
        .finished
        .iter()
        .any(|finished| ferry_core::activity::is_completed(&finished.result));
    if completed {
        log.checkpoint_with(context, session, output).await;
    }
    log.close(output);
}

/// Deletes an archive that Ferry packed into the staging folder, once its
/// upload completed, and the archive's own folder when it is then empty.
/// Files outside the staging folder are never touched.
fn remove_staged(context: &ProfileContext, source: &Path) {
    if let Err(error) = ferry_core::study::staging::remove_staged(&staging_dir(context), source) {
        tracing::warn!(path = %source.display(), %error, "failed to delete a packed archive after its upload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_input_is_usage_error_naming_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.zip");
        let error = classify_inputs(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(error.exit, crate::exit::Exit::Usage);
        assert!(
            error.message.contains(&missing.display().to_string()),
            "{}",
            error.message
        );
    }

    #[test]
    fn inputs_are_sorted_into_files_and_studies() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("report.pdf");
        let zip = dir.path().join("study.ZIP");
        std::fs::write(&file, b"%PDF").unwrap();
        std::fs::write(&zip, b"PK").unwrap();
        let folder = dir.path().join("series");
        std::fs::create_dir(&folder).unwrap();

        let inputs = classify_inputs(&[file.clone(), zip.clone(), folder.clone()]).unwrap();
        assert_eq!(
            inputs,
            vec![
                UploadInput::File(file),
                UploadInput::Study(zip),
                UploadInput::Study(folder)
            ]
        );
    }
}
