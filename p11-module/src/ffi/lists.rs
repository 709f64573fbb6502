//! The function tables and interfaces, built once as immutable statics.

use pkcs11_sys::{CK_FUNCTION_LIST, CK_FUNCTION_LIST_3_0, CK_INTERFACE, CK_VERSION};

use crate::ffi::*;

macro_rules! function_list {
    ($ty:ident, $major:literal, $minor:literal, [$($function:ident),* $(,)?]) => {
        $ty { version: CK_VERSION { major: $major, minor: $minor }, $($function: Some($function),)* }
    };
}

macro_rules! function_lists {
    (v2_40: [$($v2:ident),* $(,)?], v3_0: [$($v3:ident),* $(,)?]) => {
        /// The PKCS#11 2.40 function list, returned by `C_GetFunctionList`.
        pub static FUNCTION_LIST_2_40: CK_FUNCTION_LIST = function_list!(CK_FUNCTION_LIST, 2, 40, [$($v2),*]);
        /// The PKCS#11 3.0 function list, behind the "PKCS 11" 3.0 interface.
        pub static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 =
            function_list!(CK_FUNCTION_LIST_3_0, 3, 0, [$($v2,)* $($v3),*]);
    };
}

function_lists! {
    v2_40: [
        C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList, C_GetSlotList, C_GetSlotInfo,
        C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_InitToken, C_InitPIN,
        C_SetPIN, C_OpenSession, C_CloseSession, C_CloseAllSessions, C_GetSessionInfo,
        C_GetOperationState, C_SetOperationState, C_Login, C_Logout, C_CreateObject,
        C_CopyObject, C_DestroyObject, C_GetObjectSize, C_GetAttributeValue,
        C_SetAttributeValue, C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal,
        C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal, C_DecryptInit, C_Decrypt,
        C_DecryptUpdate, C_DecryptFinal, C_DigestInit, C_Digest, C_DigestUpdate, C_DigestKey,
        C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, C_SignRecoverInit,
        C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate, C_VerifyFinal,
        C_VerifyRecoverInit, C_VerifyRecover, C_DigestEncryptUpdate, C_DecryptDigestUpdate,
        C_SignEncryptUpdate, C_DecryptVerifyUpdate, C_GenerateKey, C_GenerateKeyPair,
        C_WrapKey, C_UnwrapKey, C_DeriveKey, C_SeedRandom, C_GenerateRandom,
        C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent,
    ],
    v3_0: [
        C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel,
        C_MessageEncryptInit, C_EncryptMessage, C_EncryptMessageBegin, C_EncryptMessageNext,
        C_MessageEncryptFinal, C_MessageDecryptInit, C_DecryptMessage, C_DecryptMessageBegin,
        C_DecryptMessageNext, C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage,
        C_SignMessageBegin, C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit,
        C_VerifyMessage, C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal,
    ]
}

const INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// One interface: "PKCS 11" with the 3.0 or the 2.40 function list.
const fn interface(list: *const std::ffi::c_void) -> CK_INTERFACE {
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: list.cast_mut(),
        flags: 0,
    }
}

/// The interfaces, newest first (`C_GetInterface` with no version takes the first), with
/// their versions. `C_GetInterfaceList` copies these values.
pub(crate) const INTERFACES: [(CK_INTERFACE, CK_VERSION); 2] = [
    (
        interface(std::ptr::addr_of!(FUNCTION_LIST_3_0).cast()),
        CK_VERSION { major: 3, minor: 0 },
    ),
    (
        interface(std::ptr::addr_of!(FUNCTION_LIST_2_40).cast()),
        CK_VERSION {
            major: 2,
            minor: 40,
        },
    ),
];

/// Where `C_GetInterface` points its callers. Writable memory, not a read-only static:
/// OpenSC's pkcs11-spy 0.23 (Debian's) writes its own function list into the interface it
/// is handed and crashed on a read-only one (fixed upstream in OpenSC PR #3275). keyferry
/// never reads these back.
pub(crate) struct InterfaceSlots(std::cell::UnsafeCell<[CK_INTERFACE; 2]>);

// SAFETY: keyferry only hands out pointers into the cell and never reads or writes it;
// whatever a caller writes there is the caller's own business, as with any memory a
// PKCS#11 library returns.
unsafe impl Sync for InterfaceSlots {}

/// The interface slots, initialised from `INTERFACES`.
pub(crate) static INTERFACE_SLOTS: InterfaceSlots = InterfaceSlots(std::cell::UnsafeCell::new([
    INTERFACES[0].0,
    INTERFACES[1].0,
]));

impl InterfaceSlots {
    /// The slot of interface `index` (0 or 1).
    pub(crate) fn get(&self, index: usize) -> *mut CK_INTERFACE {
        self.0
            .get()
            .cast::<CK_INTERFACE>()
            .wrapping_add(index.min(1))
    }
}
