//! Whole records on their way to a stream (a file, stdout, a TCP connection), with where each one
//! ends: when a write fails part-way, the sink knows exactly which records got out whole, how
//! many are lost, and how many bytes of a torn record it must take back.

use std::io::{self, Write};

/// Records buffered for one write.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// End offset in `buf` of each record.
    ends: Vec<usize>,
}

/// A write that failed part-way.
#[derive(Debug)]
pub struct Torn {
    /// Why.
    pub error: io::Error,
    /// Records of the batch that did not get out whole (all of them are dropped).
    pub lost: u64,
    /// Bytes of a record that did get out (the start of a torn record), 0 if it stopped between
    /// two records.
    pub torn_bytes: u64,
}

impl Batch {
    /// Bytes a sink buffers before it writes.
    pub const CAPACITY: usize = 1 << 16;

    /// An empty batch.
    pub fn new() -> Batch {
        Batch {
            buf: Vec::with_capacity(Self::CAPACITY),
            ends: Vec::new(),
        }
    }

    /// Appends one record made of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.ends.push(self.buf.len());
    }

    /// Records buffered.
    pub fn records(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Bytes buffered.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether `more` bytes would overflow the batch (a non-empty one).
    pub fn would_overflow(&self, more: usize) -> bool {
        !self.buf.is_empty() && self.buf.len() + more > Self::CAPACITY
    }

    /// Writes every buffered record to `w` and empties the batch, whatever happens: on an error
    /// the records not written whole are counted in [`Torn::lost`].
    pub fn write_to(&mut self, w: &mut impl Write) -> Result<(), Torn> {
        let mut off = 0;
        let mut failure = None;
        while off < self.buf.len() {
            match w.write(&self.buf[off..]) {
                Ok(0) => {
                    failure = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let result = match failure {
            None => Ok(()),
            Some(error) => {
                let whole = self.ends.partition_point(|&e| e <= off);
                let last_end = whole.checked_sub(1).map_or(0, |i| self.ends[i]);
                Err(Torn {
                    error,
                    lost: (self.ends.len() - whole) as u64,
                    torn_bytes: (off - last_end) as u64,
                })
            }
        };
        self.buf.clear();
        self.ends.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails like a full disk.
    struct Full {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            // Short writes, 3 bytes at a time, as a filling disk may do.
            let n = b.len().min(self.room).min(3);
            self.got.extend_from_slice(&b[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_what_did_not_get_out_and_the_torn_bytes() {
        for room in 0..=12 {
            let mut b = Batch::new();
            b.push(&[b"abc", b"\n"]); // 0..4
            b.push(&[b"defg\n"]); // 4..9
            b.push(&[b"h\n"]); // 9..11
            let mut w = Full {
                got: Vec::new(),
                room,
            };
            let r = b.write_to(&mut w);
            assert_eq!(b.records(), 0);
            let (lost, torn) = match r {
                Ok(()) => (0, 0),
                Err(t) => (t.lost, t.torn_bytes),
            };
            let whole = [4, 9, 11].iter().filter(|&&e| e <= room).count() as u64;
            assert_eq!(lost, 3 - whole, "room {room}");
            let complete = w.got.len() as u64 - torn;
            assert!(w.got[..complete as usize].ends_with(b"\n") || complete == 0);
            assert_eq!(
                w.got[..complete as usize]
                    .iter()
                    .filter(|&&c| c == b'\n')
                    .count() as u64,
                whole
            );
        }
    }
}
