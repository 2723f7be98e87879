//! The trainer: data in, checkpoints, metrics and pictures out, with guards that stop a
//! run the moment a loss term goes negative or non-finite.

pub mod config;
pub mod eval;
pub mod fault;
pub mod monitor;
pub mod presets;
pub mod memory;
pub mod records;
pub mod report;
pub mod run;
pub mod rundir;
pub mod signals;
pub mod seeds;
pub mod segments;
pub mod spectral_init;
pub mod commands;

pub use config::{learning_rate, DiversitySchedule, Schedule, TrainConfig};
