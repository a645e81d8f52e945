//! Host simulation.
