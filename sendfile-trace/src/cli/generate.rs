//! Shell completions and the man page, generated from the clap definitions
//! (`sendfile-trace generate completions SHELL`, `sendfile-trace generate man`).

use std::io::{self, Write};

use clap::CommandFactory;

use crate::cli::{Cli, Generate};

/// Writes what `what` asks for to `out`.
pub fn generate(what: &Generate, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    match what {
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "sendfile-trace", out);
            Ok(())
        }
        Generate::Man => clap_mangen::Man::new(cmd).render(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_mentions_every_option() {
        let mut out = Vec::new();
        generate(&Generate::Man, &mut out).unwrap();
        let man = String::from_utf8(out).unwrap();
        assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
        for a in Cli::command().get_arguments() {
            if let Some(long) = a.get_long() {
                // roff escapes '-' as '\-'.
                let needle = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(man.contains(&needle), "--{long} missing from the man page");
            }
        }
    }

    #[test]
    fn completions_generate_for_every_shell() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            generate(&Generate::Completions { shell }, &mut out).unwrap();
            let s = String::from_utf8(out).unwrap();
            for long in [
                "--output",
                "--format",
                "--config",
                "--metrics",
                "--rotate-size",
            ] {
                let name = long.trim_start_matches('-');
                assert!(s.contains(name), "{shell:?}: {long} missing");
            }
        }
    }
}
