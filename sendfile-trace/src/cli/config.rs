//! `--config FILE`: every command-line option as a TOML key (its long name), checked at start.
//!
//! The keys are not listed by hand: they are the clap definitions' long names, and each value
//! goes through the same parser as on the command line, so a new flag is a new key. Precedence:
//! command line, then environment, then the file, then the defaults. An unknown key or a bad
//! value stops the tracer with `FILE:LINE: reason` in one line.

use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
    path::Path,
};

use clap::{ArgAction, CommandFactory, FromArgMatches, parser::ValueSource};
use toml::{Spanned, Value};

use crate::cli::Cli;

/// Keys that are not options of a config file.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// A config problem, rendered as one line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What parsing the arguments gave.
#[derive(Debug)]
pub enum Parsed {
    /// The options, the config file merged in.
    Cli(Box<Cli>),
    /// A clap error or help/version: print it and exit with its code.
    Clap(clap::Error),
    /// The config file is wrong.
    Config(ConfigError),
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// Parses `args` (including the program name) and merges the config file they name.
pub fn parse_from<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cmd = Cli::command();
    let matches = match cmd.clone().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => return Parsed::Clap(e),
    };
    let from_cli = |m: &clap::ArgMatches| Cli::from_arg_matches(m).map_err(|e| e.with_cmd(&cmd));
    let Some(path) = matches.get_one::<std::path::PathBuf>("config").cloned() else {
        return match from_cli(&matches) {
            Ok(c) => Parsed::Cli(Box::new(c)),
            Err(e) => Parsed::Clap(e),
        };
    };
    if matches.subcommand().is_some() {
        return match from_cli(&matches) {
            Ok(c) => Parsed::Cli(Box::new(c)),
            Err(e) => Parsed::Clap(e),
        };
    }
    let extra = match config_args(&path, &cmd, &matches) {
        Ok(a) => a,
        Err(e) => return Parsed::Config(e),
    };
    let mut merged = Vec::with_capacity(args.len() + extra.len());
    merged.push(
        args.first()
            .cloned()
            .unwrap_or_else(|| "sendfile-trace".into()),
    );
    merged.extend(extra);
    merged.extend(args.into_iter().skip(1));
    match cmd
        .try_get_matches_from(merged)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => Parsed::Cli(Box::new(c)),
        Err(e) => Parsed::Config(ConfigError(format!(
            "{}: {}",
            path.display(),
            clap_reason(&e)
        ))),
    }
}

/// Reads the config file and turns the keys the command line and environment did not set into
/// arguments, each value checked by the option's own parser.
fn config_args(
    path: &Path,
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
) -> Result<Vec<OsString>, ConfigError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{file}: cannot read the config file: {e}")))?;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigError(format!("{file}:{line}: {msg}"))
    })?;
    let known: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !NOT_KEYS.contains(&l)))
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let at = |span: std::ops::Range<usize>| format!("{file}:{}", line_of(&text, span.start));
        let Some(arg) = known.iter().find(|a| a.get_long() == Some(key.get_ref())) else {
            let names: Vec<&str> = known.iter().filter_map(|a| a.get_long()).collect();
            return Err(ConfigError(format!(
                "{}: unknown key `{}` (keys are the long option names: {})",
                at(key.span()),
                key.get_ref(),
                names.join(", ")
            )));
        };
        let long = arg.get_long().expect("filtered on long");
        let bad = |reason: String| ConfigError(format!("{}: {long}: {reason}", at(value.span())));
        let set_elsewhere = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        let flag = format!("--{long}");
        let mut args = Vec::new();
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value.get_ref() {
                Value::Boolean(true) => args.push(OsString::from(&flag)),
                Value::Boolean(false) => {}
                other => return Err(bad(format!("expected true or false, got {}", kind(other)))),
            },
            ArgAction::Count => match value.get_ref() {
                Value::Integer(n) if (0..=8).contains(n) => {
                    args.extend((0..*n).map(|_| OsString::from(&flag)));
                }
                other => {
                    return Err(bad(format!(
                        "expected a count from 0 to 8, got {}",
                        kind(other)
                    )));
                }
            },
            action => {
                let values: Vec<&Value> = match value.get_ref() {
                    Value::Array(items) if matches!(action, ArgAction::Append) => {
                        items.iter().collect()
                    }
                    Value::Array(_) => {
                        return Err(bad("takes one value, not a list".into()));
                    }
                    v => vec![v],
                };
                for v in values {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Integer(n) => n.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Boolean(b) => b.to_string(),
                        other => return Err(bad(format!("expected a value, got {}", kind(other)))),
                    };
                    let one = OsString::from(format!("{flag}={s}"));
                    // The option's own parser, on this value alone.
                    cmd.clone()
                        .try_get_matches_from([OsStr::new("sendfile-trace"), &one])
                        .map_err(|e| bad(clap_reason(&e)))?;
                    args.push(one);
                }
            }
        }
        if !set_elsewhere {
            out.extend(args);
        }
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::{cli::HookChoice, format::Format, output::sink::SinkSpec};

    fn with_config(toml: &str, args: &[&str]) -> (tempfile::NamedTempFile, Parsed) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        let mut argv = vec!["sendfile-trace", "--config", &path];
        argv.extend_from_slice(args);
        let p = parse_from(argv);
        (f, p)
    }

    fn cli(p: Parsed) -> Cli {
        match p {
            Parsed::Cli(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    fn err(p: Parsed) -> String {
        match p {
            Parsed::Config(e) => e.0,
            Parsed::Clap(e) => panic!("clap: {e}"),
            Parsed::Cli(c) => panic!("accepted: {c:?}"),
        }
    }

    #[test]
    fn every_option_is_a_key_and_the_command_line_wins() {
        let toml = r#"
hook = "tracepoint"
output = ["-", "syslog+tcp://127.0.0.1:514"]
format = "ecs"
ring-buffer-size = "8M"
rotate-size = "100M"
rotate-keep = 3
queue-size = 1000
syslog-facility = "local3"
metrics = "127.0.0.1:9469"
verbose = 2
quiet = false
"#;
        let (_f, p) = with_config(toml, &[]);
        let c = cli(p);
        assert_eq!(c.hook, HookChoice::Tracepoint);
        assert_eq!(
            c.output,
            vec![
                SinkSpec::Stdout,
                SinkSpec::SyslogTcp("127.0.0.1:514".into())
            ]
        );
        assert_eq!(c.format, Some(Format::Ecs));
        assert_eq!(c.ring_buffer_size, 8 << 20);
        assert_eq!(c.rotate_size, 100 << 20);
        assert_eq!(c.rotate_keep, 3);
        assert_eq!(c.queue_size, 1000);
        assert_eq!(c.syslog_facility.number(), 19);
        assert_eq!(c.metrics, Some("127.0.0.1:9469".parse().unwrap()));
        assert_eq!(c.verbose, 2);

        let (_f, p) = with_config(toml, &["--format", "ocsf", "--output", "/tmp/x", "-q"]);
        let c = cli(p);
        assert_eq!(c.format, Some(Format::Ocsf));
        assert_eq!(c.output, vec![SinkSpec::File("/tmp/x".into())]);
        assert!(c.quiet);
        assert_eq!(c.rotate_keep, 3);
    }

    #[test]
    fn every_long_option_is_accepted_as_a_key() {
        // A flag added to the CLI is a config key without further work: check that every long
        // option is recognised (values may be rejected, but never as unknown keys).
        for a in Cli::command().get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if NOT_KEYS.contains(&long) {
                continue;
            }
            let (_f, p) = with_config(&format!("{long} = \"x\"\n"), &[]);
            if let Parsed::Config(e) = p {
                assert!(!e.0.contains("unknown key"), "{long}: {e}");
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_reason() {
        let (f, p) = with_config("hook = \"auto\"\n\nring-bufer-size = \"4M\"\n", &[]);
        let e = err(p);
        let file = f.path().display().to_string();
        assert!(
            e.starts_with(&format!("{file}:3: unknown key `ring-bufer-size`")),
            "{e}"
        );
        assert!(!e.contains('\n'));

        let (f, p) = with_config("# c\nring-buffer-size = \"3000\"\n", &[]);
        let e = err(p);
        assert!(
            e.starts_with(&format!("{}:2: ring-buffer-size: ", f.path().display())),
            "{e}"
        );
        assert!(e.contains("power of two"), "{e}");

        let (_f, p) = with_config("hook = \"kprob\"\n", &[]);
        let e = err(p);
        assert!(e.contains(":1: hook: invalid value 'kprob'"), "{e}");

        let (_f, p) = with_config("format = [\"ecs\"]\n", &[]);
        assert!(err(p).contains(":1: format: takes one value, not a list"));

        let (_f, p) = with_config("quiet = \"yes\"\n", &[]);
        assert!(err(p).contains(":1: quiet: expected true or false, got a string"));

        let (_f, p) = with_config("output = [\"syslog+tcp://nohost\"]\n", &[]);
        assert!(err(p).contains("syslog+tcp://HOST:PORT"));

        let (_f, p) = with_config("hook = \"auto\"\nhook = \"kprobe\"\n", &[]);
        let e = err(p);
        assert!(e.contains(":2: "), "{e}");
        assert!(!e.contains('\n'), "{e}");

        let p = parse_from(["sendfile-trace", "--config", "/nonexistent/x.toml"]);
        assert!(err(p).contains("/nonexistent/x.toml: cannot read the config file"));
    }
}
