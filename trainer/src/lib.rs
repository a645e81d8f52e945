//! Dreamer (DreamerV1) on libtorch: world model, actor and value learned in imagination,
//! replay on disk, checkpoints in the format of docs/checkpoint-format.md.

pub mod agent;
pub mod checkpoint;
pub mod device;
pub mod env_loop;
pub mod envs;
pub mod heads;
pub mod init;
pub mod learn;
pub mod logging;
pub mod losses;
pub mod networks;
pub mod noise;
pub mod optim;
pub mod plot;
pub mod reference;
pub mod replay;
pub mod rssm;
pub mod run;
pub mod seeds;
pub mod table;
pub mod tensorboard;
pub mod video;
