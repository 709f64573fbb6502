//! The mechanism registry: one row per mechanism, read by `C_GetMechanismList`,
//! `C_GetMechanismInfo` and every function that takes a mechanism.

mod aes;
pub mod cipher;
pub mod digest;
pub mod domain;
pub mod ec;
pub mod eddsa;
pub mod generic;
pub mod kw;
pub mod mac;
pub mod params;
pub mod pkcs8;
pub mod rsa;
pub mod sign;

use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::token::object::Object;
use cipher::{Cipher, Direction};
use digest::{Algorithm, Hash};
use params::Parameter;
use sign::Signer;

/// A generated key pair's attributes: what the mechanism computed for each half.
pub struct KeyPair {
    /// For the public key (CKA_MODULUS, CKA_EC_POINT, …).
    pub public: Vec<crate::token::attr::Attribute>,
    /// For the private key, key material included.
    pub private: Vec<crate::token::attr::Attribute>,
    /// The DER SubjectPublicKeyInfo, for CKA_PUBLIC_KEY_INFO on both.
    pub public_key_info: Vec<u8>,
}

/// A mechanism. Default methods refuse what it does not do; callers check `info().flags`
/// first, so a refusal here is a registry mistake, not a caller's.
pub trait Mechanism: Send + Sync {
    /// Key sizes and the functions it serves, exactly as the functions accept them.
    fn info(&self) -> CK_MECHANISM_INFO;

    /// Key types its key operations accept.
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[]
    }

    /// Whether a key of `len` bytes suits it.
    fn key_size_ok(&self, len: usize) -> bool {
        let info = self.info();
        CK_ULONG::try_from(len)
            .is_ok_and(|len| (info.ulMinKeySize..=info.ulMaxKeySize).contains(&len))
    }

    /// The class and key type of the keys `generate_key` makes.
    fn generates(&self) -> Option<(CK_OBJECT_CLASS, CK_KEY_TYPE)> {
        None
    }

    /// The key type of the pairs `generate_key_pair` makes.
    fn generates_pair(&self) -> Option<CK_KEY_TYPE> {
        None
    }

    /// Make a key pair from the public template's parameters (modulus bits, curve).
    fn generate_key_pair(&self, _public: &[crate::token::attr::Attribute]) -> Result<KeyPair> {
        Err(unsupported())
    }

    /// Make a secret key's value; `value_len` is the template's CKA_VALUE_LEN.
    fn generate_key(&self, _value_len: Option<CK_ULONG>) -> Result<Zeroizing<Vec<u8>>> {
        Err(unsupported())
    }

    /// Start an encryption or decryption.
    fn cipher(
        &self,
        _key: &[u8],
        _direction: Direction,
        _parameter: &Parameter,
    ) -> Result<Box<dyn Cipher>> {
        Err(unsupported())
    }

    /// Start an encryption or decryption with a key object (checked for class, type,
    /// usage and allowed mechanisms); secret-key ciphers take its value.
    fn key_cipher(
        &self,
        key: &Object,
        direction: Direction,
        parameter: &Parameter,
    ) -> Result<Box<dyn Cipher>> {
        self.cipher(secret_value(key, self)?, direction, parameter)
    }

    /// Start a digest.
    fn digest(&self, _parameter: &Parameter) -> Result<Box<dyn Hash>> {
        Err(unsupported())
    }

    /// Whether its keys are key pairs (private key to sign, decrypt, unwrap and derive;
    /// public key to verify, encrypt and wrap).
    fn asymmetric(&self) -> bool {
        false
    }

    /// Start signing (`sign`) or verifying with a key, already checked for class, type,
    /// usage and allowed mechanisms.
    fn signer(
        &self,
        _key: &Object,
        _parameter: &Parameter,
        _sign: bool,
    ) -> Result<Box<dyn Signer>> {
        Err(unsupported())
    }

    /// Derive key material from a base key's value.
    fn derive(&self, _base: &[u8], _parameter: &Parameter) -> Result<Zeroizing<Vec<u8>>> {
        Err(unsupported())
    }

    /// Derive key material from a base key (checked for its role); `len` is the wanted
    /// length when the template says it.
    fn key_derive(
        &self,
        base: &Object,
        parameter: &Parameter,
        _len: Option<usize>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.derive(secret_value(base, self)?, parameter)
    }

    /// Wrap key material under a wrapping key (checked for its role).
    fn key_wrap(&self, kek: &Object, parameter: &Parameter, material: &[u8]) -> Result<Vec<u8>> {
        self.wrap(secret_value(kek, self)?, parameter, material)
    }

    /// Unwrap key material with an unwrapping key (checked for its role).
    fn key_unwrap(
        &self,
        kek: &Object,
        parameter: &Parameter,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.unwrap(secret_value(kek, self)?, parameter, blob)
    }

    /// Wrap key material under a wrapping key's value.
    fn wrap(&self, _kek: &[u8], _parameter: &Parameter, _material: &[u8]) -> Result<Vec<u8>> {
        Err(unsupported())
    }

    /// Unwrap key material; the result is wiped on drop, and nothing of a blob that fails
    /// authentication is returned.
    fn unwrap(
        &self,
        _kek: &[u8],
        _parameter: &Parameter,
        _blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        Err(unsupported())
    }
}

/// A secret key's value, sized for the mechanism.
pub fn secret_value<'a, M: Mechanism + ?Sized>(key: &'a Object, mechanism: &M) -> Result<&'a [u8]> {
    let value = key.bytes(CKA_VALUE).ok_or(Error::KeyTypeInconsistent)?;
    if mechanism.key_size_ok(value.len()) {
        Ok(value)
    } else {
        Err(Error::KeySizeRange)
    }
}

fn unsupported() -> Error {
    Error::General("mechanism registry: function not provided by this mechanism".into())
}

use digest::Digest;
use mac::{CmacMechanism, HmacMechanism};

static MECHANISMS: &[(CK_MECHANISM_TYPE, &dyn Mechanism)] = &[
    (CKM_AES_KEY_GEN, &aes::KeyGen),
    (CKM_AES_ECB, &aes::Ecb),
    (CKM_AES_CBC, &aes::Cbc { padded: false }),
    (CKM_AES_CBC_PAD, &aes::Cbc { padded: true }),
    (CKM_AES_CTR, &aes::Ctr),
    (CKM_AES_GCM, &aes::Gcm),
    (CKM_AES_KEY_WRAP, &kw::Rfc3394),
    (CKM_AES_KEY_WRAP_PAD, &kw::Rfc5649), // 0x210A, SoftHSMv2's number
    (CKM_AES_KEY_WRAP_KWP, &kw::Rfc5649), // 0x210B, PKCS#11 3.0's number
    (domain::CKM_KEYFERRY_DOMAIN_WRAP, &domain::DomainWrap),
    (CKM_AES_ECB_ENCRYPT_DATA, &aes::EncryptData { cbc: false }),
    (CKM_AES_CBC_ENCRYPT_DATA, &aes::EncryptData { cbc: true }),
    (CKM_AES_CMAC, &CmacMechanism { general: false }),
    (CKM_AES_CMAC_GENERAL, &CmacMechanism { general: true }),
    (CKM_GENERIC_SECRET_KEY_GEN, &generic::KeyGen),
    (CKM_SHA_1, &Digest(Algorithm::Sha1)),
    (CKM_SHA224, &Digest(Algorithm::Sha224)),
    (CKM_SHA256, &Digest(Algorithm::Sha256)),
    (CKM_SHA384, &Digest(Algorithm::Sha384)),
    (CKM_SHA512, &Digest(Algorithm::Sha512)),
    (
        CKM_SHA_1_HMAC,
        &HmacMechanism {
            hash: Algorithm::Sha1,
            general: false,
        },
    ),
    (
        CKM_SHA_1_HMAC_GENERAL,
        &HmacMechanism {
            hash: Algorithm::Sha1,
            general: true,
        },
    ),
    (
        CKM_SHA224_HMAC,
        &HmacMechanism {
            hash: Algorithm::Sha224,
            general: false,
        },
    ),
    (
        CKM_SHA224_HMAC_GENERAL,
        &HmacMechanism {
            hash: Algorithm::Sha224,
            general: true,
        },
    ),
    (
        CKM_SHA256_HMAC,
        &HmacMechanism {
            hash: Algorithm::Sha256,
            general: false,
        },
    ),
    (
        CKM_SHA256_HMAC_GENERAL,
        &HmacMechanism {
            hash: Algorithm::Sha256,
            general: true,
        },
    ),
    (
        CKM_SHA384_HMAC,
        &HmacMechanism {
            hash: Algorithm::Sha384,
            general: false,
        },
    ),
    (
        CKM_SHA384_HMAC_GENERAL,
        &HmacMechanism {
            hash: Algorithm::Sha384,
            general: true,
        },
    ),
    (
        CKM_SHA512_HMAC,
        &HmacMechanism {
            hash: Algorithm::Sha512,
            general: false,
        },
    ),
    (
        CKM_SHA512_HMAC_GENERAL,
        &HmacMechanism {
            hash: Algorithm::Sha512,
            general: true,
        },
    ),
    (CKM_RSA_PKCS_KEY_PAIR_GEN, &rsa::KeyGen),
    (CKM_RSA_PKCS, &rsa::Pkcs1Signature(None)),
    (CKM_RSA_PKCS_OAEP, &rsa::OaepEncryption),
    (CKM_RSA_AES_KEY_WRAP, &rsa::RsaAesKeyWrap),
    (
        CKM_SHA1_RSA_PKCS,
        &rsa::Pkcs1Signature(Some(Algorithm::Sha1)),
    ),
    (
        CKM_SHA224_RSA_PKCS,
        &rsa::Pkcs1Signature(Some(Algorithm::Sha224)),
    ),
    (
        CKM_SHA256_RSA_PKCS,
        &rsa::Pkcs1Signature(Some(Algorithm::Sha256)),
    ),
    (
        CKM_SHA384_RSA_PKCS,
        &rsa::Pkcs1Signature(Some(Algorithm::Sha384)),
    ),
    (
        CKM_SHA512_RSA_PKCS,
        &rsa::Pkcs1Signature(Some(Algorithm::Sha512)),
    ),
    (CKM_RSA_PKCS_PSS, &rsa::PssSignature(None)),
    (
        CKM_SHA1_RSA_PKCS_PSS,
        &rsa::PssSignature(Some(Algorithm::Sha1)),
    ),
    (
        CKM_SHA224_RSA_PKCS_PSS,
        &rsa::PssSignature(Some(Algorithm::Sha224)),
    ),
    (
        CKM_SHA256_RSA_PKCS_PSS,
        &rsa::PssSignature(Some(Algorithm::Sha256)),
    ),
    (
        CKM_SHA384_RSA_PKCS_PSS,
        &rsa::PssSignature(Some(Algorithm::Sha384)),
    ),
    (
        CKM_SHA512_RSA_PKCS_PSS,
        &rsa::PssSignature(Some(Algorithm::Sha512)),
    ),
    (CKM_EC_KEY_PAIR_GEN, &ec::KeyGen),
    (CKM_ECDH1_DERIVE, &ec::Ecdh),
    (CKM_ECDSA, &ec::Ecdsa(None)),
    (CKM_ECDSA_SHA1, &ec::Ecdsa(Some(Algorithm::Sha1))),
    (CKM_ECDSA_SHA224, &ec::Ecdsa(Some(Algorithm::Sha224))),
    (CKM_ECDSA_SHA256, &ec::Ecdsa(Some(Algorithm::Sha256))),
    (CKM_ECDSA_SHA384, &ec::Ecdsa(Some(Algorithm::Sha384))),
    (CKM_ECDSA_SHA512, &ec::Ecdsa(Some(Algorithm::Sha512))),
    (CKM_EC_EDWARDS_KEY_PAIR_GEN, &eddsa::KeyGen),
    (CKM_EDDSA, &eddsa::Eddsa),
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

/// The mechanism of a type if it serves `flag` (CKF_ENCRYPT, …), else
/// `CKR_MECHANISM_INVALID`.
pub fn lookup_for(kind: CK_MECHANISM_TYPE, flag: CK_FLAGS) -> Result<&'static dyn Mechanism> {
    let mechanism = lookup(kind)?;
    if mechanism.info().flags & flag == 0 {
        return Err(Error::MechanismInvalid(kind));
    }
    Ok(mechanism)
}

/// Append to a secret buffer without leaving a copy behind: when the buffer must grow,
/// the bytes move to a new allocation and the old one is wiped as it drops (a plain
/// `Vec` reallocation would free it unwiped).
pub fn extend_secret(buffer: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    reserve_secret(buffer, buffer.len() + more.len());
    buffer.extend_from_slice(more);
}

/// Make room for `capacity` bytes in a secret buffer, moving (and wiping) as
/// `extend_secret` does, so that appends up to that size copy nothing more.
pub fn reserve_secret(buffer: &mut Zeroizing<Vec<u8>>, capacity: usize) {
    if capacity > buffer.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity.max(2 * buffer.capacity())));
        grown.extend_from_slice(buffer);
        *buffer = grown;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_function_is_implemented() {
        let empty = Parameter::Bytes(vec![]);
        for (kind, mechanism) in MECHANISMS {
            let flags = mechanism.info().flags;
            if flags & CKF_DIGEST != 0 {
                assert!(mechanism.digest(&empty).is_ok(), "0x{kind:x} digest");
            }
            if flags & CKF_GENERATE != 0 {
                assert!(mechanism.generates().is_some(), "0x{kind:x} generate");
            }
            if flags & CKF_GENERATE_KEY_PAIR != 0 {
                assert!(
                    mechanism.generates_pair().is_some(),
                    "0x{kind:x} generate pair"
                );
            }
            if flags & (CKF_ENCRYPT | CKF_DECRYPT | CKF_SIGN | CKF_VERIFY) != 0 {
                assert!(!mechanism.key_types().is_empty(), "0x{kind:x} key types");
            }
        }
    }
}
