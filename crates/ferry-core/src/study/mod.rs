//! Imaging studies: scan a folder, a mounted disc or a zip archive of DICOM
//! files, set aside what is not a valid DICOM instance, compare the patient
//! with a chosen FHIR R4 `Patient`, and pack the instances into one
//! deterministic archive with a per-instance manifest.
//!
//! Scanning reads headers only: parsing stops at Pixel Data (7FE0,0010), so a
//! scan costs a few kilobytes of reading per instance. Hashing (SHA-256 for
//! the manifest) happens when a [`PackPlan`] is built, because it needs every
//! byte of every instance.
//!
//! Deliberately left out: DICOMDIR contents are not used to find instances
//! (the folder is walked instead, which finds the same files on a disc), and
//! pixel data is never decoded.

mod guard;
mod iso2022;
mod pack;
mod scan;
pub mod staging;
mod text;
mod unpack;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use guard::{
    Cleared, Confirmation, Decision, FhirHumanName, FhirIdentifier, FhirPatient, GuardError,
    PatientGroup, Verdict, check_patient, decide,
};
pub use pack::{
    MANIFEST_NAME, Manifest, ManifestEntry, ManifestSeries, PackError, PackOptions, PackPlan,
    PackReader, PackSummary, pack_to_file,
};
pub use scan::{ScanError, scan, scan_with_threads};
pub use unpack::{
    MAX_ENTRIES, MAX_EXPANSION_RATIO, MAX_MANIFEST_BYTES, UnpackError, UnpackSummary, unpack,
};
pub use validate::SetAsideReason;

/// The input a scan read its files from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScanSource {
    /// A folder or a mounted disc; instance paths are relative to it.
    Folder { path: PathBuf },
    /// A zip archive; instance paths are entry names inside it.
    Zip { path: PathBuf },
}

/// The result of scanning one input: the study table, the files set aside,
/// duplicate SOP Instance UIDs and every valid instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyScan {
    pub source: ScanSource,
    /// Studies sorted by study date, then Study Instance UID. One study UID
    /// appears twice when its instances name different patients.
    pub studies: Vec<Study>,
    /// Files that are not valid DICOM instances, sorted by path.
    pub set_aside: Vec<SetAside>,
    /// SOP Instance UIDs that more than one file carries.
    pub duplicates: Vec<Duplicate>,
    /// DICOMDIR files (Media Storage Directory Storage), which index a disc
    /// and are not instances. They are neither uploaded nor set aside.
    pub directories: Vec<String>,
    /// Valid instances sorted by path; duplicates are kept.
    pub instances: Vec<Instance>,
}

/// Patient attributes as the DICOM headers carry them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Patient {
    /// Patient's Name (0010,0010) as a DICOM PN value, e.g. `Müller^Jürgen`;
    /// `=` separates the alphabetic, ideographic and phonetic groups.
    pub name: Option<String>,
    /// Patient ID (0010,0020).
    pub id: Option<String>,
    /// Patient's Birth Date (0010,0030) as `YYYY-MM-DD` when the DA value is
    /// well formed, otherwise the raw value.
    pub birth_date: Option<String>,
    /// Patient's Sex (0010,0040): `M`, `F` or `O`.
    pub sex: Option<String>,
}

/// One row of the study table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Study {
    pub patient: Patient,
    /// Study Date (0008,0020) as `YYYY-MM-DD` when well formed.
    pub study_date: Option<String>,
    /// Study Description (0008,1030).
    pub description: Option<String>,
    /// Accession Number (0008,0050).
    pub accession: Option<String>,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series sorted by Series Number, then Series Instance UID.
    pub series: Vec<Series>,
    pub instance_count: u64,
    /// Sum of the instance file sizes in bytes.
    pub bytes: u64,
}

/// One series of a study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Series Instance UID (0020,000E).
    pub uid: String,
    /// Series Number (0020,0011).
    pub number: Option<i64>,
    /// Modality (0008,0060), e.g. `CT`.
    pub modality: Option<String>,
    /// Series Description (0008,103E).
    pub description: Option<String>,
    /// Number of instance files, duplicates included.
    pub instance_count: u64,
    /// Sum of the instance file sizes in bytes.
    pub bytes: u64,
}

/// One valid DICOM instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Path relative to the scanned folder, or the zip entry name, with `/`
    /// as separator.
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// Transfer Syntax UID (0002,0010) of the file meta information.
    pub transfer_syntax_uid: String,
    /// Instance Number (0020,0013).
    pub instance_number: Option<i64>,
}

/// A file that is not uploaded unless the user includes it on purpose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetAside {
    /// Path relative to the scanned folder, or the zip entry name.
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    pub reason: SetAsideReason,
    /// The reason as a sentence for people.
    pub message: String,
}

/// A SOP Instance UID carried by more than one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub sop_instance_uid: String,
    /// Paths of the files, sorted.
    pub paths: Vec<String>,
}

impl StudyScan {
    /// Returns a copy without the given series: their instances leave
    /// `instances`, `studies` and `duplicates`. Unknown UIDs are ignored.
    pub fn without_series(&self, excluded: &[String]) -> StudyScan {
        let is_excluded = |uid: &str| excluded.iter().any(|e| e == uid);
        let instances: Vec<Instance> = self
            .instances
            .iter()
            .filter(|instance| !is_excluded(&instance.series_instance_uid))
            .cloned()
            .collect();

        let studies = self
            .studies
            .iter()
            .filter_map(|study| {
                let series: Vec<Series> = study
                    .series
                    .iter()
                    .filter(|series| !is_excluded(&series.uid))
                    .cloned()
                    .collect();
                if series.is_empty() {
                    return None;
                }
                Some(Study {
                    instance_count: series.iter().map(|s| s.instance_count).sum(),
                    bytes: series.iter().map(|s| s.bytes).sum(),
                    series,
                    ..study.clone()
                })
            })
            .collect();

        StudyScan {
            source: self.source.clone(),
            studies,
            set_aside: self.set_aside.clone(),
            duplicates: scan::find_duplicates(&instances),
            directories: self.directories.clone(),
            instances,
        }
    }

    /// Returns true when the scan has a series with this Series Instance UID.
    pub fn has_series(&self, uid: &str) -> bool {
        self.studies
            .iter()
            .any(|study| study.series.iter().any(|series| series.uid == uid))
    }

    /// Sum of the valid instances' sizes in bytes.
    pub fn instance_bytes(&self) -> u64 {
        self.instances.iter().map(|instance| instance.size).sum()
    }
}
