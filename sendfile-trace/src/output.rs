//! Where events go: stdout or a file, as JSON Lines, buffered and flushed per batch.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use serde::Serialize;

use crate::error::Error;

/// A JSON Lines writer.
pub struct Output {
    w: BufWriter<Box<dyn Write>>,
}

/// Result of a write: the reader went away (EPIPE) is not an error, it ends the tracer.
pub type WriteResult = Result<(), WriteError>;

/// Why a write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The reader closed the pipe.
    Closed,
    /// Any other I/O error.
    Io(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Io(e)
        }
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(e: serde_json::Error) -> Self {
        match e.io_error_kind() {
            Some(io::ErrorKind::BrokenPipe) => WriteError::Closed,
            _ => WriteError::Io(io::Error::other(e)),
        }
    }
}

impl Output {
    /// Standard output.
    pub fn stdout() -> Output {
        Output::new(Box::new(io::stdout()))
    }

    /// A file, created mode 0600 if missing, appended to; a symlink at `path` is refused.
    pub fn file(path: &Path) -> Result<Output, Error> {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| Error::OutputOpen {
                path: path.to_owned(),
                source,
            })?;
        Ok(Output::new(Box::new(f)))
    }

    /// Any writer (tests, benches).
    pub fn new(w: Box<dyn Write>) -> Output {
        Output {
            w: BufWriter::with_capacity(1 << 16, w),
        }
    }

    /// Writes one record as one line of JSON.
    pub fn write<T: Serialize>(&mut self, record: &T) -> WriteResult {
        serde_json::to_writer(&mut self.w, record)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    /// Pushes buffered lines to the sink.
    pub fn flush(&mut self) -> WriteResult {
        self.w.flush()?;
        Ok(())
    }
}
