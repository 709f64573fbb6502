//! C ABI tests: the module called exactly as a C application calls it, through the
//! function tables of `C_GetFunctionList` and `C_GetInterface`, with NULLs, short buffers,
//! stale handles and wrong states, asserting the exact `CK_RV` and what was written.
//!
//! Every test shares this process's one module state, so every test is
//! `#[serial_test::serial]` and starts from a fresh token directory (`Fixture`).
#![allow(
    clippy::unwrap_used,
    reason = "tests unwrap the function pointers of the tables they check and fail loudly"
)]

mod asymmetric;
mod crypto;
mod general;
mod hostile;
mod key_mgmt;
mod object;
mod process;
mod session;
mod slot_token;
mod wrap;

use std::ptr::null_mut;

use pkcs11_sys::*;
use tempfile::TempDir;

/// The SO PIN of every token the tests make.
pub(super) const SO_PIN: &[u8] = b"so-secret";
/// The user PIN set by `init_user_pin`.
pub(super) const USER_PIN: &[u8] = b"user-secret";
/// A value no call returns as a handle or count: shows a failed call wrote nothing.
pub(super) const UNTOUCHED: CK_ULONG = 0x5eed_5eed;

/// The configuration of every test: a cheap Argon2 (memory_kib must be at least
/// 8 × parallelism) so the PIN tests run in milliseconds.
pub(super) const CONFIG: &str = "token_dir = \"tokens\"
max_pin_attempts = 10
min_pin_len = 4
log_level = \"error\"

[kdf]
memory_kib = 64
iterations = 1
parallelism = 1
";

/// The 2.40 table, as `C_GetFunctionList` gives it.
pub(super) fn functions() -> &'static CK_FUNCTION_LIST {
    let mut list: CK_FUNCTION_LIST_PTR = null_mut();
    // SAFETY: `list` is valid for writing one pointer.
    let rv = unsafe { crate::ffi::C_GetFunctionList(&mut list) };
    assert_eq!(rv, CKR_OK);
    // SAFETY: on CKR_OK the pointer leads to the module's immutable static table.
    unsafe { list.as_ref() }.unwrap()
}

/// The 3.0 table, as `C_GetInterface(NULL, NULL, …)` gives it.
pub(super) fn functions_3_0() -> &'static CK_FUNCTION_LIST_3_0 {
    let mut interface: CK_INTERFACE_PTR = null_mut();
    // SAFETY: NULL name and version ask for the default; `interface` is writable.
    let rv = unsafe { crate::ffi::C_GetInterface(null_mut(), null_mut(), &mut interface, 0) };
    assert_eq!(rv, CKR_OK);
    // SAFETY: on CKR_OK the pointer leads to a static CK_INTERFACE.
    let interface = unsafe { interface.as_ref() }.unwrap();
    let list = interface.pFunctionList as *const CK_FUNCTION_LIST_3_0;
    // SAFETY: the default interface is "PKCS 11" 3.0, whose pFunctionList is a static
    // CK_FUNCTION_LIST_3_0.
    unsafe { list.as_ref() }.unwrap()
}

/// One test's module: a fresh directory with `keyferry.toml`, named by KEYFERRY_CONF.
/// Dropping it calls `C_Finalize` so the next test starts uninitialised.
pub(super) struct Fixture {
    dir: TempDir,
}

impl Fixture {
    /// Write `config` to a fresh directory and point KEYFERRY_CONF at it; nothing is
    /// initialised.
    pub(super) fn configured(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyferry.toml");
        std::fs::write(&path, config).unwrap();
        // SAFETY: every test of this binary is #[serial], and the module reads the
        // environment only inside C_Initialize, which runs on this thread after this
        // returns: nothing reads or writes the environment concurrently.
        unsafe { std::env::set_var("KEYFERRY_CONF", &path) };
        Self { dir }
    }

    /// The standard configuration, initialised with `C_Initialize(NULL)`.
    pub(super) fn new() -> Self {
        let fixture = Self::configured(CONFIG);
        assert_eq!(initialize(), CKR_OK);
        fixture
    }

    /// The fixture's directory.
    pub(super) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `C_Finalize` then `C_Initialize` over the same token directory.
    pub(super) fn restart(&self) {
        assert_eq!(finalize(), CKR_OK);
        assert_eq!(initialize(), CKR_OK);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Tests may have finalised already (CKR_CRYPTOKI_NOT_INITIALIZED): either way
        // the module is uninitialised afterwards.
        // SAFETY: NULL is the only valid pReserved.
        let _ = unsafe { (functions().C_Finalize.unwrap())(null_mut()) };
    }
}

/// `C_Initialize(NULL)`.
pub(super) fn initialize() -> CK_RV {
    // SAFETY: NULL init args are allowed.
    unsafe { (functions().C_Initialize.unwrap())(null_mut()) }
}

/// `C_Finalize(NULL)`.
pub(super) fn finalize() -> CK_RV {
    // SAFETY: NULL is the only valid pReserved.
    unsafe { (functions().C_Finalize.unwrap())(null_mut()) }
}

/// A blank-padded 32-byte token label.
pub(super) fn label32(text: &str) -> [u8; 32] {
    let mut label = [b' '; 32];
    label[..text.len()].copy_from_slice(text.as_bytes());
    label
}

/// `C_GetSlotList(CK_FALSE, …)`, asserting CKR_OK.
pub(super) fn slot_list() -> Vec<CK_SLOT_ID> {
    let f = functions();
    let mut count: CK_ULONG = 0;
    // SAFETY: NULL list asks for the count; `count` is writable.
    let rv = unsafe { (f.C_GetSlotList.unwrap())(CK_FALSE, null_mut(), &mut count) };
    assert_eq!(rv, CKR_OK);
    let mut slots = vec![UNTOUCHED; count as usize];
    // SAFETY: `slots` holds `count` writable slot IDs.
    let rv = unsafe { (f.C_GetSlotList.unwrap())(CK_FALSE, slots.as_mut_ptr(), &mut count) };
    assert_eq!(rv, CKR_OK);
    assert_eq!(count as usize, slots.len());
    slots
}

/// `C_GetTokenInfo`, asserting CKR_OK.
pub(super) fn token_info(slot: CK_SLOT_ID) -> CK_TOKEN_INFO {
    let mut info = CK_TOKEN_INFO::default();
    // SAFETY: `info` is a writable CK_TOKEN_INFO.
    let rv = unsafe { (functions().C_GetTokenInfo.unwrap())(slot, &mut info) };
    assert_eq!(rv, CKR_OK);
    info
}

/// The slot with the uninitialised token: the last of the list.
pub(super) fn spare_slot() -> CK_SLOT_ID {
    let spare = *slot_list().last().unwrap();
    assert_eq!(token_info(spare).flags & CKF_TOKEN_INITIALIZED, 0);
    spare
}

/// `C_InitToken` on the spare slot with SO_PIN; the slot of the new token.
pub(super) fn init_token(label: &str) -> CK_SLOT_ID {
    let slot = spare_slot();
    let label = label32(label);
    // SAFETY: the PIN is valid for its length and the label for 32 bytes.
    let rv = unsafe {
        (functions().C_InitToken.unwrap())(
            slot,
            SO_PIN.as_ptr().cast_mut(),
            SO_PIN.len() as CK_ULONG,
            label.as_ptr().cast_mut(),
        )
    };
    assert_eq!(rv, CKR_OK);
    slot
}

/// `C_OpenSession`, asserting CKR_OK.
pub(super) fn open_session(slot: CK_SLOT_ID, flags: CK_FLAGS) -> CK_SESSION_HANDLE {
    let mut session = UNTOUCHED;
    // SAFETY: no callback; `session` is writable.
    let rv = unsafe {
        (functions().C_OpenSession.unwrap())(slot, flags, null_mut(), None, &mut session)
    };
    assert_eq!(rv, CKR_OK);
    session
}

/// A read/write session.
pub(super) fn open_rw(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
}

/// A read-only session.
pub(super) fn open_ro(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    open_session(slot, CKF_SERIAL_SESSION)
}

/// `C_CloseSession`.
pub(super) fn close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { (functions().C_CloseSession.unwrap())(session) }
}

/// `C_Login`.
pub(super) fn login(session: CK_SESSION_HANDLE, user_type: CK_USER_TYPE, pin: &[u8]) -> CK_RV {
    // SAFETY: the PIN is valid for its length; the module only reads it.
    unsafe {
        (functions().C_Login.unwrap())(
            session,
            user_type,
            pin.as_ptr().cast_mut(),
            pin.len() as CK_ULONG,
        )
    }
}

/// `C_Logout`.
pub(super) fn logout(session: CK_SESSION_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { (functions().C_Logout.unwrap())(session) }
}

/// `C_InitPIN`.
pub(super) fn init_pin(session: CK_SESSION_HANDLE, pin: &[u8]) -> CK_RV {
    // SAFETY: the PIN is valid for its length; the module only reads it.
    unsafe {
        (functions().C_InitPIN.unwrap())(session, pin.as_ptr().cast_mut(), pin.len() as CK_ULONG)
    }
}

/// `C_SetPIN`.
pub(super) fn set_pin(session: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> CK_RV {
    // SAFETY: both PINs are valid for their lengths; the module only reads them.
    unsafe {
        (functions().C_SetPIN.unwrap())(
            session,
            old.as_ptr().cast_mut(),
            old.len() as CK_ULONG,
            new.as_ptr().cast_mut(),
            new.len() as CK_ULONG,
        )
    }
}

/// Set the user PIN to USER_PIN as the SO, then close the SO's session (logging out).
pub(super) fn init_user_pin(slot: CK_SLOT_ID) {
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(init_pin(session, USER_PIN), CKR_OK);
    assert_eq!(close_session(session), CKR_OK);
}

/// A token with its user PIN set to USER_PIN.
pub(super) fn user_token() -> CK_SLOT_ID {
    let slot = init_token("user token");
    init_user_pin(slot);
    slot
}

/// A read/write session with the user logged in.
pub(super) fn user_session(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    session
}

/// `C_GetSessionInfo`, asserting CKR_OK.
pub(super) fn session_info(session: CK_SESSION_HANDLE) -> CK_SESSION_INFO {
    let mut info = CK_SESSION_INFO::default();
    // SAFETY: `info` is a writable CK_SESSION_INFO.
    let rv = unsafe { (functions().C_GetSessionInfo.unwrap())(session, &mut info) };
    assert_eq!(rv, CKR_OK);
    info
}

/// A template that owns its values, so its pointers stay valid while it lives.
pub(super) struct Template {
    attributes: Vec<CK_ATTRIBUTE>,
    values: Vec<Box<[u8]>>,
    nested: Vec<Template>,
}

impl Template {
    /// No attributes.
    pub(super) fn new() -> Self {
        Self {
            attributes: Vec::new(),
            values: Vec::new(),
            nested: Vec::new(),
        }
    }

    /// Add an attribute with these value bytes.
    pub(super) fn bytes(mut self, kind: CK_ATTRIBUTE_TYPE, value: &[u8]) -> Self {
        let value: Box<[u8]> = value.into();
        self.attributes.push(CK_ATTRIBUTE {
            type_: kind,
            pValue: value.as_ptr().cast_mut().cast(),
            ulValueLen: value.len() as CK_ULONG,
        });
        self.values.push(value);
        self
    }

    /// Add a CK_BBOOL.
    pub(super) fn bool(self, kind: CK_ATTRIBUTE_TYPE, value: bool) -> Self {
        self.bytes(kind, &[if value { CK_TRUE } else { CK_FALSE }])
    }

    /// Add a CK_ULONG.
    pub(super) fn ulong(self, kind: CK_ATTRIBUTE_TYPE, value: CK_ULONG) -> Self {
        self.bytes(kind, &value.to_ne_bytes())
    }

    /// Add an attribute whose value is an array of CK_ATTRIBUTE.
    pub(super) fn nested(mut self, kind: CK_ATTRIBUTE_TYPE, inner: Template) -> Self {
        self.attributes.push(CK_ATTRIBUTE {
            type_: kind,
            pValue: inner.attributes.as_ptr().cast_mut().cast(),
            ulValueLen: (inner.attributes.len() * size_of::<CK_ATTRIBUTE>()) as CK_ULONG,
        });
        // Moving the Template keeps its attribute array where it is on the heap.
        self.nested.push(inner);
        self
    }

    /// Add an attribute exactly as given (NULL values, lying lengths).
    pub(super) fn raw(mut self, attribute: CK_ATTRIBUTE) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// The array to pass as pTemplate.
    pub(super) fn ptr(&self) -> CK_ATTRIBUTE_PTR {
        self.attributes.as_ptr().cast_mut()
    }

    /// The count to pass as ulCount.
    pub(super) fn count(&self) -> CK_ULONG {
        self.attributes.len() as CK_ULONG
    }
}

/// A session AES key with this value, the other attributes left to their defaults.
pub(super) fn aes_key(value: &[u8]) -> Template {
    Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
        .bytes(CKA_VALUE, value)
}

/// A public session data object with this label.
pub(super) fn data_object(label: &str) -> Template {
    Template::new()
        .ulong(CKA_CLASS, CKO_DATA)
        .bytes(CKA_LABEL, label.as_bytes())
}

/// `C_CreateObject`; on failure the handle must be left untouched.
pub(super) fn create(
    session: CK_SESSION_HANDLE,
    template: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut object = UNTOUCHED;
    // SAFETY: the template's pointers are valid for their lengths; `object` is writable.
    let rv = unsafe {
        (functions().C_CreateObject.unwrap())(
            session,
            template.ptr(),
            template.count(),
            &mut object,
        )
    };
    if rv == CKR_OK {
        Ok(object)
    } else {
        assert_eq!(object, UNTOUCHED, "a failed C_CreateObject wrote a handle");
        Err(rv)
    }
}

/// `C_GenerateKey` with a mechanism without parameter; on failure the handle must be
/// left untouched.
pub(super) fn generate_key(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    template: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut mechanism = CK_MECHANISM {
        mechanism,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    let mut key = UNTOUCHED;
    // SAFETY: the mechanism and template are valid; `key` is writable.
    let rv = unsafe {
        (functions().C_GenerateKey.unwrap())(
            session,
            &mut mechanism,
            template.ptr(),
            template.count(),
            &mut key,
        )
    };
    if rv == CKR_OK {
        Ok(key)
    } else {
        assert_eq!(key, UNTOUCHED, "a failed C_GenerateKey wrote a handle");
        Err(rv)
    }
}

/// An attribute's value by the two-step protocol (length, then value).
pub(super) fn attribute(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    kind: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<u8>, CK_RV> {
    let get = functions().C_GetAttributeValue.unwrap();
    let mut query = CK_ATTRIBUTE {
        type_: kind,
        pValue: null_mut(),
        ulValueLen: 0,
    };
    // SAFETY: one writable CK_ATTRIBUTE with a NULL value: a length query.
    let rv = unsafe { get(session, object, &mut query, 1) };
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut value = vec![0u8; query.ulValueLen as usize];
    query.pValue = value.as_mut_ptr().cast();
    // SAFETY: pValue is valid for the ulValueLen bytes the module asked for.
    let rv = unsafe { get(session, object, &mut query, 1) };
    assert_eq!(rv, CKR_OK);
    assert_eq!(query.ulValueLen as usize, value.len());
    Ok(value)
}

/// A CK_ULONG attribute, which must be readable.
pub(super) fn ulong_attribute(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    kind: CK_ATTRIBUTE_TYPE,
) -> CK_ULONG {
    let bytes = attribute(session, object, kind).unwrap();
    CK_ULONG::from_ne_bytes(bytes.try_into().unwrap())
}

/// A CK_BBOOL attribute, which must be readable.
pub(super) fn bool_attribute(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    kind: CK_ATTRIBUTE_TYPE,
) -> bool {
    match attribute(session, object, kind).unwrap().as_slice() {
        [CK_FALSE] => false,
        [CK_TRUE] => true,
        other => panic!("attribute 0x{kind:x} is not a CK_BBOOL: {other:?}"),
    }
}

/// `C_SetAttributeValue`.
pub(super) fn set_attributes(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: &Template,
) -> CK_RV {
    // SAFETY: the template's pointers are valid for their lengths.
    unsafe {
        (functions().C_SetAttributeValue.unwrap())(
            session,
            object,
            template.ptr(),
            template.count(),
        )
    }
}

/// Every object matching `template`: init, batches of 16, final.
pub(super) fn find(session: CK_SESSION_HANDLE, template: &Template) -> Vec<CK_OBJECT_HANDLE> {
    let f = functions();
    // SAFETY: the template's pointers are valid for their lengths.
    let rv = unsafe { (f.C_FindObjectsInit.unwrap())(session, template.ptr(), template.count()) };
    assert_eq!(rv, CKR_OK);
    let mut found = Vec::new();
    loop {
        let mut batch = [UNTOUCHED; 16];
        let mut count = UNTOUCHED;
        // SAFETY: `batch` holds 16 writable handles; `count` is writable.
        let rv = unsafe { (f.C_FindObjects.unwrap())(session, batch.as_mut_ptr(), 16, &mut count) };
        assert_eq!(rv, CKR_OK);
        if count == 0 {
            break;
        }
        found.extend_from_slice(&batch[..count as usize]);
    }
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_FindObjectsFinal.unwrap())(session) };
    assert_eq!(rv, CKR_OK);
    found
}
