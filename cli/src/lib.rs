//! What the command lines of the workspace share: printing to a stdout that may be gone
//! ([`stdout`]), and (feature `testing`) the fixtures their tests use to take it away
//! ([`testing`]). Depends on std and thiserror only, so every binary, the device build of
//! `dreamer-rt` included, can use it.

pub mod stdout;
#[cfg(feature = "testing")]
pub mod testing;
