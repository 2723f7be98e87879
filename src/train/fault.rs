//! Fault injection for the fault tests: `SLOTFORGE_FAULT=POINT:N:kill` kills the process
//! (SIGKILL, as `kill -9` would) the N-th time it passes `POINT`; `...:fail` makes that passage
//! fail with the error a full disk gives. Unset (always, outside tests) it costs one check of a
//! cached value.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

struct Fault {
    point: String,
    nth: usize,
    kill: bool,
    seen: AtomicUsize,
}

fn fault() -> Option<&'static Fault> {
    static F: OnceLock<Option<Fault>> = OnceLock::new();
    F.get_or_init(|| {
        let spec = std::env::var("SLOTFORGE_FAULT").ok()?;
        let mut it = spec.split(':');
        let point = it.next()?.to_string();
        let nth = it.next()?.parse().ok()?;
        let kill = it.next()? == "kill";
        Some(Fault { point, nth, kill, seen: AtomicUsize::new(0) })
    })
    .as_ref()
}

/// Pass fault point `name`.
pub fn point(name: &str) -> std::io::Result<()> {
    let Some(f) = fault() else { return Ok(()) };
    if f.point != name || f.seen.fetch_add(1, Ordering::SeqCst) + 1 != f.nth {
        return Ok(());
    }
    if f.kill {
        #[cfg(unix)]
        // SAFETY: sending a signal to ourselves
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
    Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device (injected by SLOTFORGE_FAULT)"))
}

/// Test hook: `SLOTFORGE_STEP_DELAY_MS=N` sleeps N ms after each step, so that a test can
/// signal a run in the middle.
pub fn step_delay() {
    static D: OnceLock<Option<u64>> = OnceLock::new();
    if let Some(ms) = D.get_or_init(|| std::env::var("SLOTFORGE_STEP_DELAY_MS").ok()?.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}
