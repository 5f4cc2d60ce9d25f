//! Dispatch of parsed commands to their implementations.

mod account;
mod demo;
mod directory;
mod log;
mod study;
mod transfer;

use crate::cli::{Cli, Command};
use crate::exit::CliResult;
use crate::output::Output;

/// Runs one parsed command line.
pub async fn run(cli: Cli, output: Output) -> CliResult<()> {
    let profile = cli.profile.as_deref();
    match cli.command {
        Command::Login(args) => account::login(profile, args, output).await,
        Command::Logout(args) => account::logout(profile, args, output).await,
        Command::Whoami => account::whoami(profile, output),
        Command::Profiles { action } => account::profiles(action, output),
        Command::Documents { patient } => directory::documents(profile, patient, output).await,
        Command::Patients { name } => directory::patients(profile, name, output).await,
        Command::Scan(args) => study::scan(profile, args, output).await,
        Command::Upload(args) => transfer::upload(profile, args, output).await,
        Command::Download(args) => transfer::download(profile, args, output).await,
        Command::Transfers { action } => transfer::transfers(profile, action, output).await,
        Command::Resume { rate, offline } => transfer::resume(profile, rate, offline, output).await,
        Command::Demo(args) => demo::demo(args, output).await,
        Command::Log { action } => log::run(profile, action, output).await,
    }
}
