//! The file sink: created 0600 without following symlinks, rotated by size, reopened on SIGHUP.
//!
//! Records are written whole: a write that fails part-way (a full disk) has the torn record cut
//! back off the file, and every record of the failed batch is counted as dropped.

use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use super::*;

/// Opens `path` for appending: created mode 0600, never through a symlink (`O_NOFOLLOW`), and
/// refused unless it is a regular file (an attacker's FIFO or device is not written to).
pub fn open_log_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    // Back to blocking writes now that we know it is a regular file.
    nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
    )
    .map_err(io::Error::from)?;
    Ok(f)
}

/// Most rotated files a file output keeps (`--rotate-keep`).
pub const MAX_ROTATE_KEEP: u32 = 1000;

/// A file rotated by size and reopened on SIGHUP.
///
/// A rotation renames `FILE` to `FILE.N`, N one more than the newest rotated file, and removes
/// `FILE.(N-keep)`: two renames/removals whatever `keep` is, and a rotated file keeps its name
/// for good (the highest number is the newest).
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    batch: Batch,
    /// Bytes in the file plus those batched.
    size: u64,
    rotate_size: u64,
    keep: u32,
    /// The number the next rotated file gets.
    next: u64,
}

impl RotatingFile {
    /// Opens (or creates) the file; `FILE.N` files beyond the last `keep` are removed.
    pub fn open(path: &Path, opts: &SinkOptions) -> io::Result<RotatingFile> {
        let file = open_log_file(path)?;
        let size = file.metadata()?.size();
        let mut f = RotatingFile {
            path: path.to_owned(),
            file,
            batch: Batch::new(),
            size,
            rotate_size: opts.rotate_size,
            keep: opts.rotate_keep.min(MAX_ROTATE_KEEP),
            next: 1,
        };
        if f.rotate_size > 0 {
            let numbers = f.rotated()?;
            f.next = numbers.iter().max().map_or(1, |n| n + 1);
            for n in numbers {
                if n + u64::from(f.keep) < f.next {
                    std::fs::remove_file(f.numbered(n)).or_else(ignore_missing)?;
                }
            }
        }
        Ok(f)
    }

    fn numbered(&self, n: u64) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// The numbers of the rotated files there now (read once, at start).
    fn rotated(&self) -> io::Result<Vec<u64>> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut prefix: OsString = self.path.file_name().unwrap_or_default().to_owned();
        prefix.push(".");
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(tail) = name.as_bytes().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            if !tail.is_empty()
                && tail.iter().all(u8::is_ascii_digit)
                && let Some(n) = std::str::from_utf8(tail).ok().and_then(|t| t.parse().ok())
            {
                numbers.push(n);
            }
        }
        Ok(numbers)
    }

    /// Moves `FILE` to the next number, removes the one that falls out, opens a new `FILE`.
    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            // rename(2) never follows a symlink in its last component.
            std::fs::rename(&self.path, self.numbered(self.next)).or_else(ignore_missing)?;
            if let Some(old) = self.next.checked_sub(u64::from(self.keep)) {
                std::fs::remove_file(self.numbered(old)).or_else(ignore_missing)?;
            }
            self.next += 1;
        }
        self.reopen_file()
    }

    fn reopen_file(&mut self) -> io::Result<()> {
        self.file = open_log_file(&self.path)?;
        self.size = self.file.metadata()?.size() + self.batch.bytes() as u64;
        Ok(())
    }

    /// Writes the batch; a record torn by a failure is cut back off the file.
    fn write_batch(&mut self) -> Result<(), Failure> {
        self.batch.write_to(&mut self.file).map_err(|t| {
            if t.torn_bytes > 0 {
                take_back(self.file.as_fd(), t.torn_bytes, true);
            }
            // What is in the file now (the failed records are not).
            self.size = self.file.metadata().map_or(self.size, |m| m.size());
            t.into()
        })
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Sink for RotatingFile {
    fn write(&mut self, line: &Line) -> Result<(), Failure> {
        let len = line.bytes.len() as u64 + 1;
        let mut result = Ok(());
        if self.rotate_size > 0 && self.size > 0 && self.size + len > self.rotate_size {
            result = self.write_batch();
            // logrotate's copytruncate may have emptied the file behind our back: ask first.
            let rotated = self.file.metadata().and_then(|m| {
                self.size = m.size();
                if self.size > 0 && self.size + len > self.rotate_size {
                    self.rotate()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = rotated {
                // Still writing to the old file (if it can): a failed rotation loses nothing.
                result = result.and(Err(Failure::new(e, 0)));
            }
        } else if self.batch.would_overflow(len as usize) {
            result = self.write_batch();
        }
        self.batch.push(&[line.bytes, b"\n"]);
        self.size += len;
        result
    }
    fn flush(&mut self) -> Result<(), Failure> {
        self.write_batch()
    }
    fn pending(&self) -> u64 {
        self.batch.records()
    }
    fn reopen(&mut self) -> Result<(), Failure> {
        let written = self.write_batch();
        self.reopen_file().map_err(|e| Failure::new(e, 0))?;
        written
    }
}
