//! What `serve` takes from the simulation (the `sim` feature, `dreamer-tasks`): the simulated
//! camera of a pixel policy and the task's state layout for a policy that observes no state.
//!
//! Without the feature (a device build) neither exists: [`Camera`] has no values and a pixel
//! policy is refused with an error that names the feature.

#[cfg(feature = "sim")]
pub use simulated::{Camera, task_state_fields};
#[cfg(not(feature = "sim"))]
pub use without_simulation::{Camera, task_state_fields};

#[cfg(feature = "sim")]
mod simulated {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    use dreamer_bundle::Manifest;
    use dreamer_tasks::{FRAME_BYTES, Plant};
    use dreamer_wire::plant_state::{self, PlantStateError};

    use crate::serve::{ServeError, ServeOptions};

    /// The state variables the task's firmware samples, in order.
    pub fn task_state_fields(task: &str) -> Result<Vec<String>, ServeError> {
        Ok(
            dreamer_tasks::make(task, dreamer_tasks::EnvOptions::default())
                .map_err(|e| ServeError::Layout(format!("task `{task}`: {e}")))?
                .spec()
                .state_fields
                .clone(),
        )
    }

    /// A simulated camera: renders the plant state the firmware host publishes, as a camera
    /// looking at the real plant would see it at that moment.
    pub struct Camera {
        path: PathBuf,
        file: File,
        plant: Box<dyn Plant>,
        frame: Vec<u8>,
        frames: u64,
        errors: u64,
    }

    impl Camera {
        /// The camera a policy needs: `None` for a state policy, else the one the options name.
        pub(in crate::serve) fn open_for(
            manifest: &Manifest,
            options: &ServeOptions,
        ) -> Result<Option<Camera>, ServeError> {
            match (&manifest.observation.pixels, &options.camera_state) {
                (None, _) => Ok(None),
                (Some(_), Some(path)) => Camera::open(path, &manifest.task.name).map(Some),
                (Some(_), None) => Err(ServeError::Camera(
                    "the policy observes pixels: give the camera's plant state file (--camera-state)"
                        .into(),
                )),
            }
        }

        pub fn open(path: &Path, task: &str) -> Result<Camera, ServeError> {
            let plant = dreamer_tasks::make_plant(task)
                .map_err(|e| ServeError::Camera(format!("task `{task}`: {e}")))?;
            let file = File::open(path)
                .map_err(|e| ServeError::Camera(format!("cannot open {}: {e}", path.display())))?;
            let mut camera = Camera {
                path: path.to_path_buf(),
                file,
                plant,
                frame: vec![0; FRAME_BYTES],
                frames: 0,
                errors: 0,
            };
            camera
                .read_state()
                .map_err(|e| ServeError::Camera(format!("{}: {e}", camera.path.display())))?;
            Ok(camera)
        }

        /// Loads the latest published state into the plant. A record caught while being
        /// rewritten has a bad CRC: read again.
        fn read_state(&mut self) -> Result<(), String> {
            let mut buf = [0u8; plant_state::MAX_RECORD];
            let mut last = String::new();
            for _ in 0..4 {
                let n = self.file.read_at(&mut buf, 0).map_err(|e| e.to_string())?;
                match plant_state::decode(&buf[..n]) {
                    Ok(state) => {
                        return self
                            .plant
                            .set_state(&state.values)
                            .map_err(|e| e.to_string());
                    }
                    Err(e @ PlantStateError::Crc) => last = e.to_string(),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(last)
        }

        /// `[64, 64, 3]` RGB of the plant now.
        pub fn capture(&mut self) -> &[u8] {
            match self.read_state() {
                Ok(()) => {
                    self.plant.render(&mut self.frame);
                    self.frames += 1;
                }
                Err(_) => self.errors += 1,
            }
            &self.frame
        }

        /// Frames rendered.
        pub fn frames(&self) -> u64 {
            self.frames
        }

        /// Reads that found no valid record (the last picture was used again).
        pub fn errors(&self) -> u64 {
            self.errors
        }
    }
}

#[cfg(not(feature = "sim"))]
mod without_simulation {
    use dreamer_bundle::Manifest;

    use crate::serve::{ServeError, ServeOptions};

    const NO_SIMULATION: &str = "this build has no simulation (cargo feature `sim`)";

    /// Only the simulation knows a task's state layout apart from the manifest.
    pub fn task_state_fields(task: &str) -> Result<Vec<String>, ServeError> {
        Err(ServeError::Layout(format!(
            "the policy observes no state, and the state layout of task `{task}` comes from \
             the simulated tasks: {NO_SIMULATION}"
        )))
    }

    /// No camera exists without the simulation: this type has no values.
    pub enum Camera {}

    impl Camera {
        /// `None` for a state policy; a pixel policy is refused.
        pub(in crate::serve) fn open_for(
            manifest: &Manifest,
            _options: &ServeOptions,
        ) -> Result<Option<Camera>, ServeError> {
            match manifest.observation.pixels {
                None => Ok(None),
                Some(_) => Err(ServeError::Camera(format!(
                    "the policy observes pixels, and the only camera is the simulated one: \
                     {NO_SIMULATION}"
                ))),
            }
        }

        pub fn capture(&mut self) -> &[u8] {
            match *self {}
        }

        pub fn frames(&self) -> u64 {
            match *self {}
        }

        pub fn errors(&self) -> u64 {
            match *self {}
        }
    }
}
