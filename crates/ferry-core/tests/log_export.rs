//! Export: FHIR R4 `AuditEvent`s and the verification bundle.

mod log_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_core::log::{self, BUNDLE_FORMAT, VerificationBundle};
use log_support::*;

/// `fhir.resources` 6.4.0 holds FHIR R4 (4.0.1) models; 7.x and later hold
/// R5 by default. It needs pydantic 1.
const FHIR_RESOURCES: &str = "fhir.resources==6.4.0";
const PYDANTIC: &str = "pydantic>=1.10,<2";

/// Returns a Python interpreter with `fhir.resources` 6.4.0, installing it
/// into a virtual environment under the target directory when missing, or
/// `None` when Python or pip is unavailable.
fn fhir_python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("fhir-r4-venv");
    let python = venv.join("bin/python");
    let check = |python: &Path| {
        Command::new(python)
            .args(["-c", "import fhir.resources as f; assert f.__fhir_version__ == '4.0.1'"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if check(&python) {
        return Some(python);
    }

    let created = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    let installed = created
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", FHIR_RESOURCES, PYDANTIC])
            .status()
            .is_ok_and(|s| s.success());
    (installed && check(&python)).then_some(python)
}

#[test]
fn audit_events_validate_against_fhir_r4() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let ndjson = log::export_fhir(&sample.path).unwrap();
    let export = dir.path().join("audit-events.ndjson");
    std::fs::write(&export, &ndjson).unwrap();
    let events: Vec<serde_json::Value> = ndjson.lines().map(|line| serde_json::from_str(line).unwrap()).collect();

    assert_eq!(events.len(), 11);
    let completed = events.iter().find(|event| event["subtype"][0]["code"] == "completed").unwrap();
    assert_eq!(completed["type"]["code"], "110107", "an upload is a DICOM Import event");
    assert_eq!(completed["action"], "C");
    assert_eq!(completed["agent"][0]["requestor"], true);
    assert_eq!(completed["agent"][0]["who"]["reference"], "Practitioner/dr-lee");
    assert_eq!(completed["entity"][0]["what"]["reference"], "Patient/p-100");
    assert_eq!(completed["entity"][1]["what"]["identifier"]["value"], "corr-upload-1");
    let failed = events.iter().find(|event| event["subtype"][0]["code"] == "failed").unwrap();
    assert_eq!(failed["type"]["code"], "110106", "a download is a DICOM Export event");
    assert_eq!(failed["action"], "R");
    assert_eq!(failed["outcome"], "8");
    assert_eq!(failed["outcomeDesc"], "the signed URL expired");
    let signed_in = &events[0];
    assert_eq!(signed_in["type"]["code"], "110114");
    assert_eq!(signed_in["subtype"][0]["code"], "110122");

    let Some(python) = fhir_python() else {
        eprintln!("skipping FHIR validation: python3 with pip could not install {FHIR_RESOURCES}");
        return;
    };
    let script = r#"
import sys, json
from fhir.resources.auditevent import AuditEvent
count = 0
for line in open(sys.argv[1]):
    AuditEvent.parse_obj(json.loads(line))
    count += 1
print(count)
"#;
    let output = Command::new(python).args(["-c", script]).arg(&export).output().unwrap();

    assert!(output.status.success(), "fhir.resources rejected an AuditEvent: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "11");
}

#[test]
fn bundle_verifies_export_on_another_machine() {
    let dir = tempfile::tempdir().unwrap();
    let sample = write_sample(dir.path());
    let bundle_json = serde_json::to_string_pretty(&log::export_bundle(&sample.path).unwrap()).unwrap();

    // Another machine: a copy of the file, the bundle and the gateway key.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("exported.ndjson");
    std::fs::copy(&sample.path, &copy).unwrap();
    let bundle: VerificationBundle = serde_json::from_str(&bundle_json).unwrap();
    let options = bundle.verify_options();

    let report = log::verify(&copy, &options).unwrap();

    assert_eq!(bundle.gateway_keys, gateway_public_keys(), "the bundle carries the gateway's keys");
    assert_eq!(bundle.format, BUNDLE_FORMAT);
    assert_eq!(bundle.epochs.len(), 3);
    assert_eq!(bundle.checkpoints, sample.checkpoints);
    assert!(report.ok, "{:#?}", report.problems);
    assert!(report.anchored);
    assert_eq!(report.last_checkpoint, Some(sample.checkpoints[1].head_seq));

    let lines = read_lines(&copy);
    write_lines(&copy, &lines[..lines.len() - 1]);
    let cut = log::verify(&copy, &options).unwrap();
    assert_eq!(cut.first_problem().unwrap().kind, log::ProblemKind::Missing);
    assert!(cut.first_problem().unwrap().message.contains("bundle was exported at seq"));
}
