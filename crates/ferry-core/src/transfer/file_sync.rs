//! Flushes of a download's temporary file to disk, shared by its ranges.
//!
//! A range is confirmed in the journal only once its bytes are durable.
//! Linux's default writeback starts writing dirty pages only after about
//! 30 s or once they fill a tenth of memory, so an `fdatasync` at the end of
//! each range would write the whole range while the range's connection sits
//! idle. Here one thread flushes the file whenever [`FLUSH_AFTER`] bytes were
//! written since its last flush, or as soon as a range waits. A range waits
//! for the first flush that began after its last write, and by then most of
//! its bytes are on disk already.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

/// Bytes written since the last flush that start the next one although no
/// range waits.
const FLUSH_AFTER: u64 = 8 * 1024 * 1024;

/// Progress of the flushing thread: the byte count up to which every write
/// is durable, or the error of the flush that failed.
type Flushed = Result<u64, (io::ErrorKind, String)>;

/// Counts written bytes and flushes them on a thread of its own, which stops
/// when this value is dropped.
pub(crate) struct FileSync {
    shared: Arc<Shared>,
    flushed: watch::Receiver<Flushed>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Bytes whose writes have returned, over the whole download.
    written: u64,
    /// Value of `written` when the last successful flush began.
    durable: u64,
    /// Ranges waiting for a flush.
    waiting: usize,
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl FileSync {
    /// Starts the thread that flushes `file`.
    pub(crate) fn start(file: Arc<File>) -> Self {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        let (sender, flushed) = watch::channel(Ok(0));
        let thread_shared = shared.clone();
        std::thread::spawn(move || flush_while_running(&file, &thread_shared, &sender));
        Self { shared, flushed }
    }

    /// Counts `bytes` whose write has returned and returns the mark to pass
    /// to [`FileSync::durable`].
    pub(crate) fn wrote(&self, bytes: u64) -> u64 {
        let mut state = self.shared.lock();
        state.written += bytes;
        let mark = state.written;
        if state.written - state.durable >= FLUSH_AFTER {
            self.shared.wake.notify_one();
        }
        mark
    }

    /// Waits until every write counted up to `mark` is durable.
    pub(crate) async fn durable(&self, mark: u64) -> io::Result<()> {
        {
            let mut state = self.shared.lock();
            if state.durable >= mark {
                return Ok(());
            }
            state.waiting += 1;
            self.shared.wake.notify_one();
        }
        let _waiting = Waiting(&self.shared);

        let mut flushed = self.flushed.clone();
        let outcome = flushed.wait_for(|flushed| flushed.as_ref().map_or(true, |durable| *durable >= mark)).await;
        match outcome.as_deref() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((kind, message))) => Err(io::Error::new(*kind, message.clone())),
            Err(_) => Err(io::Error::other("the thread flushing the temporary file stopped unexpectedly")),
        }
    }
}

impl Drop for FileSync {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_one();
    }
}

/// Takes one range off the waiting count when its wait ends or is dropped.
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// Flushes `file` whenever [`FLUSH_AFTER`] bytes are not yet durable or a
/// range waits, until stopped or a flush fails.
fn flush_while_running(file: &File, shared: &Shared, flushed: &watch::Sender<Flushed>) {
    loop {
        let mark = {
            let mut state = shared.lock();
            loop {
                if state.stopped {
                    return;
                }
                let pending = state.written - state.durable;
                if pending >= FLUSH_AFTER || (pending > 0 && state.waiting > 0) {
                    break state.written;
                }
                state = shared.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };

        // Every write counted in `mark` has returned, so its bytes are in
        // the page cache and this flush writes them.
        if let Err(error) = file.sync_data() {
            flushed.send_modify(|value| *value = Err((error.kind(), error.to_string())));
            return;
        }
        shared.lock().durable = mark;
        flushed.send_modify(|value| *value = Ok(mark));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_range_gets_a_flush_below_the_threshold() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let sync = FileSync::start(file.clone());

        std::io::Write::write_all(&mut &*file, b"range").unwrap();
        let mark = sync.wrote(5);
        sync.durable(mark).await.unwrap();

        assert_eq!(sync.shared.lock().durable, 5);
        assert_eq!(sync.shared.lock().waiting, 0);
    }

    #[tokio::test]
    async fn nothing_written_needs_no_flush() {
        let sync = FileSync::start(Arc::new(tempfile::tempfile().unwrap()));

        sync.durable(0).await.unwrap();

        assert_eq!(sync.shared.lock().waiting, 0);
    }

    #[tokio::test]
    async fn later_writes_wait_for_a_later_flush() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let sync = FileSync::start(file);

        let first = sync.wrote(FLUSH_AFTER + 1);
        sync.durable(first).await.unwrap();
        let second = sync.wrote(3);
        sync.durable(second).await.unwrap();

        assert!(sync.shared.lock().durable >= second);
    }
}
