//! `ferry scan`, and the study checks that `ferry upload` runs on a folder
//! or a zip archive before any byte moves.

use std::path::{Path, PathBuf};

use ferry_api::{PatientMismatchConfirmation, SeriesSummary, StudySummary};
use ferry_core::login::Session;
use ferry_core::study::{self, FhirPatient, StudyScan, Verdict};
use serde_json::json;

use crate::cli::ScanArgs;
use crate::context;
use crate::exit::{CliError, CliResult, Exit, error_chain};
use crate::output::{Output, count, format_bytes, table};

pub async fn scan(profile: Option<&str>, args: ScanArgs, output: Output) -> CliResult<()> {
    let scan = scan_path(&args.path).await?;
    output.text(describe_scan(&scan));

    let verdict = match &args.patient {
        Some(patient_id) => {
            let context = context::profile_context(profile)?;
            let session = context::resume_session(&context).await?;
            let chosen = fetch_patient(&session, patient_id).await?;
            let verdict = study::check_patient(&scan, &chosen);
            output.text(describe_verdict(&verdict, patient_id));
            Some(verdict)
        }
        None => None,
    };

    output.json_result(&json!({ "scan": scan, "guard": verdict }));
    match verdict {
        Some(verdict) if verdict.blocks_upload() => Err(CliError::new(
            Exit::PatientMismatch,
            format!(
                "the study in {} would be blocked for Patient/{}:\n{}",
                args.path.display(),
                args.patient.as_deref().unwrap_or_default(),
                verdict_lines(&verdict, &scan).join("\n")
            ),
        )),
        _ => Ok(()),
    }
}

/// Scans a folder or zip archive on a blocking thread.
pub async fn scan_path(path: &Path) -> CliResult<StudyScan> {
    if !path.exists() {
        return Err(CliError::usage(format!(
            "{} does not exist; pass a DICOM folder, a mounted disc or a .zip file",
            path.display()
        )));
    }
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || study::scan(&owned))
        .await
        .map_err(|error| CliError::failure(format!("the study scan stopped: {error}")))?
        .map_err(|error| {
            let exit = match error {
                study::ScanError::UnsupportedInput { .. } => Exit::Usage,
                _ => Exit::Failure,
            };
            CliError::from_chain(exit, &error)
        })
}

/// Reads the chosen `Patient` from the server for the patient guard.
pub async fn fetch_patient(session: &Session, patient_id: &str) -> CliResult<FhirPatient> {
    let resource = ferry_core::fhir::read(session, "Patient", patient_id)
        .await
        .map_err(|error| {
            if error.is_not_found() {
                CliError::not_found(format!(
                    "Patient/{patient_id} was not found on the server; find the id with `ferry patients --name …`"
                ))
            } else {
                crate::context::fhir_error(error)
            }
        })?;
    FhirPatient::from_json(&resource).map_err(|error| CliError::from_chain(Exit::Failure, &error))
}

/// A study cleared for upload: the archive to send and what goes with the
/// grant request.
#[derive(Debug)]
pub struct PreparedStudy {
    /// The zip archive to upload: the input itself, or a packed copy of a folder.
    pub archive: PathBuf,
    pub summary: Option<StudySummary>,
    pub confirmation: Option<PatientMismatchConfirmation>,
    pub instance_count: usize,
}

/// Scans a study, runs the patient guard against `patient_id`, and, when it
/// passes or the mismatch is confirmed, packs a folder into `staging_dir`.
/// A blocking verdict without confirmation is exit code 6.
pub async fn prepare_study(
    session: &Session,
    path: &Path,
    patient_id: &str,
    confirm_reason: Option<&str>,
    staging_dir: &Path,
    output: Output,
) -> CliResult<PreparedStudy> {
    let scan = scan_path(path).await?;
    if scan.instances.is_empty() {
        return match &scan.source {
            study::ScanSource::Zip { path } => {
                output.status(format!(
                    "{} holds no DICOM instances; uploading it as a plain zip archive.",
                    path.display()
                ));
                Ok(PreparedStudy {
                    archive: path.clone(),
                    summary: None,
                    confirmation: None,
                    instance_count: 0,
                })
            }
            study::ScanSource::Folder { path } => Err(CliError::usage(format!(
                "{} contains no valid DICOM instance ({} set aside); upload single files by name instead",
                path.display(),
                count(scan.set_aside.len() as u64, "file", "files")
            ))),
        };
    }
    if !scan.set_aside.is_empty() {
        output.status(format!(
            "Set aside {} in {}: not valid DICOM instances (run `ferry scan` for the list).",
            count(scan.set_aside.len() as u64, "file", "files"),
            path.display()
        ));
    }
    let chosen = fetch_patient(session, patient_id).await?;
    let verdict = study::check_patient(&scan, &chosen);

    let confirmation = match (verdict.blocks_upload(), confirm_reason) {
        (false, _) => None,
        (true, None) => {
            return Err(CliError::new(
                Exit::PatientMismatch,
                format!(
                    "upload of {} blocked by the patient guard for Patient/{patient_id}:\n{}\n\
                     Check that this is the right study and patient, or pass --confirm-patient-mismatch REASON.",
                    path.display(),
                    verdict_lines(&verdict, &scan).join("\n")
                ),
            ));
        }
        (true, Some(reason)) => {
            if verdict == Verdict::NoInstances {
                return Err(CliError::usage(format!(
                    "{} holds no valid DICOM instance; nothing to upload as a study",
                    path.display()
                )));
            }
            let by = session
                .info()
                .fhir_user
                .unwrap_or_else(|| "unknown user".to_owned());
            let decision = study::decide(
                &scan,
                &chosen,
                Some(&study::Confirmation {
                    by,
                    reason: reason.to_owned(),
                    excluded_series: Vec::new(),
                }),
            )
            .map_err(|error| CliError::from_chain(Exit::Usage, &error))?;
            output.status(format!(
                "Patient mismatch confirmed for Patient/{patient_id}:\n{}",
                verdict_lines(&verdict, &scan).join("\n")
            ));
            Some(PatientMismatchConfirmation {
                reason: reason.to_owned(),
                findings: decision.decision.initial.reasons(),
            })
        }
    };

    let summary = study_summary(&scan);
    let instance_count = scan.instances.len();
    let archive = match &scan.source {
        study::ScanSource::Zip { path } => path.clone(),
        study::ScanSource::Folder { path } => pack_folder(&scan, path, staging_dir, output).await?,
    };
    Ok(PreparedStudy {
        archive,
        summary,
        confirmation,
        instance_count,
    })
}

/// Packs the scanned folder into `{staging_dir}/pack-UUID/{folder name}.zip`.
/// Packing is deterministic, so packing the same files again gives the same
/// bytes. Each pack gets its own folder, because PACS exports are often all
/// called `DICOM`. Two such folders packed in one command or by two processes
/// would otherwise replace each other's archive between the patient check
/// and the upload.
async fn pack_folder(
    scan: &StudyScan,
    folder: &Path,
    staging_dir: &Path,
    output: Output,
) -> CliResult<PathBuf> {
    let name = folder
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "study".to_owned());
    let pack_dir = study::staging::create_pack_dir(staging_dir).map_err(|error| {
        CliError::failure(format!(
            "failed to create a packing folder in {}: {error}",
            staging_dir.display()
        ))
    })?;
    let archive = pack_dir.join(format!("{name}.zip"));
    output.status(format!(
        "Packing {} DICOM instances of {} into {}.",
        scan.instances.len(),
        folder.display(),
        archive.display()
    ));

    let scan = scan.clone();
    let destination = archive.clone();
    tokio::task::spawn_blocking(move || study::pack_to_file(&scan, &destination))
        .await
        .map_err(|error| CliError::failure(format!("packing stopped: {error}")))?
        .map_err(|error| {
            CliError::failure(format!(
                "packing {} failed: {}",
                folder.display(),
                error_chain(&error)
            ))
        })?;
    Ok(archive)
}

/// The study sent with the grant request, registered as an `ImagingStudy`.
/// Only the first study is described when an archive holds several.
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

/// The study table, set-aside files and duplicates as text.
pub fn describe_scan(scan: &StudyScan) -> String {
    let mut text = Vec::new();
    if scan.studies.is_empty() {
        text.push("No DICOM studies found.".to_owned());
    }
    for study in &scan.studies {
        let patient = &study.patient;
        text.push(format!(
            "Study {}  date {}  accession {}  {}",
            study.study_instance_uid,
            study.study_date.as_deref().unwrap_or("-"),
            study.accession.as_deref().unwrap_or("-"),
            study.description.as_deref().unwrap_or(""),
        ));
        text.push(format!(
            "  Patient {}  ID {}  born {}  sex {}",
            patient.name.as_deref().unwrap_or("-"),
            patient.id.as_deref().unwrap_or("-"),
            patient.birth_date.as_deref().unwrap_or("-"),
            patient.sex.as_deref().unwrap_or("-"),
        ));
        let rows: Vec<Vec<String>> = study
            .series
            .iter()
            .map(|series| {
                vec![
                    series
                        .number
                        .map(|number| number.to_string())
                        .unwrap_or_default(),
                    series.modality.clone().unwrap_or_default(),
                    series.description.clone().unwrap_or_default(),
                    series.instance_count.to_string(),
                    format_bytes(series.bytes),
                    series.uid.clone(),
                ]
            })
            .collect();
        let series_table = table(
            &[
                "#",
                "MODALITY",
                "DESCRIPTION",
                "INSTANCES",
                "SIZE",
                "SERIES UID",
            ],
            &rows,
        );
        text.extend(series_table.lines().map(|line| format!("  {line}")));
        text.push(format!(
            "  {} instances, {}",
            study.instance_count,
            format_bytes(study.bytes)
        ));
    }
    if !scan.set_aside.is_empty() {
        text.push(format!("Set aside ({}):", scan.set_aside.len()));
        for file in &scan.set_aside {
            text.push(format!("  {}: {}", file.path, file.message));
        }
    }
    if !scan.duplicates.is_empty() {
        text.push(format!(
            "Duplicate SOP Instance UIDs ({}):",
            scan.duplicates.len()
        ));
        for duplicate in &scan.duplicates {
            text.push(format!(
                "  {}: {}",
                duplicate.sop_instance_uid,
                duplicate.paths.join(", ")
            ));
        }
    }
    text.join("\n")
}

/// Formats the findings of a blocking verdict one per line, each without
/// the study and series UIDs that the guard puts in every finding, then
/// names each study a finding was about once, with its series.
fn verdict_lines(verdict: &Verdict, scan: &StudyScan) -> Vec<String> {
    let places: Vec<(String, &study::Study)> = scan
        .studies
        .iter()
        .map(|study| {
            let series: Vec<&str> = study
                .series
                .iter()
                .map(|series| series.uid.as_str())
                .collect();
            let place = format!(
                " in study {} (series {})",
                study.study_instance_uid,
                series.join(", ")
            );
            (place, study)
        })
        .collect();

    let mut findings: Vec<String> = Vec::new();
    let mut cited: Vec<&study::Study> = Vec::new();
    for reason in verdict.reasons() {
        let mut finding = reason;
        for (place, study) in &places {
            if finding.contains(place.as_str()) {
                finding = finding.replace(place.as_str(), "");
                if !cited.iter().any(|known| std::ptr::eq(*known, *study)) {
                    cited.push(study);
                }
            }
        }
        if !findings.contains(&finding) {
            findings.push(finding);
        }
    }

    let mut lines: Vec<String> = findings
        .iter()
        .map(|finding| format!("  - {finding}"))
        .collect();
    for study in cited {
        let series: Vec<&str> = study
            .series
            .iter()
            .map(|series| series.uid.as_str())
            .collect();
        lines.push(format!(
            "  Study Instance UID {}, {}: {}",
            study.study_instance_uid,
            count(series.len() as u64, "series", "series"),
            series.join(", ")
        ));
    }
    lines
}

fn describe_verdict(verdict: &Verdict, patient_id: &str) -> String {
    match verdict {
        Verdict::Match => format!("Patient guard: the study matches Patient/{patient_id}."),
        other => format!(
            "Patient guard: upload for Patient/{patient_id} would be blocked:\n  {}",
            other.reasons().join("\n  ")
        ),
    }
}
