//! `ferry demo`: the main job end to end on a sandbox gateway started for
//! this run. It signs in through the real authorization code flow with PKCE
//! (a redirect follower stands in for the browser, and the sandbox approves
//! with `--auto-login`), uploads a study archive of real DICOM files in
//! parts, downloads it, verifies it byte for byte, verifies the transfer
//! log, and prints what happened.
//!
//! The demo uses a profile of its own, `demo-YYYYMMDD-HHMMSS`, whose secrets
//! (refresh token, log signing key) stay in this process's memory, so it
//! runs on machines without a credential store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::{PatientMismatchConfirmation, SignedReceipt};
use ferry_core::log::{Direction, Event, NewEntry, VerifyOptions};
use ferry_core::login::{
    self, LoginOptions, LoginPrompt, ProfileContext, RedirectFollower, Session, SignInKind,
};
use ferry_core::profile::{Profile, Profiles};
use ferry_core::secrets::MemorySecretStore;
use ferry_core::study::{self, Verdict};
use ferry_core::transfer::{
    DownloadOptions, EngineOptions, ExistingFile, TransferOutcome, UploadOptions,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::study::{fetch_patient, scan_path};
use crate::activity::{ActivityLog, transfer_entry};
use crate::cli::{DemoArgs, LoginRole};
use crate::context::{self, login_error, profile_error};
use crate::exit::{CliError, CliResult, Exit, error_chain};
use crate::follow::{exit_of, follow, journal_path, open_engine};
use crate::output::{Output, count, format_bytes, format_rate};
use crate::sandbox::{SandboxProcess, find_gateway_binary};

/// Part size of the demo's upload: the store's minimum, so that the sample
/// study travels in several parts.
const DEMO_PART_SIZE: u64 = ferry_api::MIN_PART_SIZE;
/// Instances in the generated CT study; about 39 KiB each, so the archive
/// is roughly 15 MiB, four parts of 5 MiB.
const DEMO_CT_INSTANCES: u32 = 400;
/// Sandbox user of each sign-in kind (`--auto-login`).
const IMAGING_STAFF_USER: &str = "tech-okafor";
const CLINICIAN_USER: &str = "dr-rivera";
/// Sandbox patient the study is filed under: Jürgen Müller, FERRY-0001,
/// the patient that scripts/make-test-study.py writes into the study.
const DEMO_PATIENT: &str = "pat-004";
/// Another sandbox patient, against whom the demo shows the guard blocking.
const OTHER_PATIENT: &str = "pat-001";

pub async fn demo(args: DemoArgs, output: Output) -> CliResult<()> {
    let started = Instant::now();
    let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
    let profile_name = format!("demo-{stamp}");
    let work_dir = match args.work_dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("ferry-demo-{stamp}")),
    };
    create_dir(&work_dir)?;
    let work_dir = std::path::absolute(&work_dir).unwrap_or(work_dir);

    // 1. The sandbox gateway, on an ephemeral loopback port.
    let binary = find_gateway_binary()?;
    let kind: SignInKind = args.role.into();
    let auto_login = match args.role {
        LoginRole::ImagingStaff => IMAGING_STAFF_USER.to_owned(),
        LoginRole::Clinician => format!("{CLINICIAN_USER}:{DEMO_PATIENT}"),
    };
    output.status(format!(
        "1/7 Starting the sandbox gateway ({})",
        binary.display()
    ));
    let gateway = SandboxProcess::start(
        &binary,
        &work_dir.join("gateway-data"),
        &auto_login,
        &work_dir.join("gateway.log"),
    )
    .await?;
    output.status(format!("    FHIR base URL {}", gateway.fhir_url));

    let result = run(
        &args,
        kind,
        &profile_name,
        &work_dir,
        &gateway,
        started,
        output,
    )
    .await;
    gateway.stop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &DemoArgs,
    kind: SignInKind,
    profile_name: &str,
    work_dir: &Path,
    gateway: &SandboxProcess,
    started: Instant,
    output: Output,
) -> CliResult<()> {
    // 2. A profile of the demo's own, with its secrets in memory.
    let dirs = context::ferry_dirs()?;
    let profile = Profile::new(profile_name, &gateway.fhir_url, None).map_err(profile_error)?;
    let mut profiles = Profiles::load(&dirs).map_err(profile_error)?;
    profiles.insert(profile.clone());
    profiles.save().map_err(profile_error)?;
    let store = Arc::new(MemorySecretStore::default());
    let context = ProfileContext {
        profile,
        dirs: dirs.clone(),
        store,
        http: context::http_client()?,
    };
    output.status(format!(
        "2/7 Signing in as {} with SMART on FHIR (authorization code + PKCE S256) using profile {profile_name}.\n    \
         The secrets of profile {profile_name} (refresh token, log signing key) are kept in memory for this run \
         and never written to disk.",
        match args.role {
            LoginRole::ImagingStaff => IMAGING_STAFF_USER,
            LoginRole::Clinician => CLINICIAN_USER,
        }
    ));
    let session = sign_in(&context, kind, output).await?;
    let info = session.info();
    output.status(format!(
        "    Signed in: {}",
        super::account::describe_session(&info)
    ));
    let patient = info
        .patient
        .clone()
        .unwrap_or_else(|| DEMO_PATIENT.to_owned());

    let mut activity = ActivityLog::for_context(&context, Some(&info), output).await;
    if let Some(log) = &mut activity {
        log.append(NewEntry::new(Event::SignedIn), output);
        log.checkpoint_with(&context, &session, output).await;
    }

    // 3. The sample study: real DICOM instances, checked and packed.
    output.status("3/7 Building the sample study from pydicom's sample files");
    let study_dir = generate_study(work_dir).await?;
    let (archive, confirmation, study_summary) =
        check_and_pack(&session, &study_dir, &patient, work_dir, output).await?;
    let archive_size = file_size(&archive)?;
    output.status(format!(
        "    Archive {} ({})",
        archive.display(),
        format_bytes(archive_size)
    ));

    // 4. Upload in parts.
    output.status(format!(
        "4/7 Uploading to Patient/{patient} in parts of {}",
        format_bytes(DEMO_PART_SIZE)
    ));
    let engine = open_engine(
        &context,
        &session,
        EngineOptions {
            part_size: DEMO_PART_SIZE,
            ..EngineOptions::default()
        },
    )?;
    let upload_options = UploadOptions {
        media_type: Some("application/zip".to_owned()),
        part_size: Some(DEMO_PART_SIZE),
        study: study_summary,
        patient_mismatch_confirmation: confirmation.clone(),
        ..UploadOptions::default()
    };
    if let (Some(log), Some(confirmation)) = (&mut activity, &confirmation) {
        log.append(
            transfer_entry(
                Event::PatientMismatchConfirmed {
                    reason: confirmation.reason.clone(),
                },
                Direction::Upload,
                Some(&patient),
                None,
                archive.file_name().and_then(|name| name.to_str()),
                Some(archive_size),
                None,
                None,
            ),
            output,
        );
    }
    let upload_started = Instant::now();
    let handle = engine
        .upload(&archive, &patient, upload_options)
        .await
        .map_err(|error| crate::follow::transfer_error(&error))?;
    let upload_id = handle.id().to_owned();
    let followed = follow(&engine, vec![handle], output).await;
    exit_of(&followed)?;
    let upload_seconds = upload_started.elapsed().as_secs_f64();
    let (document_id, receipt) = match &followed.finished[0].result {
        Ok(TransferOutcome::Uploaded {
            document_id,
            receipt,
        }) => (document_id.clone(), receipt.clone()),
        other => {
            return Err(CliError::transfer(format!(
                "the upload ended unexpectedly: {other:?}"
            )));
        }
    };
    let upload_record = engine.get(&upload_id).ok();
    let parts = receipt.receipt.part_count;
    let archive_name = archive
        .file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned);
    log_transfer(
        &mut activity,
        &patient,
        &document_id,
        archive_name.as_deref(),
        &receipt,
        output,
    );
    if let Some(log) = &mut activity {
        log.checkpoint_with(&context, &session, output).await;
    }
    output.status(format!(
        "    Uploaded {} in {} at {}; DocumentReference/{document_id}; receipt signed by the gateway and verified",
        format_bytes(receipt.receipt.size),
        count(u64::from(parts), "part", "parts"),
        format_rate(receipt.receipt.size, upload_seconds)
    ));

    // 5. Download into a folder of its own.
    let download_dir = work_dir.join("downloaded");
    create_dir(&download_dir)?;
    output.status(format!(
        "5/7 Downloading DocumentReference/{document_id} into {}",
        download_dir.display()
    ));
    let download_started = Instant::now();
    let handle = engine
        .download(
            &document_id,
            &download_dir,
            DownloadOptions {
                existing_file: ExistingFile::Fail,
            },
        )
        .await
        .map_err(|error| crate::follow::transfer_error(&error))?;
    let download_id = handle.id().to_owned();
    let followed = follow(&engine, vec![handle], output).await;
    exit_of(&followed)?;
    let download_seconds = download_started.elapsed().as_secs_f64();
    let (downloaded, downloaded_size, downloaded_sha256) = match &followed.finished[0].result {
        Ok(TransferOutcome::Downloaded { path, size, sha256 }) => {
            (path.clone(), *size, sha256.clone())
        }
        other => {
            return Err(CliError::transfer(format!(
                "the download ended unexpectedly: {other:?}"
            )));
        }
    };
    let download_record = engine.get(&download_id).ok();
    if let Some(log) = &mut activity {
        let correlation = download_record
            .as_ref()
            .and_then(|record| record.correlation_id.as_deref());
        for event in [Event::Completed, Event::Verified] {
            log.append(
                transfer_entry(
                    event,
                    Direction::Download,
                    Some(&patient),
                    Some(&format!("DocumentReference/{document_id}")),
                    downloaded.file_name().and_then(|name| name.to_str()),
                    Some(downloaded_size),
                    Some(&downloaded_sha256),
                    correlation,
                ),
                output,
            );
        }
        log.checkpoint_with(&context, &session, output).await;
    }

    // 6. Byte for byte.
    output.status("6/7 Verifying the download byte for byte against the uploaded archive");
    let original_sha256 = sha256_file(&archive)?;
    compare_files(&archive, &downloaded)?;
    if original_sha256 != receipt.receipt.sha256 || original_sha256 != downloaded_sha256 {
        return Err(CliError::transfer(format!(
            "SHA-256 mismatch: archive {original_sha256}, receipt {}, download {downloaded_sha256}",
            receipt.receipt.sha256
        )));
    }
    output.status(format!(
        "    Identical: {} bytes, SHA-256 {original_sha256}",
        archive_size
    ));

    // 7. The gateway's audit and the demo profile's signed log.
    output.status("7/7 Reading the gateway's audit and verifying the transfer log");
    let audit_files = save_audit(
        &session,
        work_dir,
        &[
            ("upload", receipt.receipt.correlation_id.as_str()),
            (
                "download",
                download_record
                    .as_ref()
                    .and_then(|record| record.correlation_id.as_deref())
                    .unwrap_or_default(),
            ),
        ],
        output,
    )
    .await;
    let log_summary = match activity {
        Some(mut log) => {
            log.append(NewEntry::new(Event::LogVerified), output);
            let path = log.path().to_owned();
            log.close(output);
            verify_log(&path)?
        }
        None => "not written (see the warning above)".to_owned(),
    };

    print_summary(
        &Summary {
            profile_name,
            work_dir,
            gateway,
            patient: &patient,
            archive: &archive,
            archive_size,
            parts,
            document_id: &document_id,
            receipt: &receipt,
            upload_seconds,
            downloaded: &downloaded,
            download_seconds,
            sha256: &original_sha256,
            journal: &journal_path(&context),
            log_summary: &log_summary,
            audit_files: &audit_files,
            upload_transfer: upload_record.map(|record| record.id).unwrap_or(upload_id),
            download_transfer: download_id,
            seconds: started.elapsed().as_secs_f64(),
            confirmation: confirmation.as_ref(),
        },
        output,
    );
    Ok(())
}

async fn sign_in(context: &ProfileContext, kind: SignInKind, output: Output) -> CliResult<Session> {
    let options = LoginOptions {
        kind,
        browser: Arc::new(RedirectFollower::new()),
        paste: None,
        timeout: Duration::from_secs(60),
        prompt: Arc::new(move |prompt: LoginPrompt| match prompt {
            // The authorization URL carries no secret (PKCE sends only the
            // challenge), but it is long; the follower opens it.
            LoginPrompt::BrowserOpened { .. } => output.status(
                "    Authorization request sent; following the redirects to the loopback listener",
            ),
            other => output.status(format!("    {}", other.message())),
        }),
    };
    login::login(context, options).await.map_err(login_error)
}

/// Writes the CT study with `scripts/make-test-study.py` (pydicom's sample
/// files with new UIDs) and returns its folder.
async fn generate_study(work_dir: &Path) -> CliResult<PathBuf> {
    let script = find_script("make-test-study.py")?;
    let out = work_dir.join("sample");
    let status = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&out)
        .args(["--only", "ct-study", "--ct-instances", &DEMO_CT_INSTANCES.to_string()])
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|error| {
            CliError::failure(format!(
                "failed to run python3 {}: {error}; install Python 3 and pydicom (scripts/setup does)",
                script.display()
            ))
        })?;
    if !status.success() {
        return Err(CliError::failure(format!(
            "python3 {} failed ({status}); install pydicom with `pip install pydicom` (scripts/setup does)",
            script.display()
        )));
    }
    Ok(out.join("ct-study"))
}

/// Finds a script of the repository: in `./scripts` (scripts/demo runs
/// from the repository root), else beside the sources this binary was built from.
fn find_script(name: &str) -> CliResult<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let candidates = [PathBuf::from("scripts").join(name), built_from];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            CliError::failure(format!(
                "scripts/{name} was not found in the current folder or the source tree; \
                 run the demo from the repository root with scripts/demo"
            ))
        })
}

/// Scans the study, runs the patient guard and packs it. The study belongs
/// to the demo patient; the guard is also run against another patient to
/// show the block, without uploading. Should the chosen patient not match
/// (a clinician's patient context, say), the mismatch is confirmed with a
/// stated reason, as a user would with `--confirm-patient-mismatch`.
async fn check_and_pack(
    session: &Session,
    study_dir: &Path,
    patient: &str,
    work_dir: &Path,
    output: Output,
) -> CliResult<(
    PathBuf,
    Option<PatientMismatchConfirmation>,
    Option<ferry_api::StudySummary>,
)> {
    let scan = scan_path(study_dir).await?;
    let study = scan.studies.first().ok_or_else(|| {
        CliError::failure(format!(
            "the generated study in {} holds no DICOM instance",
            study_dir.display()
        ))
    })?;
    output.status(format!(
        "    {} instances in {} series of study {} ({}), patient {} ID {}",
        scan.instances.len(),
        study.series.len(),
        study.study_instance_uid,
        study.description.as_deref().unwrap_or("no description"),
        study.patient.name.as_deref().unwrap_or("-"),
        study.patient.id.as_deref().unwrap_or("-"),
    ));

    let confirmation = match fetch_patient(session, patient).await {
        Ok(chosen) => match study::check_patient(&scan, &chosen) {
            Verdict::Match => {
                output.status(format!(
                    "    Patient guard: match (the study's patient ID, name and birth date are those of Patient/{patient})"
                ));
                None
            }
            verdict => {
                let findings = verdict.reasons();
                let reason = format!(
                    "ferry demo: the sample study names a synthetic patient; filed under sandbox Patient/{patient}"
                );
                output.status(format!(
                    "    Patient guard: blocked:\n      {}\n    The demo confirms it with the reason \"{reason}\", \
                     which goes into the signed log and the gateway's audit; `ferry upload` stops here (exit 6) \
                     unless --confirm-patient-mismatch REASON is given.",
                    findings.iter().map(|finding| short_finding(finding)).collect::<Vec<_>>().join("\n      ")
                ));
                Some(PatientMismatchConfirmation { reason, findings })
            }
        },
        Err(error) => {
            output.status(format!(
                "    Patient guard skipped: reading Patient/{patient} failed: {}",
                error.message
            ));
            None
        }
    };

    if patient != OTHER_PATIENT {
        match fetch_patient(session, OTHER_PATIENT).await {
            Ok(other) => match study::check_patient(&scan, &other) {
                Verdict::Match => output.status(format!(
                    "    warning: the guard found the study to match Patient/{OTHER_PATIENT} as well"
                )),
                verdict => output.status(format!(
                    "    Patient guard against Patient/{OTHER_PATIENT}: blocked, nothing uploaded:\n      {}\n    \
                     `ferry upload --patient {OTHER_PATIENT}` stops here (exit 6) unless --confirm-patient-mismatch REASON is given.",
                    verdict
                        .reasons()
                        .iter()
                        .map(|finding| short_finding(finding))
                        .collect::<Vec<_>>()
                        .join("\n      ")
                )),
            },
            Err(error) => output.status(format!(
                "    Patient guard against Patient/{OTHER_PATIENT} skipped: reading it failed: {}",
                error.message
            )),
        }
    }

    let archive = work_dir.join("sample-study.zip");
    let scan_for_pack = scan.clone();
    let destination = archive.clone();
    tokio::task::spawn_blocking(move || study::pack_to_file(&scan_for_pack, &destination))
        .await
        .map_err(|error| CliError::failure(format!("packing stopped: {error}")))?
        .map_err(|error| {
            CliError::failure(format!(
                "packing the sample study failed: {}",
                error_chain(&error)
            ))
        })?;

    let summary = scan.studies.first().map(|study| ferry_api::StudySummary {
        study_instance_uid: study.study_instance_uid.clone(),
        description: study.description.clone(),
        started: study.study_date.clone(),
        series: study
            .series
            .iter()
            .map(|series| ferry_api::SeriesSummary {
                series_instance_uid: series.uid.clone(),
                modality: series.modality.clone().unwrap_or_else(|| "OT".to_owned()),
                description: series.description.clone(),
                instance_count: u32::try_from(series.instance_count).unwrap_or(u32::MAX),
            })
            .collect(),
    });
    Ok((archive, confirmation, summary))
}

fn log_transfer(
    activity: &mut Option<ActivityLog>,
    patient: &str,
    document_id: &str,
    file_name: Option<&str>,
    receipt: &SignedReceipt,
    output: Output,
) {
    let Some(log) = activity else { return };
    let body = &receipt.receipt;
    let mut completed = transfer_entry(
        Event::Completed,
        Direction::Upload,
        Some(patient),
        Some(&format!("DocumentReference/{document_id}")),
        file_name,
        Some(body.size),
        Some(&body.sha256),
        Some(&body.correlation_id),
    );
    completed.receipt = serde_json::to_value(receipt).ok();
    log.append(completed, output);
    log.append(
        transfer_entry(
            Event::Verified,
            Direction::Upload,
            Some(patient),
            Some(&format!("DocumentReference/{document_id}")),
            file_name,
            Some(body.size),
            Some(&body.sha256),
            Some(&body.correlation_id),
        ),
        output,
    );
}

/// Fetches the gateway's `AuditEvent`s of each correlation id while the
/// sandbox runs and saves each Bundle as `audit-{label}.json`.
async fn save_audit(
    session: &Session,
    work_dir: &Path,
    ids: &[(&str, &str)],
    output: Output,
) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(base) = session.grant_api() else {
        return lines;
    };
    for (label, correlation_id) in ids {
        if correlation_id.is_empty() {
            continue;
        }
        let mut url = base.clone();
        url.path_segments_mut()
            .map(|mut segments| {
                segments.pop_if_empty().push("audit");
            })
            .ok();
        url.query_pairs_mut()
            .append_pair("correlation_id", correlation_id);
        let fetched = async {
            let token = session
                .access_token()
                .await
                .map_err(|error| error.to_string())?;
            let response = session
                .http()
                .get(url.clone())
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|error| error.to_string())?;
            let status = response.status();
            let body: serde_json::Value =
                response.json().await.map_err(|error| error.to_string())?;
            if !status.is_success() {
                return Err(format!("the gateway returned {status}"));
            }
            Ok(body)
        }
        .await;
        match fetched {
            Ok(bundle) => {
                let path = work_dir.join(format!("audit-{label}.json"));
                let events: Vec<String> = bundle["entry"]
                    .as_array()
                    .map(|entries| {
                        entries
                            .iter()
                            .map(|entry| {
                                let resource = &entry["resource"];
                                resource["subtype"][0]["display"]
                                    .as_str()
                                    .or_else(|| resource["type"]["display"].as_str())
                                    .or_else(|| resource["subtype"][0]["code"].as_str())
                                    .unwrap_or("AuditEvent")
                                    .to_owned()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let text = serde_json::to_string_pretty(&bundle).unwrap_or_default();
                if let Err(error) = std::fs::write(&path, text) {
                    output.status(format!("    warning: failed to write {}: {error}", path.display()));
                }
                lines.push(format!(
                    "{label} (correlation id {correlation_id}): {} AuditEvents ({}) saved to {}",
                    events.len(),
                    count_kinds(&events),
                    path.display()
                ));
            }
            Err(error) => lines.push(format!(
                "{label} (correlation id {correlation_id}): reading the gateway's audit failed: {error}"
            )),
        }
    }
    lines
}

/// Drops the study and series UIDs from a guard finding for the demo's
/// output: "Patient ID X in study UID (series UIDs) does not match …"
/// becomes "Patient ID X does not match …".
fn short_finding(finding: &str) -> String {
    let Some(start) = finding.find(" in study ") else {
        return finding.to_owned();
    };
    let rest = &finding[start..];
    match rest.find(") ") {
        Some(end) => format!("{}{}", &finding[..start], &rest[end + 1..]),
        None => finding.to_owned(),
    }
}

/// Counts equal names, in order of first appearance: "Import ×4, Export ×1".
fn count_kinds(names: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for name in names {
        match counts.iter_mut().find(|(known, _)| known == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(name, count)| format!("{name} ×{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verify_log(path: &Path) -> CliResult<String> {
    let bundle = ferry_core::log::export_bundle(path)
        .map_err(|error| CliError::from_chain(Exit::TransferFailed, &error))?;
    let options = VerifyOptions {
        gateway_keys: bundle.gateway_keys,
        ..VerifyOptions::default()
    };
    let report = ferry_core::log::verify(path, &options)
        .map_err(|error| CliError::from_chain(Exit::TransferFailed, &error))?;
    if !report.ok {
        let problem = report
            .first_problem()
            .map(|problem| problem.to_string())
            .unwrap_or_else(|| "unknown problem".to_owned());
        return Err(CliError::transfer(format!(
            "the demo's transfer log {} did not verify: {problem}",
            path.display()
        )));
    }
    Ok(format!(
        "verified: {} in {}, hash chain intact, {}, {}, {} after the last seal",
        count(report.entries, "entry", "entries"),
        count(report.records, "record", "records"),
        count(report.epochs.len() as u64, "epoch key", "epoch keys"),
        match report.last_checkpoint {
            Some(seq) => format!("countersigned by the gateway up to seq {seq}"),
            None => "no countersigned checkpoint".to_owned(),
        },
        count(report.unsealed_tail, "record", "records")
    ))
}

struct Summary<'a> {
    profile_name: &'a str,
    work_dir: &'a Path,
    gateway: &'a SandboxProcess,
    patient: &'a str,
    archive: &'a Path,
    archive_size: u64,
    parts: u32,
    document_id: &'a str,
    receipt: &'a SignedReceipt,
    upload_seconds: f64,
    downloaded: &'a Path,
    download_seconds: f64,
    sha256: &'a str,
    journal: &'a Path,
    log_summary: &'a str,
    audit_files: &'a [String],
    upload_transfer: String,
    download_transfer: String,
    seconds: f64,
    confirmation: Option<&'a PatientMismatchConfirmation>,
}

fn print_summary(summary: &Summary<'_>, output: Output) {
    let receipt = &summary.receipt.receipt;
    let mut text = vec![
        String::new(),
        format!("Demo finished in {:.1} s. What happened:", summary.seconds),
        format!(
            "  profile        {} (secrets kept in memory only; gone when this process exits)",
            summary.profile_name
        ),
        format!(
            "  gateway        sandbox at {} (stopped now; data in {}, log {})",
            summary.gateway.fhir_url,
            summary.work_dir.join("gateway-data").display(),
            summary.gateway.log_path.display()
        ),
        format!("  patient        Patient/{}", summary.patient),
        format!(
            "  archive        {} ({} bytes, {})",
            summary.archive.display(),
            summary.archive_size,
            format_bytes(summary.archive_size)
        ),
        format!(
            "  upload         transfer {}: {} of at most {} in {:.1} s ({})",
            summary.upload_transfer,
            count(u64::from(summary.parts), "part", "parts"),
            format_bytes(DEMO_PART_SIZE),
            summary.upload_seconds,
            format_rate(summary.archive_size, summary.upload_seconds)
        ),
        format!("  document       DocumentReference/{}", summary.document_id),
        format!(
            "  receipt        upload {} completed {}, signed by the gateway (ES256), checked against the part list and the SHA-256",
            receipt.upload_id, receipt.completed_at
        ),
        format!(
            "  download       transfer {}: {} in {:.1} s ({})",
            summary.download_transfer,
            summary.downloaded.display(),
            summary.download_seconds,
            format_rate(summary.archive_size, summary.download_seconds)
        ),
        format!("  verified       byte for byte; SHA-256 {}", summary.sha256),
        format!("  transfer log   {}", summary.log_summary),
        format!("  journal        {}", summary.journal.display()),
    ];
    if let Some(confirmation) = summary.confirmation {
        text.push(format!(
            "  guard          patient mismatch confirmed: {}",
            confirmation.reason
        ));
    }
    for line in summary.audit_files {
        text.push(format!("  gateway audit  {line}"));
    }
    text.push(String::new());
    text.push("Inspect it further:".to_owned());
    text.push(format!(
        "  ferry --profile {} transfers        the journal of this run",
        summary.profile_name
    ));
    text.push(format!("  ferry --profile {} log verify       the demo profile's signed log (public material only)", summary.profile_name));
    text.push(format!(
        "  ferry --profile {} log show",
        summary.profile_name
    ));
    text.push(format!(
        "  The gateway's audit for a correlation id is GET {{grant API}}/audit?correlation_id=ID with a bearer token; \
         the demo saved both above. To query it yourself, start `ferry-gateway sandbox --data-dir {} --auto-login {IMAGING_STAFF_USER}`, \
         sign in with a profile for its FHIR URL (`ferry profiles add`, `ferry login`), and run \
         `ferry --profile NAME log audit CORRELATION_ID`.",
        summary.work_dir.join("gateway-data").display()
    ));
    text.push(format!(
        "  Delete {} when done.",
        summary.work_dir.display()
    ));
    output.status(text.join("\n"));

    // The last NDJSON line, after the transfers' progress events.
    output.json_event(&json!({
        "event": "demo_completed",
        "profile": summary.profile_name,
        "secrets": "memory",
        "work_dir": summary.work_dir,
        "fhir_base_url": summary.gateway.fhir_url,
        "patient": ferry_core::activity::patient_reference(summary.patient),
        "archive": summary.archive,
        "size": summary.archive_size,
        "part_count": summary.parts,
        "document_id": summary.document_id,
        "receipt": summary.receipt,
        "upload_transfer": summary.upload_transfer,
        "upload_seconds": summary.upload_seconds,
        "downloaded": summary.downloaded,
        "download_transfer": summary.download_transfer,
        "download_seconds": summary.download_seconds,
        "sha256": summary.sha256,
        "verified": true,
        "transfer_log": summary.log_summary,
        "audit": summary.audit_files,
        "patient_mismatch_confirmation": summary.confirmation,
    }));
}

fn create_dir(path: &Path) -> CliResult<()> {
    std::fs::create_dir_all(path)
        .map_err(|error| CliError::failure(format!("failed to create {}: {error}", path.display())))
}

fn file_size(path: &Path) -> CliResult<u64> {
    std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .map_err(|error| CliError::failure(format!("failed to read {}: {error}", path.display())))
}

fn sha256_file(path: &Path) -> CliResult<String> {
    let mut file = std::fs::File::open(path).map_err(|error| {
        CliError::failure(format!("failed to open {}: {error}", path.display()))
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|error| {
        CliError::failure(format!("failed to read {}: {error}", path.display()))
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Compares two files byte for byte and names the first differing offset.
fn compare_files(expected: &Path, actual: &Path) -> CliResult<()> {
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|error| {
                CliError::failure(format!("failed to open {}: {error}", path.display()))
            })
    };
    let (mut left, mut right) = (open(expected)?, open(actual)?);
    let mut offset = 0u64;
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let read_a = read_full(&mut left, &mut a, expected)?;
        let read_b = read_full(&mut right, &mut b, actual)?;
        if let Some(index) = a[..read_a.min(read_b)]
            .iter()
            .zip(&b[..read_a.min(read_b)])
            .position(|(x, y)| x != y)
        {
            return Err(CliError::transfer(format!(
                "{} differs from {} at byte {}",
                actual.display(),
                expected.display(),
                offset + index as u64
            )));
        }
        if read_a != read_b {
            return Err(CliError::transfer(format!(
                "{} and {} differ in length after byte {}",
                actual.display(),
                expected.display(),
                offset + read_a.min(read_b) as u64
            )));
        }
        if read_a == 0 {
            return Ok(());
        }
        offset += read_a as u64;
    }
}

fn read_full(reader: &mut impl std::io::Read, buffer: &mut [u8], path: &Path) -> CliResult<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(CliError::failure(format!(
                    "failed to read {}: {error}",
                    path.display()
                )));
            }
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_loses_uids() {
        let finding = "Patient ID FERRY-0001 in study 1.2.3 (series 1.2.3.4, 1.2.3.5) does not match any identifier of Patient/pat-001";
        assert_eq!(
            short_finding(finding),
            "Patient ID FERRY-0001 does not match any identifier of Patient/pat-001"
        );
        assert_eq!(
            short_finding("the upload holds 2 different patients"),
            "the upload holds 2 different patients"
        );
    }

    #[test]
    fn kinds_are_counted_in_order() {
        let names: Vec<String> = ["Import", "Restful Operation", "Import"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(count_kinds(&names), "Import ×2, Restful Operation ×1");
    }

    #[test]
    fn identical_files_compare_equal() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        compare_files(&a, &b).unwrap();
    }

    #[test]
    fn differing_byte_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut bytes = vec![7u8; 100_000];
        std::fs::write(&a, &bytes).unwrap();
        bytes[70_000] = 8;
        std::fs::write(&b, &bytes).unwrap();
        let error = compare_files(&a, &b).unwrap_err();
        assert!(error.message.contains("at byte 70000"), "{}", error.message);
        assert_eq!(error.exit, Exit::TransferFailed);
    }

    #[test]
    fn shorter_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, [1u8; 10]).unwrap();
        std::fs::write(&b, [1u8; 9]).unwrap();
        let error = compare_files(&a, &b).unwrap_err();
        assert!(
            error.message.contains("differ in length after byte 9"),
            "{}",
            error.message
        );
    }
}
