//! Generic secrets (HMAC keys): key generation.

use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::{Mechanism, random_secret};

/// The longest generic secret we make or accept, in bytes.
pub const MAX_LEN: usize = 512;

/// CKM_GENERIC_SECRET_KEY_GEN.
pub struct KeyGen;

impl Mechanism for KeyGen {
    fn info(&self) -> CK_MECHANISM_INFO {
        // PKCS#11 3.0 §6.19.2: sizes in bits for this mechanism.
        CK_MECHANISM_INFO {
            ulMinKeySize: 8,
            ulMaxKeySize: (MAX_LEN * 8) as CK_ULONG,
            flags: CKF_GENERATE,
        }
    }

    fn generates(&self) -> Option<(CK_OBJECT_CLASS, CK_KEY_TYPE)> {
        Some((CKO_SECRET_KEY, CKK_GENERIC_SECRET))
    }

    fn generate_key(&self, value_len: Option<CK_ULONG>) -> Result<Zeroizing<Vec<u8>>> {
        let len = value_len.ok_or(Error::TemplateIncomplete(CKA_VALUE_LEN))?;
        match usize::try_from(len) {
            Ok(len) if (1..=MAX_LEN).contains(&len) => random_secret(len),
            _ => Err(Error::AttributeValueInvalid(CKA_VALUE_LEN)),
        }
    }
}
