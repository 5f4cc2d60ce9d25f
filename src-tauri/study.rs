//! What an upload of a path sends: a single file as it is, or a study (a
//! DICOM folder or a zip archive) that is scanned, checked against the
//! chosen patient by the patient guard, and packed when it is a folder.

use std::path::{Path, PathBuf};

use ferry_api::{PatientMismatchConfirmation, SeriesSummary, StudySummary};
use ferry_core::fhir;
use ferry_core::login::Session;
use ferry_core::study::{self, FhirPatient, ScanSource, StudyScan, Verdict};
use ferry_core::transfer::UploadOptions;
use serde::Serialize;

use crate::error::{CommandError, CommandResult};

/// What the Upload screen shows for one path.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inspection {
    File { path: PathBuf, name: String, size: u64, media_type: String },
    Study { path: PathBuf, scan: Box<StudyScan>, verdict: Verdict },
    /// A zip archive without DICOM instances, uploaded as a plain file.
    Archive { path: PathBuf, name: String, size: u64 },
    Invalid { path: PathBuf, message: String },
}

/// An upload ready to start.
#[derive(Debug)]
pub struct PreparedUpload {
    pub file: PathBuf,
    pub options: UploadOptions,
    /// The reason given for uploading despite the patient guard.
    pub confirmed_reason: Option<String>,
}

fn is_study_input(path: &Path, metadata: &std::fs::Metadata) -> bool {
    let is_zip = path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("zip"));
    metadata.is_dir() || (metadata.is_file() && is_zip)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Describes one path; problems become [`Inspection::Invalid`].
pub async fn inspect(session: &Session, path: &Path, patient_id: &str) -> Inspection {
    match inspect_inner(session, path, patient_id).await {
        Ok(inspection) => inspection,
        Err(error) => Inspection::Invalid { path: path.to_owned(), message: error.message },
    }
}

async fn inspect_inner(session: &Session, path: &Path, patient_id: &str) -> CommandResult<Inspection> {
    let metadata = metadata(path)?;
    if !is_study_input(path, &metadata) {
        let name = file_name(path);
        let media_type = media_type_of(&name).to_owned();
        return Ok(Inspection::File { path: path.to_owned(), name, size: metadata.len(), media_type });
    }
    let scan = scan(path).await?;
    if scan.instances.is_empty() && matches!(scan.source, ScanSource::Zip { .. }) {
        return Ok(Inspection::Archive { path: path.to_owned(), name: file_name(path), size: metadata.len() });
    }
    let chosen = fetch_patient(session, patient_id).await?;
    let verdict = study::check_patient(&scan, &chosen);
    Ok(Inspection::Study { path: path.to_owned(), scan: Box::new(scan), verdict })
}

/// Checks a path and, for a study, runs the patient guard and packs a
/// folder into `staging_dir`. A blocking verdict needs `confirm_reason`.
pub async fn prepare(
    session: &Session,
    path: &Path,
    patient_id: &str,
    confirm_reason: Option<&str>,
    staging_dir: &Path,
) -> CommandResult<PreparedUpload> {
    let metadata = metadata(path)?;
    if !is_study_input(path, &metadata) {
        return Ok(PreparedUpload { file: path.to_owned(), options: UploadOptions::default(), confirmed_reason: None });
    }
    let scan = scan(path).await?;
    if scan.instances.is_empty() {
        return match &scan.source {
            ScanSource::Zip { path } => Ok(PreparedUpload {
                file: path.clone(),
                options: UploadOptions { media_type: Some("application/zip".to_owned()), ..UploadOptions::default() },
                confirmed_reason: None,
            }),
            ScanSource::Folder { path } => Err(CommandError::new(format!(
                "{} holds no valid DICOM instance ({} file(s) set aside); choose single files instead",
                path.display(),
                scan.set_aside.len()
            ))),
        };
    }

    let chosen = fetch_patient(session, patient_id).await?;
    let verdict = study::check_patient(&scan, &chosen);
    let confirmation = match (verdict.blocks_upload(), confirm_reason) {
        (false, _) => None,
        (true, None) => {
            return Err(CommandError::new(format!(
                "upload of {} blocked by the patient guard for Patient/{patient_id}: {}; check that this is the \
                 right study and patient, or give a reason to upload it anyway",
                path.display(),
                verdict.reasons().join("; ")
            )));
        }
        (true, Some(reason)) => {
            let by = session.info().fhir_user.unwrap_or_else(|| "unknown user".to_owned());
            let confirmation = study::Confirmation { by, reason: reason.to_owned(), excluded_series: Vec::new() };
            let decision = study::decide(&scan, &chosen, Some(&confirmation))?;
            Some(PatientMismatchConfirmation { reason: reason.to_owned(), findings: decision.decision.initial.reasons() })
        }
    };

    let file = match &scan.source {
        ScanSource::Zip { path } => path.clone(),
        ScanSource::Folder { path } => pack_folder(&scan, path, staging_dir).await?,
    };
    let options = UploadOptions {
        media_type: Some("application/zip".to_owned()),
        study: study_summary(&scan),
        patient_mismatch_confirmation: confirmation.clone(),
        ..UploadOptions::default()
    };
    Ok(PreparedUpload { file, options, confirmed_reason: confirmation.map(|confirmation| confirmation.reason) })
}

fn metadata(path: &Path) -> CommandResult<std::fs::Metadata> {
    std::fs::metadata(path)
        .map_err(|error| CommandError::new(format!("{} cannot be read ({error}); check the path", path.display())))
}

/// Scans a folder or zip archive on a blocking thread.
async fn scan(path: &Path) -> CommandResult<StudyScan> {
    let owned = path.to_owned();
    Ok(tokio::task::spawn_blocking(move || study::scan(&owned))
        .await
        .map_err(|error| CommandError::new(format!("the study scan stopped: {error}")))??)
}

async fn fetch_patient(session: &Session, patient_id: &str) -> CommandResult<FhirPatient> {
    let resource = fhir::read(session, "Patient", patient_id).await?;
    Ok(FhirPatient::from_json(&resource)?)
}

/// Packs the scanned folder into `{staging_dir}/pack-UUID/{folder name}.zip`,
/// a folder of its own, so that two study folders of the same name do not
/// share an archive. Packing gives the same bytes for the same files, so a
/// resumed upload matches.
async fn pack_folder(scan: &StudyScan, folder: &Path, staging_dir: &Path) -> CommandResult<PathBuf> {
    let name = Some(file_name(folder)).filter(|name| !name.is_empty()).unwrap_or_else(|| "study".to_owned());
    let pack_dir = study::staging::create_pack_dir(staging_dir).map_err(|error| {
        CommandError::new(format!("failed to create a packing folder in {}: {error}", staging_dir.display()))
    })?;
    let archive = pack_dir.join(format!("{name}.zip"));
    let scan = scan.clone();
    let destination = archive.clone();
    tokio::task::spawn_blocking(move || study::pack_to_file(&scan, &destination))
        .await
        .map_err(|error| CommandError::new(format!("packing stopped: {error}")))??;
    Ok(archive)
}

/// The study sent with the grant request. Only the first study of an
/// archive holding several is described.
fn study_summary(scan: &StudyScan) -> Option<StudySummary> {
    let study = scan.studies.first()?;
    Some(StudySummary {
        study_instance_uid: study.study_instance_uid.clone(),
        description: study.description.clone(),
        started: study.study_date.clone(),
        series: study
            .series
            .iter()
            .map(|series| SeriesSummary {
                series_instance_uid: series.uid.clone(),
                modality: series.modality.clone().unwrap_or_else(|| "OT".to_owned()),
                description: series.description.clone(),
                instance_count: u32::try_from(series.instance_count).unwrap_or(u32::MAX),
            })
            .collect(),
    })
}

/// Guesses a MIME type from a file name's extension, for display; the core
/// makes the same guess when it starts the upload.
pub fn media_type_of(file_name: &str) -> &'static str {
    let extension = file_name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("zip") => "application/zip",
        Some("dcm") => "application/dicom",
        Some("pdf") => "application/pdf",
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        Some("gz" | "tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}
