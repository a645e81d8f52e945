//! Reading arrays from an `.npz` file that may be damaged or hostile: every entry is read
//! with a size cap and its npy header is checked against the bytes actually present
//! before anything is allocated for the array, so a header that claims terabytes, or a
//! shape that overflows, is an error rather than an abort or a panic.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;

use ndarray::{ArrayBase, DataOwned, Dimension};
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyExt, ReadableElement};
use zip::ZipArchive;
use zip::result::ZipError;

/// Largest array entry read (after decompression): a 1000-step pixel episode is 12 MiB.
pub const MAX_ENTRY_BYTES: u64 = 1 << 30;

pub struct Npz {
    zip: ZipArchive<File>,
}

impl Npz {
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let zip = ZipArchive::new(file).map_err(|e| e.to_string())?;
        Ok(Npz { zip })
    }

    /// The array `name` (entry `name` or `name.npy`, as NumPy names them); the error names
    /// the array.
    pub fn array<S, D>(&mut self, name: &str) -> Result<ArrayBase<S, D>, String>
    where
        S: DataOwned,
        S::Elem: ReadableElement,
        D: Dimension,
    {
        let fail = |message: String| format!("array `{name}`: {message}");
        let bytes = self.entry(name).map_err(fail)?;
        let mut rest = &bytes[..];
        let header = Header::from_reader(&mut rest).map_err(|e| fail(e.to_string()))?;
        check_size(&header.shape, size_of::<S::Elem>(), rest.len()).map_err(fail)?;
        ArrayBase::read_npy(Cursor::new(&bytes)).map_err(|e| fail(e.to_string()))
    }

    fn entry(&mut self, name: &str) -> Result<Vec<u8>, String> {
        let index = self
            .zip
            .index_for_name(name)
            .or_else(|| self.zip.index_for_name(&format!("{name}.npy")))
            .ok_or_else(|| ZipError::FileNotFound.to_string())?;
        let file = self.zip.by_index(index).map_err(|e| e.to_string())?;
        // The zip's own size field may lie; the cap is on what is actually inflated.
        let mut bytes = Vec::new();
        file.take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_ENTRY_BYTES {
            return Err(format!("larger than {MAX_ENTRY_BYTES} bytes"));
        }
        Ok(bytes)
    }
}

/// The header's shape must describe exactly the `data` bytes that follow it, and its
/// non-zero dimensions must multiply within `isize` (ndarray's limit even for empty arrays).
fn check_size(shape: &[usize], item: usize, data: usize) -> Result<(), String> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize);
    let Some(nonzero) = nonzero else {
        return Err(format!("shape {shape:?} overflows"));
    };
    let count = if shape.contains(&0) { 0 } else { nonzero };
    match count.checked_mul(item) {
        Some(claimed) if claimed == data => Ok(()),
        _ => Err(format!(
            "shape {shape:?} of {item}-byte elements does not match the {data} data bytes present"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_size;

    #[test]
    fn sizes_are_checked_against_the_data() {
        assert!(check_size(&[3, 2], 4, 24).is_ok());
        assert!(check_size(&[0, 5], 4, 0).is_ok());
        assert!(check_size(&[], 4, 4).is_ok());
        assert!(check_size(&[3, 2], 4, 20).is_err());
        assert!(check_size(&[1 << 40], 4, 16).is_err());
        assert!(check_size(&[1 << 31, 0, 2, 1 << 31], 4, 0).is_err());
        assert!(check_size(&[usize::MAX, 2], 1, 0).is_err());
    }
}
