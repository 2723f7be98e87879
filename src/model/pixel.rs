//! The pixel model (Locatello et al. 2020, object discovery) as a graph, reading like the paper:
//!   encoder:  x = CNN(image): `enc_layers` x [conv k x k "same", ReLU], C channels
//!             x = x + Linear(grid)              (soft position embedding)
//!             inputs = MLP(LN(flatten(x)))        [B, N = H W, D], MLP = Linear-ReLU-Linear
//!   slots:    slots_0 = mu + exp(log_sigma) * (noise + LN(S^T inputs)), then the Slot
//!             Attention module shared with the feature model (`slot_attention.rs`, same
//!             `slot_attention.*` parameters); S = 0 unless spectral init (segments of the
//!             image's pixels, see `train::spectral_init`)
//!   decoder:  spatial broadcast: per slot h = slot + Linear(grid)   [H, W, D]
//!             `dec_layers` x [conv k x k "same", ReLU] (C channels), conv -> 4 channels
//!             rgb = out[..3];  alpha = softmax over slots of out[3];  masks = alpha
//!             recon = sum_k alpha_k * rgb_k
//!   losses:   recon = MSE to the image;  diversity = mean_{i != j} max(cos, 0);
//!             total = recon + w_div * diversity (+ w_guide * guide)   (as the feature model)
//!
//! Images enter scaled to [-1, 1] (`2 * v / 255 - 1`), as in the reference implementation;
//! the reconstruction is compared at that scale. The position grid is the reference
//! implementation's: channels (row, column, 1 - row, 1 - column), each running 0..1 over the
//! image (`linspace(0, 1, H)`), shared by encoder and decoder (same resolution).
//!
//! Convolutions are NHWC with PyTorch weights [out, in, kh, kw] (the layout the conv2d op
//! takes), so checkpoints hold them exactly as PyTorch's `Conv2d` does.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::any::Outputs;
use super::slot_attention::{self as sa};
use crate::backend::Device;
use crate::checkpoint::TensorFile;
use crate::exec::Executor;
use crate::graph::{Graph, Var};
use sa::{Modules, SlotOps};

/// The pixel model's sizes: the `slotforge.config` metadata of its checkpoints, next to
/// `"model": "pixel"` (see [`super::AnyConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelConfig {
    /// Image (and decoder grid) size.
    pub height: usize,
    pub width: usize,
    pub slot_dim: usize,
    pub num_slots: usize,
    /// Hidden units of the Slot Attention MLP.
    pub mlp_hidden: usize,
    pub iters: usize,
    pub eps: f32,
    /// Encoder CNN: channels, conv layers, kernel size (odd).
    pub enc_channels: usize,
    pub enc_layers: usize,
    pub enc_kernel: usize,
    /// Decoder CNN: channels and kernel size (odd) of its `dec_layers` hidden convs (ReLU),
    /// then one conv of `out_kernel` to RGB + alpha logit.
    pub dec_channels: usize,
    pub dec_layers: usize,
    pub dec_kernel: usize,
    pub out_kernel: usize,
}

impl PixelConfig {
    pub fn tokens(&self) -> usize {
        self.height * self.width
    }

    /// Every parameter: PyTorch name and shape, in the order initialization draws them.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, c, cd) = (self.slot_dim, self.enc_channels, self.dec_channels);
        let mut p: Vec<(String, Vec<usize>)> = Vec::new();
        let conv = |p: &mut Vec<(String, Vec<usize>)>, name: String, cout: usize, cin: usize, k: usize| {
            p.push((format!("{name}.weight"), vec![cout, cin, k, k]));
            p.push((format!("{name}.bias"), vec![cout]));
        };
        for l in 0..self.enc_layers {
            conv(&mut p, format!("encoder_cnn.layers.{l}"), c, if l == 0 { 3 } else { c }, self.enc_kernel);
        }
        p.push(("encoder_pos.dense.weight".into(), vec![c, 4]));
        p.push(("encoder_pos.dense.bias".into(), vec![c]));
        p.push(("encoder_norm.weight".into(), vec![c]));
        p.push(("encoder_norm.bias".into(), vec![c]));
        p.push(("mlp.layers.0.weight".into(), vec![d, c]));
        p.push(("mlp.layers.0.bias".into(), vec![d]));
        p.push(("mlp.layers.1.weight".into(), vec![d, d]));
        p.push(("mlp.layers.1.bias".into(), vec![d]));
        p.extend(sa::param_shapes(d, self.mlp_hidden));
        p.push(("decoder_pos.dense.weight".into(), vec![d, 4]));
        p.push(("decoder_pos.dense.bias".into(), vec![d]));
        for l in 0..self.dec_layers {
            conv(&mut p, format!("decoder_cnn.layers.{l}"), cd, if l == 0 { d } else { cd }, self.dec_kernel);
        }
        conv(&mut p, format!("decoder_cnn.layers.{}", self.dec_layers), 4, cd, self.out_kernel);
        p
    }

    pub fn validate(&self) -> Result<()> {
        let sizes = [
            (self.height, "height"),
            (self.width, "width"),
            (self.slot_dim, "slot_dim"),
            (self.mlp_hidden, "mlp_hidden"),
            (self.iters, "iters"),
            (self.enc_channels, "enc_channels"),
            (self.enc_layers, "enc_layers"),
            (self.dec_channels, "dec_channels"),
            (self.dec_layers, "dec_layers"),
        ];
        super::check_common("pixel model config", &sizes, self.num_slots, self.eps)?;
        for (k, name) in [(self.enc_kernel, "enc_kernel"), (self.dec_kernel, "dec_kernel"), (self.out_kernel, "out_kernel")] {
            ensure!(k % 2 == 1 && k <= 9, "pixel model config: {name} must be odd and <= 9 for \"same\" padding (got {k})");
        }
        Ok(())
    }
}

/// Handles to the variables a caller feeds or reads.
#[derive(Clone, Debug)]
pub struct PixelVars {
    /// [B, H, W, 3], scaled to [-1, 1].
    pub images: Var,
    /// [B, K, D]: the reparameterization noise.
    pub noise: Var,
    /// [1]: the diversity weight of this step.
    pub diversity_weight: Var,
    /// The spectral init's segment weights and the mask guidance (as the feature model's).
    pub spectral: sa::SpectralVars,
    /// [1, H, W, 4]: the position grid (constant, set at construction).
    pub grid: Var,
    /// [B K, H W, k k]: which taps of the decoder's first conv land inside the image, per
    /// position (constant, set at construction; see [`broadcast_conv`]).
    pub taps: Var,
    pub params: Vec<(String, Var)>,
    pub init_slots: Var,
    /// [B, K, N, 4]: every slot's RGB and alpha logit.
    pub decoded: Var,
    /// [B, N, 3]
    pub recon: Var,
    /// slots, masks [B, K, N], attention [B, N, K] and the loss terms.
    pub out: Outputs,
}

/// The position grid [H, W, 4]: (row, column, 1 - row, 1 - column), each in [0, 1].
pub fn position_grid(h: usize, w: usize) -> Vec<f32> {
    let lin = |i: usize, n: usize| if n > 1 { i as f32 / (n - 1) as f32 } else { 0.0 };
    let mut out = Vec::with_capacity(h * w * 4);
    for y in 0..h {
        for x in 0..w {
            let (r, c) = (lin(y, h), lin(x, w));
            out.extend([r, c, 1.0 - r, 1.0 - c]);
        }
    }
    out
}

/// The tap matrix of [`broadcast_conv`], [H W, k k]: entry (pixel (y, x), t = (ty, tx)) is 1
/// when kernel tap (k-1-ty, k-1-tx) of a "same" conv at (y, x) reads a pixel inside the image.
pub fn broadcast_taps(h: usize, w: usize, k: usize) -> Vec<f32> {
    let pad = (k / 2) as isize;
    let inside = |v: isize, n: usize| v >= 0 && v < n as isize;
    let mut out = Vec::with_capacity(h * w * k * k);
    for y in 0..h as isize {
        for x in 0..w as isize {
            for ty in 0..k as isize {
                for tx in 0..k as isize {
                    let (iy, ix) = (y + (k as isize - 1 - ty) - pad, x + (k as isize - 1 - tx) - pad);
                    out.push(if inside(iy, h) && inside(ix, w) { 1.0 } else { 0.0 });
                }
            }
        }
    }
    out
}

/// `conv2d(broadcast(slots) + pos, w, b)`, "same" padding, for slots [S, D] broadcast over
/// pos [1, H, W, D] and w [C, D, k, k] -> [S, H, W, C], without building the [S, H, W, D]
/// broadcast. The conv is linear, so it splits into conv(pos) + bias (once, not per slot) and
/// the conv of a constant field, which at pixel p is `sum over taps inside the image of
/// W_tap slot`: a per-slot product A[s, tap] = W_tap slot (the conv of the slot as a 1x1 image
/// with padding k-1 yields exactly these, taps flipped), then `taps [S, H W, k k] · A[s]`.
/// Exact, also at the borders; K*k*k + H*W rows of work instead of K*H*W.
pub fn broadcast_conv(g: &mut Graph, slots: Var, pos: Var, w: Var, b: Var, taps: Var) -> Var {
    let (s, d) = match g.shape(slots) {
        [s, d] => (*s, *d),
        other => panic!("broadcast_conv: slots must be [S, D], got {other:?}"),
    };
    let (h, wd) = match g.shape(pos) {
        [1, h, wd, pd] if *pd == d => (*h, *wd),
        other => panic!("broadcast_conv: pos must be [1, H, W, {d}], got {other:?}"),
    };
    let ws = g.shape(w).to_vec();
    let (c, k) = (ws[0], ws[2]);
    assert!(ws[1] == d && ws[3] == k && k % 2 == 1, "broadcast_conv: w must be [C, {d}, k, k] with k odd, got {ws:?}");
    assert_eq!(g.shape(taps), &[s, h * wd, k * k], "broadcast_conv: taps must be [S, H W, k k]");
    let one = g.reshape(slots, &[s, 1, 1, d]);
    let per_tap = g.conv2d(one, w, None, 1, k - 1); // [S, k, k, C]
    let per_tap = g.reshape(per_tap, &[s, k * k, c]);
    let field = g.matmul(taps, per_tap, false, false); // [S, H W, C]
    let field = g.reshape(field, &[s, h, wd, c]);
    let at_pos = g.conv2d(pos, w, Some(b), 1, k / 2); // [1, H, W, C]
    g.add(field, at_pos)
}

/// Record the pixel model for batch size `b`.
pub fn build(cfg: &PixelConfig, b: usize) -> (Graph, PixelVars) {
    let mut g = Graph::new();
    let vars = record(&mut g, cfg, b);
    (g, vars)
}

/// Record the pixel model for batch size `b` into `g`.
pub fn record(g: &mut Graph, cfg: &PixelConfig, b: usize) -> PixelVars {
    let (h, w, d, k) = (cfg.height, cfg.width, cfg.slot_dim, cfg.num_slots);
    let n = h * w;
    let images = g.input("input.images", &[b, h, w, 3]);
    let noise = g.input("input.noise", &[b, k, d]);
    let diversity_weight = g.input("input.diversity_weight", &[1]);
    let spectral = sa::SpectralVars::record(g, b, n, k, d);
    let grid = g.input("input.grid", &[1, h, w, 4]);
    let taps = g.input("input.taps", &[b * k, n, cfg.dec_kernel * cfg.dec_kernel]);
    let params: Vec<(String, Var)> =
        cfg.param_shapes().into_iter().map(|(name, shape)| (name.clone(), g.param(&name, &shape))).collect();
    let p: HashMap<String, Var> = params.iter().cloned().collect();
    let conv = |g: &mut Graph, x: Var, name: &str, k: usize| g.conv2d(x, p[&format!("{name}.weight")], Some(p[&format!("{name}.bias")]), 1, k / 2);

    // encoder: CNN, soft position embedding, flatten, LN + MLP
    let mut x = images;
    for l in 0..cfg.enc_layers {
        let y = conv(g, x, &format!("encoder_cnn.layers.{l}"), cfg.enc_kernel);
        x = g.relu(y);
    }
    let pos = g.dense(grid, &p, "encoder_pos.dense", false); // [1, H, W, C]
    let x = g.add(x, pos);
    let x = g.reshape(x, &[b, n, cfg.enc_channels]);
    let x = g.ln(x, &p, "encoder_norm");
    let x = g.dense(x, &p, "mlp.layers.0", true);
    let inputs = g.dense(x, &p, "mlp.layers.1", false); // [B, N, D]

    // Slot Attention: reparameterized init, the spectral init (if any) in place of the noise
    let init_slots = spectral.init_slots(g, &p, inputs, noise);
    let (slots, attn) = sa::slot_attention(g, &p, inputs, init_slots, cfg.iters, cfg.eps);

    // spatial-broadcast decoder: slot + position embedding at every pixel, then the CNN
    let dec_pos = g.dense(grid, &p, "decoder_pos.dense", false); // [1, H, W, D]
    let flat = g.reshape(slots, &[b * k, d]);
    let h0 = broadcast_conv(g, flat, dec_pos, p["decoder_cnn.layers.0.weight"], p["decoder_cnn.layers.0.bias"], taps);
    let mut y = g.relu(h0);
    for l in 1..cfg.dec_layers {
        let z = conv(g, y, &format!("decoder_cnn.layers.{l}"), cfg.dec_kernel);
        y = g.relu(z);
    }
    let out = conv(g, y, &format!("decoder_cnn.layers.{}", cfg.dec_layers), cfg.out_kernel); // [B K, H, W, 4]
    let decoded = g.reshape(out, &[b, k, n, 4]);
    let alpha = g.alpha_softmax(decoded); // [B, K, N]
    let recon = g.alpha_combine(decoded, alpha); // [B, N, 3]

    // losses: both terms >= 0 by construction
    let target = g.reshape(images, &[b, n, 3]);
    let sa::Losses { mse, diversity, total, similarity } = sa::losses(g, recon, target, slots, diversity_weight);
    let (guide, weighted_guide) = spectral.guide(g, alpha, attn);
    let total = g.add(total, weighted_guide);

    PixelVars {
        images,
        noise,
        diversity_weight,
        spectral,
        grid,
        taps,
        params,
        init_slots,
        decoded,
        recon,
        out: Outputs { slots, alpha, attn, mse, diversity, total, similarity, guide },
    }
}

/// A pixel model bound to a device: the recorded graph, its executor and its variables.
pub struct PixelModel {
    pub cfg: PixelConfig,
    pub batch: usize,
    pub vars: PixelVars,
    pub ex: Executor,
}

impl PixelModel {
    pub fn new(cfg: &PixelConfig, batch: usize, device: Device) -> Result<PixelModel> {
        cfg.validate()?;
        let (g, vars) = build(cfg, batch);
        let mut ex = Executor::new(g, device)?;
        ex.set(vars.grid, &position_grid(cfg.height, cfg.width))?;
        let taps = broadcast_taps(cfg.height, cfg.width, cfg.dec_kernel);
        ex.set(vars.taps, &taps.repeat(batch * cfg.num_slots))?;
        vars.spectral.set_constants(&mut ex)?;
        vars.spectral.feed_defaults(&mut ex, None)?;
        Ok(PixelModel { cfg: cfg.clone(), batch, vars, ex })
    }

    /// Load parameters by PyTorch name; shapes must match exactly.
    pub fn set_params(&mut self, params: &TensorFile) -> Result<()> {
        super::load_params(&mut self.ex, &self.vars.params, params)
    }

    pub fn get_params(&self) -> Result<TensorFile> {
        super::save_params(&self.ex, &self.vars.params, super::AnyConfig::Pixel(self.cfg.clone()).to_json())
    }

    /// Feed one batch: `images` [B, H, W, 3] already scaled to [-1, 1] (see [`scale_images`]),
    /// and the spectral segment weights [B, N, K] (None: the random init).
    pub fn set_inputs(&mut self, images: &[f32], noise: &[f32], segments: Option<&[f32]>, diversity_weight: f32) -> Result<()> {
        self.ex.set(self.vars.images, images)?;
        self.ex.set(self.vars.noise, noise)?;
        self.ex.set(self.vars.diversity_weight, &[diversity_weight])?;
        Ok(self.vars.spectral.feed_defaults(&mut self.ex, segments)?)
    }
}

/// Images in [0, 1] (as `Dataset::images_batch_f32` gives them) -> [-1, 1], the model's input scale.
pub fn scale_images(rgb01: &[f32]) -> Vec<f32> {
    rgb01.iter().map(|v| 2.0 * v - 1.0).collect()
}
