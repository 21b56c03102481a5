//! `cargo xtask`: the project's build, run, test and VM commands.

mod bench;
mod compile;
mod dist;
mod matrix;
mod run;
mod test;
mod tools;
mod vm;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Parser)]
#[command(about = "Build, run and test sendfile-trace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The xtask subcommands.
#[derive(Subcommand)]
enum Command {
    /// Install what is missing, build everything, trace the bundled workload, print its events.
    Run,
    /// Install what is missing and run the whole test suite.
    Test(test::TestArgs),
    /// Build the release binaries (target/release/sendfile-trace, sendfile-workload).
    Build,
    /// Build only the BPF object (for this host's architecture unless `--arch` says otherwise).
    BuildEbpf {
        /// Architecture the object is for: x86_64 or aarch64.
        #[arg(long, default_value = compile::HOST_ARCH, value_parser = clap::builder::PossibleValuesParser::new(compile::ARCHES))]
        arch: String,
    },
    /// Boot a Debian kernel under QEMU and run a command inside it.
    Vm(vm::VmArgs),
    /// Static binaries, tarballs, .deb packages and the OCI image, in target/dist/.
    Dist(dist::DistArgs),
    /// Measure what tracing costs per sendfile, beside the floor, bpftrace and strace.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run => run::run(),
        Command::Test(args) => test::test(args),
        Command::Build => tools::ensure_all()
            .and_then(|()| compile::build_host())
            .map(|()| 0),
        Command::BuildEbpf { arch } => tools::ensure_all()
            .and_then(|()| compile::build_ebpf_for(&arch))
            .map(|p| {
                eprintln!("xtask: BPF object at {}", p.display());
                0
            }),
        Command::Vm(args) => vm::run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Dist(args) => dist::dist(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}
