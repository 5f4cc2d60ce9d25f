//! Opening a profile's transfer engine, following its transfers to the end
//! with progress, and pausing them cleanly on Ctrl-C.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_api::ErrorCode;
use ferry_core::grant::{GrantClient, GrantError};
use ferry_core::journal::{JournalError, TransferState};
use ferry_core::login::{ProfileContext, Session};
use ferry_core::transfer::{
    Engine, EngineOptions, Progress, RetryPolicy, TransferError, TransferHandle, TransferOutcome,
};
use tokio::sync::mpsc;

use crate::context::login_error;
use crate::exit::{CliError, CliResult, Exit, error_chain};
use crate::output::Output;
use crate::progress::ProgressView;

/// Returns `{data_dir}/profiles/{name}/journal.sqlite`.
pub fn journal_path(context: &ProfileContext) -> PathBuf {
    context.dirs.journal_path(&context.profile.name)
}

/// Builds the engine of a signed-in profile: grant API client and journal.
pub fn open_engine(
    context: &ProfileContext,
    session: &Session,
    options: EngineOptions,
) -> CliResult<Engine> {
    let grant_api = session.grant_api().map_err(login_error)?;
    let grants = GrantClient::new(grant_api, context.http.clone(), Arc::new(session.clone()));
    let journal = journal_path(context);
    context
        .dirs
        .create_profile_data_dir(&context.profile.name)
        .map_err(|error| {
            CliError::failure(format!(
                "failed to create the profile's data folder in {}: {error}",
                context.dirs.data_dir.display()
            ))
        })?;
    Engine::new(&journal, grants, options).map_err(|error| transfer_error(&error))
}

/// The end of one followed transfer.
#[derive(Debug)]
pub struct Finished {
    pub transfer_id: String,
    pub file_name: String,
    pub result: Result<TransferOutcome, Arc<TransferError>>,
    pub seconds: f64,
}

/// Everything [`follow`] saw.
#[derive(Debug)]
pub struct Followed {
    pub finished: Vec<Finished>,
    /// Ctrl-C was pressed and the transfers were paused.
    pub interrupted: bool,
    /// The `--offline-timeout` after which transfers that waited for the
    /// network were paused, when that happened.
    pub offline_timeout: Option<Duration>,
}

/// True while at least one followed transfer waits for the network. The
/// log filter in `main` then hides the engine's WARN line of each retry,
/// because [`follow`] has printed one line that stands for all of them.
static WAITING_FOR_NETWORK: AtomicBool = AtomicBool::new(false);

/// Returns whether a followed transfer waits for the network now.
pub fn is_waiting_for_network() -> bool {
    WAITING_FOR_NETWORK.load(Ordering::Relaxed)
}

/// The transfers that wait for the network, each with the time it started
/// waiting, and the messages printed when waiting starts and ends.
#[derive(Debug, Default)]
struct NetworkWaits {
    since: HashMap<String, Instant>,
}

impl NetworkWaits {
    /// Records a transfer's state and returns the line to print when it
    /// started or stopped waiting for the network.
    fn update(&mut self, progress: &Progress) -> Option<String> {
        let waiting = progress.state == TransferState::WaitingForNetwork;
        let line = match (waiting, self.since.get(&progress.transfer_id)) {
            (true, None) => {
                self.since
                    .insert(progress.transfer_id.clone(), Instant::now());
                Some(format!(
                    "{}: the gateway or the store cannot be reached; retrying at most {} s apart. \
                     Ctrl-C pauses the transfer, and `ferry resume` continues it later.",
                    progress.file_name,
                    RetryPolicy::default().max_delay.as_secs()
                ))
            }
            (false, Some(started)) => {
                let seconds = started.elapsed().as_secs();
                self.since.remove(&progress.transfer_id);
                Some(format!(
                    "{}: reached the network again after {seconds} s; the transfer continues.",
                    progress.file_name
                ))
            }
            _ => None,
        };
        WAITING_FOR_NETWORK.store(!self.since.is_empty(), Ordering::Relaxed);
        line
    }

    fn remove(&mut self, transfer_id: &str) {
        self.since.remove(transfer_id);
        WAITING_FOR_NETWORK.store(!self.since.is_empty(), Ordering::Relaxed);
    }

    /// Returns when the longest wait reaches `timeout`, or `None` when no
    /// transfer waits.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.since.values().min().map(|started| *started + timeout)
    }

    /// Returns the transfers that have waited for `timeout` or longer.
    fn expired(&self, timeout: Duration) -> Vec<String> {
        self.since
            .iter()
            .filter(|(_, started)| started.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

enum Event {
    Progress(Progress),
    Done(String, Result<TransferOutcome, Arc<TransferError>>),
}

/// Follows the transfers until each has ended, drawing progress. On Ctrl-C
/// every transfer is paused (the parts in flight finish and the journal
/// records where each stopped); a second Ctrl-C stops waiting at once, which
/// the journal also survives.
pub async fn follow(engine: &Engine, handles: Vec<TransferHandle>, output: Output) -> Followed {
    follow_offline(engine, handles, output, None).await
}

/// Follows the transfers like [`follow`] and, with an `offline_timeout`,
/// pauses each transfer that has waited that long for the network.
pub async fn follow_offline(
    engine: &Engine,
    handles: Vec<TransferHandle>,
    output: Output,
    offline_timeout: Option<Duration>,
) -> Followed {
    let started = Instant::now();
    let (sender, mut events) = mpsc::unbounded_channel();
    for handle in &handles {
        tokio::spawn(forward(handle.clone(), sender.clone()));
    }
    drop(sender);

    let mut ctrl_c = ctrl_c_signals();
    let mut view = ProgressView::new(output);
    let mut last: std::collections::HashMap<String, Progress> = std::collections::HashMap::new();
    let mut finished = Vec::new();
    let mut interrupted = false;
    let mut waits = NetworkWaits::default();
    let mut paused_offline = false;

    while finished.len() < handles.len() {
        let offline_deadline = offline_timeout
            .filter(|_| !interrupted)
            .and_then(|timeout| Some((timeout, waits.deadline(timeout)?)));
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Progress(progress)) => {
                    view.update(&progress);
                    if let Some(line) = waits.update(&progress) {
                        view.println(line);
                    }
                    last.insert(progress.transfer_id.clone(), progress);
                }
                Some(Event::Done(id, result)) => {
                    waits.remove(&id);
                    let progress = last.get(&id);
                    let file_name = progress.map(|p| p.file_name.clone()).unwrap_or_default();
                    view.finish(&id, finish_message(&file_name, &result));
                    finished.push(Finished {
                        transfer_id: id,
                        file_name,
                        result,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
                None => break,
            },
            () = sleep_until(offline_deadline.map(|(_, at)| at)) => {
                let Some((timeout, _)) = offline_deadline else { continue };
                for id in waits.expired(timeout) {
                    view.println(format!(
                        "Transfer {id} has waited {} s for the network (--offline-timeout); pausing it.",
                        timeout.as_secs()
                    ));
                    if let Err(error) = engine.pause(&id) {
                        tracing::warn!(transfer = %id, "pausing failed: {error}");
                    }
                    waits.remove(&id);
                    paused_offline = true;
                }
            },
            Some(()) = ctrl_c.recv() => {
                if interrupted {
                    view.println("Stopped; the journal keeps every transfer's state. Run `ferry resume` to finish them.");
                    break;
                }
                interrupted = true;
                view.println("Ctrl-C: pausing transfers after the parts in flight (press Ctrl-C again to stop at once).");
                for handle in &handles {
                    if let Err(error) = engine.pause(handle.id()) {
                        tracing::warn!(transfer = handle.id(), "pausing failed: {error}");
                    }
                }
            },
        }
    }
    WAITING_FOR_NETWORK.store(false, Ordering::Relaxed);
    Followed {
        finished,
        interrupted,
        offline_timeout: offline_timeout.filter(|_| paused_offline),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Delivers every Ctrl-C (SIGINT) from now on. The handler replaces the
/// default of ending the process at once.
fn ctrl_c_signals() -> mpsc::UnboundedReceiver<()> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if sender.send(()).is_err() {
                break;
            }
        }
    });
    receiver
}

async fn forward(handle: TransferHandle, sender: mpsc::UnboundedSender<Event>) {
    let mut progress = handle.progress();
    let _ = sender.send(Event::Progress(progress.borrow().clone()));
    loop {
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
                let report = progress.borrow_and_update().clone();
                if sender.send(Event::Progress(report)).is_err() {
                    return;
                }
            }
            result = handle.wait() => {
                let _ = sender.send(Event::Progress(progress.borrow().clone()));
                let _ = sender.send(Event::Done(handle.id().to_owned(), result));
                return;
            }
        }
    }
    let result = handle.wait().await;
    let _ = sender.send(Event::Done(handle.id().to_owned(), result));
}

fn finish_message(file_name: &str, result: &Result<TransferOutcome, Arc<TransferError>>) -> String {
    match result {
        Ok(TransferOutcome::Uploaded { document_id, .. }) => {
            format!("{file_name}: uploaded as {document_id}")
        }
        Ok(TransferOutcome::Downloaded { path, .. }) => {
            format!("{file_name}: saved to {}", path.display())
        }
        Ok(TransferOutcome::Paused) => format!("{file_name}: paused"),
        Ok(TransferOutcome::Cancelled) => format!("{file_name}: cancelled"),
        Err(_) => format!("{file_name}: failed"),
    }
}

/// Maps a transfer failure to its exit code and message, naming the flag
/// that helps where there is one.
pub fn transfer_error(error: &TransferError) -> CliError {
    if let TransferError::DestinationExists { path } = error {
        return CliError::new(
            transfer_exit(error),
            format!(
                "{} already exists; pass --overwrite to replace it, or --to DIR to download into another folder",
                path.display()
            ),
        );
    }
    if let TransferError::Journal(JournalError::NotFound(id)) = error {
        return CliError::not_found(format!(
            "transfer {id} is not in this profile's journal; run `ferry transfers` to list the transfers"
        ));
    }
    CliError::new(transfer_exit(error), error_chain(error))
}

fn transfer_exit(error: &TransferError) -> Exit {
    match error {
        TransferError::Grant(grant) => grant_exit(grant),
        TransferError::RetriesExhausted { .. } => Exit::Interrupted,
        TransferError::Interrupted => Exit::Interrupted,
        TransferError::ClaimedElsewhere { .. } => Exit::Failure,
        TransferError::DestinationExists { .. } => Exit::Usage,
        TransferError::Journal(JournalError::NotFound(_)) => Exit::NotFound,
        TransferError::Io { .. } | TransferError::Journal(_) | TransferError::Task(_) => {
            Exit::Failure
        }
        TransferError::InvalidState { .. } => Exit::Usage,
        _ => Exit::TransferFailed,
    }
}

fn grant_exit(error: &GrantError) -> Exit {
    match error {
        GrantError::AccessToken { source, .. } if source.sign_in_required => Exit::SignInRequired,
        _ if error.code() == Some(ErrorCode::InvalidToken) => Exit::SignInRequired,
        _ if error.code() == Some(ErrorCode::NotFound) => Exit::NotFound,
        _ if error.is_retryable() => Exit::Interrupted,
        _ => Exit::TransferFailed,
    }
}

/// Returns the exit of a command that followed transfers: 130 after
/// Ctrl-C, else the exit code of the first failure, else success.
pub fn exit_of(followed: &Followed) -> CliResult<()> {
    if followed.interrupted {
        return Err(CliError::new(
            Exit::CtrlC,
            "interrupted by Ctrl-C; the transfers are paused in the journal; run `ferry resume` to finish them",
        ));
    }
    let failures: Vec<(&Finished, &TransferError)> = followed
        .finished
        .iter()
        .filter_map(|finished| {
            finished
                .result
                .as_ref()
                .err()
                .map(|error| (finished, error.as_ref()))
        })
        .collect();
    let Some((first, first_error)) = failures.first() else {
        return match followed.offline_timeout {
            Some(timeout) => Err(CliError::new(
                Exit::Interrupted,
                format!(
                    "the gateway or the store stayed unreachable for {} s (--offline-timeout); \
                     the transfers are paused in the journal; run `ferry resume` once the network is back",
                    timeout.as_secs()
                ),
            )),
            None => Ok(()),
        };
    };
    let mut error = transfer_error(first_error);
    error.message = format!(
        "transfer {} ({}) failed: {}",
        first.transfer_id, first.file_name, error.message
    );
    if error.exit == Exit::Interrupted {
        error.message.push_str(&format!(
            "; run `ferry transfers resume {}` to try again",
            first.transfer_id
        ));
    }
    if failures.len() > 1 {
        error.message.push_str(&format!(
            " ({} more transfers failed; see `ferry transfers`)",
            failures.len() - 1
        ));
    }
    Err(error)
}
