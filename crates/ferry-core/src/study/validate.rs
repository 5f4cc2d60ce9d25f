//! Validation of one file: DICOM Part 10 structure (PS3.10 section 7.1), file
//! meta information, the identifying UIDs and a known storage SOP class.

use std::io::{Cursor, Read};

use dicom_core::Tag;
use dicom_core::dictionary::UidDictionary;
use dicom_dictionary_std::{StandardSopClassDictionary, tags, uids};
use dicom_object::{DefaultDicomObject, OpenFileOptions, file::ReadPreamble};
use serde::Serialize;

use super::{Patient, text};

/// The reason a file was set aside instead of being treated as an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SetAsideReason {
    /// The file has zero bytes.
    Empty,
    /// The file is a PDF document (it starts with `%PDF`).
    Pdf,
    /// The file looks like a DICOM data set but lacks the 128-byte preamble
    /// and the `DICM` prefix of a Part 10 file.
    MissingPreamble,
    /// The file has no `DICM` prefix and is not recognised.
    NotDicom,
    /// The file meta information group (0002,xxxx) cannot be read.
    InvalidFileMeta { detail: String },
    /// The data set cannot be parsed, or reading failed.
    Unreadable { detail: String },
    /// A required attribute is missing or empty.
    MissingAttribute { attribute: String },
    /// Media Storage SOP Instance or Class UID in the file meta information
    /// differs from the SOP Instance or Class UID in the data set.
    MetaMismatch {
        attribute: String,
        meta: String,
        dataset: String,
    },
    /// The SOP Class UID is not a storage SOP class of the DICOM standard
    /// (private classes included).
    UnknownSopClass { uid: String },
    /// The path inside the input is not valid UTF-8 or escapes the input.
    InvalidPath { detail: String },
}

impl std::fmt::Display for SetAsideReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "empty file (zero bytes)"),
            Self::Pdf => write!(f, "PDF document, not a DICOM instance"),
            Self::MissingPreamble => write!(
                f,
                "no 128-byte preamble and DICM prefix: a raw DICOM data set, not a DICOM file"
            ),
            Self::NotDicom => write!(f, "not a DICOM file (no DICM prefix at byte 128)"),
            Self::InvalidFileMeta { detail } => {
                write!(f, "invalid file meta information: {detail}")
            }
            Self::Unreadable { detail } => write!(f, "unreadable DICOM data set: {detail}"),
            Self::MissingAttribute { attribute } => write!(f, "missing {attribute}"),
            Self::MetaMismatch {
                attribute,
                meta,
                dataset,
            } => write!(
                f,
                "{attribute} {dataset} differs from the file meta information's {meta}"
            ),
            Self::UnknownSopClass { uid } => {
                write!(f, "SOP Class UID {uid} is not a known storage SOP class")
            }
            Self::InvalidPath { detail } => write!(f, "invalid path: {detail}"),
        }
    }
}

/// The classification of one file.
#[derive(Debug)]
pub(crate) enum Classified {
    Instance(Box<Header>),
    Directory,
    SetAside(SetAsideReason),
}

/// The header attributes a scan keeps from one instance.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub patient: Patient,
    pub study_date: Option<String>,
    pub study_description: Option<String>,
    pub accession: Option<String>,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub modality: Option<String>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub instance_number: Option<i64>,
}

const PREAMBLE_LEN: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";

/// Classifies one file from its content; `size` is its length in bytes and
/// `name` its path, used only for the `.dcm` extension test.
pub(crate) fn classify(mut reader: impl Read, size: u64, name: &str) -> Classified {
    if size == 0 {
        return Classified::SetAside(SetAsideReason::Empty);
    }

    let mut head = [0u8; PREAMBLE_LEN + 4];
    let head_len = match read_up_to(&mut reader, &mut head) {
        Ok(n) => n,
        Err(error) => {
            return Classified::SetAside(SetAsideReason::Unreadable {
                detail: error.to_string(),
            });
        }
    };
    let head = &head[..head_len];

    if head.starts_with(b"%PDF") {
        return Classified::SetAside(SetAsideReason::Pdf);
    }
    if head_len < PREAMBLE_LEN + 4 || &head[PREAMBLE_LEN..] != MAGIC {
        if looks_like_raw_dataset(head) || has_dcm_extension(name) {
            return Classified::SetAside(SetAsideReason::MissingPreamble);
        }
        return Classified::SetAside(SetAsideReason::NotDicom);
    }

    let rest = Cursor::new(*MAGIC).chain(reader);
    let object = match OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(rest)
    {
        Ok(object) => object,
        Err(error) => return Classified::SetAside(read_error_reason(&error)),
    };

    if trim_uid(object.meta().media_storage_sop_class_uid())
        == uids::MEDIA_STORAGE_DIRECTORY_STORAGE
    {
        return Classified::Directory;
    }

    match header_of(&object) {
        Ok(header) => Classified::Instance(Box::new(header)),
        Err(reason) => Classified::SetAside(reason),
    }
}

/// Reads into `buf` until it is full or the reader ends.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// True when the bytes start like an explicit or implicit VR little endian
/// data set: a tag of group 0002 (file meta) or 0008 (identification).
fn looks_like_raw_dataset(head: &[u8]) -> bool {
    head.len() >= 8 && head[1] == 0 && (head[0] == 0x02 || head[0] == 0x08) && head[3] == 0
}

fn has_dcm_extension(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .and_then(|file_name| file_name.rsplit_once('.'))
        .is_some_and(|(_, extension)| extension.eq_ignore_ascii_case("dcm"))
}

/// Maps a dicom-object read error to a reason, with its cause chain.
fn read_error_reason(error: &dicom_object::ReadError) -> SetAsideReason {
    let detail = crate::error_chain(error);
    match error {
        dicom_object::ReadError::ParseMetaDataSet { .. } => {
            SetAsideReason::InvalidFileMeta { detail }
        }
        _ => SetAsideReason::Unreadable { detail },
    }
}


/// UIDs are padded with a trailing NUL (PS3.5 section 9.1) or, wrongly, a space.
fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

fn header_of(object: &DefaultDicomObject) -> Result<Header, SetAsideReason> {
    let meta = object.meta();
    let charset = text::Charset::of(object);
    let string = |tag: Tag| text::element_string(object, tag, &charset);
    let required = |tag: Tag, attribute: &str| {
        string(tag).ok_or_else(|| SetAsideReason::MissingAttribute {
            attribute: attribute.to_owned(),
        })
    };

    let transfer_syntax_uid = trim_uid(meta.transfer_syntax()).to_owned();
    if transfer_syntax_uid.is_empty() {
        return Err(SetAsideReason::InvalidFileMeta {
            detail: "Transfer Syntax UID (0002,0010) is empty".to_owned(),
        });
    }
    let meta_class = trim_uid(meta.media_storage_sop_class_uid()).to_owned();
    let meta_instance = trim_uid(meta.media_storage_sop_instance_uid()).to_owned();
    if meta_class.is_empty() {
        return Err(SetAsideReason::InvalidFileMeta {
            detail: "Media Storage SOP Class UID (0002,0002) is empty".to_owned(),
        });
    }
    if meta_instance.is_empty() {
        return Err(SetAsideReason::InvalidFileMeta {
            detail: "Media Storage SOP Instance UID (0002,0003) is empty".to_owned(),
        });
    }

    let sop_class_uid = required(tags::SOP_CLASS_UID, "SOP Class UID (0008,0016)")?;
    let sop_instance_uid = required(tags::SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)")?;
    let study_instance_uid = required(tags::STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)")?;
    let series_instance_uid =
        required(tags::SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)")?;

    if sop_instance_uid != meta_instance {
        return Err(SetAsideReason::MetaMismatch {
            attribute: "SOP Instance UID (0008,0018)".to_owned(),
            meta: meta_instance,
            dataset: sop_instance_uid,
        });
    }
    if sop_class_uid != meta_class {
        return Err(SetAsideReason::MetaMismatch {
            attribute: "SOP Class UID (0008,0016)".to_owned(),
            meta: meta_class,
            dataset: sop_class_uid,
        });
    }
    if !is_storage_sop_class(&sop_class_uid) {
        return Err(SetAsideReason::UnknownSopClass { uid: sop_class_uid });
    }

    Ok(Header {
        patient: Patient {
            name: string(tags::PATIENT_NAME),
            id: string(tags::PATIENT_ID),
            birth_date: string(tags::PATIENT_BIRTH_DATE).map(|da| text::iso_date(&da)),
            sex: string(tags::PATIENT_SEX),
        },
        study_date: string(tags::STUDY_DATE).map(|da| text::iso_date(&da)),
        study_description: string(tags::STUDY_DESCRIPTION),
        accession: string(tags::ACCESSION_NUMBER),
        study_instance_uid,
        series_instance_uid,
        series_number: string(tags::SERIES_NUMBER).and_then(|is| is.parse().ok()),
        series_description: string(tags::SERIES_DESCRIPTION),
        modality: string(tags::MODALITY),
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax_uid,
        instance_number: string(tags::INSTANCE_NUMBER).and_then(|is| is.parse().ok()),
    })
}

/// True for the storage SOP classes of the standard SOP class registry
/// (dicom-dictionary-std), retired ones included. The registry has no
/// "storage" flag, so the class name decides: storage classes are named
/// "... Storage", while Storage Commitment and the DICOMDIR class are not
/// instances to upload.
pub(crate) fn is_storage_sop_class(uid: &str) -> bool {
    let Some(entry) = StandardSopClassDictionary.by_uid(uid) else {
        return false;
    };
    uid != uids::MEDIA_STORAGE_DIRECTORY_STORAGE
        && entry.name.contains("Storage")
        && !entry.name.starts_with("Storage Commitment")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_image_storage_is_a_storage_class() {
        assert!(is_storage_sop_class(uids::CT_IMAGE_STORAGE));
        assert!(is_storage_sop_class(uids::ENCAPSULATED_PDF_STORAGE));
    }

    #[test]
    fn verification_and_private_classes_are_not_storage() {
        assert!(!is_storage_sop_class(uids::VERIFICATION));
        assert!(!is_storage_sop_class("1.3.12.2.1107.5.9.1"));
        assert!(!is_storage_sop_class(uids::MEDIA_STORAGE_DIRECTORY_STORAGE));
    }

    #[test]
    fn zero_bytes_are_set_aside_as_empty() {
        let classified = classify(std::io::empty(), 0, "a.dcm");
        assert!(matches!(
            classified,
            Classified::SetAside(SetAsideReason::Empty)
        ));
    }

    #[test]
    fn pdf_is_set_aside_as_pdf() {
        let pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n%%EOF\n";
        let classified = classify(&pdf[..], pdf.len() as u64, "report.dcm");
        assert!(matches!(
            classified,
            Classified::SetAside(SetAsideReason::Pdf)
        ));
    }

    #[test]
    fn short_text_file_is_not_dicom() {
        let text = b"hello";
        let classified = classify(&text[..], 5, "notes.txt");
        assert!(matches!(
            classified,
            Classified::SetAside(SetAsideReason::NotDicom)
        ));
    }
}
