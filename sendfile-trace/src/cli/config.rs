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
    let text = read_regular(path)
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
                let number = takes_number(arg);
                let expected = if number {
                    "a number or a string"
                } else {
                    "a string"
                };
                for v in values {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Integer(n) if number => n.to_string(),
                        other => {
                            return Err(bad(format!(
                                "expected {expected}{}, got {} ({other})",
                                if matches!(action, ArgAction::Append) {
                                    " or a list of them"
                                } else {
                                    ""
                                },
                                kind(other)
                            )));
                        }
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

/// The largest config file read: every option written out fits in a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads `path` if it is a regular file (a symlink to one is fine) of at most
/// [`MAX_CONFIG_BYTES`]. Opened non-blocking, so that a FIFO is refused instead of waiting for a
/// writer, and checked on the open descriptor, so that what is read is what was checked: a
/// device such as `/dev/zero` would otherwise be read without end.
fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        let what = match meta.file_type() {
            t if t.is_dir() => "a directory",
            t if std::os::unix::fs::FileTypeExt::is_fifo(&t) => "a FIFO",
            t if std::os::unix::fs::FileTypeExt::is_char_device(&t) => "a character device",
            t if std::os::unix::fs::FileTypeExt::is_block_device(&t) => "a block device",
            t if std::os::unix::fs::FileTypeExt::is_socket(&t) => "a socket",
            _ => "not a regular file",
        };
        return Err(std::io::Error::other(format!(
            "it is {what}: give a regular TOML file"
        )));
    }
    let too_big = || {
        std::io::Error::other(format!(
            "larger than {} KiB: a config file holds a few options",
            MAX_CONFIG_BYTES >> 10
        ))
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // The size may change after the check: read one byte past the limit at most.
    f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::other(format!("not UTF-8 text ({e})")))
}

/// Whether an option takes a number, so that a TOML integer is a value for it; every option
/// takes a string (`"4M"`, a path, a name).
fn takes_number(arg: &clap::Arg) -> bool {
    use std::any::TypeId;
    let id = arg.get_value_parser().type_id();
    // `--cgroup` also takes a cgroup id.
    arg.get_long() == Some("cgroup")
        || [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
        ]
        .into_iter()
        .any(|t| id == t)
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
max-events-per-process = "off"
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
        assert_eq!(c.max_events_per_process, crate::cli::RateLimit(None));
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

    #[test]
    fn values_of_the_wrong_type_are_refused_not_converted() {
        // `output = 5` once wrote to a file named `5`.
        let (f, p) = with_config("# sinks\noutput = 5\n", &[]);
        let e = err(p);
        assert_eq!(
            e,
            format!(
                "{}:2: output: expected a string or a list of them, got an integer (5)",
                f.path().display()
            )
        );
        let (_f, p) = with_config("output = [\"-\", 5]\n", &[]);
        assert!(err(p).contains(":1: output: expected a string"));
        let (_f, p) = with_config("format = 1.5\n", &[]);
        assert!(err(p).contains(":1: format: expected a string, got a float (1.5)"));
        let (_f, p) = with_config("hook = true\n", &[]);
        assert!(err(p).contains(":1: hook: expected a string, got a boolean (true)"));
        let (_f, p) = with_config("queue-size = 2.0\n", &[]);
        assert!(err(p).contains(":1: queue-size: expected a number or a string, got a float"));
        // Numbers where numbers belong, as integers or strings.
        let (_f, p) = with_config("queue-size = 100\nrotate-size = \"1M\"\ncgroup = 1\n", &[]);
        let c = match p {
            Parsed::Cli(c) => c,
            Parsed::Config(e) => panic!("{e}"),
            Parsed::Clap(e) => panic!("{e}"),
        };
        assert_eq!((c.queue_size, c.rotate_size), (100, 1 << 20));
        assert_eq!(c.cgroups, ["1"]);
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let read = |path: &Path| {
            err(parse_from([
                "sendfile-trace".as_ref(),
                "--config".as_ref(),
                path.as_os_str(),
            ]))
        };
        // A symlink to an endless device: refused before reading.
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read(&zero);
        assert!(
            e.contains("it is a character device: give a regular TOML file"),
            "{e}"
        );
        // A FIFO with no writer: refused at once instead of waiting for one.
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t = std::time::Instant::now();
        let e = read(&fifo);
        assert!(e.contains("it is a FIFO"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let e = read(dir.path());
        assert!(e.contains("it is a directory"), "{e}");
        // Too big.
        let big = dir.path().join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let e = read(&big);
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        // A symlink to a regular file is read.
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "queue-size = 7\n").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        match parse_from([
            "sendfile-trace".as_ref(),
            "--config".as_ref(),
            link.as_os_str(),
        ]) {
            Parsed::Cli(c) => assert_eq!(c.queue_size, 7),
            Parsed::Config(e) => panic!("{e}"),
            Parsed::Clap(e) => panic!("{e}"),
        }
    }
}
