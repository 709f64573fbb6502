//! Fork safety: handlers that close the core's `FORK_GATE` while the process forks, so a
//! child never inherits a token in the middle of a SQLite transaction (whose lock
//! bookkeeping lives in process memory and would keep the child from ever writing).

use std::cell::RefCell;
use std::sync::{Once, PoisonError, RwLockWriteGuard};

use keyferry_core::token::slot::FORK_GATE;

thread_local! {
    /// The gate, closed by `prepare` in the forking thread until `reopen` runs there (in
    /// the parent) and in the child's copy of that thread.
    static CLOSED: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// Before fork: wait until no thread holds a token's state, and keep it so.
extern "C" fn prepare() {
    let guard = FORK_GATE.write().unwrap_or_else(PoisonError::into_inner);
    // `try_` everywhere: a handler must never unwind into the C library.
    let _ = CLOSED.try_with(|closed| {
        if let Ok(mut closed) = closed.try_borrow_mut() {
            *closed = Some(guard);
        }
    });
}

/// After fork, in the parent and in the child.
extern "C" fn reopen() {
    let _ = CLOSED.try_with(|closed| {
        if let Ok(mut closed) = closed.try_borrow_mut() {
            closed.take();
        }
    });
}

/// After fork, in the child: the parent's module is no longer this process's.
extern "C" fn child() {
    super::entry::forked();
    reopen();
}

/// Registers the handlers, once per process (from `C_Initialize`).
pub(crate) fn install_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handlers are functions of this library that never unwind; glibc's
        // pthread_atfork (the libc_nonshared.a stub, `__register_atfork` with this
        // library's `__dso_handle`) unregisters them when dlclose unloads the library.
        let rv = unsafe { libc::pthread_atfork(Some(prepare), Some(reopen), Some(child)) };
        if rv == 0 {
            super::entry::track_forks();
        } else {
            tracing::warn!("pthread_atfork failed ({rv}); a fork during a token write is unsafe");
        }
    });
}
