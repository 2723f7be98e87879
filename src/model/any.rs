//! Either model behind one interface, so training, evaluation and checkpoints are one code
//! path: the feature model over token features, the pixel model over images.

use anyhow::{bail, ensure, Context, Result};

use super::init::init_named;
use super::pixel::scale_images;
use super::slot_attention::SpectralVars;
use super::{FeatureModel, ModelConfig, PixelConfig, PixelModel};
use crate::backend::Device;
use crate::checkpoint::TensorFile;
use crate::data::Dataset;
use crate::exec::Executor;
use crate::graph::Var;
use super::slot_attention::GuideTargets;

/// A checkpoint's `slotforge.config`: `"model": "pixel"` marks the pixel model; without a
/// `model` field (every feature checkpoint) or with `"model": "feature"` it is the feature model.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyConfig {
    Feature(ModelConfig),
    Pixel(PixelConfig),
}

impl AnyConfig {
    pub fn from_json(text: &str) -> Result<AnyConfig> {
        let mut v: serde_json::Value = serde_json::from_str(text).context("parsing slotforge.config")?;
        let obj = v.as_object_mut().context("slotforge.config is not a JSON object")?;
        let kind = obj.remove("model");
        let cfg = match kind.as_ref().map(|k| k.as_str()) {
            None | Some(Some("feature")) => AnyConfig::Feature(serde_json::from_value(v).context("parsing slotforge.config (feature model)")?),
            Some(Some("pixel")) => AnyConfig::Pixel(serde_json::from_value(v).context("parsing slotforge.config (pixel model)")?),
            Some(_) => bail!("slotforge.config: unknown model {} (expected \"feature\" or \"pixel\")", kind.unwrap()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The model config of a checkpoint.
    pub fn from_checkpoint(params: &TensorFile) -> Result<AnyConfig> {
        let text = params.metadata.get("slotforge.config").context("checkpoint lacks slotforge.config metadata")?;
        Self::from_json(text)
    }

    /// JSON for `slotforge.config`: the feature model's as it always was (no `model` field),
    /// the pixel model's with `"model": "pixel"` first.
    pub fn to_json(&self) -> String {
        match self {
            AnyConfig::Feature(c) => serde_json::to_string(c).unwrap(),
            AnyConfig::Pixel(c) => {
                let fields = serde_json::to_string(c).unwrap();
                format!(r#"{{"model":"pixel",{}"#, &fields[1..])
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            AnyConfig::Feature(c) => c.validate(),
            AnyConfig::Pixel(c) => c.validate(),
        }
    }

    /// "feature" or "pixel".
    pub fn name(&self) -> &'static str {
        match self {
            AnyConfig::Feature(_) => "feature",
            AnyConfig::Pixel(_) => "pixel",
        }
    }

    pub fn num_slots(&self) -> usize {
        match self {
            AnyConfig::Feature(c) => c.num_slots,
            AnyConfig::Pixel(c) => c.num_slots,
        }
    }

    pub fn slot_dim(&self) -> usize {
        match self {
            AnyConfig::Feature(c) => c.slot_dim,
            AnyConfig::Pixel(c) => c.slot_dim,
        }
    }

    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            AnyConfig::Feature(c) => c.param_shapes(),
            AnyConfig::Pixel(c) => c.param_shapes(),
        }
    }

    /// Parameters for training from scratch (PyTorch's default init), with the metadata.
    pub fn init_params(&self, seed: u64) -> TensorFile {
        match self {
            AnyConfig::Feature(c) => super::init::init_params(c, seed),
            AnyConfig::Pixel(c) => {
                let mut out = init_named(&c.param_shapes(), c.slot_dim, seed);
                out.metadata.insert("slotforge.config".into(), self.to_json());
                out
            }
        }
    }

    /// Fails unless `data` is what this model consumes, at the right size.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        match self {
            AnyConfig::Feature(c) => ensure!(
                data.kind_is_features() && c.n_tokens == data.tokens() && c.feat_dim == data.feat_dim,
                "the feature model expects {} tokens x {} dims, the data has {}",
                c.n_tokens,
                c.feat_dim,
                if data.kind_is_features() { format!("{} x {}", data.tokens(), data.feat_dim) } else { "images (the pixel model's input)".into() }
            ),
            AnyConfig::Pixel(c) => ensure!(
                !data.kind_is_features() && data.image_hw == (c.height, c.width),
                "the pixel model expects {}x{} images, the data has {}",
                c.height,
                c.width,
                if data.kind_is_features() { "features (the feature model's input)".to_string() } else { format!("{}x{} images", data.image_hw.0, data.image_hw.1) }
            ),
        }
        Ok(())
    }
}

/// The variables every model has (scalars are [1]).
#[derive(Clone, Copy, Debug)]
pub struct Outputs {
    /// [B, K, D]
    pub slots: Var,
    /// [B, K, N]: the masks, over tokens (feature model) or pixels (pixel model).
    pub alpha: Var,
    /// [B, N, K]: the last iteration's attention (softmax over slots).
    pub attn: Var,
    pub mse: Var,
    pub diversity: Var,
    pub total: Var,
    pub similarity: Var,
    /// The spectral mask guidance term, the distance of the masks and the attention to the
    /// spectral slot groups (its weight is 0 with guidance off).
    pub guide: Var,
}

/// A model bound to a device.
pub enum Model {
    Feature(FeatureModel),
    Pixel(PixelModel),
}

impl Model {
    pub fn new(cfg: &AnyConfig, batch: usize, device: Device) -> Result<Model> {
        Ok(match cfg {
            AnyConfig::Feature(c) => Model::Feature(FeatureModel::new(c, batch, device)?),
            AnyConfig::Pixel(c) => Model::Pixel(PixelModel::new(c, batch, device)?),
        })
    }

    pub fn config(&self) -> AnyConfig {
        match self {
            Model::Feature(m) => AnyConfig::Feature(m.cfg.clone()),
            Model::Pixel(m) => AnyConfig::Pixel(m.cfg.clone()),
        }
    }

    pub fn ex(&self) -> &Executor {
        match self {
            Model::Feature(m) => &m.ex,
            Model::Pixel(m) => &m.ex,
        }
    }

    pub fn ex_mut(&mut self) -> &mut Executor {
        match self {
            Model::Feature(m) => &mut m.ex,
            Model::Pixel(m) => &mut m.ex,
        }
    }

    pub fn out(&self) -> Outputs {
        match self {
            Model::Feature(m) => m.vars.out,
            Model::Pixel(m) => m.vars.out,
        }
    }

    /// Every parameter with its PyTorch name.
    pub fn params(&self) -> &[(String, Var)] {
        match self {
            Model::Feature(m) => &m.vars.params,
            Model::Pixel(m) => &m.vars.params,
        }
    }

    pub fn set_params(&mut self, params: &TensorFile) -> Result<()> {
        match self {
            Model::Feature(m) => m.set_params(params),
            Model::Pixel(m) => m.set_params(params),
        }
    }

    pub fn get_params(&self) -> Result<TensorFile> {
        match self {
            Model::Feature(m) => m.get_params(),
            Model::Pixel(m) => m.get_params(),
        }
    }

    pub fn batch(&self) -> usize {
        match self {
            Model::Feature(m) => m.batch,
            Model::Pixel(m) => m.batch,
        }
    }

    pub fn num_slots(&self) -> usize {
        self.config().num_slots()
    }

    pub fn slot_dim(&self) -> usize {
        self.config().slot_dim()
    }

    pub fn is_pixel(&self) -> bool {
        matches!(self, Model::Pixel(_))
    }

    /// The feature model, for what only it has.
    pub fn as_feature_mut(&mut self) -> Option<&mut FeatureModel> {
        match self {
            Model::Feature(m) => Some(m),
            Model::Pixel(_) => None,
        }
    }

    /// The inputs of the spectral init and the mask guidance.
    pub fn spectral(&self) -> SpectralVars {
        match self {
            Model::Feature(m) => m.vars.spectral,
            Model::Pixel(m) => m.vars.spectral,
        }
    }

    /// The reconstruction: [B, N, F] (features) or [B, H W, 3] (images in [-1, 1]).
    pub fn recon(&self) -> Var {
        match self {
            Model::Feature(m) => m.vars.recon,
            Model::Pixel(m) => m.vars.recon,
        }
    }

    /// [B, K, D]: the slots entering Slot Attention.
    pub fn init_slots(&self) -> Var {
        match self {
            Model::Feature(m) => m.vars.init_slots,
            Model::Pixel(m) => m.vars.init_slots,
        }
    }

    /// Turn on mask guidance for this batch (after `feed`); see [`SpectralVars::feed_guide`].
    pub fn set_guide(&mut self, targets: &GuideTargets, weight: f32) -> Result<()> {
        let spectral = self.spectral();
        Ok(spectral.feed_guide(self.ex_mut(), targets, weight)?)
    }

    /// Feed the given scenes of `data` (exactly one batch), the init noise [B, K, D], the
    /// spectral segment weights [B, N, K] (None: the random init) and the diversity weight.
    pub fn feed(&mut self, data: &Dataset, scenes: &[usize], noise: &[f32], segments: Option<&[f32]>, diversity_weight: f32) -> Result<()> {
        let inputs = data.model_inputs(scenes)?;
        self.feed_inputs(&inputs, noise, segments, diversity_weight)
    }

    /// [`feed`](Self::feed) with the batch already read (`Dataset::model_inputs`): features
    /// [B, N, F], or images [B, H, W, 3] in [0, 1].
    pub fn feed_inputs(&mut self, inputs: &[f32], noise: &[f32], segments: Option<&[f32]>, diversity_weight: f32) -> Result<()> {
        match self {
            Model::Feature(m) => m.set_inputs(inputs, noise, segments, diversity_weight),
            Model::Pixel(m) => m.set_inputs(&scale_images(inputs), noise, segments, diversity_weight),
        }
    }
}
