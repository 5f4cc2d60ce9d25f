//! `ferry log show`, `log verify` and `log export`: the profile's signed
//! transfer log. None of them needs a sign-in or a secret: verifying uses
//! public keys only. When the profile is signed in, `log verify` first has
//! the gateway countersign the head, and checks the log against the
//! gateway's published keys and the checkpoints the gateway keeps.

use std::path::{Path, PathBuf};

use ferry_core::log::{self, Checkpoint, Record, VerificationBundle, VerifyOptions, VerifyReport};
use ferry_core::login;
use ferry_core::profile::{FerryDirs, Profile};
use serde_json::json;

use crate::activity::{ActivityLog, grant_client};
use crate::cli::{ExportFormat, LogAction};
use crate::context::{self, load_profile};
use crate::exit::{CliError, CliResult, Exit, error_chain};
use crate::output::{Output, count, format_bytes, table};

/// Suffix of the verification bundle written beside an export.
const BUNDLE_SUFFIX: &str = ".bundle.json";
/// Suffix of the copy of the raw log written beside an export.
const LOG_COPY_SUFFIX: &str = ".log.ndjson";

pub async fn run(profile: Option<&str>, action: LogAction, output: Output) -> CliResult<()> {
    let dirs = context::ferry_dirs()?;
    let (_, profile) = load_profile(&dirs, profile)?;
    match action {
        LogAction::Show { since, patient } => show(
            &dirs,
            &profile,
            since.as_deref(),
            patient.as_deref(),
            output,
        ),
        LogAction::Verify { bundle, log } => {
            verify(&dirs, &profile, bundle.as_deref(), log.as_deref(), output).await
        }
        LogAction::Audit { correlation_id } => audit(&profile, &correlation_id, output).await,
        LogAction::Export {
            format: ExportFormat::Fhir,
            out,
        } => export(&dirs, &profile, out.as_deref(), output),
    }
}

fn existing_log(dirs: &FerryDirs, profile: &Profile) -> CliResult<PathBuf> {
    let path = dirs.transfer_log_path(&profile.name);
    if !path.is_file() {
        return Err(CliError::usage(format!(
            "profile {} has no transfer log yet ({} does not exist); it is written by sign-ins and transfers",
            profile.name,
            path.display()
        )));
    }
    Ok(path)
}

fn show(
    dirs: &FerryDirs,
    profile: &Profile,
    since: Option<&str>,
    patient: Option<&str>,
    output: Output,
) -> CliResult<()> {
    let since = since.map(parse_since).transpose()?;
    let patient = patient.map(|patient| {
        if patient.starts_with("Patient/") {
            patient.to_owned()
        } else {
            format!("Patient/{patient}")
        }
    });
    let path = existing_log(dirs, profile)?;
    let bytes = std::fs::read(&path).map_err(|error| {
        CliError::failure(format!("failed to read {}: {error}", path.display()))
    })?;

    let mut entries = Vec::new();
    for line in bytes.split(|byte| *byte == b'\n') {
        let Ok(Record::Entry(entry)) = serde_json::from_slice::<Record>(line) else {
            continue;
        };
        if since.is_some_and(|since| entry.time < since) {
            continue;
        }
        if patient
            .as_ref()
            .is_some_and(|patient| entry.patient.as_ref() != Some(patient))
        {
            continue;
        }
        entries.push(entry);
    }

    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                entry.seq.to_string(),
                entry.time.to_string(),
                entry.event.name().to_owned(),
                entry
                    .actor
                    .as_ref()
                    .and_then(|actor| actor.fhir_user.clone())
                    .unwrap_or_default(),
                entry.patient.clone().unwrap_or_default(),
                entry
                    .file_name
                    .clone()
                    .or_else(|| entry.object.clone())
                    .unwrap_or_default(),
                entry.size.map(format_bytes).unwrap_or_default(),
                entry.correlation_id.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if rows.is_empty() {
        output.status("No matching log entries.");
    } else {
        output.text(table(
            &[
                "SEQ",
                "TIME",
                "EVENT",
                "USER",
                "PATIENT",
                "FILE",
                "SIZE",
                "CORRELATION ID",
            ],
            &rows,
        ));
    }
    output.json_result(&json!({ "log": path, "entries": entries }));
    Ok(())
}

/// Reads `--since`: an RFC 3339 timestamp, or a date meaning its midnight UTC.
fn parse_since(text: &str) -> CliResult<jiff::Timestamp> {
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Ok(timestamp);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|date| date.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|zoned| zoned.timestamp())
        .ok_or_else(|| {
            CliError::usage(format!(
                "--since {text} is neither an RFC 3339 time (2026-12-04T09:00:00Z) nor a date (2026-12-04)"
            ))
        })
}

/// Returns whether the log at `path` verifies with the gateway keys and
/// checkpoints recorded in it, without asking the gateway.
fn verifies_with_recorded_keys(path: &Path) -> bool {
    recorded_options(path)
        .ok()
        .and_then(|options| log::verify(path, &options).ok())
        .is_some_and(|report| report.ok)
}

async fn verify(
    dirs: &FerryDirs,
    profile: &Profile,
    bundle: Option<&Path>,
    log_file: Option<&Path>,
    output: Output,
) -> CliResult<()> {
    let mut checked_with_gateway = false;
    let (path, options, against) = match bundle {
        Some(bundle_path) => {
            let text = std::fs::read_to_string(bundle_path).map_err(|error| {
                CliError::usage(format!(
                    "failed to read the bundle {}: {error}; pass the FILE.bundle.json that `ferry log export --out FILE` wrote",
                    bundle_path.display()
                ))
            })?;
            let bundle: VerificationBundle = serde_json::from_str(&text).map_err(|error| {
                CliError::usage(format!(
                    "{} is not a verification bundle written by `ferry log export`: {error}",
                    bundle_path.display()
                ))
            })?;
            let path = match log_file {
                Some(path) => path.to_owned(),
                None => match log_beside_bundle(bundle_path) {
                    Some(path) => path,
                    None => existing_log(dirs, profile)?,
                },
            };
            (path, bundle.verify_options(), Some(bundle_path.to_owned()))
        }
        None => match log_file {
            Some(path) => {
                let options = recorded_options(path)?;
                (path.to_owned(), options, None)
            }
            None => {
                let path = existing_log(dirs, profile)?;
                let options = match with_gateway(profile, output).await {
                    Ok(options) => {
                        checked_with_gateway = true;
                        options
                    }
                    Err(reason) => {
                        output.status(format!(
                            "note: not checked against the gateway ({reason}); checkpoint signatures are \
                             checked with the gateway keys recorded in the log"
                        ));
                        recorded_options(&path)?
                    }
                };
                (path, options, None)
            }
        },
    };

    let report = log::verify(&path, &options)
        .map_err(|error| CliError::from_chain(Exit::Failure, &error))?;
    output.json_result(&report_json(&path, against.as_deref(), &report));
    if !report.ok {
        let problem = report
            .first_problem()
            .map(|problem| problem.to_string())
            .unwrap_or_else(|| "unknown problem".to_owned());
        let mut message = format!(
            "the transfer log {} did not verify: {problem} ({} in all)",
            path.display(),
            count(report.problems.len() as u64, "problem", "problems")
        );
        if checked_with_gateway && verifies_with_recorded_keys(&path) {
            message.push_str(&format!(
                ". The log verifies with the gateway keys recorded in it, so only the gateway's \
                 current keys reject its earlier checkpoints. That is expected when the gateway's \
                 signing keys changed, for example after the sandbox's data was reset, and a \
                 warning sign otherwise; ask the gateway's operator. `ferry log verify --log {}` \
                 checks the log with the recorded keys only",
                path.display()
            ));
        }
        return Err(CliError::transfer(message));
    }

    let checkpoint = match report.last_checkpoint {
        Some(seq) => format!("last countersigned checkpoint at seq {seq}"),
        None => "no countersigned checkpoint yet".to_owned(),
    };
    output.text(format!(
        "OK: {} verified: {} in {}, {}, {checkpoint}, {} after the last seal{}.",
        path.display(),
        count(report.entries, "entry", "entries"),
        count(report.records, "record", "records"),
        count(report.epochs.len() as u64, "epoch key", "epoch keys"),
        count(report.unsealed_tail, "record", "records"),
        against
            .map(|bundle| format!(", checked against {}", bundle.display()))
            .unwrap_or_default()
    ));
    for problem in &report.problems {
        output.status(format!("note: {problem}"));
    }
    Ok(())
}

/// Options that check checkpoint signatures with the gateway keys recorded
/// in the log's own checkpoint records.
fn recorded_options(path: &Path) -> CliResult<VerifyOptions> {
    let bundle =
        log::export_bundle(path).map_err(|error| CliError::from_chain(Exit::Failure, &error))?;
    Ok(VerifyOptions {
        gateway_keys: bundle.gateway_keys,
        ..VerifyOptions::default()
    })
}

/// Has the gateway countersign the head of the profile's log, then returns
/// options with the gateway's published keys and the checkpoints it keeps
/// for this device. Fails with a reason when the profile is not signed in
/// or the gateway cannot be reached.
async fn with_gateway(profile: &Profile, output: Output) -> Result<VerifyOptions, String> {
    let context =
        context::profile_context(Some(profile.name.as_str())).map_err(|error| error.message)?;
    if login::whoami(&context).ok().flatten().is_none() {
        return Err(format!("profile {} is not signed in", profile.name));
    }
    let session = context::resume_session(&context)
        .await
        .map_err(|error| error.message)?;
    let grants = grant_client(&context, &session)?;

    let mut activity = ActivityLog::for_context(&context, Some(&session.info()), output)
        .await
        .ok_or("the log could not be opened for the checkpoint")?;
    let checkpoint = activity.checkpoint(&grants, output).await;
    activity.close(output);
    let checkpoint = checkpoint.ok_or("the gateway did not countersign the head")?;

    let keys = grants.keys().await.map_err(|error| error_chain(&error))?;
    let listed = grants
        .checkpoints(&checkpoint.device)
        .await
        .map_err(|error| error_chain(&error))?;
    let checkpoints = listed
        .into_iter()
        .filter_map(Checkpoint::from_gateway)
        .filter(|listed| listed.log_id == checkpoint.log_id)
        .collect();
    output.status(format!(
        "The gateway countersigned seq {}; checking against its {} and its checkpoints.",
        checkpoint.head_seq,
        count(keys.keys.len() as u64, "published key", "published keys")
    ));
    Ok(VerifyOptions {
        gateway_keys: keys.keys,
        checkpoints,
        ..VerifyOptions::default()
    })
}

/// Prints the gateway's `AuditEvent`s of one correlation id: one line per
/// event with its time, step and outcome, and the `Bundle` in JSON mode.
async fn audit(profile: &Profile, correlation_id: &str, output: Output) -> CliResult<()> {
    let context = context::profile_context(Some(profile.name.as_str()))?;
    let session = context::resume_session(&context).await?;
    let bundle = fetch_audit(&session, correlation_id)
        .await
        .map_err(CliError::failure)?;

    let mut rows = Vec::new();
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        let event = &entry["resource"];
        let step = event["subtype"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|coding| {
                coding["system"]
                    .as_str()
                    .is_some_and(|system| system.starts_with("urn:ferry"))
            })
            .and_then(|coding| coding["code"].as_str())
            .or_else(|| event["type"]["display"].as_str())
            .unwrap_or("AuditEvent");
        rows.push(vec![
            event["recorded"].as_str().unwrap_or_default().to_owned(),
            step.to_owned(),
            event["outcome"].as_str().unwrap_or_default().to_owned(),
        ]);
    }
    if rows.is_empty() {
        return Err(CliError::not_found(format!(
            "the gateway has no audit records of correlation id {correlation_id} that this user \
             may see; take the id from `ferry log show` or from a transfer's output"
        )));
    }
    output.text(table(&["RECORDED", "STEP", "OUTCOME"], &rows));
    output.json_result(&bundle);
    Ok(())
}

/// `GET {grant_api}/audit?correlation_id=…`: a FHIR `Bundle` of `AuditEvent`s.
pub async fn fetch_audit(
    session: &ferry_core::login::Session,
    correlation_id: &str,
) -> Result<serde_json::Value, String> {
    let mut url = session.grant_api().map_err(|error| error_chain(&error))?;
    url.path_segments_mut()
        .map_err(|()| "the grant API URL cannot have a path".to_owned())?
        .pop_if_empty()
        .push("audit");
    url.query_pairs_mut()
        .append_pair("correlation_id", correlation_id);

    let token = session
        .access_token()
        .await
        .map_err(|error| error_chain(&error))?;
    let response = session
        .http()
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|error| format!("reading the gateway's audit failed: {error}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "reading the gateway's audit failed: the gateway returned {status}"
        ));
    }
    response
        .json()
        .await
        .map_err(|error| format!("the gateway's audit is not JSON: {error}"))
}

/// Returns `NAME.log.ndjson` beside `NAME.bundle.json`, when it exists.
fn log_beside_bundle(bundle: &Path) -> Option<PathBuf> {
    let name = bundle.file_name()?.to_str()?;
    let stem = name.strip_suffix(BUNDLE_SUFFIX)?;
    let path = bundle.with_file_name(format!("{stem}{LOG_COPY_SUFFIX}"));
    path.is_file().then_some(path)
}

fn report_json(path: &Path, bundle: Option<&Path>, report: &VerifyReport) -> serde_json::Value {
    json!({
        "log": path,
        "bundle": bundle,
        "ok": report.ok,
        "log_id": report.log_id,
        "device": report.device,
        "entries": report.entries,
        "records": report.records,
        "head_seq": report.head.as_ref().map(|head| head.seq),
        "head_sha256": report.head.as_ref().map(|head| head.hash.clone()),
        "epochs": report.epochs,
        "last_signed_seq": report.last_signed_seq,
        "unsealed_tail": report.unsealed_tail,
        "last_checkpoint": report.last_checkpoint,
        "problems": report.problems.iter().map(|problem| json!({
            "kind": format!("{:?}", problem.kind),
            "seq": problem.seq,
            "line": problem.line,
            "message": problem.message,
        })).collect::<Vec<_>>(),
    })
}

fn export(
    dirs: &FerryDirs,
    profile: &Profile,
    out: Option<&Path>,
    output: Output,
) -> CliResult<()> {
    let path = existing_log(dirs, profile)?;
    let report = log::verify(&path, &VerifyOptions::default())
        .map_err(|error| CliError::from_chain(Exit::Failure, &error))?;
    if !report.ok {
        output.status(format!(
            "warning: the log does not verify ({}); exporting it anyway for the auditor",
            report
                .first_problem()
                .map(|problem| problem.to_string())
                .unwrap_or_default()
        ));
    }
    let events = log::export_fhir(&path).map_err(|error| CliError::failure(error_chain(&error)))?;

    let Some(out) = out else {
        // AuditEvents only; the bundle and the log copy need --out.
        print!("{events}");
        output.status("Wrote the AuditEvents to stdout; pass --out FILE to also write the verification bundle.");
        return Ok(());
    };

    let bundle =
        log::export_bundle(&path).map_err(|error| CliError::failure(error_chain(&error)))?;
    let bundle_path = with_suffix(out, BUNDLE_SUFFIX);
    let log_copy = with_suffix(out, LOG_COPY_SUFFIX);
    let write = |target: &Path, bytes: &[u8]| {
        std::fs::write(target, bytes).map_err(|error| {
            CliError::failure(format!("failed to write {}: {error}", target.display()))
        })
    };
    write(out, events.as_bytes())?;
    write(
        &bundle_path,
        serde_json::to_string_pretty(&bundle)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    std::fs::copy(&path, &log_copy).map_err(|error| {
        CliError::failure(format!(
            "failed to copy the log to {}: {error}",
            log_copy.display()
        ))
    })?;

    let count = events
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count();
    output.status(format!(
        "Exported {count} AuditEvents to {}, the verification bundle to {} and a copy of the log to {}.\n\
         Check them on any machine with `ferry log verify --bundle {}`.",
        out.display(),
        bundle_path.display(),
        log_copy.display(),
        bundle_path.display()
    ));
    output.json_result(&json!({
        "audit_events": out,
        "count": count,
        "bundle": bundle_path,
        "log_copy": log_copy,
    }));
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_time_and_date() {
        assert_eq!(
            parse_since("2026-12-04T09:00:00Z").unwrap().to_string(),
            "2026-12-04T09:00:00Z"
        );
        assert_eq!(
            parse_since("2026-12-04").unwrap().to_string(),
            "2026-12-04T00:00:00Z"
        );
        let error = parse_since("yesterday").unwrap_err();
        assert_eq!(error.exit, Exit::Usage);
        assert!(error.message.contains("yesterday"), "{}", error.message);
    }

    #[test]
    fn bundle_names_its_log_copy() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("audit.ndjson.bundle.json");
        assert_eq!(log_beside_bundle(&bundle), None, "no copy yet");
        std::fs::write(dir.path().join("audit.ndjson.log.ndjson"), b"").unwrap();
        assert_eq!(
            log_beside_bundle(&bundle),
            Some(dir.path().join("audit.ndjson.log.ndjson"))
        );
        assert_eq!(
            with_suffix(&dir.path().join("audit.ndjson"), BUNDLE_SUFFIX),
            bundle
        );
    }
}
