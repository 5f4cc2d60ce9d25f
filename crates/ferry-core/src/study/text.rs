//! Text values of DICOM headers: specific character sets, dates, and the
//! folding used to compare person names.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

use super::iso2022::Iso2022;

/// How to repair text that dicom-object decoded with the wrong codec.
///
/// dicom-object 0.10 picks a codec from the first value of Specific Character
/// Set (0008,0005) only. Data sets that switch sets with ISO 2022 escape
/// sequences declare a single-byte first value, often empty for ISO-IR 6.
/// The other sets follow it as code extensions (PS3.3 section C.12.1.1.2):
/// `\ISO 2022 IR 87` for Japanese, `\ISO 2022 IR 149` for Korean,
/// `\ISO 2022 IR 58` for simplified Chinese. Their text is then decoded as
/// ISO 8859-1, which maps every byte to one char, or as Shift_JIS for a
/// first value of `ISO 2022 IR 13`, which maps the bytes that ISO-IR 13 and
/// its escape sequences use to one char each. So the bytes can be restored
/// and decoded again with the escape sequences.
///
/// NOTE: text under any other first value with code extensions, such as
/// `ISO 2022 IR 144\ISO 2022 IR 149`, stays as dicom-object decoded it.
#[derive(Debug, Default)]
pub(crate) struct Charset {
    code_extensions: Option<Iso2022>,
    /// True when dicom-object decoded the text as Shift_JIS rather than as
    /// ISO 8859-1.
    decoded_as_shift_jis: bool,
}

impl Charset {
    pub(crate) fn of(object: &DefaultDicomObject) -> Charset {
        let Some(values) = object
            .get(tags::SPECIFIC_CHARACTER_SET)
            .and_then(|element| element.to_str().ok())
        else {
            return Charset::default();
        };

        let first_value = values.split('\\').next().unwrap_or_default().trim();
        Charset {
            code_extensions: Iso2022::for_first_value(first_value),
            decoded_as_shift_jis: first_value == "ISO 2022 IR 13",
        }
    }

    /// Decodes `text` again with escape sequences when it contains any.
    /// `delimiters` are the characters that return to the initial sets
    /// besides control characters: `\`, and `^` and `=` in person names.
    fn repair(&self, text: String, delimiters: &[u8]) -> String {
        let Some(decoder) = self.code_extensions else {
            return text;
        };
        if !text.contains('\u{1b}') {
            return text;
        }
        let Some(bytes) = self.restore_bytes(&text) else {
            return text;
        };
        decoder.decode(&bytes, delimiters).unwrap_or(text)
    }

    /// Returns the bytes that dicom-object decoded into `text`, or `None`
    /// when a char has no byte in that codec.
    fn restore_bytes(&self, text: &str) -> Option<Vec<u8>> {
        if self.decoded_as_shift_jis {
            let (bytes, _, had_unmappable) = encoding_rs::SHIFT_JIS.encode(text);
            return (!had_unmappable).then(|| bytes.into_owned());
        }
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect()
    }
}

/// Returns the element's value as text with padding removed, or `None` when
/// the element is absent or empty. Multiple values are joined with `\`.
pub(crate) fn element_string(
    object: &DefaultDicomObject,
    tag: Tag,
    charset: &Charset,
) -> Option<String> {
    let element = object.get(tag)?;
    let value = element.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c == ' ');
    if trimmed.is_empty() {
        return None;
    }

    let delimiters: &[u8] = if element.vr() == VR::PN {
        b"\\^="
    } else {
        b"\\"
    };
    Some(charset.repair(trimmed.to_owned(), delimiters))
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
    fn iso_2022_text_is_repaired() {
        let bytes = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7";
        let latin1: String = bytes.iter().map(|b| char::from(*b)).collect();
        let charset = Charset {
            code_extensions: Iso2022::for_first_value(""),
            decoded_as_shift_jis: false,
        };
        assert_eq!(charset.repair(latin1, b"\\^="), "Hong^Gildong=洪^吉洞");
    }

    /// The bytes of PS3.5 section H.3.2 as dicom-object decodes them under
    /// `ISO 2022 IR 13\ISO 2022 IR 87`: as Shift_JIS.
    #[test]
    fn iso_2022_ir_13_text_is_repaired() {
        use dicom_encoding::text::{SpecificCharacterSet, TextCodec};

        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J";
        let decoded = SpecificCharacterSet::from_code("ISO 2022 IR 13")
            .unwrap()
            .decode(bytes)
            .unwrap();
        let charset = Charset {
            code_extensions: Iso2022::for_first_value("ISO 2022 IR 13"),
            decoded_as_shift_jis: true,
        };
        assert_eq!(charset.repair(decoded, b"\\^="), "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎");
    }

    #[test]
    fn text_without_code_extensions_is_kept() {
        let charset = Charset::default();
        let text = "Hong^\u{1b}$)C\u{fb}\u{f3}".to_owned();
        assert_eq!(charset.repair(text.clone(), b"\\^="), text);
    }
}
