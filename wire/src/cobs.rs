//! COBS (Consistent Overhead Byte Stuffing) for frames, through the maintained `cobs` crate:
//! removes every `0x00` from a block so `0x00` can delimit frames. Overhead is one byte per
//! started run of 254 bytes. This file holds what the frame layer adds to the crate: a block
//! is the bytes between two delimiters, so a zero inside it is an error, and decode errors
//! keep the frame layer's names.

use cobs::DecodeError;

/// Why a COBS block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CobsError {
    /// A zero byte inside the block (zero is the frame delimiter).
    ZeroCode { at: usize },
    /// The last code byte announces more bytes than the block holds.
    Truncated,
    /// The decoded data does not fit the output buffer.
    OutputFull,
}

/// Largest encoded length of `len` input bytes, delimiter not included.
pub const fn cobs_max_encoded_len(len: usize) -> usize {
    cobs::max_encoding_length(len)
}

/// Encodes `input` into `out` (no delimiter) and returns the encoded length, or `None` when
/// the encoding does not fit `out` ([`cobs_max_encoded_len`] of the input always does).
pub fn cobs_encode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    cobs::try_encode(input, out).ok()
}

/// Decodes one COBS block (without its delimiter) into `out`; returns the decoded length.
pub fn cobs_decode(input: &[u8], out: &mut [u8]) -> Result<usize, CobsError> {
    // The crate would end the block at a zero and decode the bytes before it.
    if let Some(at) = input.iter().position(|&b| b == 0) {
        return Err(CobsError::ZeroCode { at });
    }
    match cobs::decode(input, out) {
        Ok(report) => Ok(report.frame_size()),
        // Nothing between two delimiters decodes to nothing; the frame layer judges the length.
        Err(DecodeError::EmptyFrame) => Ok(0),
        // In a zero-free block the only malformation is a run cut off by the block's end.
        Err(DecodeError::InvalidFrame { .. }) => Err(CobsError::Truncated),
        Err(DecodeError::TargetBufTooSmall) => Err(CobsError::OutputFull),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes and decodes `data`: the encoding is zero-free, within the length bound, and
    /// decodes back to `data`.
    fn roundtrip(data: &[u8]) {
        let mut enc = [0u8; 1200];
        let bound = cobs_max_encoded_len(data.len());
        let n = cobs_encode(data, &mut enc[..bound]).expect("the bound holds the encoding");
        assert!(!enc[..n].contains(&0), "encoded block holds a zero");
        let mut dec = [0u8; 1100];
        let m = cobs_decode(&enc[..n], &mut dec).unwrap();
        assert_eq!(&dec[..m], data);
    }

    #[test]
    fn known_vectors() {
        let mut enc = [0u8; 16];
        let n = cobs_encode(&[0x11, 0x22, 0x00, 0x33], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x03, 0x11, 0x22, 0x02, 0x33]);
        let n = cobs_encode(&[0x00], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x01, 0x01]);
        let n = cobs_encode(&[], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x01]);
    }

    #[test]
    fn long_runs_roundtrip() {
        for len in [253, 254, 255, 508, 509, 1000] {
            let data: std::vec::Vec<u8> = (0..len).map(|i| (i % 255 + 1) as u8).collect();
            roundtrip(&data);
            let zeros = std::vec![0u8; len];
            roundtrip(&zeros);
            let mixed: std::vec::Vec<u8> = (0..len).map(|i| (i * 37 % 7) as u8).collect();
            roundtrip(&mixed);
        }
    }

    #[test]
    fn max_encoded_len_bounds_the_worst_case() {
        // No zeros at all: one code byte per started run of 254 bytes.
        for (len, bound) in [(0, 1), (1, 2), (85, 86), (253, 254), (254, 255), (255, 257)] {
            assert_eq!(cobs_max_encoded_len(len), bound, "{len}");
            let data = std::vec![0x55u8; len];
            let mut enc = [0u8; 300];
            let n = cobs_encode(&data, &mut enc).unwrap();
            assert!(n <= bound, "{len}: {n} > {bound}");
        }
        let mut short = [0u8; 2];
        assert_eq!(cobs_encode(&[1, 2, 3], &mut short), None);
    }

    #[test]
    fn rejects_truncated_and_zero_codes() {
        let mut out = [0u8; 16];
        assert_eq!(
            cobs_decode(&[0x05, 1, 2], &mut out),
            Err(CobsError::Truncated)
        );
        assert_eq!(
            cobs_decode(&[0x02, 1, 0x00], &mut out),
            Err(CobsError::ZeroCode { at: 2 })
        );
        assert_eq!(
            cobs_decode(&[0x03, 1, 0], &mut out),
            Err(CobsError::ZeroCode { at: 2 })
        );
        // A valid block followed by a delimiter and more bytes is not one block.
        assert_eq!(
            cobs_decode(&[0x02, 1, 0, 0x02, 1], &mut out),
            Err(CobsError::ZeroCode { at: 2 })
        );
        let mut small = [0u8; 1];
        assert_eq!(
            cobs_decode(&[0x03, 1, 2], &mut small),
            Err(CobsError::OutputFull)
        );
        assert_eq!(cobs_decode(&[], &mut out), Ok(0));
    }
}
