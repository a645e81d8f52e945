//! TensorBoard event files written directly: TFRecord framing (length, masked CRC-32C of the
//! length, payload, masked CRC-32C of the payload) around `Event` protocol buffers holding
//! scalar and image summaries.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// CRC-32C (Castagnoli), bitwise reflected form.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// TFRecord's masked CRC.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, ((field << 3) | wire) as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// `Event { wall_time = 1, step = 2, file_version = 3 | summary = 5 }`.
fn event(step: i64, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut out = Vec::new();
    key(&mut out, 1, 1);
    out.extend_from_slice(&wall.to_le_bytes());
    key(&mut out, 2, 0);
    varint(&mut out, step as u64);
    body(&mut out);
    out
}

/// `Summary { value = 1: Value { tag = 1, simple_value = 2 | image = 4 } }`.
fn summary_value(tag: &str, value: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    bytes_field(&mut v, 1, tag.as_bytes());
    value(&mut v);
    let mut summary = Vec::new();
    bytes_field(&mut summary, 1, &v);
    summary
}

/// The path of a new event file in `dir`: `events.out.tfevents.<unix seconds>.dreamer.<pid>`
/// (TensorBoard reads every file whose name holds `tfevents`).
pub fn event_file_in(dir: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    dir.join(format!(
        "events.out.tfevents.{secs}.dreamer.{}",
        std::process::id()
    ))
}

pub struct EventWriter {
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file at `path`, starting with the file-version event.
    pub fn create(path: &Path) -> io::Result<EventWriter> {
        let mut writer = EventWriter {
            file: BufWriter::new(File::create(path)?),
        };
        let first = event(0, |out| bytes_field(out, 3, b"brain.Event:2"));
        writer.write(&first)?;
        Ok(writer)
    }

    fn write(&mut self, payload: &[u8]) -> io::Result<()> {
        self.file.write_all(&frame(payload))
    }

    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> io::Result<()> {
        let summary = summary_value(tag, |v| {
            key(v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
        });
        let payload = event(step, |out| bytes_field(out, 5, &summary));
        self.write(&payload)
    }

    /// An image summary from encoded bytes (PNG or GIF; an animated GIF plays in TensorBoard).
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        width: u32,
        height: u32,
        encoded: Vec<u8>,
    ) -> io::Result<()> {
        let mut image = Vec::new();
        key(&mut image, 1, 0);
        varint(&mut image, height as u64);
        key(&mut image, 2, 0);
        varint(&mut image, width as u64);
        key(&mut image, 3, 0);
        varint(&mut image, 3);
        bytes_field(&mut image, 4, &encoded);
        let summary = summary_value(tag, |v| bytes_field(v, 4, &image));
        let payload = event(step, |out| bytes_field(out, 5, &summary));
        self.write(&payload)
    }

    /// `Event { session_log = 7: SessionLog { status = 1: START } }` at `step`: TensorBoard
    /// then drops the events of earlier files at `step` and later, which a resumed run
    /// logs again (a session killed after its last checkpoint had logged them).
    pub fn session_start(&mut self, step: i64) -> io::Result<()> {
        let mut log = Vec::new();
        key(&mut log, 1, 0);
        varint(&mut log, 1);
        let payload = event(step, |out| bytes_field(out, 7, &log));
        self.write(&payload)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Flush and fsync the file.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_session_start_is_an_event_with_a_start_session_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut writer = EventWriter::create(&path).unwrap();
        writer.session_start(300).unwrap();
        writer.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // The second record: after the file-version event's frame.
        let first = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 16;
        let len = u64::from_le_bytes(bytes[first..first + 8].try_into().unwrap()) as usize;
        let payload = &bytes[first + 12..first + 12 + len];
        // wall_time (tag 0x09, 8 bytes), step 300 (tag 0x10, varint ac 02), then field 7
        // (tag 0x3a) holding SessionLog { status (tag 0x08) = START (1) }.
        assert_eq!(payload[0], 0x09);
        assert_eq!(&payload[9..], &[0x10, 0xac, 0x02, 0x3a, 0x02, 0x08, 0x01]);
    }

    #[test]
    fn frames_carry_length_and_checksums() {
        let framed = frame(b"abc");
        assert_eq!(framed.len(), 8 + 4 + 3 + 4);
        assert_eq!(&framed[..8], &3u64.to_le_bytes());
        assert_eq!(&framed[12..15], b"abc");
        assert_eq!(&framed[15..], &masked_crc(b"abc").to_le_bytes());
    }
}
