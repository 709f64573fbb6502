//! The one place a panic is caught, the initialisation state is checked and a typed error
//! becomes a `CK_RV`.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use keyferry_core::token::Module;
use keyferry_core::{Error, Result};
use pkcs11_sys::*;

/// The initialised module and the process that initialised it: a forked child must call
/// `C_Initialize` itself and never touches its parent's state.
struct State {
    module: Arc<Module>,
    pid: u32,
}

/// Read by every call without a shared write: an `ArcSwap` load touches only this
/// thread's own slot, where a lock or an `Arc` clone would bounce one cache line between
/// every core calling the module.
static STATE: ArcSwapOption<State> = ArcSwapOption::const_empty();

/// Serialises `C_Initialize` and `C_Finalize` among themselves.
static CHANGING: Mutex<()> = Mutex::new(());

/// This process's id, set at `C_Initialize` and in a forked child by the fork handler:
/// `getpid` is a system call, too dear for every call.
static PID: AtomicU32 = AtomicU32::new(0);

/// Whether the fork handlers are registered, so `PID` follows a fork.
static FORKS_TRACKED: AtomicBool = AtomicBool::new(false);

/// The fork handlers are in place (from their registration).
pub(crate) fn track_forks() {
    FORKS_TRACKED.store(true, Ordering::Release);
}

/// Called in a forked child, where the parent's state must no longer be used.
pub(crate) fn forked() {
    PID.store(std::process::id(), Ordering::Relaxed);
}

fn current_pid() -> u32 {
    if FORKS_TRACKED.load(Ordering::Acquire) {
        PID.load(Ordering::Relaxed)
    } else {
        std::process::id()
    }
}

fn poisoned() -> Error {
    Error::General("library state poisoned by an earlier panic".into())
}

/// Install a module (`C_Initialize`). A state left by a parent process before fork is
/// forgotten without being dropped: its SQLite connections and locks belong to the parent.
pub(crate) fn install(make: impl FnOnce() -> Result<Module>) -> Result<()> {
    let _changing = CHANGING.lock().map_err(|_| poisoned())?;
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    if let Some(existing) = STATE.load_full() {
        if existing.pid == pid {
            return Err(Error::CryptokiAlreadyInitialized);
        }
        std::mem::forget(STATE.swap(None));
    }
    STATE.store(Some(Arc::new(State {
        module: Arc::new(make()?),
        pid,
    })));
    Ok(())
}

/// Remove the module (`C_Finalize`). Calls still running keep it alive until they return.
pub(crate) fn uninstall() -> Result<Arc<Module>> {
    let _changing = CHANGING.lock().map_err(|_| poisoned())?;
    match STATE.swap(None) {
        Some(existing) if existing.pid == current_pid() => Ok(existing.module.clone()),
        Some(existing) => {
            std::mem::forget(existing);
            Err(Error::CryptokiNotInitialized)
        }
        None => Err(Error::CryptokiNotInitialized),
    }
}

/// Run a call that needs the module initialised.
pub(crate) fn entry(name: &'static str, call: impl FnOnce(&Module) -> Result<()>) -> CK_RV {
    guard(name, || {
        let state = STATE.load();
        match state.as_deref() {
            Some(state) if state.pid == current_pid() => call(&state.module),
            _ => Err(Error::CryptokiNotInitialized),
        }
    })
}

/// Run a call that works before `C_Initialize` too.
pub(crate) fn guard(name: &'static str, call: impl FnOnce() -> Result<()>) -> CK_RV {
    // State sits behind locks a panic poisons; later calls then get CKR_GENERAL_ERROR.
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(err)) => {
            let rv = err.rv();
            match &err {
                Error::Storage(_)
                | Error::General(_)
                | Error::ObjectTampered(_)
                | Error::Config(_) => {
                    tracing::error!(function = name, "{err}");
                }
                _ => tracing::debug!(function = name, rv, "{err}"),
            }
            rv
        }
        Err(_) => {
            tracing::error!(function = name, "panic");
            CKR_GENERAL_ERROR
        }
    }
}

/// PKCS#11 3.0 §5.2: a call of an active operation that fails for any reason but a short
/// buffer ends the operation — also when the shell refused its arguments before the core
/// ran. (CKR_OPERATION_ACTIVE, a single-part call during a multi-part operation, leaves
/// the multi-part operation as it was.)
pub(crate) fn ending(
    module: &Module,
    session: CK_SESSION_HANDLE,
    kind: keyferry_core::token::crypto::OperationKind,
    result: Result<()>,
) -> Result<()> {
    if let Err(err) = &result {
        if !matches!(err, Error::BufferTooSmall | Error::OperationActive) {
            module.end_operation(session, kind);
        }
    }
    result
}
