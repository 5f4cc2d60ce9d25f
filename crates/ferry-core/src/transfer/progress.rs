//! Progress reports of a transfer, throttled for user interfaces.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::TransferContext;
use crate::journal::{Direction, TransferState};

/// Interval between two progress reports: at most 10 per second.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// Window of the moving average that gives the speed.
const SPEED_WINDOW: Duration = Duration::from_secs(5);

/// One progress report of a transfer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub transfer_id: String,
    pub direction: Direction,
    pub file_name: String,
    pub state: TransferState,
    pub bytes_done: u64,
    /// Zero until a download's grant gives the size.
    pub bytes_total: u64,
    /// Moving average over the last 5 seconds, in bytes per second.
    pub bytes_per_second: f64,
    /// Estimated time to completion at the current speed.
    pub eta: Option<Duration>,
    /// The failure, once the transfer failed.
    pub error: Option<String>,
}

impl Progress {
    pub(crate) fn initial(transfer_id: &str, direction: Direction, file_name: &str, state: TransferState) -> Self {
        Self {
            transfer_id: transfer_id.to_owned(),
            direction,
            file_name: file_name.to_owned(),
            state,
            bytes_done: 0,
            bytes_total: 0,
            bytes_per_second: 0.0,
            eta: None,
            error: None,
        }
    }
}

/// Samples of bytes done over time, for the moving average.
pub(crate) struct SpeedMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl SpeedMeter {
    pub(crate) fn new() -> Self {
        Self { samples: VecDeque::new() }
    }

    /// Returns the report for the context's current counters.
    pub(crate) fn report(&mut self, context: &TransferContext, previous: &Progress) -> Progress {
        let now = Instant::now();
        let done = context.bytes_done.load(Ordering::Relaxed);
        let total = context.bytes_total.load(Ordering::Relaxed);
        let state = context.state();

        self.samples.push_back((now, done));
        while let Some(&(time, _)) = self.samples.front() {
            if now.duration_since(time) > SPEED_WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let speed = match (self.samples.front(), self.samples.back()) {
            (Some(&(first_time, first_done)), Some(&(last_time, last_done))) if last_time > first_time => {
                last_done.saturating_sub(first_done) as f64 / last_time.duration_since(first_time).as_secs_f64()
            }
            _ => 0.0,
        };
        let eta = (speed > 0.0 && total >= done)
            .then(|| Duration::from_secs_f64((total - done) as f64 / speed));

        Progress {
            state,
            bytes_done: done,
            bytes_total: total,
            bytes_per_second: speed,
            eta: if state == TransferState::Running { eta } else { None },
            ..previous.clone()
        }
    }
}
