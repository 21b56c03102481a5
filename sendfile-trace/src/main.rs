//! `sendfile-trace`: trace every sendfile(2) on this host and write one event per call.

use std::process::ExitCode;

use sendfile_trace::{
    cli::{
        Command,
        config::{self, Parsed},
        generate,
    },
    daemon,
    error::one_line,
};

fn main() -> ExitCode {
    let cli = match config::parse_from(std::env::args_os()) {
        Parsed::Cli(c) => c,
        Parsed::Clap(e) => e.exit(),
        Parsed::Config(e) => {
            eprintln!("sendfile-trace: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Generate { what }) = &cli.command {
        return match generate::generate(what, &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sendfile-trace: error: cannot write: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filters = match cli.filters() {
        Ok(f) => f,
        Err(msg) => {
            // One line, as for every other refusal; exit status 2 like clap's usage errors.
            eprintln!("sendfile-trace: error: {msg}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level())
        // aya's own loader chatter (aya, aya_obj: relocations, BTF fixups) only with -vv: -v is for the
        // tracer's and its kernel side's messages.
        .filter_module(
            "aya",
            cli.log_level().min(if cli.verbose >= 2 {
                log::LevelFilter::Trace
            } else {
                log::LevelFilter::Info
            }),
        )
        .format_timestamp(None)
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    match daemon::run(&cli, filters) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The one place an error is rendered: its chain of sources on one line.
            eprintln!("sendfile-trace: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
