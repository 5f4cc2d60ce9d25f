//! Transfer progress: bars with speed and ETA on a terminal (`indicatif`),
//! NDJSON events on stdout with `--json`, and nothing otherwise.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_core::journal::TransferState;
use ferry_core::transfer::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::output::{Output, terminal_safe};

/// Shortest time between two JSON progress events of one transfer; state
/// changes are always written.
const JSON_EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// One NDJSON line of `--json` transfer output.
#[derive(Debug, Serialize)]
struct ProgressEvent<'a> {
    event: &'static str,
    #[serde(flatten)]
    progress: &'a Progress,
}

/// Terminal width below which bars leave out the byte counts, so that the
/// file name still fits on an 80-column terminal.
const COMPACT_BELOW_COLUMNS: usize = 110;

/// Columns that a bar's line takes besides the file name: an estimate from
/// the widest values of each template's fields, with a margin.
const COMPACT_FIXED_COLUMNS: usize = 58;
const WIDE_FIXED_COLUMNS: usize = 90;

/// Shortest file name shown, however narrow the terminal.
const MIN_NAME_COLUMNS: usize = 12;

/// Renders progress for every transfer of one command.
pub struct ProgressView {
    output: Output,
    /// Width of the terminal that shows the bars, when known.
    columns: Option<usize>,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    last_event: HashMap<String, (Instant, TransferState)>,
}

impl ProgressView {
    pub fn new(output: Output) -> ProgressView {
        let multi = output
            .shows_progress_bars()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let columns = console::Term::stderr()
            .size_checked()
            .map(|(_, columns)| usize::from(columns));
        ProgressView {
            output,
            columns,
            multi,
            bars: HashMap::new(),
            last_event: HashMap::new(),
        }
    }

    /// Updates the transfer's bar and, in JSON mode, writes a `progress`
    /// event when the state changed or enough time has passed.
    pub fn update(&mut self, progress: &Progress) {
        if let Some(multi) = &self.multi {
            let bar = self
                .bars
                .entry(progress.transfer_id.clone())
                .or_insert_with(|| multi.add(new_bar(progress, self.columns)));
            bar.set_length(progress.bytes_total);
            bar.set_position(progress.bytes_done);
            bar.set_message(bar_message(progress, self.columns));
        }

        if self.output.is_json() && self.should_emit(progress) {
            self.output.json_event(&ProgressEvent {
                event: "progress",
                progress,
            });
        }
    }

    /// Ends a transfer's bar with a final message, leaving it on screen.
    pub fn finish(&mut self, transfer_id: &str, message: impl Into<String>) {
        if let Some(bar) = self.bars.remove(transfer_id) {
            bar.finish_with_message(terminal_safe(&message.into()).into_owned());
        }
        self.last_event.remove(transfer_id);
    }

    /// Prints a line above the bars, or on stderr when there are none.
    pub fn println(&self, message: impl AsRef<str>) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(terminal_safe(message.as_ref()));
            }
            None => self.output.status(message),
        }
    }

    fn should_emit(&mut self, progress: &Progress) -> bool {
        let now = Instant::now();
        let emit = match self.last_event.get(&progress.transfer_id) {
            None => true,
            Some((at, state)) => {
                *state != progress.state
                    || progress.bytes_done == progress.bytes_total
                    || now.duration_since(*at) >= JSON_EVENT_INTERVAL
            }
        };
        if emit {
            self.last_event
                .insert(progress.transfer_id.clone(), (now, progress.state));
        }
        emit
    }
}

/// Builds a bar whose line fits `columns`: below
/// [`COMPACT_BELOW_COLUMNS`] it shows the percentage instead of the byte
/// counts.
fn new_bar(progress: &Progress, columns: Option<usize>) -> ProgressBar {
    let template = if columns.is_some_and(|columns| columns < COMPACT_BELOW_COLUMNS) {
        "{prefix:>8} {msg} [{bar:16}] {percent:>3}% {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{prefix:>8} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
    };
    let style = ProgressStyle::with_template(template)
        .expect("progress template is valid")
        .progress_chars("=> ");
    ProgressBar::new(progress.bytes_total)
        .with_style(style)
        .with_prefix(progress.direction.as_str())
}

/// Returns the text beside a bar: the file name, shortened to fit the
/// terminal, and any state other than running, e.g. `ct.zip (paused)`. The
/// word `offline` replaces `waiting_for_network`, which would leave no room
/// for the name.
fn bar_message(progress: &Progress, columns: Option<usize>) -> String {
    let fixed = match columns {
        Some(columns) if columns < COMPACT_BELOW_COLUMNS => COMPACT_FIXED_COLUMNS,
        _ => WIDE_FIXED_COLUMNS,
    };
    let state = match progress.state {
        TransferState::Running => String::new(),
        TransferState::WaitingForNetwork => " (offline)".to_owned(),
        other => format!(" ({})", other.as_str()),
    };
    let name_columns = columns
        .unwrap_or(WIDE_FIXED_COLUMNS + 40)
        .saturating_sub(fixed + state.chars().count())
        .max(MIN_NAME_COLUMNS);
    let name = shorten_name(&terminal_safe(&progress.file_name), name_columns);
    format!("{name}{state}")
}

/// Shortens `name` to at most `max` characters by replacing its middle
/// with `…`, keeping the start and the end, where the extension is.
fn shorten_name(name: &str, max: usize) -> String {
    let length = name.chars().count();
    if length <= max || max < 3 {
        return name.to_owned();
    }
    let tail = (max - 1) / 3;
    let head = max - 1 - tail;
    let start: String = name.chars().take(head).collect();
    let end: String = name.chars().skip(length - tail).collect();
    format!("{start}…{end}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::journal::Direction;

    fn progress(state: TransferState, bytes_done: u64) -> Progress {
        Progress {
            transfer_id: "t1".into(),
            direction: Direction::Upload,
            file_name: "ct.zip".into(),
            state,
            bytes_done,
            bytes_total: 100,
            bytes_per_second: 0.0,
            eta: None,
            error: None,
        }
    }

    #[test]
    fn bar_message_names_state_other_than_running() {
        assert_eq!(
            bar_message(&progress(TransferState::Running, 10), None),
            "ct.zip"
        );
        assert_eq!(
            bar_message(&progress(TransferState::Paused, 10), None),
            "ct.zip (paused)"
        );
    }

    #[test]
    fn bar_message_escapes_control_characters() {
        let mut hostile = progress(TransferState::Running, 10);
        hostile.file_name = "ct\u{1b}]0;title\u{7}.zip".into();

        assert_eq!(bar_message(&hostile, None), "ct\\u{1b}]0;title\\u{7}.zip");
    }

    #[test]
    fn bar_message_fits_80_columns() {
        let mut long = progress(TransferState::WaitingForNetwork, 10);
        long.file_name = "2026-12-04-ct-abdomen-with-contrast-series-export.zip".into();

        let message = bar_message(&long, Some(80));

        assert!(
            message.chars().count() + COMPACT_FIXED_COLUMNS <= 80,
            "{message}"
        );
        assert!(message.starts_with("2026-"), "{message}");
        assert!(message.ends_with("zip (offline)"), "{message}");
    }

    #[test]
    fn shorten_name_keeps_start_and_extension() {
        assert_eq!(shorten_name("ct.zip", 12), "ct.zip");
        assert_eq!(shorten_name("abcdefghijklmnop.zip", 12), "abcdefgh…zip");
        assert_eq!(shorten_name("abcdefghijklmnop.zip", 12).chars().count(), 12);
    }

    #[test]
    fn json_events_are_written_on_state_change() {
        let mut view = ProgressView {
            output: Output::new(true),
            columns: None,
            multi: None,
            bars: HashMap::new(),
            last_event: HashMap::new(),
        };
        assert!(
            view.should_emit(&progress(TransferState::Running, 10)),
            "first event"
        );
        assert!(
            !view.should_emit(&progress(TransferState::Running, 11)),
            "same state, too soon"
        );
        assert!(
            view.should_emit(&progress(TransferState::Paused, 11)),
            "state changed"
        );
        assert!(
            view.should_emit(&progress(TransferState::Paused, 100)),
            "all bytes done"
        );
    }

    #[test]
    fn progress_event_flattens_progress() {
        let value = serde_json::to_value(ProgressEvent {
            event: "progress",
            progress: &progress(TransferState::Running, 10),
        })
        .unwrap();
        assert_eq!(value["event"], "progress");
        assert_eq!(value["bytes_done"], 10);
        assert_eq!(value["state"], "running");
        assert_eq!(value["transfer_id"], "t1");
    }
}
