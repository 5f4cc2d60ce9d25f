//! Where `ferry` writes: results to stdout (JSON with `--json`, text
//! otherwise), status messages and errors to stderr.

use std::borrow::Cow;
use std::io::{IsTerminal as _, Write as _};

use serde::Serialize;

use crate::exit::CliError;

/// The output channels of one run of `ferry`.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    stderr_is_terminal: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output {
            json,
            stderr_is_terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn is_json(self) -> bool {
        self.json
    }

    /// True when progress bars may be drawn: stderr is a terminal.
    pub fn shows_progress_bars(self) -> bool {
        self.stderr_is_terminal
    }

    /// Writes a status message for people to stderr, with control
    /// characters escaped ([`terminal_safe`]).
    pub fn status(self, message: impl AsRef<str>) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{}", terminal_safe(message.as_ref()));
    }

    /// Writes a command's human-readable result to stdout, with control
    /// characters escaped ([`terminal_safe`]). Nothing is written in JSON
    /// mode, where [`Output::json_result`] writes the result instead.
    pub fn text(self, text: impl AsRef<str>) {
        if self.json {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", terminal_safe(text.as_ref()));
    }

    /// Writes a command's result as one JSON document on one line of stdout,
    /// in JSON mode only.
    pub fn json_result(self, value: &impl Serialize) {
        if self.json {
            write_json_line(value);
        }
    }

    /// Writes one NDJSON event line (a transfer's progress or state) to
    /// stdout, in JSON mode only.
    pub fn json_event(self, value: &impl Serialize) {
        if self.json {
            write_json_line(value);
        }
    }

    /// Reports a failed command: `error: MESSAGE` on stderr, and in JSON mode
    /// also `{"error": {...}}` on stdout so scripts get a document either way.
    pub fn error(self, error: &CliError) {
        self.status(format!("error: {}", error.message));
        if self.json {
            write_json_line(&serde_json::json!({
                "error": {
                    "message": error.message,
                    "exit_code": error.exit.code(),
                    "kind": error.exit.name(),
                }
            }));
        }
    }
}

/// Escapes the characters of `text` that a terminal would act on rather
/// than show. These are control characters other than newline and tab, and
/// bidirectional formatting characters. ESC is one of them, because it
/// starts ANSI sequences that can rewrite the screen or the window title.
/// Each becomes its Rust escape, such as `\u{1b}`. File names, FHIR
/// resources, DICOM attributes and server error bodies reach the output,
/// and a hostile server or archive chooses them.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let is_unsafe = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c);
    if !text.contains(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            safe.extend(c.escape_unicode());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// True for the Unicode bidirectional formatting characters (Unicode
/// Standard Annex #9, section 2), which reorder the text shown after them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn write_json_line(value: &impl Serialize) {
    let mut stdout = std::io::stdout().lock();
    match serde_json::to_string(value) {
        Ok(line) => {
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
        Err(error) => tracing::error!(%error, "failed to serialise a JSON result"),
    }
}

/// Formats a byte count with binary units, e.g. `12.50 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

/// Formats a transfer rate from a byte count and the seconds it took.
pub fn format_rate(bytes: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "n/a".to_owned();
    }
    let per_second = (bytes as f64 / seconds) as u64;
    format!("{}/s", format_bytes(per_second))
}

/// Formats a count with the singular or plural noun, e.g. `1 part` and
/// `3 parts`.
pub fn count(number: u64, singular: &str, plural: &str) -> String {
    if number == 1 {
        format!("1 {singular}")
    } else {
        format!("{number} {plural}")
    }
}

/// Lays out rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }

    let header_cells: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    let mut lines = Vec::with_capacity(rows.len() + 1);
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let is_last = index + 1 == row.len();
            if !is_last {
                let padding = widths[index].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(format_bytes(5 * 1024 * 1024), "5.00 MiB");
        assert_eq!(format_bytes(512), "512 B");
    }

    #[test]
    fn rate_divides_by_seconds() {
        assert_eq!(format_rate(20 * 1024 * 1024, 2.0), "10.00 MiB/s");
        assert_eq!(format_rate(1, 0.0), "n/a");
    }

    #[test]
    fn count_is_singular_for_one() {
        assert_eq!(count(1, "part", "parts"), "1 part");
        assert_eq!(count(0, "part", "parts"), "0 parts");
        assert_eq!(count(12, "entry", "entries"), "12 entries");
    }

    #[test]
    fn terminal_safe_escapes_ansi_sequences() {
        let text = "scan\u{1b}[2J\u{1b}]0;title\u{7}.zip";

        let safe = terminal_safe(text);

        assert_eq!(safe, "scan\\u{1b}[2J\\u{1b}]0;title\\u{7}.zip");
        assert!(!safe.contains('\u{1b}'), "{safe}");
    }

    #[test]
    fn terminal_safe_escapes_c1_and_bidi_controls() {
        assert_eq!(terminal_safe("a\u{9b}31m"), "a\\u{9b}31m");
        assert_eq!(
            terminal_safe("report\u{202e}fdp.exe"),
            "report\\u{202e}fdp.exe"
        );
        assert_eq!(terminal_safe("carriage\rreturn"), "carriage\\u{d}return");
    }

    #[test]
    fn terminal_safe_keeps_plain_text_and_layout() {
        let text = "ID     NAME\ndoc-1\tJürgen Müller  ct.zip";

        assert!(matches!(terminal_safe(text), Cow::Borrowed(_)));
        assert_eq!(terminal_safe(text), text);
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["doc-1".into(), "ct.zip".into()],
                vec!["d".into(), "x".into()],
            ],
        );
        assert_eq!(text, "ID     NAME\ndoc-1  ct.zip\nd      x");
    }
}
