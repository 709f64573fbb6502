//! SIGINT, SIGTERM and SIGHUP held off while a token may be writing a file it cannot afford
//! to lose half-way.
//!
//! SoftHSMv2 2.6.1 rewrites its `token.object` in place (truncate, then write) on every
//! C_Login, successful or not: a process stopped in that moment leaves the file empty, and
//! with it the PIN-wrapped key of every object on the token. A migration that writes keys
//! should also stop between two keys, with its journal and report complete, rather than
//! anywhere. So logins and the carrying of keys run under a [`Hold`]: a signal that comes
//! meanwhile is noted, the work stops at its next boundary ([`requested`]), and the signal
//! takes its default course when the last hold is released there (a hold dropped on an
//! error's way out raises nothing, so the error is reported). Outside a hold, the signals
//! act as if never hooked. SIGKILL and power loss cannot be held off; the journal and
//! resume cover those, except inside a SoftHSMv2 login, which nothing outside SoftHSMv2
//! can protect.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};

/// The signals held off.
const SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

struct Hooks {
    /// True while no hold is taken: a signal then takes its default course at once.
    armed: Arc<AtomicBool>,
    /// The signal that came during a hold (0: none).
    pending: Arc<AtomicUsize>,
    /// Holds taken and not yet ended (they nest, and threads share them).
    holds: Mutex<usize>,
}

/// Hooks the signals on first use; `None` when the hooks could not be installed, in which
/// case the signals keep their default course and holds do nothing.
fn hooks() -> Option<&'static Hooks> {
    static HOOKS: OnceLock<Option<Hooks>> = OnceLock::new();
    HOOKS
        .get_or_init(|| {
            let armed = Arc::new(AtomicBool::new(true));
            let pending = Arc::new(AtomicUsize::new(0));
            for signal in SIGNALS {
                let number = usize::try_from(signal).ok()?;
                signal_hook::flag::register_usize(signal, Arc::clone(&pending), number).ok()?;
                signal_hook::flag::register_conditional_default(signal, Arc::clone(&armed)).ok()?;
            }
            Some(Hooks {
                armed,
                pending,
                holds: Mutex::new(0),
            })
        })
        .as_ref()
}

/// Holds the signals off until released or dropped; see the module documentation.
#[must_use = "the signals are held off only while the hold lives"]
pub struct Hold(Option<&'static Hooks>);

/// Takes a hold.
pub fn hold() -> Hold {
    let hooks = hooks();
    if let Some(hooks) = hooks {
        let mut holds = hooks.holds.lock().unwrap_or_else(PoisonError::into_inner);
        *holds += 1;
        hooks.armed.store(false, Ordering::SeqCst);
    }
    Hold(hooks)
}

impl Hold {
    /// Ends the hold once the work reached a boundary: when it was the last one, a signal
    /// that came meanwhile now takes its default course (the process ends by it).
    pub fn release(mut self) {
        if let Some(signal) = self.0.take().and_then(end) {
            // Returns only for a signal the table does not know, which SIGNALS rules out.
            let _ = signal_hook::low_level::emulate_default_handler(signal);
        }
    }
}

impl Drop for Hold {
    /// Ends a hold left early, on an error on its way out: the signals act by default again
    /// from here, but one that came meanwhile is not raised, so that the error is reported.
    fn drop(&mut self) {
        if let Some(hooks) = self.0.take() {
            end(hooks);
        }
    }
}

/// Ends one hold; when it was the last, re-arms the signals and returns the one that came
/// during the holds, if any.
fn end(hooks: &Hooks) -> Option<i32> {
    let mut holds = hooks.holds.lock().unwrap_or_else(PoisonError::into_inner);
    *holds = holds.saturating_sub(1);
    if *holds > 0 {
        return None;
    }
    hooks.armed.store(true, Ordering::SeqCst);
    i32::try_from(hooks.pending.swap(0, Ordering::SeqCst))
        .ok()
        .filter(|&signal| signal != 0)
}

/// The name of a signal that came during the current hold, if one did: long work stops at
/// its next boundary.
pub fn requested() -> Option<&'static str> {
    let signal = hooks()?.pending.load(Ordering::SeqCst);
    match i32::try_from(signal).ok()? {
        SIGINT => Some("SIGINT"),
        SIGTERM => Some("SIGTERM"),
        SIGHUP => Some("SIGHUP"),
        _ => None,
    }
}
