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

/// Renders progress for every transfer of one command.
pub struct ProgressView {
    output: Output,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    last_event: HashMap<String, (Instant, TransferState)>,
}

impl ProgressView {
    pub fn new(output: Output) -> ProgressView {
        let multi = output
            .shows_progress_bars()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        ProgressView {
            output,
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
                .or_insert_with(|| multi.add(new_bar(progress)));
            bar.set_length(progress.bytes_total);
            bar.set_position(progress.bytes_done);
            bar.set_message(bar_message(progress));
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

fn new_bar(progress: &Progress) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>8} {wide_msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("progress template is valid")
    .progress_chars("=> ");
    ProgressBar::new(progress.bytes_total)
        .with_style(style)
        .with_prefix(progress.direction.as_str())
}

/// The text beside a bar: the file name and any state other than running,
/// e.g. `ct.zip (waiting_for_network)`.
fn bar_message(progress: &Progress) -> String {
    match progress.state {
        TransferState::Running => terminal_safe(&progress.file_name).into_owned(),
        other => format!(
            "{} ({})",
            terminal_safe(&progress.file_name),
            other.as_str()
        ),
    }
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
        assert_eq!(bar_message(&progress(TransferState::Running, 10)), "ct.zip");
        assert_eq!(
            bar_message(&progress(TransferState::Paused, 10)),
            "ct.zip (paused)"
        );
    }

    #[test]
    fn bar_message_escapes_control_characters() {
        let mut hostile = progress(TransferState::Running, 10);
        hostile.file_name = "ct\u{1b}]0;title\u{7}.zip".into();

        assert_eq!(bar_message(&hostile), "ct\\u{1b}]0;title\\u{7}.zip");
    }

    #[test]
    fn json_events_are_written_on_state_change() {
        let mut view = ProgressView {
            output: Output::new(true),
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
