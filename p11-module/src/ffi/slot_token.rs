//! Slot and token management (PKCS#11 3.0 §5.5).

use keyferry_core::token::Module;
use keyferry_core::{Error, Result};
use pkcs11_sys::*;

use crate::ffi::convert::{in_pin, out, out_list};
use crate::ffi::export;

export! {
    fn C_GetSlotList(tokenPresent: CK_BBOOL, pSlotList: CK_SLOT_ID_PTR, pulCount: CK_ULONG_PTR) => get_slot_list;
    fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) => get_slot_info;
    fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) => get_token_info;
    fn C_GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: CK_MECHANISM_TYPE_PTR, pulCount: CK_ULONG_PTR) => get_mechanism_list;
    fn C_GetMechanismInfo(slotID: CK_SLOT_ID, type_: CK_MECHANISM_TYPE, pInfo: CK_MECHANISM_INFO_PTR) => get_mechanism_info;
    fn C_InitToken(slotID: CK_SLOT_ID, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG, pLabel: CK_UTF8CHAR_PTR) => init_token;
    fn C_InitPIN(hSession: CK_SESSION_HANDLE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG) => init_pin;
    fn C_SetPIN(hSession: CK_SESSION_HANDLE, pOldPin: CK_UTF8CHAR_PTR, ulOldLen: CK_ULONG, pNewPin: CK_UTF8CHAR_PTR, ulNewLen: CK_ULONG) => set_pin;
    fn C_WaitForSlotEvent(flags: CK_FLAGS, pSlot: CK_SLOT_ID_PTR, pReserved: CK_VOID_PTR) => wait_for_slot_event;
}

// Every slot holds a token (the spare one uninitialised), so tokenPresent filters nothing.
unsafe fn get_slot_list(
    module: &Module,
    _present: CK_BBOOL,
    list: CK_SLOT_ID_PTR,
    count: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers both pointers.
    unsafe { out_list(list, count, &module.slot_list()?) }
}

unsafe fn get_slot_info(module: &Module, slot: CK_SLOT_ID, info: CK_SLOT_INFO_PTR) -> Result<()> {
    // SAFETY: NULL or valid for one CK_SLOT_INFO.
    let info = unsafe { out(info) }?;
    *info = module.slot_info(slot)?;
    Ok(())
}

unsafe fn get_token_info(module: &Module, slot: CK_SLOT_ID, info: CK_TOKEN_INFO_PTR) -> Result<()> {
    // SAFETY: NULL or valid for one CK_TOKEN_INFO.
    let info = unsafe { out(info) }?;
    *info = module.token_info(slot)?;
    Ok(())
}

unsafe fn get_mechanism_list(
    module: &Module,
    slot: CK_SLOT_ID,
    list: CK_MECHANISM_TYPE_PTR,
    count: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers both pointers.
    unsafe { out_list(list, count, &module.mechanism_list(slot)?) }
}

unsafe fn get_mechanism_info(
    module: &Module,
    slot: CK_SLOT_ID,
    kind: CK_MECHANISM_TYPE,
    info: CK_MECHANISM_INFO_PTR,
) -> Result<()> {
    // SAFETY: NULL or valid for one CK_MECHANISM_INFO.
    let info = unsafe { out(info) }?;
    *info = module.mechanism_info(slot, kind)?;
    Ok(())
}

unsafe fn init_token(
    module: &Module,
    slot: CK_SLOT_ID,
    pin: CK_UTF8CHAR_PTR,
    pin_len: CK_ULONG,
    label: CK_UTF8CHAR_PTR,
) -> Result<()> {
    // SAFETY: the PIN is valid for its length by the caller's promise.
    let pin = unsafe { in_pin(pin, pin_len) }?;
    // SAFETY: the label is NULL or 32 bytes (PKCS#11 3.0 §5.5.7).
    let label =
        unsafe { (label as *const [u8; 32]).as_ref() }.ok_or(Error::ArgumentsBad("NULL label"))?;
    module.init_token(slot, pin, label)
}

unsafe fn init_pin(
    module: &Module,
    session: CK_SESSION_HANDLE,
    pin: CK_UTF8CHAR_PTR,
    pin_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the PIN is valid for its length by the caller's promise.
    let pin = unsafe { in_pin(pin, pin_len) }?;
    module.init_pin(session, pin)
}

unsafe fn set_pin(
    module: &Module,
    session: CK_SESSION_HANDLE,
    old: CK_UTF8CHAR_PTR,
    old_len: CK_ULONG,
    new: CK_UTF8CHAR_PTR,
    new_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: both PINs are valid for their lengths by the caller's promise.
    let (old, new) = unsafe { (in_pin(old, old_len)?, in_pin(new, new_len)?) };
    module.set_pin(session, old, new)
}

unsafe fn wait_for_slot_event(
    module: &Module,
    flags: CK_FLAGS,
    slot: CK_SLOT_ID_PTR,
    reserved: CK_VOID_PTR,
) -> Result<()> {
    if !reserved.is_null() {
        return Err(Error::ArgumentsBad("pReserved must be NULL"));
    }
    // SAFETY: NULL or valid for one CK_SLOT_ID.
    let slot = unsafe { out(slot) }?;
    *slot = module.wait_for_slot_event(flags)?;
    Ok(())
}
