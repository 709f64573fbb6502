//! Session management (PKCS#11 3.0 §5.6).

use keyferry_core::token::Module;
use keyferry_core::{Error, Result};
use pkcs11_sys::*;

use crate::ffi::convert::{in_pin, out};
use crate::ffi::{export, not_supported};

export! {
    fn C_OpenSession(slotID: CK_SLOT_ID, flags: CK_FLAGS, pApplication: CK_VOID_PTR, Notify: CK_NOTIFY, phSession: CK_SESSION_HANDLE_PTR) => open_session;
    fn C_CloseSession(hSession: CK_SESSION_HANDLE) => close_session;
    fn C_CloseAllSessions(slotID: CK_SLOT_ID) => close_all_sessions;
    fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: CK_SESSION_INFO_PTR) => get_session_info;
    fn C_Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG) => login;
    fn C_LoginUser(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG, pUsername: CK_UTF8CHAR_PTR, ulUsernameLen: CK_ULONG) => login_user;
    fn C_Logout(hSession: CK_SESSION_HANDLE) => logout;
    fn C_GetFunctionStatus(hSession: CK_SESSION_HANDLE) => legacy_parallel;
    fn C_CancelFunction(hSession: CK_SESSION_HANDLE) => legacy_parallel;
}

not_supported! {
    fn C_GetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: CK_BYTE_PTR, pulOperationStateLen: CK_ULONG_PTR);
    fn C_SetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: CK_BYTE_PTR, ulOperationStateLen: CK_ULONG, hEncryptionKey: CK_OBJECT_HANDLE, hAuthenticationKey: CK_OBJECT_HANDLE);
    fn C_SessionCancel(hSession: CK_SESSION_HANDLE, flags: CK_FLAGS);
}

// Notify callbacks are never made: no function here runs long enough to report progress.
unsafe fn open_session(
    module: &Module,
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: CK_VOID_PTR,
    _notify: CK_NOTIFY,
    session: CK_SESSION_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: NULL or valid for one handle.
    let session = unsafe { out(session) }?;
    *session = module.open_session(slot, flags)?;
    Ok(())
}

unsafe fn close_session(module: &Module, session: CK_SESSION_HANDLE) -> Result<()> {
    module.close_session(session)
}

unsafe fn close_all_sessions(module: &Module, slot: CK_SLOT_ID) -> Result<()> {
    module.close_all_sessions(slot)
}

unsafe fn get_session_info(
    module: &Module,
    session: CK_SESSION_HANDLE,
    info: CK_SESSION_INFO_PTR,
) -> Result<()> {
    // SAFETY: NULL or valid for one CK_SESSION_INFO.
    let info = unsafe { out(info) }?;
    *info = module.session_info(session)?;
    Ok(())
}

unsafe fn login(
    module: &Module,
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: CK_UTF8CHAR_PTR,
    pin_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the PIN is valid for its length by the caller's promise.
    let pin = unsafe { in_pin(pin, pin_len) }?;
    module.login(session, user_type, pin)
}

// Tokens here have no user names: a name is accepted and plays no part (3.0 §5.6.9).
unsafe fn login_user(
    module: &Module,
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: CK_UTF8CHAR_PTR,
    pin_len: CK_ULONG,
    username: CK_UTF8CHAR_PTR,
    username_len: CK_ULONG,
) -> Result<()> {
    if username.is_null() && username_len != 0 {
        return Err(Error::ArgumentsBad("NULL user name with a length"));
    }
    // SAFETY: the caller's promise covers the PIN.
    unsafe { login(module, session, user_type, pin, pin_len) }
}

unsafe fn logout(module: &Module, session: CK_SESSION_HANDLE) -> Result<()> {
    module.logout(session)
}

// PKCS#11 3.0 §5.20: legacy functions that always answer CKR_FUNCTION_NOT_PARALLEL.
unsafe fn legacy_parallel(module: &Module, session: CK_SESSION_HANDLE) -> Result<()> {
    module.check_session(session)?;
    Err(Error::FunctionNotParallel)
}
