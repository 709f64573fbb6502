//! The one place a panic is caught, the initialisation state is checked and a typed error
//! becomes a `CK_RV`.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, RwLock};

use keyferry_core::token::Module;
use keyferry_core::{Error, Result};
use pkcs11_sys::*;

/// The initialised module and the process that initialised it: a forked child must call
/// `C_Initialize` itself and never touches its parent's state.
struct State {
    module: Arc<Module>,
    pid: u32,
}

static STATE: RwLock<Option<State>> = RwLock::new(None);

fn poisoned() -> Error {
    Error::General("library state poisoned by an earlier panic".into())
}

/// The initialised module of this process.
pub(crate) fn module() -> Result<Arc<Module>> {
    match &*STATE.read().map_err(|_| poisoned())? {
        Some(state) if state.pid == std::process::id() => Ok(state.module.clone()),
        _ => Err(Error::CryptokiNotInitialized),
    }
}

/// Install a module (`C_Initialize`). A state left by a parent process before fork is
/// forgotten without being dropped: its SQLite connections and locks belong to the parent.
pub(crate) fn install(make: impl FnOnce() -> Result<Module>) -> Result<()> {
    let mut state = STATE.write().map_err(|_| poisoned())?;
    if let Some(existing) = state.take() {
        if existing.pid == std::process::id() {
            *state = Some(existing);
            return Err(Error::CryptokiAlreadyInitialized);
        }
        std::mem::forget(existing);
    }
    *state = Some(State {
        module: Arc::new(make()?),
        pid: std::process::id(),
    });
    Ok(())
}

/// Remove the module (`C_Finalize`).
pub(crate) fn uninstall() -> Result<Arc<Module>> {
    let mut state = STATE.write().map_err(|_| poisoned())?;
    match state.take() {
        Some(existing) if existing.pid == std::process::id() => Ok(existing.module),
        Some(existing) => {
            std::mem::forget(existing);
            Err(Error::CryptokiNotInitialized)
        }
        None => Err(Error::CryptokiNotInitialized),
    }
}

/// Run a call that needs the module initialised.
pub(crate) fn entry(name: &'static str, call: impl FnOnce(&Module) -> Result<()>) -> CK_RV {
    guard(name, || call(module()?.as_ref()))
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
