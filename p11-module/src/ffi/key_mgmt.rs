//! Key management and random numbers (PKCS#11 3.0 §5.14, §5.15).

use keyferry_core::Result;
use keyferry_core::token::Module;
use pkcs11_sys::*;

use crate::ffi::convert::{in_mechanism, in_slice, in_template, out, out_bytes, out_slice};
use crate::ffi::{export, not_supported};

export! {
    fn C_GenerateKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) => generate_key;
    fn C_SeedRandom(hSession: CK_SESSION_HANDLE, pSeed: CK_BYTE_PTR, ulSeedLen: CK_ULONG) => seed_random;
    fn C_GenerateRandom(hSession: CK_SESSION_HANDLE, RandomData: CK_BYTE_PTR, ulRandomLen: CK_ULONG) => generate_random;
    fn C_DeriveKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hBaseKey: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulAttributeCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) => derive_key;
    fn C_GenerateKeyPair(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, pPublicKeyTemplate: CK_ATTRIBUTE_PTR, ulPublicKeyAttributeCount: CK_ULONG, pPrivateKeyTemplate: CK_ATTRIBUTE_PTR, ulPrivateKeyAttributeCount: CK_ULONG, phPublicKey: CK_OBJECT_HANDLE_PTR, phPrivateKey: CK_OBJECT_HANDLE_PTR) => generate_key_pair;
    fn C_WrapKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hWrappingKey: CK_OBJECT_HANDLE, hKey: CK_OBJECT_HANDLE, pWrappedKey: CK_BYTE_PTR, pulWrappedKeyLen: CK_ULONG_PTR) => wrap_key;
    fn C_UnwrapKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hUnwrappingKey: CK_OBJECT_HANDLE, pWrappedKey: CK_BYTE_PTR, ulWrappedKeyLen: CK_ULONG, pTemplate: CK_ATTRIBUTE_PTR, ulAttributeCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) => unwrap_key;
}

not_supported! {}

unsafe fn generate_key(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    key: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let (key, (mechanism, parameter), template) = unsafe {
        (
            out(key)?,
            in_mechanism(mechanism)?,
            in_template(template, count)?,
        )
    };
    *key = module.generate_key(session, mechanism, &parameter, &template)?;
    Ok(())
}

unsafe fn seed_random(
    module: &Module,
    session: CK_SESSION_HANDLE,
    seed: CK_BYTE_PTR,
    seed_len: CK_ULONG,
) -> Result<()> {
    // SAFETY: NULL or valid for its length.
    unsafe { in_slice(seed, seed_len) }?;
    module.seed_random(session)
}

unsafe fn generate_random(
    module: &Module,
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    len: CK_ULONG,
) -> Result<()> {
    // SAFETY: NULL or valid for `len` writable bytes.
    let data = unsafe { out_slice(data, len) }?;
    module.generate_random(session, data)
}

#[allow(clippy::too_many_arguments)] // the C signature
unsafe fn wrap_key(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    wrapping_key: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    wrapped: CK_BYTE_PTR,
    wrapped_len: CK_ULONG_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers the mechanism and its parameter.
    let (kind, parameter) = unsafe { in_mechanism(mechanism) }?;
    // SAFETY: the caller's promise covers the output buffer and its length word.
    unsafe {
        out_bytes(wrapped, wrapped_len, |capacity| {
            module.wrap_key(session, kind, &parameter, wrapping_key, key, capacity)
        })
    }
}

#[allow(clippy::too_many_arguments)] // the C signature
unsafe fn unwrap_key(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    unwrapping_key: CK_OBJECT_HANDLE,
    wrapped: CK_BYTE_PTR,
    wrapped_len: CK_ULONG,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    key: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let (key, (kind, parameter), wrapped, template) = unsafe {
        (
            out(key)?,
            in_mechanism(mechanism)?,
            in_slice(wrapped, wrapped_len)?,
            in_template(template, count)?,
        )
    };
    *key = module.unwrap_key(
        session,
        kind,
        &parameter,
        unwrapping_key,
        wrapped,
        &template,
    )?;
    Ok(())
}

unsafe fn derive_key(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    base: CK_OBJECT_HANDLE,
    template: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
    key: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let (key, (kind, parameter), template) = unsafe {
        (
            out(key)?,
            in_mechanism(mechanism)?,
            in_template(template, count)?,
        )
    };
    *key = module.derive_key(session, kind, &parameter, base, &template)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the C signature
unsafe fn generate_key_pair(
    module: &Module,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    public_template: CK_ATTRIBUTE_PTR,
    public_count: CK_ULONG,
    private_template: CK_ATTRIBUTE_PTR,
    private_count: CK_ULONG,
    public_key: CK_OBJECT_HANDLE_PTR,
    private_key: CK_OBJECT_HANDLE_PTR,
) -> Result<()> {
    // SAFETY: the caller's promise covers every pointer.
    let (public_key, private_key, (kind, parameter), public_template, private_template) = unsafe {
        (
            out(public_key)?,
            out(private_key)?,
            in_mechanism(mechanism)?,
            in_template(public_template, public_count)?,
            in_template(private_template, private_count)?,
        )
    };
    (*public_key, *private_key) = module.generate_key_pair(
        session,
        kind,
        &parameter,
        &public_template,
        &private_template,
    )?;
    Ok(())
}
