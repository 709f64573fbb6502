//! MACs: HMAC over SHA-1/SHA-2 (PKCS#11 3.0 §2.20–§2.23) and AES-CMAC (§2.10.7), full
//! length or truncated (_GENERAL). Verification compares in constant time.

use aes::{Aes128, Aes192, Aes256};
use cmac::{Cmac, KeyInit};
use hmac::Hmac;
use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::digest::Algorithm;
use crate::mech::params::Parameter;
use crate::mech::sign::Signer;
use crate::mech::{Mechanism, secret_value};
use crate::token::object::Object;
use subtle::ConstantTimeEq;

/// A MAC in progress.
pub trait Mac: Send {
    /// Absorb more data.
    fn update(&mut self, data: &[u8]);
    /// The full-length MAC; the state is spent.
    fn finish(self: Box<Self>) -> Zeroizing<Vec<u8>>;
}

impl<M: hmac::Mac + Send + 'static> Mac for M {
    fn update(&mut self, data: &[u8]) {
        hmac::Mac::update(self, data);
    }
    fn finish(self: Box<Self>) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.finalize().into_bytes().to_vec())
    }
}

/// A MAC operation: the state and how many bytes of the MAC count.
pub struct MacOperation {
    /// The running MAC.
    pub mac: Box<dyn Mac>,
    /// Output length in bytes (the full MAC, or the _GENERAL parameter).
    pub len: usize,
}

impl Signer for MacOperation {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.mac.update(data);
        Ok(())
    }

    fn signature_len(&self) -> usize {
        self.len
    }

    fn sign(self: Box<Self>) -> Result<Vec<u8>> {
        let len = self.len;
        let mut tag = self.mac.finish();
        tag.truncate(len);
        Ok(tag.to_vec())
    }

    fn verify(self: Box<Self>, signature: &[u8]) -> Result<()> {
        if signature.len() != self.len {
            return Err(Error::SignatureLenRange);
        }
        let len = self.len;
        let tag = self.mac.finish();
        let matches: bool = tag[..len].ct_eq(signature).into();
        if matches {
            Ok(())
        } else {
            Err(Error::SignatureInvalid)
        }
    }
}

/// The output length: the full `full` bytes, or a _GENERAL parameter of 1..=`full`.
fn mac_len(general: bool, full: usize, parameter: &Parameter) -> Result<usize> {
    if !general {
        parameter.none()?;
        return Ok(full);
    }
    match usize::try_from(parameter.ulong()?) {
        Ok(len) if (1..=full).contains(&len) => Ok(len),
        _ => Err(Error::MechanismParamInvalid),
    }
}

/// CKM_SHA*_HMAC and CKM_SHA*_HMAC_GENERAL.
pub struct HmacMechanism {
    /// The hash.
    pub hash: Algorithm,
    /// Truncated to the parameter's length.
    pub general: bool,
}

/// Longest HMAC key accepted, in bytes (the longest generic secret).
const MAX_HMAC_KEY: usize = crate::mech::generic::MAX_LEN;

impl Mechanism for HmacMechanism {
    fn info(&self) -> CK_MECHANISM_INFO {
        // Key sizes of HMAC mechanisms are in bits (PKCS#11 3.0 §2.20.5 and the like).
        CK_MECHANISM_INFO {
            ulMinKeySize: 8,
            ulMaxKeySize: (MAX_HMAC_KEY * 8) as CK_ULONG,
            flags: CKF_SIGN | CKF_VERIFY,
        }
    }

    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_GENERIC_SECRET, CKK_AES]
    }

    fn key_size_ok(&self, len: usize) -> bool {
        (1..=MAX_HMAC_KEY).contains(&len)
    }

    fn signer(&self, key: &Object, parameter: &Parameter, _sign: bool) -> Result<Box<dyn Signer>> {
        Ok(Box::new(self.mac(secret_value(key, self)?, parameter)?))
    }
}

impl HmacMechanism {
    /// A MAC under a key value.
    pub fn mac(&self, key: &[u8], parameter: &Parameter) -> Result<MacOperation> {
        let len = mac_len(self.general, self.hash.output_len(), parameter)?;
        let bad_key = |_| Error::KeySizeRange;
        let mac: Box<dyn Mac> = match self.hash {
            Algorithm::Sha1 => Box::new(Hmac::<sha1::Sha1>::new_from_slice(key).map_err(bad_key)?),
            Algorithm::Sha224 => {
                Box::new(Hmac::<sha2::Sha224>::new_from_slice(key).map_err(bad_key)?)
            }
            Algorithm::Sha256 => {
                Box::new(Hmac::<sha2::Sha256>::new_from_slice(key).map_err(bad_key)?)
            }
            Algorithm::Sha384 => {
                Box::new(Hmac::<sha2::Sha384>::new_from_slice(key).map_err(bad_key)?)
            }
            Algorithm::Sha512 => {
                Box::new(Hmac::<sha2::Sha512>::new_from_slice(key).map_err(bad_key)?)
            }
        };
        Ok(MacOperation { mac, len })
    }
}

/// CKM_AES_CMAC and CKM_AES_CMAC_GENERAL.
pub struct CmacMechanism {
    /// Truncated to the parameter's length.
    pub general: bool,
}

impl Mechanism for CmacMechanism {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 16,
            ulMaxKeySize: 32,
            flags: CKF_SIGN | CKF_VERIFY,
        }
    }

    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_AES]
    }

    fn key_size_ok(&self, len: usize) -> bool {
        matches!(len, 16 | 24 | 32)
    }

    fn signer(&self, key: &Object, parameter: &Parameter, _sign: bool) -> Result<Box<dyn Signer>> {
        Ok(Box::new(self.mac(secret_value(key, self)?, parameter)?))
    }
}

impl CmacMechanism {
    /// A MAC under a key value.
    pub fn mac(&self, key: &[u8], parameter: &Parameter) -> Result<MacOperation> {
        let len = mac_len(self.general, 16, parameter)?;
        let bad_key = |_| Error::KeySizeRange;
        let mac: Box<dyn Mac> = match key.len() {
            16 => Box::new(Cmac::<Aes128>::new_from_slice(key).map_err(bad_key)?),
            24 => Box::new(Cmac::<Aes192>::new_from_slice(key).map_err(bad_key)?),
            32 => Box::new(Cmac::<Aes256>::new_from_slice(key).map_err(bad_key)?),
            _ => return Err(Error::KeySizeRange),
        };
        Ok(MacOperation { mac, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn tag(operation: Result<MacOperation>, data: &[u8]) -> Vec<u8> {
        let mut operation = Box::new(operation.expect("mac"));
        operation.update(data).expect("absorbs");
        operation.sign().expect("signs")
    }

    #[test]
    fn rfc_4231_case_2() {
        let mechanism = HmacMechanism {
            hash: Algorithm::Sha256,
            general: false,
        };
        let full = tag(
            mechanism.mac(b"Jefe", &Parameter::Bytes(vec![])),
            b"what do ya want for nothing?",
        );
        assert_eq!(
            full,
            hex!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        let general = HmacMechanism {
            hash: Algorithm::Sha256,
            general: true,
        };
        let truncated = Parameter::Bytes((16 as CK_ULONG).to_ne_bytes().to_vec());
        assert_eq!(
            tag(
                general.mac(b"Jefe", &truncated),
                b"what do ya want for nothing?"
            ),
            full[..16]
        );
        let too_long = Parameter::Bytes((33 as CK_ULONG).to_ne_bytes().to_vec());
        assert!(matches!(
            general.mac(b"Jefe", &too_long),
            Err(Error::MechanismParamInvalid)
        ));
    }

    #[test]
    fn rfc_4493_example_2() {
        let key = hex!("2b7e151628aed2a6abf7158809cf4f3c");
        let data = hex!("6bc1bee22e409f96e93d7e117393172a");
        let cmac = CmacMechanism { general: false };
        let got = tag(cmac.mac(&key, &Parameter::Bytes(vec![])), &data);
        assert_eq!(got, hex!("070a16b46b4d4144f79bdd9dd04a287c"));
    }
}
