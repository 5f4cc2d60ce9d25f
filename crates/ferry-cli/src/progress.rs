//! Transfer progress: bars with speed and ETA on a terminal (`indicatif`),
//! NDJSON events on stdout with `--json`, and nothing otherwise.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::output::Output;

/// Shortest time between two JSON progress events of one transfer; state
/// changes are always written.
const JSON_EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// What the display needs to know about one transfer at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferSnapshot {
    /// Journal id of the transfer.
    pub transfer_id: String,
    /// `upload` or `download`.
    pub direction: &'static str,
    /// File name shown to the user.
    pub name: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub parts_done: u32,
    pub parts_total: u32,
    /// Engine state in snake case, e.g. `running`, `paused`, `completed`.
    pub state: String,
}

/// One NDJSON line of `--json` transfer output.
#[derive(Debug, Serialize)]
struct ProgressEvent<'a> {
    event: &'static str,
    #[serde(flatten)]
    snapshot: &'a TransferSnapshot,
}

/// Renders progress for every transfer of one command.
pub struct ProgressView {
    output: Output,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    last_event: HashMap<String, (Instant, String)>,
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
    pub fn update(&mut self, snapshot: &TransferSnapshot) {
        if let Some(multi) = &self.multi {
            let bar = self
                .bars
                .entry(snapshot.transfer_id.clone())
                .or_insert_with(|| multi.add(new_bar(snapshot)));
            bar.set_length(snapshot.bytes_total);
            bar.set_position(snapshot.bytes_done);
            bar.set_message(bar_message(snapshot));
        }

        if self.output.is_json() && self.should_emit(snapshot) {
            self.output.json_event(&ProgressEvent {
                event: "progress",
                snapshot,
            });
        }
    }

    /// Ends a transfer's bar with a final message, leaving it on screen.
    pub fn finish(&mut self, transfer_id: &str, message: impl Into<String>) {
        if let Some(bar) = self.bars.remove(transfer_id) {
            bar.finish_with_message(message.into());
        }
        self.last_event.remove(transfer_id);
    }

    /// Prints a line above the bars, or on stderr when there are none.
    pub fn println(&self, message: impl AsRef<str>) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(message.as_ref());
            }
            None => self.output.status(message),
        }
    }

    fn should_emit(&mut self, snapshot: &TransferSnapshot) -> bool {
        let now = Instant::now();
        let emit = match self.last_event.get(&snapshot.transfer_id) {
            None => true,
            Some((at, state)) => {
                *state != snapshot.state
                    || snapshot.bytes_done == snapshot.bytes_total
                    || now.duration_since(*at) >= JSON_EVENT_INTERVAL
            }
        };
        if emit {
            self.last_event.insert(
                snapshot.transfer_id.clone(),
                (now, snapshot.state.clone()),
            );
        }
        emit
    }
}

fn new_bar(snapshot: &TransferSnapshot) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>8} {wide_msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("progress template is valid")
    .progress_chars("=> ");
    ProgressBar::new(snapshot.bytes_total)
        .with_style(style)
        .with_prefix(snapshot.direction)
}

/// The text beside a bar: file name, parts and any state other than running.
fn bar_message(snapshot: &TransferSnapshot) -> String {
    let mut message = format!(
        "{} (part {}/{})",
        snapshot.name, snapshot.parts_done, snapshot.parts_total
    );
    if snapshot.state != "running" {
        message.push_str(" ");
        message.push_str(&snapshot.state);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: &str, bytes_done: u64) -> TransferSnapshot {
        TransferSnapshot {
            transfer_id: "t1".into(),
            direction: "upload",
            name: "ct.zip".into(),
            bytes_done,
            bytes_total: 100,
            parts_done: 1,
            parts_total: 4,
            state: state.into(),
        }
    }

    #[test]
    fn bar_message_names_parts_and_state() {
        assert_eq!(bar_message(&snapshot("running", 10)), "ct.zip (part 1/4)");
        assert_eq!(bar_message(&snapshot("paused", 10)), "ct.zip (part 1/4) paused");
    }

    #[test]
    fn json_events_are_written_on_state_change() {
        let mut view = ProgressView {
            output: Output::new(true),
            multi: None,
            bars: HashMap::new(),
            last_event: HashMap::new(),
        };
        assert!(view.should_emit(&snapshot("running", 10)), "first event");
        assert!(!view.should_emit(&snapshot("running", 11)), "same state, too soon");
        assert!(view.should_emit(&snapshot("paused", 11)), "state changed");
        assert!(view.should_emit(&snapshot("paused", 100)), "all bytes done");
    }

    #[test]
    fn progress_event_flattens_snapshot() {
        let value = serde_json::to_value(ProgressEvent {
            event: "progress",
            snapshot: &snapshot("running", 10),
        })
        .unwrap();
        assert_eq!(value["event"], "progress");
        assert_eq!(value["bytes_done"], 10);
        assert_eq!(value["transfer_id"], "t1");
    }
}
