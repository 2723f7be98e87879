//! What a run shows: `loss.png` (the training losses against the step), `scores.png` (the
//! validation measures per epoch) and `report.html`, one self-contained page (pictures
//! inlined, no network) with the config, the last and best measures, the curves, the masks
//! and the spectral diagnostics. Rewritten at each validation.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use base64::Engine;

use super::config::TrainConfig;
use super::records::{EvalRecord, Record};
use super::run::Best;
use crate::checkpoint::write_atomic;

fn evals(history: &[Record]) -> Vec<&EvalRecord> {
    history
        .iter()
        .filter_map(|r| match r {
            Record::Epoch(e) => Some(e),
            Record::Stop(s) if s.evaluated => Some(&s.eval),
            _ => None,
        })
        .collect()
}

/// The pictures and the report of a run into `out`.
pub fn write(cfg: &TrainConfig, history: &[Record], best: Option<&Best>, out: &Path) -> Result<()> {
    let steps: Vec<_> = history.iter().filter_map(|r| if let Record::Step(s) = r { Some(s) } else { None }).collect();
    let curve = |f: fn(&super::records::StepRecord) -> f32| steps.iter().map(|s| (s.step as f32, f(s))).collect::<Vec<_>>();
    let mut losses = vec![("recon", curve(|s| s.recon)), ("total", curve(|s| s.total))];
    if cfg.use_spectral {
        losses.push(("guide", curve(|s| s.guide)));
    }
    crate::viz::plot_xy("training losses", "step", &losses, true, &out.join("loss.png"))?;
    let ev = evals(history);
    let per_epoch = |f: fn(&EvalRecord) -> Option<f64>| ev.iter().filter_map(|e| Some((e.epoch as f32, f(e)? as f32))).collect::<Vec<_>>();
    let mut scores: Vec<(&str, Vec<(f32, f32)>)> = vec![
        ("token_fg_ari (masks)", per_epoch(|e| e.token_fg_ari)),
        ("fg_ari (masks, pixels)", per_epoch(|e| e.fg_ari)),
        ("attention", per_epoch(|e| e.attn_token_fg_ari.or(e.attn_fg_ari))),
        ("spectral teacher", per_epoch(|e| e.spectral_token_fg_ari.or(e.spectral_fg_ari))),
        ("mbo", per_epoch(|e| e.mbo)),
    ];
    scores.retain(|(_, s)| !s.is_empty());
    if scores.is_empty() {
        // no masks: what can be measured without them
        scores = vec![("mask overlap", per_epoch(|e| Some(e.mask_overlap))), ("active slots / num slots", ev.iter().map(|e| (e.epoch as f32, (e.active_slots / cfg.num_slots as f64) as f32)).collect())];
    }
    crate::viz::plot_xy("validation per epoch", "epoch", &scores, false, &out.join("scores.png"))?;
    write_atomic(&out.join("report.html"), html(cfg, history, best, out)?.as_bytes())
}

fn img_tag(path: &Path, alt: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!(
            "<figure><img alt=\"{alt}\" src=\"data:image/png;base64,{}\"><figcaption>{alt}</figcaption></figure>",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        Err(_) => String::new(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn measure_rows(e: &EvalRecord) -> Vec<(&'static str, String)> {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}"));
    [
        ("token FG-ARI (decoder masks)", f(e.token_fg_ari)),
        ("FG-ARI (pixels)", f(e.fg_ari)),
        ("ARI (with background)", f(e.ari)),
        ("mBO", f(e.mbo)),
        ("attention FG-ARI", f(e.attn_token_fg_ari.or(e.attn_fg_ari))),
        ("spectral teacher FG-ARI", f(e.spectral_token_fg_ari.or(e.spectral_fg_ari))),
        ("resolution ceiling", f(e.fg_ari_ceiling)),
        ("reconstruction error", Some(format!("{:.6}", e.recon))),
        ("active slots", Some(format!("{:.2}", e.active_slots))),
        ("mask overlap", Some(format!("{:.3}", e.mask_overlap))),
        ("slot similarity (raw / centered)", Some(format!("{:.3} / {:.3}", e.slot_similarity, e.slot_similarity_centered))),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect()
}

fn html(cfg: &TrainConfig, history: &[Record], best: Option<&Best>, out: &Path) -> Result<String> {
    let ev = evals(history);
    let last = ev.last();
    let step = history.last().map_or(0, |r| r.step());
    let mut h = String::new();
    let title = format!("slotforge run {}", out.display());
    write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 20px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}th{{background:#f2f2f2}}figure{{display:inline-block;margin:8px}}\
         img{{max-width:100%;image-rendering:pixelated}}figcaption{{color:#555}}.cols{{display:flex;flex-wrap:wrap;gap:24px}}\
         </style></head><body>",
        esc(&title)
    )?;
    write!(h, "<h1>{}</h1><p>step {step}, epoch {}; {} validation{}</p>", esc(&title), last.map_or(0, |e| e.epoch), ev.len(), if ev.len() == 1 { "" } else { "s" })?;
    h.push_str("<div class=\"cols\"><div><h2>Last and best</h2><table><tr><th>measure</th><th>last</th><th>best epoch</th></tr>");
    let best_eval = best.and_then(|b| ev.iter().rev().find(|e| e.step == b.step));
    if let Some(l) = last {
        let b_rows = best_eval.map(|b| measure_rows(b)).unwrap_or_default();
        for (k, v) in measure_rows(l) {
            let bv = b_rows.iter().find(|(bk, _)| *bk == k).map_or(String::new(), |(_, v)| v.clone());
            write!(h, "<tr><td>{k}</td><td>{v}</td><td>{bv}</td></tr>")?;
        }
    }
    if let Some(b) = best {
        write!(h, "<tr><td>best checkpoint</td><td colspan=2>step {} by {} = {:.4} (best.safetensors)</td></tr>", b.step, esc(&b.metric), b.value)?;
    }
    h.push_str("</table></div></div><h2>Curves</h2>");
    h.push_str(&img_tag(&out.join("loss.png"), "training losses against the step (log scale)"));
    h.push_str(&img_tag(&out.join("scores.png"), "validation measures per epoch"));
    h.push_str("<h2>Masks</h2>");
    h.push_str(&img_tag(&out.join("masks.png"), "validation scenes: input, ground truth, predicted masks (upsampled and per token)"));
    if out.join("spectral_segments.png").exists() {
        h.push_str("<h2>Spectral init</h2>");
        h.push_str(&img_tag(&out.join("spectral_segments.png"), "scene, ground truth, spectral segments over the scene, segments and slot groups on the token grid"));
        h.push_str(&img_tag(&out.join("spectral_slots_pca.png"), "the initial slots, first two principal components"));
    }
    h.push_str("<h2>Config</h2><details><summary>every setting of the run (config.toml)</summary><table>");
    for (k, v) in cfg.to_table()? {
        write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(&k), esc(&v.to_string()))?;
    }
    h.push_str("</table></details>");
    // for the report's test: the script ran, and how many pictures decoded
    h.push_str(
        "<script>window.addEventListener('load', () => { document.body.dataset.ready = '1'; \
         document.body.dataset.images = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>",
    );
    h.push_str("</body></html>\n");
    Ok(h)
}
