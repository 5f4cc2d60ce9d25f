//! ZIP64 records for an instance over 4 GiB, checked with the zip crate
//! reading the archive straight from `PackReader` (no copy on disk). The
//! large instance is a sparse file, so the test needs almost no free disk.

use std::io::{Read, Seek, SeekFrom};

use ferry_core::study::{Instance, MANIFEST_NAME, PackOptions, PackPlan, ScanSource, StudyScan};

const BIG: u64 = (4 << 30) + 4096;

fn instance(path: &str, size: u64, sop: &str) -> Instance {
    Instance {
        path: path.to_owned(),
        size,
        sop_instance_uid: sop.to_owned(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".to_owned(),
        study_instance_uid: "1.2.3".to_owned(),
        series_instance_uid: "1.2.3.1".to_owned(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".to_owned(),
        instance_number: None,
    }
}

#[test]
fn instance_over_4_gib_gets_zip64_records() {
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("a-big.dcm")).unwrap();
    big.set_len(BIG).unwrap();
    std::fs::write(dir.path().join("b-small.dcm"), b"tail instance").unwrap();

    let scan = StudyScan {
        source: ScanSource::Folder {
            path: dir.path().to_owned(),
        },
        studies: Vec::new(),
        set_aside: Vec::new(),
        duplicates: Vec::new(),
        directories: Vec::new(),
        instances: vec![
            instance("a-big.dcm", BIG, "1.2.3.1.1"),
            instance("b-small.dcm", 13, "1.2.3.1.2"),
        ],
    };
    let plan = PackPlan::new(&scan, &PackOptions::default()).unwrap();
    assert!(plan.archive_size() > BIG);

    let mut zip = zip::ZipArchive::new(plan.reader()).unwrap();
    assert_eq!(zip.len(), 3);
    assert_eq!(zip.by_index(0).unwrap().name().unwrap(), MANIFEST_NAME);

    let big_entry = zip.by_index(1).unwrap();
    assert_eq!(big_entry.size(), BIG);
    let data_start = big_entry.data_start().unwrap();
    drop(big_entry);

    let mut small = String::new();
    zip.by_index(2).unwrap().read_to_string(&mut small).unwrap();
    assert_eq!(small, "tail instance");
    assert!(zip.by_index(2).unwrap().header_start() > u64::from(u32::MAX));

    let mut reader = plan.reader();
    reader.seek(SeekFrom::Start(data_start + BIG - 4)).unwrap();
    let mut last = [1u8; 4];
    reader.read_exact(&mut last).unwrap();
    assert_eq!(last, [0, 0, 0, 0]);
}
