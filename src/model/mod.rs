//! Models: the feature model (DINOSAUR style, over frozen ViT tokens) and the pixel model,
//! sharing the Slot Attention module. Parameter names and layouts are PyTorch's.

pub mod any;
pub mod feature;
pub mod init;
pub mod pixel;
pub mod slot_attention;

pub use any::{AnyConfig, Model};
pub use feature::{FeatureModel, ModelVars};
pub use pixel::{PixelConfig, PixelModel};

use serde::{Deserialize, Serialize};

use crate::checkpoint::TensorFile;
use crate::exec::Executor;
use crate::graph::Var;

/// Load named parameters into an executor by PyTorch name; shapes must match exactly.
pub fn load_params(ex: &mut Executor, named: &[(String, Var)], file: &TensorFile) -> anyhow::Result<()> {
    for (name, var) in named {
        let t = file.get(name)?;
        let want = ex.graph().shape(*var).to_vec();
        anyhow::ensure!(t.shape == want, "parameter {name}: checkpoint shape {:?}, model expects {:?}", t.shape, want);
        ex.set(*var, &t.data)?;
    }
    Ok(())
}

/// Named parameters of an executor as a checkpoint, with `config_json` as `slotforge.config`.
pub fn save_params(ex: &Executor, named: &[(String, Var)], config_json: String) -> anyhow::Result<TensorFile> {
    let mut out = TensorFile::default();
    for (name, var) in named {
        out.insert(name, ex.graph().shape(*var), ex.get(*var)?);
    }
    out.metadata.insert("slotforge.config".into(), config_json);
    Ok(out)
}

/// The `slotforge.config` metadata of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub n_tokens: usize,
    pub feat_dim: usize,
    pub slot_dim: usize,
    pub num_slots: usize,
    pub mlp_hidden: usize,
    pub dec_hidden: usize,
    pub dec_layers: usize,
    pub iters: usize,
    pub eps: f32,
    /// Add a learned position embedding `encoder_pos [1, N, D]` to the encoder output, so the
    /// keys and values (and through the values the slots) know where tokens are: the soft
    /// position embedding of Locatello et al.'s pixel model. DINOSAUR leaves it out because
    /// ViT features carry position; absent in the metadata (older checkpoints, the PyTorch
    /// reference) means off.
    #[serde(default)]
    pub encoder_pos: bool,
}

impl ModelConfig {
    /// Every parameter: PyTorch name and shape.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (f, d, h, hd, n) = (self.feat_dim, self.slot_dim, self.mlp_hidden, self.dec_hidden, self.n_tokens);
        let mut p: Vec<(String, Vec<usize>)> = vec![
            ("encoder_norm.weight".into(), vec![f]),
            ("encoder_norm.bias".into(), vec![f]),
            ("encoder.layers.0.weight".into(), vec![d, f]),
            ("encoder.layers.0.bias".into(), vec![d]),
            ("encoder.layers.1.weight".into(), vec![d, d]),
            ("encoder.layers.1.bias".into(), vec![d]),
        ];
        // slots_mu, slots_log_sigma, [encoder_pos], the rest of the module (the order
        // parameters have always been recorded in)
        let mut module = slot_attention::param_shapes(d, h);
        let rest = module.split_off(2);
        p.extend(module);
        if self.encoder_pos {
            p.push(("encoder_pos".into(), vec![1, n, d]));
        }
        p.extend(rest);
        p.push(("decoder_pos".into(), vec![1, 1, n, d]));
        let mut din = d;
        for l in 0..=self.dec_layers {
            let dout = if l == self.dec_layers { f + 1 } else { hd };
            p.push((format!("decoder.layers.{l}.weight"), vec![dout, din]));
            p.push((format!("decoder.layers.{l}.bias"), vec![dout]));
            din = dout;
        }
        p
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let sizes = [
            (self.n_tokens, "n_tokens"),
            (self.feat_dim, "feat_dim"),
            (self.slot_dim, "slot_dim"),
            (self.mlp_hidden, "mlp_hidden"),
            (self.dec_hidden, "dec_hidden"),
            (self.iters, "iters"),
        ];
        check_common("model config", &sizes, self.num_slots, self.eps)
    }
}

/// The checks both model configs share: every size >= 1, 1..=64 slots, eps in (0, 0.01).
/// `what` starts each message ("model config", "pixel model config").
pub(crate) fn check_common(what: &str, sizes: &[(usize, &str)], num_slots: usize, eps: f32) -> anyhow::Result<()> {
    for &(v, name) in sizes.iter().chain([(num_slots, "num_slots")].iter()) {
        anyhow::ensure!(v >= 1, "{what}: {name} must be >= 1 (got {v})");
    }
    anyhow::ensure!(num_slots <= 64, "{what}: num_slots must be <= 64 (got {num_slots})");
    anyhow::ensure!(eps > 0.0 && eps < 1e-2, "{what}: eps must be in (0, 0.01) (got {eps})");
    Ok(())
}
