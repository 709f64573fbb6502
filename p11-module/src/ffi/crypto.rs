//! Cryptographic functions (PKCS#11 3.0 §5.8–§5.13): encryption, decryption, digests,
//! and signing/verifying with MACs. Signing with recovery, dual-function updates and the
//! 3.0 message API are not provided.

use keyferry_core::Result;
use keyferry_core::mech::cipher::Direction;
use keyferry_core::token::Module;
use keyferry_core::token::crypto::{OperationKind, Part};
use pkcs11_sys::*;

use crate::ffi::convert::{in_mechanism, in_slice, out_bytes};
use crate::ffi::{export, not_supported};

export! {
    fn C_EncryptInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) => encrypt_init;
    fn C_Encrypt(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pEncryptedData: CK_BYTE_PTR, pulEncryptedDataLen: CK_ULONG_PTR) => encrypt, ends(hSession, OperationKind::Encrypt);
    fn C_EncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG, pEncryptedPart: CK_BYTE_PTR, pulEncryptedPartLen: CK_ULONG_PTR) => encrypt_update, ends(hSession, OperationKind::Encrypt);
    fn C_EncryptFinal(hSession: CK_SESSION_HANDLE, pLastEncryptedPart: CK_BYTE_PTR, pulLastEncryptedPartLen: CK_ULONG_PTR) => encrypt_final, ends(hSession, OperationKind::Encrypt);
    fn C_DecryptInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) => decrypt_init;
    fn C_Decrypt(hSession: CK_SESSION_HANDLE, pEncryptedData: CK_BYTE_PTR, ulEncryptedDataLen: CK_ULONG, pData: CK_BYTE_PTR, pulDataLen: CK_ULONG_PTR) => decrypt, ends(hSession, OperationKind::Decrypt);
    fn C_DecryptUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: CK_BYTE_PTR, ulEncryptedPartLen: CK_ULONG, pPart: CK_BYTE_PTR, pulPartLen: CK_ULONG_PTR) => decrypt_update, ends(hSession, OperationKind::Decrypt);
    fn C_DecryptFinal(hSession: CK_SESSION_HANDLE, pLastPart: CK_BYTE_PTR, pulLastPartLen: CK_ULONG_PTR) => decrypt_final, ends(hSession, OperationKind::Decrypt);
    fn C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR) => digest_init;
    fn C_Digest(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pDigest: CK_BYTE_PTR, pulDigestLen: CK_ULONG_PTR) => digest, ends(hSession, OperationKind::Digest);
    fn C_DigestUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) => digest_update, ends(hSession, OperationKind::Digest);
    fn C_DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE) => digest_key;
    fn C_DigestFinal(hSession: CK_SESSION_HANDLE, pDigest: CK_BYTE_PTR, pulDigestLen: CK_ULONG_PTR) => digest_final, ends(hSession, OperationKind::Digest);
    fn C_SignInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) => sign_init;
    fn C_Sign(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR) => sign, ends(hSession, OperationKind::Sign);
    fn C_SignUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) => sign_update, ends(hSession, OperationKind::Sign);
    fn C_SignFinal(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR) => sign_final, ends(hSession, OperationKind::Sign);
    fn C_VerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) => verify_init;
    fn C_Verify(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) => verify, ends(hSession, OperationKind::Verify);
    fn C_VerifyUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) => verify_update, ends(hSession, OperationKind::Verify);
    fn C_VerifyFinal(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) => verify_final, ends(hSession, OperationKind::Verify);
}

unsafe fn encrypt_init(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: the caller's promise covers the mechanism and its parameter.
    let (kind, parameter) = unsafe { in_mechanism(mechanism) }?;
    module.cipher_init(session, Direction::Encrypt, kind, &parameter, key)
}

unsafe fn decrypt_init(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: the caller's promise covers the mechanism and its parameter.
    let (kind, parameter) = unsafe { in_mechanism(mechanism) }?;
    module.cipher_init(session, Direction::Decrypt, kind, &parameter, key)
}

/// One cipher call: input in, output by the length-query protocol.
///
/// # Safety
/// `input` is NULL or valid for `input_len` bytes; `output`/`output_len` as `out_bytes`.
unsafe fn cipher(
    module: &Module,
    session: CK_SESSION_HANDLE,
    direction: Direction,
    part: Part,
    input: &[u8],
    output: CK_BYTE_PTR,
    output_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers the output buffer and its length word.
    unsafe {
        out_bytes(output, output_len, |capacity| {
            module.cipher_step(session, direction, part, input, capacity)
        })
    }
}

unsafe fn encrypt(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    unsafe {
        cipher(
            module,
            session,
            Direction::Encrypt,
            Part::Single,
            in_slice(data, data_len)?,
            out,
            out_len,
        )
    }
}

unsafe fn encrypt_update(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    unsafe {
        cipher(
            module,
            session,
            Direction::Encrypt,
            Part::Update,
            in_slice(data, data_len)?,
            out,
            out_len,
        )
    }
}

unsafe fn encrypt_final(
    module: &Module,
    session: CK_SESSION_HANDLE,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    unsafe {
        cipher(
            module,
            session,
            Direction::Encrypt,
            Part::Final,
            &[],
            out,
            out_len,
        )
    }
}

unsafe fn decrypt(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    unsafe {
        cipher(
            module,
            session,
            Direction::Decrypt,
            Part::Single,
            in_slice(data, data_len)?,
            out,
            out_len,
        )
    }
}

unsafe fn decrypt_update(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    unsafe {
        cipher(
            module,
            session,
            Direction::Decrypt,
            Part::Update,
            in_slice(data, data_len)?,
            out,
            out_len,
        )
    }
}

unsafe fn decrypt_final(
    module: &Module,
    session: CK_SESSION_HANDLE,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    unsafe {
        cipher(
            module,
            session,
            Direction::Decrypt,
            Part::Final,
            &[],
            out,
            out_len,
        )
    }
}

unsafe fn digest_init(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers the mechanism and its parameter.
    let (kind, parameter) = unsafe { in_mechanism(mechanism) }?;
    module.digest_init(session, kind, &parameter)
}

unsafe fn digest(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let data = unsafe { in_slice(data, data_len) }?;
    // SAFETY: as above.
    unsafe {
        out_bytes(out, out_len, |capacity| {
            module.digest_step(session, Part::Single, data, capacity)
        })
    }
}

unsafe fn digest_update(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers the input.
    let data = unsafe { in_slice(data, data_len) }?;
    module
        .digest_step(session, Part::Update, data, Some(0))
        .map(drop)
}

unsafe fn digest_key(
    module: &Module,
    session: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    module.digest_key(session, key)
}

unsafe fn digest_final(
    module: &Module,
    session: CK_SESSION_HANDLE,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers the output.
    unsafe {
        out_bytes(out, out_len, |capacity| {
            module.digest_step(session, Part::Final, &[], capacity)
        })
    }
}

unsafe fn sign_init(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: the caller's promise covers the mechanism and its parameter.
    let (kind, parameter) = unsafe { in_mechanism(mechanism) }?;
    module.sign_init(session, true, kind, &parameter, key)
}

unsafe fn sign(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let data = unsafe { in_slice(data, data_len) }?;
    // SAFETY: as above.
    unsafe {
        out_bytes(out, out_len, |capacity| {
            module.sign_step(session, Part::Single, data, capacity)
        })
    }
}

unsafe fn sign_update(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers the input.
    let data = unsafe { in_slice(data, data_len) }?;
    module.sign_update(session, true, data)
}

unsafe fn sign_final(
    module: &Module,
    session: CK_SESSION_HANDLE,
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers the output.
    unsafe {
        out_bytes(out, out_len, |capacity| {
            module.sign_step(session, Part::Final, &[], capacity)
        })
    }
}

unsafe fn verify_init(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: the caller's promise covers the mechanism and its parameter.
    let (kind, parameter) = unsafe { in_mechanism(mechanism) }?;
    module.sign_init(session, false, kind, &parameter, key)
}

unsafe fn verify(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    signature: CK_BYTE_PTR,
    signature_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers both inputs.
    let (data, signature) = unsafe {
        (
            in_slice(data, data_len)?,
            in_slice(signature, signature_len)?,
        )
    };
    module.verify_step(session, Part::Single, data, signature)
}

unsafe fn verify_update(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers the input.
    let data = unsafe { in_slice(data, data_len) }?;
    module.sign_update(session, false, data)
}

unsafe fn verify_final(
    module: &Module,
    session: CK_SESSION_HANDLE,
    signature: CK_BYTE_PTR,
    signature_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's promise covers the signature.
    let signature = unsafe { in_slice(signature, signature_len) }?;
    module.verify_step(session, Part::Final, &[], signature)
}

not_supported! {
    fn C_SignRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    fn C_SignRecover(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR);
    fn C_VerifyRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    fn C_VerifyRecover(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG, pData: CK_BYTE_PTR, pulDataLen: CK_ULONG_PTR);
    fn C_DigestEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG, pEncryptedPart: CK_BYTE_PTR, pulEncryptedPartLen: CK_ULONG_PTR);
    fn C_DecryptDigestUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: CK_BYTE_PTR, ulEncryptedPartLen: CK_ULONG, pPart: CK_BYTE_PTR, pulPartLen: CK_ULONG_PTR);
    fn C_SignEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG, pEncryptedPart: CK_BYTE_PTR, pulEncryptedPartLen: CK_ULONG_PTR);
    fn C_DecryptVerifyUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: CK_BYTE_PTR, ulEncryptedPartLen: CK_ULONG, pPart: CK_BYTE_PTR, pulPartLen: CK_ULONG_PTR);
    fn C_MessageEncryptInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    fn C_EncryptMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG, pPlaintext: CK_BYTE_PTR, ulPlaintextLen: CK_ULONG, pCiphertext: CK_BYTE_PTR, pulCiphertextLen: CK_ULONG_PTR);
    fn C_EncryptMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG);
    fn C_EncryptMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pPlaintextPart: CK_BYTE_PTR, ulPlaintextPartLen: CK_ULONG, pCiphertextPart: CK_BYTE_PTR, pulCiphertextPartLen: CK_ULONG_PTR, flags: CK_FLAGS);
    fn C_MessageEncryptFinal(hSession: CK_SESSION_HANDLE);
    fn C_MessageDecryptInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    fn C_DecryptMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG, pCiphertext: CK_BYTE_PTR, ulCiphertextLen: CK_ULONG, pPlaintext: CK_BYTE_PTR, pulPlaintextLen: CK_ULONG_PTR);
    fn C_DecryptMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG);
    fn C_DecryptMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pCiphertextPart: CK_BYTE_PTR, ulCiphertextPartLen: CK_ULONG, pPlaintextPart: CK_BYTE_PTR, pulPlaintextPartLen: CK_ULONG_PTR, flags: CK_FLAGS);
    fn C_MessageDecryptFinal(hSession: CK_SESSION_HANDLE);
    fn C_MessageSignInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    fn C_SignMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR);
    fn C_SignMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG);
    fn C_SignMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR);
    fn C_MessageSignFinal(hSession: CK_SESSION_HANDLE);
    fn C_MessageVerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    fn C_VerifyMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG);
    fn C_VerifyMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG);
    fn C_VerifyMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG);
    fn C_MessageVerifyFinal(hSession: CK_SESSION_HANDLE);
}
