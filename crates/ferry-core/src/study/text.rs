//! Text values of DICOM headers: specific character sets, dates, and the
//! folding used to compare person names.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use dicom_object::DefaultDicomObject;
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// How to repair text that dicom-object decoded with the wrong codec.
///
/// dicom-object 0.10 picks a codec from the first value of Specific Character
/// Set (0008,0005) only. Japanese data sets declare `\ISO 2022 IR 87` (an
/// empty first value, then the JIS X 0208 code extension of PS3.3 section
/// C.12.1.1.2), so their text is decoded as ISO 8859-1. That decoding maps
/// every byte to one char, so the bytes can be restored and decoded again as
/// ISO 2022 with escape sequences.
#[derive(Debug, Default)]
pub(crate) struct Charset {
    iso_2022_jp: bool,
}

impl Charset {
    pub(crate) fn of(object: &DefaultDicomObject) -> Charset {
        let Some(values) = object
            .get(tags::SPECIFIC_CHARACTER_SET)
            .and_then(|element| element.to_str().ok())
        else {
            return Charset::default();
        };

        let values: Vec<&str> = values.split('\\').map(str::trim).collect();
        let first_is_default = matches!(values.first(), Some(&"") | Some(&"ISO 2022 IR 6"));
        let declares_jis_x_0208 = values
            .iter()
            .skip(1)
            .any(|value| *value == "ISO 2022 IR 87");
        // TODO: other ISO 2022 code extensions (IR 149 Korean, IR 58 Chinese
        // after an empty first value) are still decoded as ISO 8859-1.
        Charset {
            iso_2022_jp: first_is_default && declares_jis_x_0208,
        }
    }

    fn repair(&self, text: String) -> String {
        if !self.iso_2022_jp || !text.contains('\u{1b}') {
            return text;
        }
        let Some(bytes) = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return text;
        };
        let codec = SpecificCharacterSet::from_code("ISO 2022 IR 87")
            .expect("dicom-encoding supports ISO 2022 IR 87");
        codec.decode(&bytes).unwrap_or(text)
    }
}

/// Returns the element's value as text with padding removed, or `None` when
/// the element is absent or empty. Multiple values are joined with `\`.
pub(crate) fn element_string(
    object: &DefaultDicomObject,
    tag: Tag,
    charset: &Charset,
) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c == ' ');
    if trimmed.is_empty() {
        return None;
    }
    Some(charset.repair(trimmed.to_owned()))
}

/// Converts a DA value `YYYYMMDD` (or the ACR-NEMA form `YYYY.MM.DD`) to
/// `YYYY-MM-DD`; any other value is returned unchanged.
pub(crate) fn iso_date(da: &str) -> String {
    let digits: String = da.chars().filter(|c| *c != '.').collect();
    let is_date = digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit());
    if !is_date || (da.len() != 8 && da.len() != 10) {
        return da.to_owned();
    }
    format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..])
}

/// Folds a name for comparison: compatibility decomposition, accents
/// removed, lower case, `ß` as `ss`, punctuation as spaces, single spaces.
pub(crate) fn fold_name(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c == 'ß' {
            folded.push_str("ss");
        } else if c.is_alphanumeric() {
            folded.extend(c.to_lowercase());
        } else {
            folded.push(' ');
        }
    }
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Folds a name like [`fold_name`] after spelling German umlauts the way
/// ASCII-only systems do (`ü` as `ue`), so `MUELLER` matches `Müller`.
pub(crate) fn fold_name_transliterated(name: &str) -> String {
    let mut spelled = String::with_capacity(name.len() + 4);
    for c in name.nfc() {
        match c {
            'ä' | 'Ä' => spelled.push_str("ae"),
            'ö' | 'Ö' => spelled.push_str("oe"),
            'ü' | 'Ü' => spelled.push_str("ue"),
            other => spelled.push(other),
        }
    }
    fold_name(&spelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn da_becomes_iso_date() {
        assert_eq!(iso_date("19700131"), "1970-01-31");
        assert_eq!(iso_date("1970.01.31"), "1970-01-31");
        assert_eq!(iso_date("1970"), "1970");
    }

    #[test]
    fn folding_ignores_case_and_accents() {
        assert_eq!(fold_name("Müller  Jürgen"), fold_name("MULLER jurgen"));
        assert_eq!(fold_name("Strauß"), "strauss");
        assert_eq!(fold_name_transliterated("Müller"), fold_name("MUELLER"));
        assert_ne!(fold_name("Müller"), fold_name("Miller"));
    }

    #[test]
    fn iso_2022_jp_text_is_repaired() {
        let codec = SpecificCharacterSet::from_code("ISO 2022 IR 87").unwrap();
        let bytes = codec.encode("山田^太郎").unwrap();
        let latin1: String = bytes.iter().map(|b| char::from(*b)).collect();
        let charset = Charset { iso_2022_jp: true };
        assert_eq!(charset.repair(latin1), "山田^太郎");
    }
}
