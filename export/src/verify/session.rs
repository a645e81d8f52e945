//! The bundle's graphs in ONNX Runtime: the process-wide runtime (through `dreamer-ort`) and
//! one session per graph, fed and read batch-major.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dreamer_bundle::{GraphInfo, Manifest};
use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use super::feeds::{Feed, Feeds};
use crate::error::ExportError;

/// Every output of one run, by name, as float32, batch-major in the manifest's shape.
pub type Outputs = BTreeMap<String, Vec<f32>>;

/// Loads ONNX Runtime once per process through `dreamer-ort` (whose search order `explicit`
/// enters first); later calls return the first result, whatever library they name.
pub fn init_onnxruntime(
    explicit: Option<&Path>,
) -> Result<&'static dreamer_ort::OrtRuntime, ExportError> {
    dreamer_ort::load(explicit).map_err(|e| ExportError::OnnxRuntime {
        file: None,
        message: e.to_string(),
    })
}

/// One bundle graph loaded in ONNX Runtime.
pub struct Graph {
    role: String,
    file: PathBuf,
    info: GraphInfo,
    session: Session,
}

impl Graph {
    /// The graph `role` of the bundle in `dir`, as its manifest lists it.
    pub fn load(
        env: &Environment,
        dir: &Path,
        manifest: &Manifest,
        role: &str,
    ) -> Result<Graph, ExportError> {
        let info = manifest.graph(role)?.clone();
        let file = dir.join(&info.file);
        // The very bytes that were checked against the manifest's hash go to ONNX Runtime.
        let model = dreamer_bundle::read_graph(dir, manifest, role)?;
        Graph::from_model(env, role, file, info, &model)
    }

    /// A graph from its bytes, `file` naming it in errors, its ports as `info` lists them.
    pub fn from_model(
        env: &Environment,
        role: &str,
        file: PathBuf,
        info: GraphInfo,
        model: &[u8],
    ) -> Result<Graph, ExportError> {
        let ort_err = ort_error(&file);
        let session = Session::builder(env)
            .map_err(ort_err)?
            .with_intra_threads(1)
            .map_err(|e| ort_err(e.into()))?
            .commit_from_memory(model)
            .map_err(ort_err)?;
        Ok(Graph {
            role: role.to_string(),
            file,
            info,
            session,
        })
    }

    /// Runs the graph on `feeds`, each shaped as the manifest's input of that name; every
    /// output comes back as float32, batch-major.
    pub fn run(&mut self, feeds: Feeds) -> Result<Outputs, ExportError> {
        let ort_err = ort_error(&self.file);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for (name, feed) in feeds {
            let shape = self.info.input(&self.role, name)?.shape.clone();
            let value: SessionInputValue<'_> = match feed {
                Feed::F32(data) => Tensor::from_array((shape, data)).map_err(ort_err)?.into(),
                Feed::U8(data) => Tensor::from_array((shape, data)).map_err(ort_err)?.into(),
            };
            inputs.push((Cow::Borrowed(name), value));
        }
        let outputs = self.session.run(inputs).map_err(ort_err)?;
        let mut out = BTreeMap::new();
        for info in &self.info.outputs {
            let value = outputs
                .get(&info.name)
                .ok_or_else(|| ExportError::OnnxRuntime {
                    file: Some(self.file.clone()),
                    message: format!("the graph did not produce output `{}`", info.name),
                })?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
            out.insert(info.name.clone(), data.to_vec());
        }
        Ok(out)
    }
}

/// For `map_err`: an ONNX Runtime error about the graph file `file`.
fn ort_error(file: &Path) -> impl Fn(ort::Error) -> ExportError + Copy + use<'_> {
    |e| ExportError::OnnxRuntime {
        file: Some(file.to_path_buf()),
        message: e.to_string(),
    }
}
