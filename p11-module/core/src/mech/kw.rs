//! AES key wrap: RFC 3394 (CKM_AES_KEY_WRAP, no padding: the input must be whole 64-bit
//! blocks) and RFC 5649 (with padding) under both CKM_AES_KEY_WRAP_PAD 0x210A — the
//! number SoftHSMv2 uses — and CKM_AES_KEY_WRAP_KWP 0x210B, PKCS#11 3.0's number. The
//! algorithms come from RustCrypto's aes-kw.

use aes_kw::KeyInit;
use aes_kw::{KwAes128, KwAes192, KwAes256, KwpAes128, KwpAes192, KwpAes256};
use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::Mechanism;
use crate::mech::params::Parameter;

/// The 64-bit blocks RFC 3394 works in.
const SEMIBLOCK: usize = 8;
/// RFC 3394 §2.2.3.1: the default initial value.
const KW_DEFAULT_IV: [u8; 8] = [0xa6; 8];
/// RFC 5649 §3: the constant half of the alternative initial value.
const KWP_DEFAULT_IV: [u8; 4] = [0xa6, 0x59, 0x59, 0xa6];

fn wrap_info() -> CK_MECHANISM_INFO {
    CK_MECHANISM_INFO {
        ulMinKeySize: 16,
        ulMaxKeySize: 32,
        flags: CKF_WRAP | CKF_UNWRAP,
    }
}

/// The parameter may be absent or name the default initial value; other IVs are not
/// offered (and aes-kw does not take them).
fn check_iv(parameter: &Parameter, default: &[u8]) -> Result<()> {
    match parameter.bytes()? {
        [] => Ok(()),
        iv if iv == default => Ok(()),
        _ => Err(Error::MechanismParamInvalid),
    }
}

/// Instantiate a wrapper for the KEK's length.
macro_rules! with_kek {
    ($kek:expr, $k128:ty, $k192:ty, $k256:ty, |$wrapper:ident| $body:expr) => {{
        let bad = |_| Error::WrappingKeySizeRange;
        match $kek.len() {
            16 => {
                let $wrapper = <$k128>::new_from_slice($kek).map_err(bad)?;
                $body
            }
            24 => {
                let $wrapper = <$k192>::new_from_slice($kek).map_err(bad)?;
                $body
            }
            32 => {
                let $wrapper = <$k256>::new_from_slice($kek).map_err(bad)?;
                $body
            }
            _ => Err(Error::WrappingKeySizeRange),
        }
    }};
}

fn unwrap_error(err: aes_kw::Error) -> Error {
    match err {
        aes_kw::Error::IntegrityCheckFailed => Error::WrappedKeyInvalid,
        aes_kw::Error::InvalidDataSize | aes_kw::Error::InvalidOutputSize { .. } => {
            Error::WrappedKeyLenRange
        }
    }
}

/// CKM_AES_KEY_WRAP (RFC 3394).
pub struct Rfc3394;

impl Mechanism for Rfc3394 {
    fn info(&self) -> CK_MECHANISM_INFO {
        wrap_info()
    }

    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_AES]
    }

    fn wrap(&self, kek: &[u8], parameter: &Parameter, material: &[u8]) -> Result<Vec<u8>> {
        check_iv(parameter, &KW_DEFAULT_IV)?;
        // No silent zero padding: a key that is not whole semiblocks needs RFC 5649.
        if material.len() % SEMIBLOCK != 0 || material.len() < 2 * SEMIBLOCK {
            return Err(Error::KeySizeRange);
        }
        let mut out = vec![0u8; material.len() + SEMIBLOCK];
        with_kek!(kek, KwAes128, KwAes192, KwAes256, |wrapper| wrapper
            .wrap_key(material, &mut out)
            .map(|_| ())
            .map_err(|_| Error::KeySizeRange))?;
        Ok(out)
    }

    fn unwrap(&self, kek: &[u8], parameter: &Parameter, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_iv(parameter, &KW_DEFAULT_IV)?;
        if blob.len() % SEMIBLOCK != 0 || blob.len() < 3 * SEMIBLOCK {
            return Err(Error::WrappedKeyLenRange);
        }
        let mut out = Zeroizing::new(vec![0u8; blob.len() - SEMIBLOCK]);
        with_kek!(kek, KwAes128, KwAes192, KwAes256, |wrapper| wrapper
            .unwrap_key(blob, &mut out)
            .map(|_| ())
            .map_err(unwrap_error))?;
        Ok(out)
    }
}

/// CKM_AES_KEY_WRAP_PAD and CKM_AES_KEY_WRAP_KWP (RFC 5649): byte-identical output.
pub struct Rfc5649;

impl Mechanism for Rfc5649 {
    fn info(&self) -> CK_MECHANISM_INFO {
        wrap_info()
    }

    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_AES]
    }

    fn wrap(&self, kek: &[u8], parameter: &Parameter, material: &[u8]) -> Result<Vec<u8>> {
        check_iv(parameter, &KWP_DEFAULT_IV)?;
        if material.is_empty() || u32::try_from(material.len()).is_err() {
            return Err(Error::KeySizeRange);
        }
        let mut out = vec![0u8; material.len().div_ceil(SEMIBLOCK) * SEMIBLOCK + SEMIBLOCK];
        let len = with_kek!(kek, KwpAes128, KwpAes192, KwpAes256, |wrapper| wrapper
            .wrap_key(material, &mut out)
            .map(<[u8]>::len)
            .map_err(|_| Error::KeySizeRange))?;
        out.truncate(len);
        Ok(out)
    }

    fn unwrap(&self, kek: &[u8], parameter: &Parameter, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_iv(parameter, &KWP_DEFAULT_IV)?;
        if blob.len() % SEMIBLOCK != 0 || blob.len() < 2 * SEMIBLOCK {
            return Err(Error::WrappedKeyLenRange);
        }
        let mut out = Zeroizing::new(vec![0u8; blob.len() - SEMIBLOCK]);
        let len = with_kek!(kek, KwpAes128, KwpAes192, KwpAes256, |wrapper| wrapper
            .unwrap_key(blob, &mut out)
            .map(<[u8]>::len)
            .map_err(unwrap_error))?;
        out.truncate(len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    const NONE: Parameter = Parameter::Bytes(Vec::new());

    #[test]
    fn rfc_3394_section_4_6_256_bit_key_with_256_bit_kek() {
        let kek = hex!("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let key = hex!("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let wrapped = hex!(
            "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
        );
        assert_eq!(Rfc3394.wrap(&kek, &NONE, &key).expect("wraps"), wrapped);
        assert_eq!(
            *Rfc3394.unwrap(&kek, &NONE, &wrapped).expect("unwraps"),
            key
        );
    }

    #[test]
    fn rfc_3394_section_4_1_128_bit_key_with_128_bit_kek() {
        let kek = hex!("000102030405060708090A0B0C0D0E0F");
        let key = hex!("00112233445566778899AABBCCDDEEFF");
        let wrapped = hex!("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5");
        assert_eq!(Rfc3394.wrap(&kek, &NONE, &key).expect("wraps"), wrapped);
        assert_eq!(
            *Rfc3394.unwrap(&kek, &NONE, &wrapped).expect("unwraps"),
            key
        );
    }

    #[test]
    fn rfc_5649_section_6_vectors() {
        let kek = hex!("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let twenty = hex!("c37b7e6492584340bed12207808941155068f738");
        let twenty_wrapped =
            hex!("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
        assert_eq!(
            Rfc5649.wrap(&kek, &NONE, &twenty).expect("wraps"),
            twenty_wrapped
        );
        assert_eq!(
            *Rfc5649
                .unwrap(&kek, &NONE, &twenty_wrapped)
                .expect("unwraps"),
            twenty
        );
        let seven = hex!("466f7250617369");
        let seven_wrapped = hex!("afbeb0f07dfbf5419200f2ccb50bb24f");
        assert_eq!(
            Rfc5649.wrap(&kek, &NONE, &seven).expect("wraps"),
            seven_wrapped
        );
        assert_eq!(
            *Rfc5649
                .unwrap(&kek, &NONE, &seven_wrapped)
                .expect("unwraps"),
            seven
        );
    }

    #[test]
    fn rfc_3394_refuses_to_pad_silently() {
        let kek = [1u8; 16];
        assert!(matches!(
            Rfc3394.wrap(&kek, &NONE, &[0u8; 20]),
            Err(Error::KeySizeRange)
        ));
        assert!(matches!(
            Rfc3394.wrap(&kek, &NONE, &[0u8; 8]),
            Err(Error::KeySizeRange)
        ));
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let kek = [7u8; 32];
        for mechanism in [&Rfc3394 as &dyn Mechanism, &Rfc5649] {
            let blob = mechanism.wrap(&kek, &NONE, &[9u8; 32]).expect("wraps");
            for bit in 0..blob.len() * 8 {
                let mut tampered = blob.clone();
                tampered[bit / 8] ^= 1 << (bit % 8);
                assert!(matches!(
                    mechanism.unwrap(&kek, &NONE, &tampered),
                    Err(Error::WrappedKeyInvalid)
                ));
            }
            for len in 0..blob.len() {
                let result = mechanism.unwrap(&kek, &NONE, &blob[..len]);
                assert!(
                    matches!(
                        result,
                        Err(Error::WrappedKeyLenRange | Error::WrappedKeyInvalid)
                    ),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn only_the_default_iv_is_accepted() {
        let kek = [3u8; 16];
        let other = Parameter::Bytes(vec![0u8; 8]);
        assert!(matches!(
            Rfc3394.wrap(&kek, &other, &[0u8; 16]),
            Err(Error::MechanismParamInvalid)
        ));
        let default = Parameter::Bytes(KW_DEFAULT_IV.to_vec());
        assert!(Rfc3394.wrap(&kek, &default, &[0u8; 16]).is_ok());
        let kwp_default = Parameter::Bytes(KWP_DEFAULT_IV.to_vec());
        assert!(Rfc5649.wrap(&kek, &kwp_default, &[0u8; 5]).is_ok());
    }
}
