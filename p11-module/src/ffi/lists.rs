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

/// A CK_INTERFACE in a static: its pointers lead only to immutable statics.
pub(crate) struct Interface(pub(crate) CK_INTERFACE);

// SAFETY: the pointers inside point to immutable statics (a NUL-terminated name and a
// function list) that nothing ever writes, so sharing them between threads is sound.
unsafe impl Sync for Interface {}

impl Interface {
    /// The version of the function list behind the interface.
    pub(crate) fn version(&self) -> CK_VERSION {
        if std::ptr::eq(
            self.0.pFunctionList.cast_const(),
            std::ptr::addr_of!(FUNCTION_LIST_3_0).cast(),
        ) {
            FUNCTION_LIST_3_0.version
        } else {
            FUNCTION_LIST_2_40.version
        }
    }
}

const INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// The interfaces, newest first: `C_GetInterface` with no version returns the first.
pub(crate) static INTERFACES: [Interface; 2] = [
    Interface(CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: std::ptr::addr_of!(FUNCTION_LIST_3_0).cast_mut().cast(),
        flags: 0,
    }),
    Interface(CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: std::ptr::addr_of!(FUNCTION_LIST_2_40).cast_mut().cast(),
        flags: 0,
    }),
];
