//! `ferry`: the command-line tool over `ferry-core`.
//!
//! Results go to stdout (one JSON document per command with `--json`, or
//! NDJSON events for transfers); status messages, progress bars, logs and
//! errors go to stderr. The exit codes are listed in `cli::EXIT_CODES_HELP`.

mod activity;
mod cli;
mod commands;
mod context;
mod exit;
mod follow;
mod output;
mod progress;
mod sandbox;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;
use crate::exit::{CliError, Exit};
use crate::output::Output;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    init_logging(cli.verbose);
    let output = Output::new(cli.json);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            output.error(&CliError::failure(format!(
                "failed to start the async runtime: {error}"
            )));
            return Exit::Failure.into();
        }
    };

    match runtime.block_on(commands::run(cli, output)) {
        Ok(()) => Exit::Success.into(),
        Err(error) => {
            output.error(&error);
            error.exit.into()
        }
    }
}

/// Prints a command line that clap rejected, or the help and version text
/// that clap reports the same way, and returns its exit code (2 for a usage
/// error). With `--json` anywhere on the command line, a usage error also
/// writes the `{"error": …}` document on stdout that other failures write.
fn usage_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    let code = error.exit_code();
    let json_requested = std::env::args_os().skip(1).any(|arg| arg == "--json");
    if error.use_stderr() && json_requested {
        let message = error.kind().to_string();
        let rendered = error.render().to_string();
        let detail = rendered
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("error: "))
            .unwrap_or(&message);
        Output::new(true).json_result(&serde_json::json!({
            "error": {
                "message": detail,
                "exit_code": Exit::Usage.code(),
                "kind": Exit::Usage.name(),
            }
        }));
    }
    ExitCode::from(u8::try_from(code).unwrap_or(Exit::Usage.code()))
}

/// Returns whether an event is the engine's WARN line of one retry, which
/// names the attempt and the delay before the next one.
fn is_retry_event(metadata: &tracing::Metadata<'_>) -> bool {
    let fields = metadata.fields();
    *metadata.level() == tracing::Level::WARN
        && fields.field("attempt").is_some()
        && fields.field("delay_ms").is_some()
}

/// Sends `tracing` output to stderr: `warn` by default, `info` with `-v`,
/// `debug` with `-vv` and more. `RUST_LOG`, when set, replaces the default.
///
/// At the default verbosity ERROR events are left out, because every
/// failure that ends a command reaches the user once, as the `error: …`
/// line, and the engine's ERROR event for the same failure would repeat it.
/// `-v` and `RUST_LOG` show them. For the same reason the WARN line of each
/// retry is left out while a transfer waits for the network: `follow`
/// prints one line when the wait starts and one when it ends.
fn init_logging(verbose: u8) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let from_env = EnvFilter::try_from_default_env().ok();
    let hide_errors = verbose == 0 && from_env.is_none();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(move |metadata| {
            !(hide_errors && *metadata.level() == tracing::Level::ERROR)
        }))
        // A dynamic filter, asked at every event, because whether a
        // transfer waits for the network changes while the command runs.
        .with_filter(tracing_subscriber::filter::DynFilterFn::new(
            move |metadata, _| {
                !(hide_errors && is_retry_event(metadata) && follow::is_waiting_for_network())
            },
        ));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
