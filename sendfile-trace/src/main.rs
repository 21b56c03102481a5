//! `sendfile-trace`: trace every sendfile(2) on this host and write one JSON event per call.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sendfile_trace::{cli::Cli, daemon};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filters = match cli.filters() {
        Ok(f) => f,
        Err(msg) => Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit(),
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level())
        .format_timestamp(None)
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    match daemon::run(&cli, filters) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sendfile-trace: error: {e}");
            ExitCode::FAILURE
        }
    }
}
