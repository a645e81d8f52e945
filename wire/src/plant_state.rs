//! The plant's physical state as a small fixed record, published by the host firmware for a
//! simulated camera on the runtime's side (a real camera looks at the real plant; the
//! simulated one renders this state).
//!
//! Layout, little-endian: `b"PLST"`, `seq: u64` (increments per publication), `time_s: f64`
//! (plant time since firmware start), `len: u32`, `len` x `f64` state values (the task's
//! `physical_state_fields`), then CRC-32/ISO-HDLC over everything before it. The writer
//! overwrites the record in place; a reader that catches it half-written sees a bad CRC and
//! reads again.

use heapless::Vec;

const MAGIC: &[u8; 4] = b"PLST";
/// Most physical state values a record holds.
pub const MAX_STATE: usize = 8;
const HEADER: usize = 4 + 8 + 8 + 4;
/// Largest encoded record.
pub const MAX_RECORD: usize = HEADER + 8 * MAX_STATE + 4;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// One published state.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantState {
    pub seq: u64,
    pub time_s: f64,
    pub values: Vec<f64, MAX_STATE>,
}

/// Why bytes are not a plant state record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantStateError {
    /// Not starting with `PLST` (not a state file, or not written yet).
    Magic,
    /// Shorter than its header or its values say.
    Length { len: usize },
    /// More values than [`MAX_STATE`].
    TooManyValues { count: u32 },
    /// CRC mismatch: caught while being rewritten, or damaged.
    Crc,
}

impl core::fmt::Display for PlantStateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Magic => write!(f, "not a plant state record (no PLST magic)"),
            Self::Length { len } => write!(f, "plant state record cut short at {len} bytes"),
            Self::TooManyValues { count } => {
                write!(
                    f,
                    "plant state record claims {count} values, at most {MAX_STATE}"
                )
            }
            Self::Crc => write!(f, "plant state record has a bad CRC"),
        }
    }
}

impl core::error::Error for PlantStateError {}

/// Encodes a record into `out`; returns its length. Values beyond [`MAX_STATE`] are cut.
pub fn encode(seq: u64, time_s: f64, values: &[f64], out: &mut [u8; MAX_RECORD]) -> usize {
    let values = &values[..values.len().min(MAX_STATE)];
    out[..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..20].copy_from_slice(&time_s.to_le_bytes());
    out[20..24].copy_from_slice(&(values.len() as u32).to_le_bytes());
    let mut at = HEADER;
    for value in values {
        out[at..at + 8].copy_from_slice(&value.to_le_bytes());
        at += 8;
    }
    let crc = CRC32.checksum(&out[..at]);
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    at + 4
}

/// Decodes a record (trailing bytes after it are ignored).
pub fn decode(bytes: &[u8]) -> Result<PlantState, PlantStateError> {
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(PlantStateError::Magic);
    }
    if bytes.len() < HEADER {
        return Err(PlantStateError::Length { len: bytes.len() });
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        b
    };
    let count = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    if count as usize > MAX_STATE {
        return Err(PlantStateError::TooManyValues { count });
    }
    let end = HEADER + 8 * count as usize;
    if bytes.len() < end + 4 {
        return Err(PlantStateError::Length { len: bytes.len() });
    }
    let stored = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if CRC32.checksum(&bytes[..end]) != stored {
        return Err(PlantStateError::Crc);
    }
    let mut values = Vec::new();
    for i in 0..count as usize {
        // Cannot fail: count <= MAX_STATE was checked.
        let _ = values.push(f64::from_le_bytes(u64_at(HEADER + 8 * i)));
    }
    Ok(PlantState {
        seq: u64::from_le_bytes(u64_at(4)),
        time_s: f64::from_le_bytes(u64_at(12)),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detected() {
        let mut buf = [0u8; MAX_RECORD];
        let len = encode(7, 1.25, &[0.5, -3.0, 2.0, 0.0], &mut buf);
        let state = decode(&buf[..len]).unwrap();
        assert_eq!((state.seq, state.time_s), (7, 1.25));
        assert_eq!(&state.values[..], &[0.5, -3.0, 2.0, 0.0]);
        assert_eq!(
            decode(&buf[..len - 1]),
            Err(PlantStateError::Length { len: len - 1 })
        );
        assert_eq!(decode(b"nope"), Err(PlantStateError::Magic));
        for i in 4..len {
            let mut damaged = buf;
            damaged[i] ^= 0x10;
            assert!(decode(&damaged[..len]).is_err(), "byte {i}");
        }
    }
}
