//! Decoding of DICOM text that uses ISO 2022 code extensions (PS3.3 section
//! C.12.1.1.2, PS3.5 section 6.1.2.5).
//!
//! Escape sequences designate the character set of G0 (bytes 0x21 to 0x7E)
//! or of G1 (bytes 0xA0 to 0xFF). PS3.5 section 6.1.2.5.3 returns both to
//! the initial sets at every control character other than ESC and at every
//! delimiter: `\`, and `^` and `=` in person names. So each name component
//! in another set starts with its own escape sequence.
//!
//! Every multi-byte set maps onto an EUC encoding that `encoding_rs`
//! decodes: bytes in a G1 set are EUC bytes as they are (KS X 1001 as
//! EUC-KR, GB 2312 as GBK), and bytes in a G0 set become EUC-JP once their
//! high bit is set.

use encoding_rs::Encoding;

const ESC: u8 = 0x1b;

/// A character set designated to G0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum G0 {
    /// ISO-IR 6: ASCII.
    Ascii,
    /// ISO-IR 14: JIS X 0201 Romaji, which is ASCII except `¥` at 0x5C and
    /// `‾` at 0x7E.
    JisX0201Romaji,
    /// ISO-IR 87: JIS X 0208, two bytes per character.
    JisX0208,
    /// ISO-IR 159: JIS X 0212, two bytes per character.
    JisX0212,
}

/// The target of an escape sequence: a set for G0 or for G1.
#[derive(Clone, Copy)]
enum Designation {
    G0(G0),
    /// The G1 set, as the encoding that decodes its bytes with the high bit
    /// set.
    G1(&'static Encoding),
}

/// Escape sequences of PS3.3 Tables C.12-3 and C.12-4.
///
/// The single-byte G1 sets are decoded with the WHATWG encodings that
/// `encoding_rs` provides. Each equals its ISO 8859 part (or TIS 620) on
/// 0xA0 to 0xFF, the only bytes that reach a G1 set. Shift_JIS decodes 0xA1
/// to 0xDF as the JIS X 0201 Katakana of ISO-IR 13.
const ESCAPE_SEQUENCES: &[(&[u8], Designation)] = &[
    (b"\x1b(B", Designation::G0(G0::Ascii)),
    (b"\x1b(J", Designation::G0(G0::JisX0201Romaji)),
    (b"\x1b$B", Designation::G0(G0::JisX0208)),
    (b"\x1b$(D", Designation::G0(G0::JisX0212)),
    (b"\x1b)I", Designation::G1(encoding_rs::SHIFT_JIS)),
    (b"\x1b-A", Designation::G1(encoding_rs::WINDOWS_1252)),
    (b"\x1b-B", Designation::G1(encoding_rs::ISO_8859_2)),
    (b"\x1b-C", Designation::G1(encoding_rs::ISO_8859_3)),
    (b"\x1b-D", Designation::G1(encoding_rs::ISO_8859_4)),
    (b"\x1b-L", Designation::G1(encoding_rs::ISO_8859_5)),
    (b"\x1b-G", Designation::G1(encoding_rs::ISO_8859_6)),
    (b"\x1b-F", Designation::G1(encoding_rs::ISO_8859_7)),
    (b"\x1b-H", Designation::G1(encoding_rs::ISO_8859_8)),
    (b"\x1b-M", Designation::G1(encoding_rs::WINDOWS_1254)),
    (b"\x1b-T", Designation::G1(encoding_rs::WINDOWS_874)),
    (b"\x1b$)C", Designation::G1(encoding_rs::EUC_KR)),
    (b"\x1b$)A", Designation::G1(encoding_rs::GBK)),
];

/// A decoder for one Specific Character Set (0008,0005) whose first value
/// is a single-byte set and whose text may switch sets with escape
/// sequences.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Iso2022 {
    /// The G0 set of the first value: JIS X 0201 Romaji for ISO-IR 13,
    /// otherwise ASCII.
    initial_g0: G0,
    /// The G1 set of the first value: none for ISO-IR 6 (ASCII only),
    /// Latin-1 for ISO-IR 100, JIS X 0201 Katakana for ISO-IR 13.
    initial_g1: Option<&'static Encoding>,
}

impl Iso2022 {
    /// Returns the decoder for the first value of Specific Character Set,
    /// or `None` unless it is empty (ISO-IR 6 by PS3.3 section C.12.1.1.2),
    /// `ISO 2022 IR 6`, `ISO 2022 IR 100` or `ISO 2022 IR 13`.
    pub(crate) fn for_first_value(value: &str) -> Option<Iso2022> {
        let (initial_g0, initial_g1) = match value {
            "" | "ISO 2022 IR 6" => (G0::Ascii, None),
            "ISO 2022 IR 100" => (G0::Ascii, Some(encoding_rs::WINDOWS_1252)),
            "ISO 2022 IR 13" => (G0::JisX0201Romaji, Some(encoding_rs::SHIFT_JIS)),
            _ => return None,
        };
        Some(Iso2022 {
            initial_g0,
            initial_g1,
        })
    }

    /// Decodes `bytes`, returning to the initial sets at control characters
    /// and at each byte of `delimiters`. Bytes that no designated set covers
    /// become U+FFFD. Returns `None` at an escape sequence that PS3.3 does
    /// not define for DICOM.
    pub(crate) fn decode(&self, bytes: &[u8], delimiters: &[u8]) -> Option<String> {
        let mut text = String::with_capacity(bytes.len());
        let mut g0 = self.initial_g0;
        let mut g1 = self.initial_g1;
        let mut index = 0;

        while index < bytes.len() {
            let byte = bytes[index];

            if byte == ESC {
                let (designation, length) = designation_at(&bytes[index..])?;
                match designation {
                    Designation::G0(set) => g0 = set,
                    Designation::G1(encoding) => g1 = Some(encoding),
                }
                index += length;
                continue;
            }

            if byte >= 0x80 {
                let end = run_end(bytes, index, |b| b >= 0x80);
                decode_g1(&bytes[index..end], g1, &mut text);
                index = end;
                continue;
            }

            let is_double_byte = matches!(g0, G0::JisX0208 | G0::JisX0212);
            if is_double_byte && (0x21..=0x7e).contains(&byte) {
                let end = run_end(bytes, index, |b| (0x21..=0x7e).contains(&b));
                decode_g0_double_byte(&bytes[index..end], g0, &mut text);
                index = end;
                continue;
            }

            let is_delimiter = byte < 0x20 || delimiters.contains(&byte);
            if is_delimiter {
                g0 = self.initial_g0;
                g1 = self.initial_g1;
            }
            text.push(match (g0, byte) {
                _ if is_delimiter => char::from(byte),
                (G0::JisX0201Romaji, 0x5c) => '¥',
                (G0::JisX0201Romaji, 0x7e) => '‾',
                _ => char::from(byte),
            });
            index += 1;
        }

        Some(text)
    }
}

fn designation_at(bytes: &[u8]) -> Option<(Designation, usize)> {
    ESCAPE_SEQUENCES
        .iter()
        .find(|(sequence, _)| bytes.starts_with(sequence))
        .map(|(sequence, designation)| (*designation, sequence.len()))
}

/// Returns the index after the run of bytes from `start` that match `is_in_run`.
fn run_end(bytes: &[u8], start: usize, is_in_run: impl Fn(u8) -> bool) -> usize {
    bytes[start..]
        .iter()
        .position(|b| !is_in_run(*b))
        .map_or(bytes.len(), |offset| start + offset)
}

fn decode_g1(run: &[u8], g1: Option<&'static Encoding>, text: &mut String) {
    match g1 {
        Some(encoding) => text.push_str(&encoding.decode_without_bom_handling(run).0),
        None => text.extend(run.iter().map(|_| char::REPLACEMENT_CHARACTER)),
    }
}

/// Decodes JIS X 0208 or JIS X 0212 bytes as EUC-JP. EUC-JP code set 1 is
/// JIS X 0208 with the high bit set, and code set 3 is JIS X 0212 with the
/// high bit set after the single shift 0x8F.
fn decode_g0_double_byte(run: &[u8], g0: G0, text: &mut String) {
    let mut euc = Vec::with_capacity(run.len() * 3 / 2 + 1);
    for pair in run.chunks(2) {
        if g0 == G0::JisX0212 {
            euc.push(0x8f);
        }
        euc.extend(pair.iter().map(|b| b | 0x80));
    }
    text.push_str(&encoding_rs::EUC_JP.decode_without_bom_handling(&euc).0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERSON_NAME: &[u8] = b"\\^=";

    fn decode(first_value: &str, bytes: &[u8]) -> Option<String> {
        Iso2022::for_first_value(first_value)
            .expect("a first value with code extensions")
            .decode(bytes, PERSON_NAME)
    }

    /// PS3.5 section I.2: `\ISO 2022 IR 149`.
    #[test]
    fn korean_person_name_of_annex_h() {
        let bytes = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode("", bytes).as_deref(),
            Some("Hong^Gildong=洪^吉洞=홍^길동")
        );
    }

    /// The long-text example of PS3.5 Annex I: each line with Hangul starts
    /// with the escape sequence, because CR LF returns G1 to the initial set.
    #[test]
    fn korean_long_text_of_annex_h() {
        let bytes = b"\x1b$)CThe 1st line includes \xb1\xe6\xb5\xbf.\r\n\x1b$)CThe 2nd line includes \xb1\xe6\xb5\xbf, too.\r\nThe 3rd line.";
        assert_eq!(
            decode("", bytes).as_deref(),
            Some(
                "The 1st line includes 길동.\r\nThe 2nd line includes 길동, too.\r\nThe 3rd line."
            )
        );
    }

    /// PS3.5 section K.2: `\ISO 2022 IR 58`.
    #[test]
    fn chinese_person_name_of_annex_k() {
        let bytes = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=";
        assert_eq!(
            decode("", bytes).as_deref(),
            Some("Zhang^XiaoDong=张^小东=")
        );
    }

    /// PS3.5 section K.3: a long text in GB 2312, each line after its own
    /// escape sequence.
    #[test]
    fn chinese_long_text_of_annex_k() {
        let bytes = b"1.\x1b$)A\xb5\xda\xd2\xbb\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n\
                      2.\x1b$)A\xb5\xda\xb6\xfe\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n\
                      3.\x1b$)A\xb5\xda\xc8\xfd\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n";
        assert_eq!(
            decode("", bytes).as_deref(),
            Some("1.第一行文字。\r\n2.第二行文字。\r\n3.第三行文字。\r\n")
        );
    }

    /// PS3.5 section H.3.1: `\ISO 2022 IR 87`.
    #[test]
    fn japanese_person_name_of_jis_x_0208() {
        let bytes =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode("", bytes).as_deref(),
            Some("Yamada^Tarou=山田^太郎=やまだ^たろう")
        );
    }

    /// PS3.5 section H.3.2: `ISO 2022 IR 13\ISO 2022 IR 87`, where the
    /// first value puts JIS X 0201 Katakana in G1 from the start.
    #[test]
    fn japanese_person_name_with_katakana() {
        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(
            decode("ISO 2022 IR 13", bytes).as_deref(),
            Some("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう")
        );
    }

    #[test]
    fn jis_x_0201_romaji_has_yen_sign() {
        // Without delimiters, as in a Long Text (LT) value.
        let decoder = Iso2022::for_first_value("ISO 2022 IR 13").unwrap();
        assert_eq!(decoder.decode(b"100\x5c", b"").as_deref(), Some("100¥"));
    }

    #[test]
    fn jis_x_0212_follows_its_single_shift() {
        // 0x3021, the first kanji of JIS X 0212, is U+4E02.
        let bytes = b"A\x1b$(D\x30\x21\x1b(B";
        assert_eq!(decode("", bytes).as_deref(), Some("A丂"));
    }

    #[test]
    fn single_byte_g1_sets_decode() {
        let cyrillic = decode("ISO 2022 IR 6", b"abc\x1b-L\xbb\xee\xda");
        assert_eq!(cyrillic.as_deref(), Some("abcЛюк"));
        let latin1 = decode("ISO 2022 IR 100", b"M\xfcller^J\xfcrgen");
        assert_eq!(latin1.as_deref(), Some("Müller^Jürgen"));
    }

    #[test]
    fn delimiter_returns_g1_to_initial_set() {
        let bytes = b"\x1b$)C\xfb\xf3^\xfb\xf3";
        assert_eq!(decode("", bytes).as_deref(), Some("洪^\u{fffd}\u{fffd}"));
    }

    #[test]
    fn unknown_escape_sequence_gives_up() {
        assert_eq!(decode("", b"a\x1b$)Zb"), None);
    }

    #[test]
    fn multi_byte_first_value_is_not_handled() {
        assert!(Iso2022::for_first_value("ISO 2022 IR 149").is_none());
        assert!(Iso2022::for_first_value("ISO_IR 192").is_none());
    }
}
