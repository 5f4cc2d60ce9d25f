//! Scanning generated studies: the study table, set-aside files with their
//! reasons, duplicates, DICOMDIR, character sets and zip input.

mod study_support;

use std::collections::BTreeMap;

use ferry_core::study::{ScanError, ScanSource, SetAsideReason, scan, scan_with_threads};
use study_support::{generate, zip_folder};

#[test]
fn ct_study_lists_one_study_with_three_series() {
    let Some(generated) = generate(&["ct-study"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("ct-study")).unwrap();

    assert_eq!(scan.instances.len(), 300);
    assert!(scan.set_aside.is_empty(), "set aside: {:?}", scan.set_aside);
    assert!(scan.duplicates.is_empty());
    assert_eq!(scan.studies.len(), 1);

    let study = &scan.studies[0];
    assert_eq!(study.patient.name.as_deref(), Some("Müller^Jürgen"));
    assert_eq!(study.patient.id.as_deref(), Some("FERRY-0001"));
    assert_eq!(study.patient.birth_date.as_deref(), Some("1970-01-31"));
    assert_eq!(study.patient.sex.as_deref(), Some("M"));
    assert_eq!(study.study_date.as_deref(), Some("2024-03-15"));
    assert_eq!(study.description.as_deref(), Some("CT chest"));
    assert_eq!(study.accession.as_deref(), Some("ACC-ct"));
    assert_eq!(study.instance_count, 300);

    type SeriesRow<'a> = (Option<i64>, Option<&'a str>, Option<&'a str>, u64);
    let series: Vec<SeriesRow> = study
        .series
        .iter()
        .map(|s| {
            (
                s.number,
                s.modality.as_deref(),
                s.description.as_deref(),
                s.instance_count,
            )
        })
        .collect();
    assert_eq!(
        series,
        vec![
            (Some(1), Some("CT"), Some("Topogram"), 100),
            (Some(2), Some("CT"), Some("Chest 5mm"), 100),
            (Some(3), Some("CT"), Some("Chest 1mm"), 100),
        ]
    );

    let on_disk: u64 = scan
        .instances
        .iter()
        .map(|i| {
            std::fs::metadata(generated.path("ct-study").join(&i.path))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(study.bytes, on_disk);
    assert_eq!(study.series.iter().map(|s| s.bytes).sum::<u64>(), on_disk);
}

#[test]
fn invalid_files_are_set_aside_with_reasons() {
    let Some(generated) = generate(&["invalid"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("invalid")).unwrap();

    let reasons: BTreeMap<&str, &SetAsideReason> = scan
        .set_aside
        .iter()
        .map(|item| (item.path.as_str(), &item.reason))
        .collect();
    assert_eq!(reasons.len(), 6, "set aside: {reasons:?}");
    assert_eq!(reasons["empty.dcm"], &SetAsideReason::Empty);
    assert_eq!(reasons["no-preamble.dcm"], &SetAsideReason::MissingPreamble);
    assert_eq!(reasons["report.pdf"], &SetAsideReason::Pdf);
    assert_eq!(reasons["notes.txt"], &SetAsideReason::NotDicom);
    assert_eq!(
        reasons["private-class.dcm"],
        &SetAsideReason::UnknownSopClass {
            uid: "1.3.12.2.1107.5.9.1".to_owned()
        }
    );
    assert_eq!(
        reasons["no-series-uid.dcm"],
        &SetAsideReason::MissingAttribute {
            attribute: "Series Instance UID (0020,000E)".to_owned()
        }
    );

    let pdf = scan
        .set_aside
        .iter()
        .find(|item| item.path == "report.pdf")
        .unwrap();
    assert_eq!(pdf.message, "PDF document, not a DICOM instance");
    assert_eq!(pdf.size, 77);
}

#[test]
fn duplicate_sop_instance_uid_is_reported() {
    let Some(generated) = generate(&["invalid"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("invalid")).unwrap();

    assert_eq!(scan.instances.len(), 3);
    assert_eq!(scan.duplicates.len(), 1);
    assert_eq!(
        scan.duplicates[0].paths,
        vec!["copy-of-valid1.dcm", "valid1.dcm"]
    );
    let valid1 = scan
        .instances
        .iter()
        .find(|i| i.path == "valid1.dcm")
        .unwrap();
    assert_eq!(scan.duplicates[0].sop_instance_uid, valid1.sop_instance_uid);
}

#[test]
fn dicomdir_is_skipped_not_set_aside() {
    let Some(generated) = generate(&["disc"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("disc")).unwrap();

    assert_eq!(scan.directories, vec!["DICOMDIR"]);
    assert!(scan.set_aside.is_empty(), "set aside: {:?}", scan.set_aside);
    assert_eq!(scan.instances.len(), 6);
    assert_eq!(scan.studies.len(), 1);
    assert_eq!(scan.studies[0].series.len(), 2);
}

#[test]
fn non_ascii_names_decode_per_character_set() {
    let Some(generated) = generate(&["charsets"], &[]) else {
        return;
    };
    let scan = scan(&generated.path("charsets")).unwrap();

    let names: BTreeMap<&str, &str> = scan
        .studies
        .iter()
        .map(|s| {
            (
                s.patient.id.as_deref().unwrap(),
                s.patient.name.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(names["CS-100"], "Müller^Jürgen");
    assert_eq!(names["CS-192"], "Øster^Zoë");
    assert_eq!(names["CS-87"], "Yamada^Tarou=山田^太郎=やまだ^たろう");
    // PS3.5 section H.3.2: ISO 2022 IR 13 with IR 87.
    assert_eq!(names["CS-13"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
    // PS3.5 section I.2: ISO 2022 IR 149.
    assert_eq!(names["CS-149"], "Hong^Gildong=洪^吉洞=홍^길동");
    // PS3.5 section K.2: ISO 2022 IR 58.
    assert_eq!(names["CS-58"], "Zhang^XiaoDong=张^小东=");
    // PS3.5 Annex J: the same name in GB18030, whose bytes D0A1 B6AB are
    // the simplified 小东, and in UTF-8 with the traditional 東.
    assert_eq!(names["CS-GB18030"], "Wang^XiaoDong=王^小东=");
    assert_eq!(names["CS-192-ZH"], "Wang^XiaoDong=王^小東=");

    let paths: Vec<&str> = scan.instances.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "latin1/Müller_Jürgen.dcm",
            "utf8/Øster-Zoë.dcm",
            "utf8/王小東.dcm",
            "中文/张小东.dcm",
            "中文/王小东.dcm",
            "日本語/ヤマダタロウ.dcm",
            "日本語/山田太郎.dcm",
            "한국어/홍길동.dcm",
        ]
    );
}

#[test]
fn zip_input_scans_like_its_folder() {
    let Some(generated) = generate(&["ct-study", "invalid"], &["--ct-instances", "40"]) else {
        return;
    };
    for layout in ["ct-study", "invalid"] {
        let folder = generated.path(layout);
        let archive = generated.dir.path().join(format!("{layout}.zip"));
        zip_folder(&folder, &archive);

        let from_folder = scan(&folder).unwrap();
        let from_zip = scan(&archive).unwrap();

        assert_eq!(
            from_zip.source,
            ScanSource::Zip {
                path: archive.clone()
            }
        );
        assert_eq!(from_zip.studies, from_folder.studies);
        assert_eq!(from_zip.instances, from_folder.instances);
        assert_eq!(from_zip.set_aside, from_folder.set_aside);
        assert_eq!(from_zip.duplicates, from_folder.duplicates);
    }
}

#[test]
fn one_thread_and_many_threads_agree() {
    let Some(generated) = generate(&["ct-study", "invalid"], &["--ct-instances", "30"]) else {
        return;
    };
    let root = generated.dir.path();
    assert_eq!(
        scan_with_threads(root, 1).unwrap(),
        scan_with_threads(root, 4).unwrap()
    );
}

#[test]
fn missing_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = scan(&dir.path().join("nowhere")).unwrap_err();
    assert!(matches!(error, ScanError::Input { .. }), "{error}");
}

#[test]
fn plain_file_input_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.dcm");
    std::fs::write(&file, b"not a zip").unwrap();
    let error = scan(&file).unwrap_err();
    assert!(
        matches!(error, ScanError::UnsupportedInput { .. }),
        "{error}"
    );
}

#[test]
fn sample_archive_holds_four_clean_series() {
    let Some(generated) = generate(&["charsets"], &[]) else {
        return;
    };
    let archive = generated.dir.path().join("sample.zip");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/make-sample-archive.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .arg(&archive)
        .status()
        .unwrap();
    assert!(status.success());

    let scan = scan(&archive).unwrap();

    assert!(scan.set_aside.is_empty(), "set aside: {:?}", scan.set_aside);
    assert_eq!(scan.studies.len(), 1);
    let modalities: Vec<&str> = scan.studies[0]
        .series
        .iter()
        .map(|s| s.modality.as_deref().unwrap())
        .collect();
    assert_eq!(modalities, vec!["CT", "MR", "SEG", "RTDOSE"]);
    assert_eq!(
        ferry_core::study::check_patient(&scan, &generated.patient()),
        ferry_core::study::Verdict::Match
    );
}
