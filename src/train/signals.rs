//! SIGINT and SIGTERM: the first asks the run to stop after the step in progress (it writes a
//! checkpoint and a `stop` record, then says how to resume); a second one ends the process
//! at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The signal received (0: none).
static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// Install the handlers (once per process; the CLI calls it, tests need not).
pub fn install() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0))).clone();
    for sig in [SIGINT, SIGTERM] {
        let f = flag.clone();
        // registered first, so it sees `armed` as the previous signal left it: a second
        // signal exits at once (130 / 143, the shells' convention)
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone())?;
        // SAFETY: the action only stores to atomics, which is async-signal-safe
        unsafe {
            signal_hook::low_level::register(sig, move || {
                f.store(sig as usize, Ordering::SeqCst);
                armed.store(true, Ordering::SeqCst);
            })?;
        }
    }
    Ok(())
}

/// The signal asked for a stop, by name ("SIGINT", "SIGTERM").
pub fn requested() -> Option<&'static str> {
    match RECEIVED.get()?.load(Ordering::SeqCst) as i32 {
        0 => None,
        signal_hook::consts::SIGINT => Some("SIGINT"),
        signal_hook::consts::SIGTERM => Some("SIGTERM"),
        _ => Some("signal"),
    }
}

/// A run stopped by a signal after writing its checkpoint (the process exits 130 / 143).
#[derive(Debug)]
pub struct Interrupted {
    pub signal: String,
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

impl Interrupted {
    pub fn exit_code(&self) -> u8 {
        if self.signal == "SIGINT" {
            130
        } else {
            143
        }
    }
}
