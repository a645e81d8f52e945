//! Blocking frame reader and writer over `std::io` streams (serial ports, ptys, pipes).

use std::io::{self, Read, Write};

use crate::frame::{Frame, FrameDecoder, FrameError, LinkCounters, MAX_FRAME, encode_frame};
use crate::message::Message;

/// Reads frames from a byte stream. Bytes after a completed frame stay buffered for the next
/// call, so no frame is lost between calls.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    buf: [u8; 512],
    start: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(),
            buf: [0; 512],
            start: 0,
            end: 0,
        }
    }

    /// Returns the next frame or frame error. `Ok(None)` at end of stream. Read errors,
    /// including a timeout of the underlying port (`TimedOut`/`WouldBlock`), are returned
    /// as they are; a partial frame stays buffered and calling again continues it.
    pub fn next_frame(&mut self) -> io::Result<Option<Result<Frame, FrameError>>> {
        loop {
            while self.start < self.end {
                let byte = self.buf[self.start];
                self.start += 1;
                if let Some(result) = self.decoder.push(byte) {
                    return Ok(Some(result));
                }
            }
            let n = match self.inner.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None);
            }
            self.start = 0;
            self.end = n;
        }
    }

    /// Counts of every frame outcome so far.
    pub fn counters(&self) -> &LinkCounters {
        self.decoder.counters()
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes `message` as one frame and flushes.
pub fn write_message<W: Write>(writer: &mut W, message: &Message) -> io::Result<()> {
    let mut buf = [0u8; MAX_FRAME];
    writer.write_all(encode_frame(message, &mut buf))?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Action, Message};

    /// A reader that hands out at most `chunk` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn reads_frames_split_across_reads_and_counts_errors() {
        let mut stream = std::vec::Vec::new();
        for seq in [1u32, 2, 4] {
            let action = Message::Action(Action {
                seq,
                values: heapless::Vec::from_slice(&[0.5]).unwrap(),
            });
            write_message(&mut stream, &action).unwrap();
            stream.extend_from_slice(&[0x07, 0x01, 0x00]); // bad COBS between frames
        }
        for chunk in [1, 3, 1000] {
            let mut reader = FrameReader::new(Trickle {
                data: &stream,
                chunk,
            });
            let mut seqs = std::vec::Vec::new();
            while let Some(result) = reader.next_frame().unwrap() {
                if let Ok(Frame {
                    message: Message::Action(a),
                    ..
                }) = result
                {
                    seqs.push(a.seq);
                }
            }
            assert_eq!(seqs, [1, 2, 4]);
            let c = reader.counters();
            assert_eq!((c.frames_ok, c.bad_cobs, c.sequence_gaps), (3, 3, 1));
        }
    }
}
