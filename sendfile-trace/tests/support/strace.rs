//! A parser of `strace -f [-y|-yy] -e trace=sendfile -o FILE` logs: the independent oracle of
//! the nginx test and of the workload's strace test.
//!
//! strace 6.x prints a call as
//! `PID sendfile(OUT, IN, OFFSET, COUNT) = RET [ERRNO (text)]`, where with `-yy` a descriptor is
//! followed by `<...>`: a path (`</tmp/a\n\"b\376>`, non-printables as short octal, `<` and `>`
//! escaped too), a path plus a device (`</dev/null<char 1:3>>`), `(deleted)` after the brackets
//! for an unlinked file, a socket (`<TCP:[127.0.0.1:80->127.0.0.1:5678]>`,
//! `<TCPv6:[[::1]:80->[::1]:5678]>`, `<UNIX-STREAM:[1->2]>`) or a pipe (`<pipe:[123]>`). The
//! offset is `NULL`, an address (unreadable pointer), `[N]` (unchanged) or `[N] => [M]`. A call
//! interrupted by another thread's output is split into `<unfinished ...>` and
//! `<... sendfile resumed>` lines, which [`parse_log`] joins first.

use std::{ffi::OsStr, net::SocketAddr, path::Path, process::Command};

/// The oracle's command line: `STRACE -f -qq -yy -e trace=sendfile -e signal=none -o LOG`,
/// ready for the traced program and its arguments.
pub fn command(strace: impl AsRef<OsStr>, log: &Path) -> Command {
    let mut c = Command::new(strace);
    c.args([
        "-f",
        "-qq",
        "-yy",
        "-e",
        "trace=sendfile",
        "-e",
        "signal=none",
        "-o",
    ])
    .arg(log);
    c
}

/// One sendfile call as strace printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The caller's thread id (strace -f prefix; 0 without one).
    pub pid: i64,
    /// `sendfile` or `sendfile64`.
    pub name: String,
    /// out_fd.
    pub out_fd: Fd,
    /// in_fd.
    pub in_fd: Fd,
    /// The offset argument.
    pub offset: Offset,
    /// count.
    pub count: u64,
    /// The result as strace shows it: bytes, or -1 with `errno`.
    pub ret: i64,
    /// Symbolic errno of a failed call.
    pub errno: Option<String>,
}

/// A descriptor argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fd {
    /// Its number.
    pub num: i64,
    /// What `-y`/`-yy` said it is (None: nothing printed, e.g. a closed descriptor).
    pub desc: Option<Desc>,
}

/// What a descriptor refers to, per strace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desc {
    /// A path, unescaped to its exact bytes.
    Path {
        /// The path bytes.
        path: Vec<u8>,
        /// `-yy` device suffix such as `char 1:3`.
        device: Option<String>,
        /// `(deleted)` followed.
        deleted: bool,
    },
    /// A TCP socket with both ends.
    Tcp {
        /// TCPv6 rather than TCP.
        v6: bool,
        /// This end.
        local: SocketAddr,
        /// The peer.
        remote: SocketAddr,
    },
    /// A socket strace could not ask the kernel about (no sock_diag, e.g. `inet_diag` not
    /// loaded): `TCP:[INODE]`.
    SocketInode {
        /// `TCP`, `TCPv6`, `UDP`, ...
        kind: String,
        /// Its inode.
        inode: u64,
    },
    /// A pipe and its inode.
    Pipe(u64),
    /// An anonymous inode by name (`[eventfd]`).
    AnonInode(String),
    /// Anything else, as printed (unescaped).
    Other(String),
}

/// The offset argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offset {
    /// NULL.
    Null,
    /// A pointer strace could not read, by address.
    Addr(u64),
    /// A readable offset: before and after the call.
    Value(i64, i64),
}

/// Parses a whole log: every line that shows a sendfile call must parse (an `Err` names the
/// line); other lines (exits, signals) are skipped. Split calls are joined first.
pub fn parse_log(text: &str) -> Result<Vec<Call>, String> {
    let mut pending: Vec<(String, String)> = Vec::new(); // (pid, first half)
    let mut out = Vec::new();
    for line in text.lines() {
        let (pid, rest) = split_pid(line);
        let full = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            if head.contains("sendfile") {
                pending.push((pid.to_owned(), head.to_owned()));
            }
            continue;
        } else if let Some(tail) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = tail.split_once(" resumed>") else {
                return Err(format!("cannot parse resumed line {line:?}"));
            };
            if !name.starts_with("sendfile") {
                continue;
            }
            let Some(i) = pending.iter().position(|(p, _)| p == pid) else {
                return Err(format!("resumed without an unfinished call: {line:?}"));
            };
            let (_, head) = pending.remove(i);
            format!("{head}{tail}")
        } else if rest.starts_with("sendfile(") || rest.starts_with("sendfile64(") {
            rest.to_owned()
        } else {
            continue;
        };
        let call = parse_call(pid, &full).ok_or_else(|| format!("cannot parse {line:?}"))?;
        out.push(call);
    }
    if let Some((pid, head)) = pending.first() {
        return Err(format!("unfinished call never resumed: {pid} {head}"));
    }
    Ok(out)
}

/// Splits `"1234 rest"` or `"[pid 1234] rest"`; no prefix gives pid "".
fn split_pid(line: &str) -> (&str, &str) {
    if let Some(r) = line.strip_prefix("[pid ")
        && let Some((pid, rest)) = r.split_once("] ")
    {
        return (pid.trim(), rest.trim_start());
    }
    match line.split_once(' ') {
        Some((pid, rest)) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
            (pid, rest.trim_start())
        }
        _ => ("", line),
    }
}

/// A cursor over one call's text.
struct Cur<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn eat(&mut self, lit: &str) -> Option<()> {
        self.s[self.i..]
            .starts_with(lit.as_bytes())
            .then(|| self.i += lit.len())
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn int(&mut self) -> Option<i64> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    /// The raw text inside `<...>` (nested brackets kept, escapes kept), cursor after the `>`.
    /// A path (starting with `/`) has its own `<` and `>` escaped, so the first unescaped `>`
    /// at depth 0 closes it; anything else is `KIND:[...]`, whose `]>` closes it (the `->` of a
    /// socket's endpoints is not a bracket).
    fn bracketed(&mut self) -> Option<&'a [u8]> {
        self.eat("<")?;
        let start = self.i;
        if self.peek() != Some(b'/') {
            let len = self.s[start..].windows(2).position(|w| w == b"]>")?;
            self.i = start + len + 2;
            return Some(&self.s[start..start + len + 1]);
        }
        let mut depth = 0;
        while let Some(b) = self.peek() {
            match b {
                b'\\' => self.i += 1,
                b'<' => depth += 1,
                b'>' if depth == 0 => {
                    let inner = &self.s[start..self.i];
                    self.i += 1;
                    return Some(inner);
                }
                b'>' => depth -= 1,
                _ => {}
            }
            self.i += 1;
        }
        None
    }

    fn fd(&mut self) -> Option<Fd> {
        let num = self.int()?;
        let desc = if self.peek() == Some(b'<') {
            let raw = self.bracketed()?;
            let deleted = self.eat("(deleted)").is_some();
            Some(describe(raw, deleted)?)
        } else {
            None
        };
        Some(Fd { num, desc })
    }
}

/// Interprets the inside of a descriptor's `<...>`.
fn describe(raw: &[u8], deleted: bool) -> Option<Desc> {
    let text = String::from_utf8_lossy(raw);
    if let Some((kind, r)) = text.split_once(":[")
        && !kind.starts_with('/')
        && let Some(Ok(inode)) = r.strip_suffix(']').map(str::parse::<u64>)
        && kind != "pipe"
    {
        return Some(Desc::SocketInode {
            kind: kind.to_owned(),
            inode,
        });
    }
    for (prefix, v6) in [("TCP:[", false), ("TCPv6:[", true)] {
        if let Some(r) = text.strip_prefix(prefix) {
            let r = r.strip_suffix(']')?;
            let (local, remote) = r.split_once("->")?;
            return Some(Desc::Tcp {
                v6,
                local: local.parse().ok()?,
                remote: remote.parse().ok()?,
            });
        }
    }
    if let Some(name) = text.strip_prefix("anon_inode:") {
        return Some(Desc::AnonInode(name.to_owned()));
    }
    if let Some(r) = text.strip_prefix("pipe:[") {
        return Some(Desc::Pipe(r.strip_suffix(']')?.parse().ok()?));
    }
    if !raw.starts_with(b"/") {
        return Some(Desc::Other(
            String::from_utf8_lossy(&unescape(raw)?).into_owned(),
        ));
    }
    // A path, maybe followed by an unescaped `<char M:N>` / `<block M:N>`.
    let (path, device) = match top_level_lt(raw) {
        Some(i) => {
            let dev = raw[i + 1..].strip_suffix(b">")?;
            (&raw[..i], Some(String::from_utf8_lossy(dev).into_owned()))
        }
        None => (raw, None),
    };
    Some(Desc::Path {
        path: unescape(path)?,
        device,
        deleted,
    })
}

/// Index of the first `<` that is not escaped.
fn top_level_lt(raw: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 2,
            b'<' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Undoes strace's string escapes: `\\ \" \n \t \r \f \v`, `\xHH`, and 1–3 digit octal.
pub fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = *s.get(i + 1)?;
        i += 2;
        match c {
            b'\\' | b'"' | b'\'' => out.push(c),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'x' => {
                let h = std::str::from_utf8(s.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn parse_call(pid: &str, text: &str) -> Option<Call> {
    let mut c = Cur {
        s: text.as_bytes(),
        i: 0,
    };
    let name = if c.eat("sendfile64(").is_some() {
        "sendfile64"
    } else {
        c.eat("sendfile(")?;
        "sendfile"
    };
    let out_fd = c.fd()?;
    c.eat(", ")?;
    let in_fd = c.fd()?;
    c.eat(", ")?;
    let offset = if c.eat("NULL").is_some() {
        Offset::Null
    } else if c.eat("0x").is_some() {
        let start = c.i;
        while c.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
            c.i += 1;
        }
        Offset::Addr(u64::from_str_radix(std::str::from_utf8(&c.s[start..c.i]).ok()?, 16).ok()?)
    } else {
        c.eat("[")?;
        let before = c.int()?;
        c.eat("]")?;
        let after = if c.eat(" => [").is_some() {
            let a = c.int()?;
            c.eat("]")?;
            a
        } else {
            before
        };
        Offset::Value(before, after)
    };
    c.eat(", ")?;
    let count = u64::try_from(c.int()?).ok()?;
    c.eat(")")?;
    while c.peek() == Some(b' ') {
        c.i += 1;
    }
    c.eat("= ")?;
    let ret = c.int()?;
    let rest = std::str::from_utf8(&c.s[c.i..]).ok()?.trim();
    let errno = if ret < 0 {
        Some(rest.split_whitespace().next()?.to_owned())
    } else {
        None
    };
    Some(Call {
        pid: if pid.is_empty() { 0 } else { pid.parse().ok()? },
        name: name.to_owned(),
        out_fd,
        in_fd,
        offset,
        count,
        ret,
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Call {
        let calls = parse_log(line).unwrap();
        assert_eq!(calls.len(), 1, "{line}");
        calls.into_iter().next().unwrap()
    }

    #[test]
    fn strace_paths_with_hostile_bytes_are_unescaped_exactly() {
        let c = one(
            r#"12555 sendfile(4</tmp/w/out-hostile_path.bin>, 3</tmp/w/dir\n\"q\\\376 \74x\76/in\n\"hostile_path\\\377.bin>, [0] => [100], 100) = 100"#,
        );
        assert_eq!(c.pid, 12555);
        assert_eq!(c.out_fd.num, 4);
        assert_eq!(
            c.in_fd.desc,
            Some(Desc::Path {
                path: b"/tmp/w/dir\n\"q\\\xfe <x>/in\n\"hostile_path\\\xff.bin".to_vec(),
                device: None,
                deleted: false
            })
        );
        assert_eq!(c.offset, Offset::Value(0, 100));
        assert_eq!((c.count, c.ret, c.errno), (100, 100, None));
        // Short octal before a non-digit, full three digits before a digit.
        assert_eq!(unescape(br"\0\1010\12").unwrap(), b"\0\x410\n");
        assert_eq!(unescape(br"\x41\t").unwrap(), b"A\t");
        assert!(unescape(br"\q").is_none());
    }

    #[test]
    fn strace_sockets_devices_pipes_and_deleted_files() {
        let c = one(
            "77 sendfile(12<TCP:[127.0.0.1:80->127.0.0.1:5678]>, 13</srv/a b.bin>, [0] => [2097152], 2097152) = 2097152",
        );
        assert_eq!(
            c.out_fd.desc,
            Some(Desc::Tcp {
                v6: false,
                local: "127.0.0.1:80".parse().unwrap(),
                remote: "127.0.0.1:5678".parse().unwrap()
            })
        );
        let c = one("77 sendfile(12<TCPv6:[[::1]:80->[::1]:5678]>, 13</x>, NULL, 10) = 10");
        assert_eq!(
            c.out_fd.desc,
            Some(Desc::Tcp {
                v6: true,
                local: "[::1]:80".parse().unwrap(),
                remote: "[::1]:5678".parse().unwrap()
            })
        );
        assert_eq!(c.offset, Offset::Null);
        let c = one("5 sendfile(4</dev/null<char 1:3>>, 3</d/f.bin>(deleted), [5], 0) = 0");
        assert_eq!(
            c.out_fd.desc,
            Some(Desc::Path {
                path: b"/dev/null".to_vec(),
                device: Some("char 1:3".into()),
                deleted: false
            })
        );
        assert!(matches!(
            c.in_fd.desc,
            Some(Desc::Path { deleted: true, .. })
        ));
        assert_eq!(c.offset, Offset::Value(5, 5));
        let c = one(
            "5 sendfile(5<pipe:[120835]>, 3<UNIX-STREAM:[1->2]>, [1024] => [4096], 8192) = 3072",
        );
        assert_eq!(c.out_fd.desc, Some(Desc::Pipe(120835)));
        assert_eq!(c.in_fd.desc, Some(Desc::Other("UNIX-STREAM:[1->2]".into())));
        let c = one(
            "sendfile(4<anon_inode:[eventfd]>, 3</i>, [0], 100) = -1 EINVAL (Invalid argument)",
        );
        assert_eq!(c.out_fd.desc, Some(Desc::AnonInode("[eventfd]".into())));
    }

    #[test]
    fn strace_errors_bad_fds_addresses_and_split_calls() {
        let c = one("9 sendfile(-1, 3</i>, 0x7f1e17311000, 100)        = -1 EFAULT (Bad address)");
        assert_eq!(
            c.out_fd,
            Fd {
                num: -1,
                desc: None
            }
        );
        assert_eq!(c.offset, Offset::Addr(0x7f1e17311000));
        assert_eq!((c.ret, c.errno.as_deref()), (-1, Some("EFAULT")));
        let log = "10 sendfile(4</o>, 3</i>, NULL, 4096 <unfinished ...>\n\
                   11 +++ exited with 0 +++\n\
                   10 <... sendfile resumed>) = -1 EAGAIN (Resource temporarily unavailable)\n\
                   [pid 12] sendfile64(1, 2, [7] => [9], 2) = 2\n";
        let calls = parse_log(log).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].errno.as_deref(), Some("EAGAIN"));
        assert_eq!(calls[0].count, 4096);
        assert_eq!((calls[1].pid, calls[1].name.as_str()), (12, "sendfile64"));
        assert!(parse_log("10 sendfile(4</o>, 3</i>, NULL").is_err());
        assert!(parse_log("10 sendfile(4, 3, NULL, 1 <unfinished ...>").is_err());
    }
}
