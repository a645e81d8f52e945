//! The reference file `reference.safetensors`: the trainer's own forward pass, recorded
//! (format in docs/checkpoint-format.md, "Reference file"). Every tensor is read with its
//! shape checked by the caller, so a reference of other sizes is refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::checkpoint::{f32_from_le, read_tensors};
use crate::error::{ExportError, TensorProblem};

/// A reference tensor's data: float32, or u8 for pixel observations.
enum RefData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// The reference file, read whole.
pub struct Reference {
    path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, RefData)>,
}

impl Reference {
    pub fn read(path: &Path) -> Result<Reference, ExportError> {
        let tensors = read_tensors(path, |name, view| {
            let data = match view.dtype() {
                Dtype::F32 => RefData::F32(f32_from_le(view.data())),
                Dtype::U8 => RefData::U8(view.data().to_vec()),
                other => {
                    return Err(ExportError::TensorDtype {
                        path: path.to_path_buf(),
                        name: name.to_string(),
                        found: format!("{other:?}"),
                        expected: "F32 (U8 for observations)",
                    });
                }
            };
            Ok((view.shape().to_vec(), data))
        })?;
        Ok(Reference {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The float32 tensor `name`, which must have `shape`; flat, row-major.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<&[f32], ExportError> {
        match self.get(name, shape)? {
            RefData::F32(d) => Ok(d),
            RefData::U8(_) => Err(self.dtype(name, "F32")),
        }
    }

    /// The u8 tensor `name`, which must have `shape`; flat, row-major.
    pub fn u8(&self, name: &str, shape: &[usize]) -> Result<&[u8], ExportError> {
        match self.get(name, shape)? {
            RefData::U8(d) => Ok(d),
            RefData::F32(_) => Err(self.dtype(name, "U8")),
        }
    }

    /// Whether the file has a tensor `name` (for tensors that older trainers did not write).
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Leading dimension of a tensor that must exist (`T` or `N`).
    pub fn count(&self, name: &str) -> Result<usize, ExportError> {
        match self.tensors.get(name) {
            Some((shape, _)) if !shape.is_empty() && shape[0] > 0 => Ok(shape[0]),
            Some((shape, _)) => Err(self.problem(TensorProblem::Shape {
                name: name.to_string(),
                expected: vec![1],
                found: shape.clone(),
            })),
            None => Err(self.problem(TensorProblem::Missing {
                name: name.to_string(),
                expected: vec![],
            })),
        }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<&RefData, ExportError> {
        match self.tensors.get(name) {
            None => Err(self.problem(TensorProblem::Missing {
                name: name.to_string(),
                expected: shape.to_vec(),
            })),
            Some((found, _)) if found != shape => Err(self.problem(TensorProblem::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: found.clone(),
            })),
            Some((_, data)) => Ok(data),
        }
    }

    fn problem(&self, problem: TensorProblem) -> ExportError {
        ExportError::Reference {
            path: self.path.clone(),
            problems: vec![problem],
        }
    }

    fn dtype(&self, name: &str, expected: &'static str) -> ExportError {
        ExportError::TensorDtype {
            path: self.path.clone(),
            name: name.to_string(),
            found: "another dtype".to_string(),
            expected,
        }
    }
}
