//! File names received from the server, made safe to create inside the
//! folder the user chose.

use std::path::{Path, PathBuf};

/// Longest file name most file systems accept, in bytes.
const MAX_NAME_BYTES: usize = 255;
/// Longest extension kept when a long name is truncated, in bytes.
const MAX_KEPT_EXTENSION_BYTES: usize = 32;
/// Name used when nothing of the server's name remains.
const FALLBACK_NAME: &str = "download";

/// Device names Windows reserves in every folder, with or without an
/// extension: those of the Win32 "Naming Files, Paths, and Namespaces"
/// page, including the superscript-digit ports, plus the console names
/// `CONIN$` and `CONOUT$` that `CreateFile` opens as devices.
const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6",
    "LPT7", "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³", "CONIN$", "CONOUT$",
];

/// Turns a name from the server into a plain file name. Directories and
/// `..` are dropped. NUL, control characters and bidirectional formatting
/// characters are removed, and characters Windows rejects become `_`.
/// Leading dots and trailing dots and spaces are trimmed, Windows device
/// names get a `_` prefix, and names longer than 255 bytes are truncated
/// with their extension kept.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .map(|c| if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c })
        .collect();
    let trimmed = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .to_owned();
    if trimmed.is_empty() {
        return FALLBACK_NAME.to_owned();
    }

    let name = if is_windows_reserved_name(&trimmed) { format!("_{trimmed}") } else { trimmed };
    truncate_keeping_extension(&name, MAX_NAME_BYTES)
}

/// True when `name` is a Windows device name, with or without extensions
/// and in any case. On Windows, `NUL`, `nul.dcm` and `COM1.tar.gz` in any
/// folder can open the device rather than a file.
pub(crate) fn is_windows_reserved_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default().trim_end();
    WINDOWS_RESERVED.iter().any(|device| device.eq_ignore_ascii_case(stem))
}

/// True for the Unicode bidirectional formatting characters (Unicode
/// Standard Annex #9, section 2), which can make `\u{202E}fdp.exe` display
/// as `exe.pdf`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn truncate_keeping_extension(name: &str, max_bytes: usize) -> String {
    if name.len() <= max_bytes {
        return name.to_owned();
    }
    let extension = match name.rfind('.') {
        Some(dot) if name.len() - dot <= MAX_KEPT_EXTENSION_BYTES && dot > 0 => &name[dot..],
        _ => "",
    };
    let mut end = max_bytes - extension.len();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let stem = name[..end].trim_end_matches(['.', ' ']);
    format!("{stem}{extension}")
}

/// Returns `name` with ` (N)` inserted before its extension.
pub(crate) fn numbered_name(name: &str, number: u32) -> String {
    let suffix = format!(" ({number})");
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    truncate_keeping_extension(&format!("{stem}{suffix}{extension}"), MAX_NAME_BYTES)
}

/// Returns a new path for the temporary file a download is written to,
/// beside its destination: `.NAME.RANDOM.ferry-part`, where RANDOM is 16
/// random hex digits.
///
/// Each call returns another name, so two downloads that choose the same
/// destination at once (two documents of the same name) never write into
/// one temporary file, and a link planted in advance cannot guess the name.
/// The caller records the path in the journal so a resumed download finds it.
pub(crate) fn temp_path_for(destination: &Path) -> PathBuf {
    let name = destination.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let random = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let suffix = format!(".{random}.ferry-part");
    let stem = truncate_keeping_extension(&format!(".{name}"), MAX_NAME_BYTES - suffix.len());
    destination.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_file_name_table() {
        let cases: &[(&str, &str)] = &[
            ("ct-study.zip", "ct-study.zip"),
            ("../../etc/passwd", "passwd"),
            ("..", "download"),
            ("", "download"),
            ("dir/sub/scan.dcm", "scan.dcm"),
            ("C:\\Windows\\system32\\evil.dll", "evil.dll"),
            ("/absolute/path.txt", "path.txt"),
            ("nul\0byte.zip", "nulbyte.zip"),
            ("tab\tand\nnewline.zip", "tabandnewline.zip"),
            ("CON", "_CON"),
            ("con.txt", "_con.txt"),
            ("Com1.zip", "_Com1.zip"),
            ("LPT9", "_LPT9"),
            ("com¹.zip", "_com¹.zip"),
            ("LPT0", "_LPT0"),
            ("conout$.txt", "_conout$.txt"),
            ("console.txt", "console.txt"),
            ("trailing dots...", "trailing dots"),
            ("trailing spaces   ", "trailing spaces"),
            (".hidden", "hidden"),
            ("a<b>c:d\"e|f?g*h.zip", "a_b_c_d_e_f_g_h.zip"),
            ("résumé.pdf", "résumé.pdf"),
            ("report\u{202E}fdp.exe", "reportfdp.exe"),
            ("\u{2067}scan\u{2069}.zip", "scan.zip"),
        ];
        for (input, expected) in cases {
            assert_eq!(safe_file_name(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn long_name_is_truncated_keeping_extension() {
        let long = format!("{}.zip", "a".repeat(400));
        let safe = safe_file_name(&long);
        assert_eq!(safe.len(), 255);
        assert!(safe.ends_with(".zip"), "{safe}");
    }

    #[test]
    fn long_multibyte_name_is_cut_on_char_boundary() {
        let long = format!("{}.dcm", "é".repeat(200));
        let safe = safe_file_name(&long);
        assert!(safe.len() <= 255);
        assert!(safe.ends_with(".dcm"), "{safe}");
    }

    #[test]
    fn numbered_name_goes_before_extension() {
        assert_eq!(numbered_name("scan.zip", 1), "scan (1).zip");
        assert_eq!(numbered_name("README", 2), "README (2)");
    }

    #[test]
    fn temp_path_is_hidden_beside_destination() {
        let temp = temp_path_for(Path::new("/data/in/scan.zip"));
        assert_eq!(temp.parent(), Some(Path::new("/data/in")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".scan.zip."), "{name}");
        assert!(name.ends_with(".ferry-part"), "{name}");
        assert_eq!(name.len(), ".scan.zip.".len() + 16 + ".ferry-part".len(), "{name}");
    }

    #[test]
    fn temp_paths_differ_for_one_destination() {
        let destination = Path::new("/data/in/scan.zip");
        assert_ne!(temp_path_for(destination), temp_path_for(destination));
    }

    #[test]
    fn temp_path_of_longest_name_fits() {
        let destination = PathBuf::from(format!("/data/in/{}.zip", "a".repeat(251)));
        let temp = temp_path_for(&destination);
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
        assert!(name.ends_with(".ferry-part"), "{name}");
    }
}
