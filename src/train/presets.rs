//! Built-in run configs for the image datasets. `train --synthetic tetrominoes` (or
//! `multi-dsprites`) without `--config` starts from that dataset's config file rather than
//! the default run's: the default run's sizes, learning rate and schedule are the feature
//! model's (11 slots over 256 tokens, 8 epochs of 62 steps). The files are compiled in, so the
//! binary needs no checkout; flags still override them.

use anyhow::{Context, Result};

use super::config::TrainConfig;

/// The built-in config of the synthetic dataset `name`, if it has one.
pub fn preset(name: &str) -> Option<Result<TrainConfig>> {
    let (file, text) = match name {
        "tetrominoes" => ("configs/tetrominoes.toml", include_str!("../../configs/tetrominoes.toml")),
        "multi-dsprites" => ("configs/multi-dsprites.toml", include_str!("../../configs/multi-dsprites.toml")),
        _ => return None,
    };
    Some(toml::from_str(text).with_context(|| format!("built-in {file}")))
}
