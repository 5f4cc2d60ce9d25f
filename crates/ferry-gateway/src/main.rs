//! `ferry-gateway`: Ferry's reference gateway.
//!
//! `ferry-gateway sandbox` starts the zero-configuration sandbox: a SMART on
//! FHIR authorization server and FHIR server on loopback, with its state in one
//! data folder. It prints its URLs on stdout and logs to stderr
//! (`RUST_LOG` sets the filter, default `info`). The `s3s` library is held
//! at `info` whatever `RUST_LOG` says, because at `debug` it logs each
//! request URI, and a presigned URL's query string is a credential.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_gateway::{AutoLogin, DEFAULT_LISTEN, SandboxConfig, SandboxUrls, start_sandbox};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "ferry-gateway", version, about = "Ferry's reference gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the sandbox: SMART authorization server and FHIR server with
    /// sandbox users and patients, on loopback only.
    Sandbox(SandboxArgs),
    /// Serve the grant API in front of an external OpenID Connect issuer
    /// and an external S3-compatible store.
    Serve(ferry_gateway::admin::ServeArgs),
    /// Edit the deny list of users, patients and objects.
    Deny(ferry_gateway::admin::DenyArgs),
}

#[derive(Debug, clap::Args)]
struct SandboxArgs {
    /// Folder for the database and the token signing key [default: the
    /// platform data folder, e.g. ~/.local/share/ferry-gateway]
    #[arg(long, env = "FERRY_GATEWAY_DATA", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Loopback address and port to listen on; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDRESS:PORT")]
    listen: SocketAddr,

    /// Sandbox only: sign in every authorization request as USER, with
    /// PATIENT as the patient context, without showing the sign-in page
    /// (e.g. dr-rivera:pat-001 or tech-okafor).
    #[arg(long, value_name = "USER[:PATIENT]")]
    auto_login: Option<AutoLogin>,

    /// Print the URLs as one JSON object on one line instead of `name: url` lines.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive("s3s=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Sandbox(args) => runtime.block_on(run_sandbox(args)),
        Command::Serve(args) => runtime.block_on(ferry_gateway::admin::run_serve(args)),
        Command::Deny(args) => ferry_gateway::admin::run_deny(args, None),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_sandbox(args: SandboxArgs) -> Result<(), String> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => directories::ProjectDirs::from("", "", "ferry-gateway")
            .map(|dirs| dirs.data_dir().to_owned())
            .ok_or("no home folder to put the data folder in; pass --data-dir or set FERRY_GATEWAY_DATA")?,
    };
    let config = SandboxConfig {
        data_dir,
        listen: args.listen,
        auto_login: args.auto_login,
    };

    let handle = start_sandbox(config).await.map_err(|error| error.to_string())?;
    print_urls(&handle.urls, args.json);
    if let (Some(grant), false) = (&handle.state.grant, args.json) {
        ferry_gateway::admin::print_store_info(&grant.store_info);
        println!("admin-token-file: {}", grant.admin_token.path().display());
    }

    shutdown_signal().await;
    tracing::info!("shutting down; finishing in-flight requests");
    handle
        .shutdown()
        .await
        .map_err(|error| format!("the server failed: {error}"))?;
    tracing::info!("stopped");
    Ok(())
}

fn print_urls(urls: &SandboxUrls, json: bool) {
    use std::io::Write as _;

    let mut stdout = std::io::stdout().lock();
    if json {
        let line = serde_json::to_string(urls).expect("URLs serialize to JSON");
        let _ = writeln!(stdout, "{line}");
    } else {
        let _ = writeln!(stdout, "issuer: {}", urls.issuer);
        let _ = writeln!(stdout, "fhir: {}", urls.fhir);
        let _ = writeln!(stdout, "smart-configuration: {}", urls.smart_configuration);
        let _ = writeln!(stdout, "jwks: {}", urls.jwks);
        let _ = writeln!(stdout, "health: {}", urls.health);
    }
    let _ = stdout.flush();
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
