//! `report.html` in headless Chromium (Debian's `chromium`, which scripts/test.sh installs):
//! the page loads with no console error and every picture decoded, and a screenshot shows the
//! curves (the line colours of the plots) and the masks (blocks of the slot palette).

use std::path::Path;
use std::process::Command;

use slotforge::backend::Device;
use slotforge::train::config::TrainConfig;
use slotforge::train::run::train_on;

fn chromium(args: &[&str], page: &Path) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is needed by this test (scripts/test.sh installs Debian's chromium)")
}

#[test]
fn report_loads_cleanly_and_shows_curves_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        train_count: 24,
        val_count: 4,
        feat_dim: 16,
        num_slots: 4,
        slot_dim: 16,
        mlp_hidden: 16,
        dec_hidden: 16,
        batch_size: 4,
        epochs: 3,
        log_every: 1,
        debug_spectral: true,
        status_seconds: 0.0,
        out: out.clone(),
        ..TrainConfig::default()
    };
    train_on(cfg, Device::Cpu).unwrap();
    let page = out.join("report.html");
    let dom = chromium(&["--dump-dom"], &page);
    let (html, log) = (String::from_utf8_lossy(&dom.stdout), String::from_utf8_lossy(&dom.stderr));
    assert!(dom.status.success(), "{log}");
    assert!(html.contains("data-ready=\"1\""), "the page's script did not run:\n{log}");
    // loss.png, scores.png, masks.png, spectral_segments.png, spectral_slots_pca.png
    assert!(html.contains("data-images=\"5\""), "not every picture decoded: {}", html.lines().find(|l| l.contains("data-images")).unwrap_or(""));
    for bad in ["Uncaught", "CONSOLE", "ERR_", "Not allowed to load"] {
        assert!(!log.contains(bad), "console or loading error ({bad}):\n{log}");
    }
    let shot = dir.path().join("shot.png");
    let o = chromium(&["--window-size=1400,2600", &format!("--screenshot={}", shot.display())], &page);
    assert!(o.status.success() && shot.exists(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&shot).unwrap().to_rgb8();
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    // curves: the first two line colours of the plots (recon, total)
    let (red, blue) = (count([230, 25, 75]), count([0, 130, 200]));
    // masks: the third label's colour, which the plots do not use, in blocks
    let third = slotforge::viz::palette(2);
    assert!(![[230, 25, 75], [0, 130, 200], [60, 180, 75]].contains(&third));
    let masks = count(third);
    println!("screenshot {}x{}: line red {red}, line blue {blue}, mask colour {third:?} {masks}", img.width(), img.height());
    assert!(red > 200 && blue > 200, "the curves are not on the page");
    assert!(masks > 500, "the masks are not on the page");
}
