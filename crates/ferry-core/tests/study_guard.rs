//! The patient guard on generated studies: verdicts, confirmations and
//! excluded series.

mod study_support;

use ferry_core::study::{Confirmation, GuardError, Verdict, check_patient, decide, scan};
use study_support::generate;

#[test]
fn matching_study_is_cleared_without_confirmation() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "12"]) else {
        return;
    };
    let scan = scan(&generated.path("ct-study")).unwrap();
    let patient = generated.patient();

    assert_eq!(check_patient(&scan, &patient), Verdict::Match);
    let cleared = decide(&scan, &patient, None).unwrap();
    assert!(!cleared.decision.overridden);
    assert_eq!(cleared.decision.patient, "Patient/pat-001");
    assert_eq!(cleared.scan.instances.len(), 12);
}

#[test]
fn other_patient_id_is_a_blocking_mismatch() {
    let Some(generated) = generate(&["wrong-patient"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("wrong-patient")).unwrap();
    let patient = generated.patient();

    let verdict = check_patient(&scan, &patient);
    assert!(verdict.blocks_upload());
    let Verdict::Mismatch { reasons } = &verdict else {
        panic!("expected a mismatch, got {verdict:?}");
    };
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let study_uid = &scan.studies[0].study_instance_uid;
    assert!(
        reasons[0].starts_with(&format!(
            "Patient ID FERRY-9999 in study {study_uid} (series "
        )),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[0].ends_with("does not match any identifier of Patient/pat-001"),
        "{}",
        reasons[0]
    );

    let error = decide(&scan, &patient, None).unwrap_err();
    let GuardError::Blocked { reasons: blocked } = &error else {
        panic!("expected Blocked, got {error:?}");
    };
    assert_eq!(blocked, reasons);
    assert!(
        error
            .to_string()
            .starts_with("upload blocked by the patient guard: Patient ID FERRY-9999")
    );
}

#[test]
fn confirmed_mismatch_is_cleared_and_recorded() {
    let Some(generated) = generate(&["wrong-patient"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("wrong-patient")).unwrap();
    let patient = generated.patient();
    let confirmation = Confirmation {
        by: "Practitioner/rad-7".to_owned(),
        reason: "merged record: FERRY-9999 is the old MRN".to_owned(),
        excluded_series: Vec::new(),
    };

    let cleared = decide(&scan, &patient, Some(&confirmation)).unwrap();
    assert!(cleared.decision.overridden);
    assert_eq!(cleared.decision.confirmation.as_ref(), Some(&confirmation));
    assert!(matches!(
        cleared.decision.final_verdict,
        Verdict::Mismatch { .. }
    ));
    assert_eq!(cleared.scan.instances.len(), scan.instances.len());

    let record = serde_json::to_value(&cleared.decision).unwrap();
    assert_eq!(record["confirmation"]["by"], "Practitioner/rad-7");
    assert_eq!(record["final"]["verdict"], "mismatch");
    assert_eq!(record["overridden"], true);
}

#[test]
fn two_patients_block_until_the_other_series_is_excluded() {
    let Some(generated) = generate(&["mixed-patients"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("mixed-patients")).unwrap();
    let patient = generated.patient();

    let verdict = check_patient(&scan, &patient);
    let Verdict::MultiplePatients { patients, reasons } = &verdict else {
        panic!("expected multiple patients, got {verdict:?}");
    };
    assert_eq!(patients.len(), 2);
    let other = patients.iter().find(|p| !p.matches_chosen).unwrap();
    assert_eq!(other.patient.id.as_deref(), Some("FERRY-0002"));
    assert_eq!(other.patient.name.as_deref(), Some("Schmidt^Anna"));
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("Patient ID FERRY-0002")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("Patient's Name Schmidt^Anna")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("Patient's Birth Date 1985-06-12")),
        "{reasons:?}"
    );
    assert!(matches!(
        decide(&scan, &patient, None),
        Err(GuardError::Blocked { .. })
    ));

    let confirmation = Confirmation {
        by: "Practitioner/rad-7".to_owned(),
        reason: "MR series belongs to another patient".to_owned(),
        excluded_series: other.series_instance_uids.clone(),
    };
    let cleared = decide(&scan, &patient, Some(&confirmation)).unwrap();
    assert_eq!(cleared.decision.final_verdict, Verdict::Match);
    assert!(!cleared.decision.overridden);
    assert_eq!(cleared.scan.instances.len(), 12);
    assert!(
        cleared
            .scan
            .instances
            .iter()
            .all(|i| !other.series_instance_uids.contains(&i.series_instance_uid))
    );
}

#[test]
fn birth_date_mismatch_blocks() {
    let Some(generated) = generate(&["ct-study"], &["--ct-instances", "3"]) else {
        return;
    };
    let scan = scan(&generated.path("ct-study")).unwrap();
    let mut patient = generated.patient();
    patient.birth_date = Some("1971-01-31".to_owned());

    let verdict = check_patient(&scan, &patient);
    let Verdict::Mismatch { reasons } = verdict else {
        panic!("expected a mismatch");
    };
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with("Patient's Birth Date 1970-01-31 in study"),
        "{}",
        reasons[0]
    );
    assert!(reasons[0].ends_with("differs from Patient/pat-001's birthDate 1971-01-31"));

    patient.birth_date = Some("1970".to_owned());
    assert_eq!(check_patient(&scan, &patient), Verdict::Match);
}

#[test]
fn confirmation_needs_who_why_and_known_series() {
    let Some(generated) = generate(&["wrong-patient"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("wrong-patient")).unwrap();
    let patient = generated.patient();

    let no_reason = Confirmation {
        by: "Practitioner/rad-7".to_owned(),
        reason: "  ".to_owned(),
        excluded_series: Vec::new(),
    };
    assert!(matches!(
        decide(&scan, &patient, Some(&no_reason)),
        Err(GuardError::IncompleteConfirmation { field: "reason" })
    ));

    let no_one = Confirmation {
        by: String::new(),
        reason: "old MRN".to_owned(),
        excluded_series: Vec::new(),
    };
    assert!(matches!(
        decide(&scan, &patient, Some(&no_one)),
        Err(GuardError::IncompleteConfirmation { field: "by" })
    ));

    let unknown = Confirmation {
        by: "Practitioner/rad-7".to_owned(),
        reason: "old MRN".to_owned(),
        excluded_series: vec!["1.2.3.4".to_owned()],
    };
    let error = decide(&scan, &patient, Some(&unknown)).unwrap_err();
    assert!(
        matches!(&error, GuardError::UnknownSeries { uid } if uid == "1.2.3.4"),
        "{error}"
    );

    let everything = Confirmation {
        by: "Practitioner/rad-7".to_owned(),
        reason: "wrong disc".to_owned(),
        excluded_series: scan.studies[0]
            .series
            .iter()
            .map(|s| s.uid.clone())
            .collect(),
    };
    assert!(matches!(
        decide(&scan, &patient, Some(&everything)),
        Err(GuardError::NothingToUpload)
    ));
}

#[test]
fn japanese_name_matches_ideographic_fhir_name() {
    let Some(generated) = generate(&["charsets"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("charsets")).unwrap();
    let japanese = scan.without_series(
        &scan
            .studies
            .iter()
            .filter(|s| s.patient.id.as_deref() != Some("CS-87"))
            .flat_map(|s| s.series.iter().map(|series| series.uid.clone()))
            .collect::<Vec<_>>(),
    );
    let patient = ferry_core::study::FhirPatient::from_json(&serde_json::json!({
        "resourceType": "Patient",
        "id": "pat-087",
        "identifier": [{"value": "CS-87"}],
        "name": [{"family": "山田", "given": ["太郎"]}],
        "birthDate": "1960-05-05"
    }))
    .unwrap();

    assert_eq!(japanese.instances.len(), 1);
    assert_eq!(check_patient(&japanese, &patient), Verdict::Match);
}
