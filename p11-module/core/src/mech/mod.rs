//! The mechanism registry: one row per mechanism, read by `C_GetMechanismList`,
//! `C_GetMechanismInfo` and every function that takes a mechanism.

mod aes;
mod generic;

use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A mechanism. Default methods refuse what it does not do.
pub trait Mechanism: Send + Sync {
    /// Key sizes and the functions it serves, exactly as the functions accept them.
    fn info(&self) -> CK_MECHANISM_INFO;

    /// The class and key type of the keys `generate_key` makes.
    fn generates(&self) -> Option<(CK_OBJECT_CLASS, CK_KEY_TYPE)> {
        None
    }

    /// Make a secret key's value; `value_len` is the template's CKA_VALUE_LEN.
    fn generate_key(&self, _value_len: Option<CK_ULONG>) -> Result<Zeroizing<Vec<u8>>> {
        Err(Error::FunctionNotSupported)
    }
}

static MECHANISMS: &[(CK_MECHANISM_TYPE, &dyn Mechanism)] = &[
    (CKM_AES_KEY_GEN, &aes::KeyGen),
    (CKM_GENERIC_SECRET_KEY_GEN, &generic::KeyGen),
];

/// Every mechanism type the token offers, in registry order.
pub fn list() -> impl Iterator<Item = CK_MECHANISM_TYPE> {
    MECHANISMS.iter().map(|(kind, _)| *kind)
}

/// The mechanism of a type, or `CKR_MECHANISM_INVALID`.
pub fn lookup(kind: CK_MECHANISM_TYPE) -> Result<&'static dyn Mechanism> {
    MECHANISMS
        .iter()
        .find(|(known, _)| *known == kind)
        .map(|(_, mechanism)| *mechanism)
        .ok_or(Error::MechanismInvalid(kind))
}

/// Fill `out` from the operating system's CSPRNG.
pub fn random(out: &mut [u8]) -> Result<()> {
    getrandom::fill(out).map_err(|err| Error::General(format!("random source: {err}")))
}

/// Random bytes of a given length, zeroed on drop.
pub fn random_secret(len: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    random(&mut bytes)?;
    Ok(bytes)
}

/// The CKA_CHECK_VALUE of a secret key (PKCS#11 3.0 §6.7.2 for AES, §6.19.1 for
/// generic secrets).
pub fn key_check_value(key_type: Option<CK_KEY_TYPE>, value: &[u8]) -> Result<Vec<u8>> {
    match key_type {
        Some(CKK_AES) => aes::check_value(value),
        Some(CKK_GENERIC_SECRET) => Ok(digest_check_value(value)),
        _ => Err(Error::AttributeValueInvalid(CKA_KEY_TYPE)),
    }
}

/// The first three bytes of SHA-1: the check value of generic secrets and certificates.
pub fn digest_check_value(value: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(value)[..3].to_vec()
}

/// Whether a secret key of this type may have `len` bytes.
pub fn check_secret_len(key_type: Option<CK_KEY_TYPE>, len: usize) -> Result<()> {
    let ok = match key_type {
        Some(CKK_AES) => matches!(len, 16 | 24 | 32),
        Some(CKK_GENERIC_SECRET) => (1..=generic::MAX_LEN).contains(&len),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::AttributeValueInvalid(CKA_VALUE))
    }
}
