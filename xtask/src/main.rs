//! `cargo xtask`: the project's build, run, test, bench and VM commands.

mod vm;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Parser)]
#[command(about = "Build, run, test and benchmark sendfile-trace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The xtask subcommands.
#[derive(Subcommand)]
enum Command {
    /// Boot a Debian kernel under QEMU and run a command inside it.
    Vm(vm::VmArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vm(args) => vm::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}
