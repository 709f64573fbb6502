//! `CKM_KEYFERRY_DOMAIN_WRAP`: same-root clones. Tokens built from the same master key
//! (the same key parts) form a domain and share a domain key, derived from the master key;
//! each exposes it as a read-only, non-extractable object. Wrapping with it carries any
//! object — non-extractable keys included — with every attribute, in a blob only a token
//! of the same domain can open.
//!
//! Blob: `"KFDW"`, version 1, then AES-256-GCM under the domain key (12-byte nonce,
//! ciphertext, 16-byte tag) of the object's attributes in the token's own attribute
//! encoding (`attr::encode`, CKA_UNIQUE_ID left out); the AAD is the magic, the version and
//! the domain key's check value.

use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::Mechanism;
use crate::store::keys::Key256;

/// The vendor mechanism number: CKM_VENDOR_DEFINED | "KF" | 1.
pub const CKM_KEYFERRY_DOMAIN_WRAP: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4b46_0001;

/// CKA_LABEL of every token's domain key object.
pub const DOMAIN_KEY_LABEL: &[u8] = b"keyferry-domain-key";

const MAGIC: &[u8; 4] = b"KFDW";
const VERSION: u8 = 1;

/// The registry entry: AES-256 domain keys, wrap and unwrap. The work itself happens in
/// the token (`token::wrap`), which alone can see whole objects.
pub struct DomainWrap;

impl Mechanism for DomainWrap {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 32,
            ulMaxKeySize: 32,
            flags: CKF_WRAP | CKF_UNWRAP,
        }
    }

    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_AES]
    }
}

fn aad(domain_key: &Key256) -> Result<Vec<u8>> {
    let mut aad = MAGIC.to_vec();
    aad.push(VERSION);
    aad.extend(domain_key.check_value()?);
    Ok(aad)
}

/// Seals an object's encoded attributes into a domain blob.
pub fn seal(domain_key: &Key256, encoded: &[u8]) -> Result<Vec<u8>> {
    let mut blob = MAGIC.to_vec();
    blob.push(VERSION);
    blob.extend(domain_key.seal(&aad(domain_key)?, encoded)?);
    Ok(blob)
}

/// Opens a domain blob; another domain's blob, a tampered one or garbage is
/// `CKR_WRAPPED_KEY_INVALID`, and nothing of it is revealed.
pub fn open(domain_key: &Key256, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let header = MAGIC.len() + 1;
    if blob.len() <= header || &blob[..MAGIC.len()] != MAGIC || blob[MAGIC.len()] != VERSION {
        return Err(Error::WrappedKeyInvalid);
    }
    domain_key
        .open(&aad(domain_key)?, &blob[header..])
        .ok_or(Error::WrappedKeyInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_opens_only_under_its_domain_key_and_untampered() {
        let domain = Key256::random().expect("random");
        let other = Key256::random().expect("random");
        let blob = seal(&domain, b"attributes").expect("seal");
        assert_eq!(&open(&domain, &blob).expect("open")[..], b"attributes");
        assert!(matches!(open(&other, &blob), Err(Error::WrappedKeyInvalid)));
        for index in 0..blob.len() {
            let mut tampered = blob.clone();
            tampered[index] ^= 0x01;
            assert!(
                matches!(open(&domain, &tampered), Err(Error::WrappedKeyInvalid)),
                "byte {index}"
            );
        }
        assert!(matches!(
            open(&domain, &blob[..5]),
            Err(Error::WrappedKeyInvalid)
        ));
    }
}
