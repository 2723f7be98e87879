//! The records of `metrics.jsonl`, one JSON object a line, tagged by `type`:
//! `start` (a sitting begins; `resumed_from` on a resume), `step` (the training losses and the
//! collapse measures at a log step), `epoch` (the validation measures at the end of an
//! epoch), `stop` (a run stopped before its end: time limit, step budget, signal).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    pub step: usize,
    /// The checkpoint step a resumed run continues from (None: a new run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<usize>,
    pub seconds: f64,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: usize,
    pub step: usize,
    pub recon: f32,
    pub diversity: f32,
    pub guide: f32,
    pub guide_weight: f32,
    pub total: f32,
    pub slot_similarity: f32,
    pub slot_similarity_centered: f32,
    pub active_slots: f32,
    pub mask_overlap: f32,
    pub lr: f32,
    pub diversity_weight: f32,
    pub grad_norm: f32,
    pub seconds: f64,
}

/// What validation measures. The unsupervised measures are always there; the scores only
/// where the data has masks (`token_*` and the ceiling only for the feature model).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: usize,
    pub step: usize,
    pub seconds: f64,
    pub images: usize,
    pub recon: f64,
    pub active_slots: f64,
    pub mask_overlap: f64,
    pub slot_similarity: f64,
    pub slot_similarity_centered: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fg_ari: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbo: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fg_ari: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ari: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fg_ari_ceiling: Option<f64>,
    /// The attention's segmentation, scored like the masks (token level for the feature model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_token_fg_ari: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_fg_ari: Option<f64>,
    /// The spectral slot groups the slots start from (the teacher of the mask guidance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectral_token_fg_ari: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectral_fg_ari: Option<f64>,
}

impl EvalRecord {
    /// The score that ranks checkpoints: the masks' FG-ARI (token level for features) where
    /// there are masks, else minus the validation reconstruction error. Higher is better.
    pub fn selection(&self) -> (&'static str, f64) {
        match (self.token_fg_ari, self.fg_ari) {
            (Some(t), _) => ("token_fg_ari", t),
            (None, Some(f)) => ("fg_ari", f),
            _ => ("-recon", -self.recon),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopRecord {
    /// "time limit", "max steps", "SIGINT", "SIGTERM"
    pub reason: String,
    #[serde(flatten)]
    pub eval: EvalRecord,
    /// false when the stop was too urgent to validate (a signal): the measures are empty
    #[serde(default)]
    pub evaluated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Start(StartRecord),
    Step(StepRecord),
    Epoch(EvalRecord),
    Stop(StopRecord),
}

impl Record {
    pub fn step(&self) -> usize {
        match self {
            Record::Start(r) => r.step,
            Record::Step(r) => r.step,
            Record::Epoch(r) => r.step,
            Record::Stop(r) => r.eval.step,
        }
    }
}
