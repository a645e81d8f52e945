//! Consistent Overhead Byte Stuffing: removes every `0x00` from a block so `0x00` can
//! delimit frames. Overhead is one byte per started run of 254 bytes.

/// Why a COBS block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CobsError {
    /// A code byte of zero inside the block (zero is the frame delimiter).
    ZeroCode { at: usize },
    /// A code byte announces more bytes than the block holds.
    Truncated { at: usize },
    /// The decoded data does not fit the output buffer.
    OutputFull,
}

/// Largest encoded length of `len` input bytes, delimiter not included.
pub const fn cobs_max_encoded_len(len: usize) -> usize {
    len + len / 254 + 1
}

/// Encodes `input` into `out` (no delimiter) and returns the encoded length, or `None` when
/// `out` is shorter than [`cobs_max_encoded_len`] of the input.
pub fn cobs_encode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    if out.len() < cobs_max_encoded_len(input.len()) {
        return None;
    }
    let mut code_at = 0;
    let mut write = 1;
    let mut code: u8 = 1;
    for &byte in input {
        if byte == 0 {
            out[code_at] = code;
            code_at = write;
            write += 1;
            code = 1;
        } else {
            out[write] = byte;
            write += 1;
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = write;
                write += 1;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    Some(write)
}

/// Decodes one COBS block (without its delimiter) into `out`; returns the decoded length.
pub fn cobs_decode(input: &[u8], out: &mut [u8]) -> Result<usize, CobsError> {
    let mut read = 0;
    let mut write = 0;
    while read < input.len() {
        let code = input[read];
        if code == 0 {
            return Err(CobsError::ZeroCode { at: read });
        }
        let run = usize::from(code) - 1;
        let start = read + 1;
        let end = start + run;
        if end > input.len() {
            return Err(CobsError::Truncated { at: read });
        }
        let data = &input[start..end];
        if data.contains(&0) {
            return Err(CobsError::ZeroCode { at: start });
        }
        out.get_mut(write..write + run)
            .ok_or(CobsError::OutputFull)?
            .copy_from_slice(data);
        write += run;
        read = end;
        // A code below 0xFF stands for a zero after its run, except at the end of the block.
        if code != 0xFF && read < input.len() {
            *out.get_mut(write).ok_or(CobsError::OutputFull)? = 0;
            write += 1;
        }
    }
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) {
        let mut enc = [0u8; 1200];
        let n = cobs_encode(data, &mut enc).unwrap();
        assert!(n <= cobs_max_encoded_len(data.len()));
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
        }
    }

    #[test]
    fn rejects_truncated_and_zero_codes() {
        let mut out = [0u8; 16];
        assert_eq!(
            cobs_decode(&[0x05, 1, 2], &mut out),
            Err(CobsError::Truncated { at: 0 })
        );
        assert_eq!(
            cobs_decode(&[0x02, 1, 0x00], &mut out),
            Err(CobsError::ZeroCode { at: 2 })
        );
        assert_eq!(
            cobs_decode(&[0x03, 1, 0], &mut out),
            Err(CobsError::ZeroCode { at: 1 })
        );
        let mut small = [0u8; 1];
        assert_eq!(
            cobs_decode(&[0x03, 1, 2], &mut small),
            Err(CobsError::OutputFull)
        );
    }
}
