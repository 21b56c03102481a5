//! Property tests of the decoder and every encoder, on records built from arbitrary bytes: any
//! comm, path and socket name gives one line per format, valid JSON where the format is JSON,
//! the exact bytes back (from `...Hex` where they are not UTF-8, from the text form's escapes),
//! and a text form that parses back; arbitrary and truncated ring records never panic and are
//! all accounted for. A parser of the text form is written here, apart from the encoder.

use std::time::Instant;

use proptest::prelude::*;
use sendfile_trace::{
    event::{
        Containers, Enricher,
        join::{Join, Joined},
    },
    format::{AsRecord, Format},
    kernel::system::WallClock,
};
use sendfile_trace_common::{
    EntryRecord, FdRecord, Hook, Seg, SendfileRecord, encode_path, entry_status, fd_flags, fd_kind,
    flags, kind,
};
use serde_json::Value;

const FORMATS: [Format; 4] = [Format::Tracee, Format::Ecs, Format::Ocsf, Format::Text];

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: plain #[repr(C)] records without implicit padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// What a generated call holds.
#[derive(Clone, Debug)]
struct Call {
    comm: [u8; 16],
    /// Path components (no `/`, no NUL, 1..=255 bytes, as the kernel's names).
    components: Vec<Vec<u8>>,
    truncated: bool,
    deleted: bool,
    /// Raw `sun_path` bytes of the peer (NULs allowed; a leading NUL is abstract).
    peer: Vec<u8>,
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..40,
    )
}

fn call() -> impl Strategy<Value = Call> {
    (
        any::<[u8; 16]>(),
        prop::collection::vec(component(), 1..6),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 1..108),
    )
        .prop_map(|(comm, components, truncated, deleted, peer)| Call {
            comm,
            components,
            truncated,
            deleted,
            peer,
        })
}

impl Call {
    fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        &self.comm[..end]
    }

    fn path(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for c in &self.components {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        p
    }

    /// The peer as the tracer names it: `@` for the abstract namespace, else up to a NUL.
    fn peer_name(&self) -> Vec<u8> {
        match self.peer.split_first() {
            Some((0, rest)) => [b"@".as_slice(), rest].concat(),
            _ => self.peer[..self
                .peer
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.peer.len())]
                .to_vec(),
        }
    }

    /// The entry and exit records the kernel side would write.
    fn records(&self) -> (Vec<u8>, Vec<u8>) {
        let pid_tgid = (4242u64 << 32) | 4243;
        let mut tail = Vec::new();
        let mut rec = EntryRecord {
            kind: kind::ENTRY,
            pid_tgid,
            start_ns: 1000,
            ..EntryRecord::default()
        };
        let mut f = 0;
        if self.truncated {
            f |= fd_flags::PATH_TRUNCATED;
        }
        if self.deleted {
            f |= fd_flags::DELETED;
        }
        rec.in_fd = FdRecord {
            kind: fd_kind::FILE,
            ino: 7,
            flags: f,
            path: encode_path(&mut tail, &self.path()),
            ..FdRecord::default()
        };
        let off = tail.len() as u16;
        tail.extend_from_slice(&self.peer);
        rec.out_fd = FdRecord {
            kind: fd_kind::SOCKET,
            family: 1,
            sock_type: 1,
            remote_path: Seg {
                off,
                len: self.peer.len() as u16,
            },
            ..FdRecord::default()
        };
        rec.exe = encode_path(&mut tail, &self.path());
        rec.tail_len = tail.len() as u16;
        let mut entry = as_bytes(&rec).to_vec();
        entry.extend_from_slice(&tail);
        let exit = SendfileRecord {
            kind: kind::EXIT,
            entry_status: entry_status::WRITTEN,
            start_ns: 1000,
            end_ns: 2000,
            pid_tgid,
            uid_gid: 0,
            cgroup_id: 1,
            offset_ptr: 0,
            offset_before: 0,
            offset_after: 0,
            count: 10,
            ret: 10,
            out_fd: 29,
            in_fd: 30,
            cpu: 0,
            flags: flags::OFFSET_BEFORE_VALID,
            syscall_nr: 40,
            hook: Hook::Tracepoint as u32,
            comm: self.comm,
        };
        (entry, as_bytes(&exit).to_vec())
    }
}

fn enricher() -> Enricher {
    Enricher {
        host_name: "host".into(),
        clock: WallClock::now(),
        containers: Containers::with_resolver(|_| None),
    }
}

/// Each format's line for the call.
fn lines(c: &Call) -> Vec<(Format, String)> {
    let (entry, exit) = c.records();
    let mut join = Join::default();
    assert!(matches!(join.push(&entry, Instant::now()), Joined::Waiting));
    let Joined::Call(r, e) = join.push(&exit, Instant::now()) else {
        panic!("no call from a well-formed pair");
    };
    let en = enricher();
    let event = en.event(&r, e.as_ref());
    FORMATS
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            f.render(event.as_record(), &mut out).unwrap();
            (
                *f,
                String::from_utf8(out).expect("every format writes UTF-8"),
            )
        })
        .collect()
}

/// The exact bytes of a JSON string field and its `...Hex` sibling.
fn exact(obj: &Value, text: &str, hex: &str) -> Vec<u8> {
    match obj.get(hex).and_then(Value::as_str) {
        Some(h) => (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect(),
        None => obj[text].as_str().unwrap().as_bytes().to_vec(),
    }
}

/// Reads a quoted string of the text form at the start of `s`: its bytes and the rest.
fn unquote(s: &str) -> (Vec<u8>, &str) {
    let body = s
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("no quote at {s:?}"));
    let b = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return (out, &body[i + 1..]),
            b'\\' => {
                i += 1;
                match b[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'\\' => out.push(b'\\'),
                    b'"' => out.push(b'"'),
                    b'x' => {
                        out.push(u8::from_str_radix(&body[i + 1..i + 3], 16).unwrap());
                        i += 2;
                    }
                    b'u' => {
                        let end = body[i..].find('}').unwrap() + i;
                        let c = char::from_u32(u32::from_str_radix(&body[i + 2..end], 16).unwrap())
                            .unwrap();
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        i = end;
                    }
                    other => panic!("unknown escape \\{} in {s:?}", other as char),
                }
            }
            other => {
                assert!(other >= 0x20 && other != 0x7f, "raw control byte in {s:?}");
                out.push(other);
            }
        }
        i += 1;
    }
    panic!("unterminated string in {s:?}")
}

/// Parses `TIME "comm"[pid/tid] sendfile(29<UNIX-STREAM:[?->"peer"]>, 30<"path" (marks)>, ...`.
fn parse_text(line: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<String>) {
    let (_time, rest) = line.split_once(' ').unwrap();
    let (comm, rest) = unquote(rest);
    let rest = rest
        .strip_prefix("[4242/4243] sendfile(29<UNIX-STREAM:[?->")
        .unwrap();
    let (peer, rest) = unquote(rest);
    let rest = rest.strip_prefix("]>, 30<").unwrap();
    let (path, rest) = unquote(rest);
    let marks = match rest.strip_prefix(" (") {
        Some(m) => {
            let (m, after) = m.split_once(')').unwrap();
            assert!(after.starts_with(">, "), "{after:?}");
            m.split(' ').map(str::to_owned).collect()
        }
        None => {
            assert!(rest.starts_with(">, "), "{rest:?}");
            Vec::new()
        }
    };
    (comm, peer, path, marks)
}

/// Characters that no output line may carry raw.
fn breaks_a_line(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_format_is_one_line_and_gives_the_exact_bytes_back(c in call()) {
        for (f, line) in lines(&c) {
            prop_assert!(!line.chars().any(breaks_a_line), "{:?}: {:?}", f, line);
            match f {
                Format::Text => {
                    let (comm, peer, path, marks) = parse_text(&line);
                    prop_assert_eq!(comm, c.comm_bytes());
                    prop_assert_eq!(peer, c.peer_name());
                    prop_assert_eq!(path, c.path());
                    let mut want = Vec::new();
                    if c.truncated { want.push("truncated".to_owned()); }
                    if c.deleted { want.push("deleted".to_owned()); }
                    prop_assert_eq!(marks, want);
                }
                _ => {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if f == Format::Tracee {
                        prop_assert_eq!(exact(&v, "processName", "processNameHex"), c.comm_bytes());
                        prop_assert_eq!(exact(&v["inFd"], "path", "pathHex"), c.path());
                        prop_assert_eq!(&v["inFd"]["truncated"], &Value::from(c.truncated));
                        prop_assert_eq!(&v["inFd"]["deleted"], &Value::from(c.deleted));
                        prop_assert_eq!(exact(&v["executable"], "path", "pathHex"), c.path());
                        prop_assert_eq!(exact(&v["outFd"]["remote"], "path", "pathHex"), c.peer_name());
                    }
                    if f == Format::Ecs {
                        let p = v["file"]["path"].as_str().unwrap();
                        // A truncated path must not pass for an absolute one.
                        prop_assert_eq!(p.starts_with('/'), !c.truncated);
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_ring_records_never_panic_and_are_all_accounted_for(
        items in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 1..20),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
        c in call(),
    ) {
        let mut join = Join::default();
        let en = enricher();
        let (entry, exit) = c.records();
        // Arbitrary bytes, the real records cut anywhere, and the real records whole.
        let mut all: Vec<Vec<u8>> = items;
        for cut in &cuts {
            all.push(entry[..cut.index(entry.len())].to_vec());
            all.push(exit[..cut.index(exit.len())].to_vec());
        }
        all.push(entry.clone());
        all.push(exit.clone());
        let (mut waiting, mut calls, mut malformed) = (0u64, 0u64, 0u64);
        for item in &all {
            match join.push(item, Instant::now()) {
                Joined::Waiting => waiting += 1,
                Joined::Call(r, e) => {
                    calls += 1;
                    for f in FORMATS {
                        let mut out = Vec::new();
                        f.render(en.event(&r, e.as_ref()).as_record(), &mut out).unwrap();
                        let s = String::from_utf8(out).unwrap();
                        prop_assert!(!s.contains('\n'));
                        if f != Format::Text {
                            serde_json::from_str::<Value>(&s).unwrap();
                        }
                    }
                }
                Joined::Malformed(_) => malformed += 1,
            }
        }
        prop_assert_eq!(waiting + calls + malformed, all.len() as u64);
        prop_assert_eq!(join.malformed, malformed);
        // The last pair is whole: it must come out as a call with its entry.
        prop_assert!(calls >= 1);
    }
}
