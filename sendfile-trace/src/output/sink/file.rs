//! The file sink: created 0600 without following symlinks, rotated by size, reopened on SIGHUP.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
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

/// A file rotated by size (`FILE` → `FILE.1` → … → `FILE.N`) and reopened on SIGHUP.
pub struct RotatingFile {
    path: PathBuf,
    w: BufWriter<File>,
    size: u64,
    rotate_size: u64,
    keep: u32,
}

impl RotatingFile {
    /// Opens (or creates) the file.
    pub fn open(path: &Path, opts: &SinkOptions) -> io::Result<RotatingFile> {
        let f = open_log_file(path)?;
        let size = f.metadata()?.size();
        Ok(RotatingFile {
            path: path.to_owned(),
            w: BufWriter::with_capacity(1 << 16, f),
            size,
            rotate_size: opts.rotate_size,
            keep: opts.rotate_keep,
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts `FILE.i` to `FILE.i+1` (dropping the oldest), `FILE` to `FILE.1`, opens a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.w.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.numbered(self.keep)).or_else(ignore_missing)?;
            for i in (1..self.keep).rev() {
                // rename(2) never follows a symlink in its last component.
                std::fs::rename(self.numbered(i), self.numbered(i + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.path, self.numbered(1)).or_else(ignore_missing)?;
        }
        self.reopen()
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
    fn write_lines(&mut self, batch: &Batch, from: usize) -> Option<io::Result<()>> {
        let bytes = batch.lines_from(from);
        let len = bytes.len() as u64;
        if self.rotate_size > 0 && self.size + len > self.rotate_size {
            // Rotation may fall inside: line by line.
            return None;
        }
        let r = self.w.write_all(bytes);
        if r.is_ok() {
            self.size += len;
        }
        Some(r)
    }
    fn write(&mut self, line: &Line<'_>) -> io::Result<()> {
        let len = line.bytes.len() as u64 + 1;
        if self.rotate_size > 0 && self.size > 0 && self.size + len > self.rotate_size {
            // logrotate's copytruncate may have emptied the file behind our back: ask first.
            self.w.flush()?;
            self.size = self.w.get_ref().metadata()?.size();
            if self.size > 0 && self.size + len > self.rotate_size {
                self.rotate()?;
            }
        }
        self.w.write_all(line.bytes)?;
        self.w.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
    fn reopen(&mut self) -> io::Result<()> {
        self.w.flush()?;
        let f = open_log_file(&self.path)?;
        self.size = f.metadata()?.size();
        self.w = BufWriter::with_capacity(1 << 16, f);
        Ok(())
    }
}
