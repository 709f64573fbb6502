//! Private keys as PKCS#8 (RFC 5208/5958), the form they take inside a wrapped blob
//! (PKCS#11 3.0 §2.1.13 and §2.14.5): encoded from a key object's attributes and decoded
//! back into them. The encodings come from RustCrypto's rsa, elliptic-curve and
//! ed25519-dalek.

use pkcs11_sys::*;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::ec::{Curve, der_octet_string, unwrap_point};
use crate::token::attr::{Attribute, Value};
use crate::token::object::Object;

/// The PKCS#8 DER of a private key object.
pub fn encode(object: &Object) -> Result<Zeroizing<Vec<u8>>> {
    let unwrappable = |_| Error::KeyNotWrappable;
    let der = match object.key_type() {
        Some(CKK_RSA) => crate::mech::rsa::private_key(object)?
            .to_pkcs8_der()
            .map_err(unwrappable)?,
        Some(CKK_EC) => {
            let value = object.bytes(CKA_VALUE).ok_or(Error::KeyNotWrappable)?;
            match object.bytes(CKA_EC_PARAMS).and_then(Curve::from_params) {
                Some(Curve::P256) => p256::SecretKey::from_slice(&padded(value, 32)?)
                    .map_err(|_| Error::KeyNotWrappable)?
                    .to_pkcs8_der(),
                Some(Curve::P384) => p384::SecretKey::from_slice(&padded(value, 48)?)
                    .map_err(|_| Error::KeyNotWrappable)?
                    .to_pkcs8_der(),
                None => return Err(Error::KeyNotWrappable),
            }
            .map_err(unwrappable)?
        }
        Some(CKK_EC_EDWARDS) => {
            let seed: [u8; 32] = object
                .bytes(CKA_VALUE)
                .and_then(|v| v.try_into().ok())
                .ok_or(Error::KeyNotWrappable)?;
            let seed = Zeroizing::new(seed);
            // PKCS#8 v1 (no public key inside): OpenSSL before 3.5, and so SoftHSMv2 built
            // on it, cannot read the v2 form ed25519-dalek writes by default.
            ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: *seed,
                public_key: None,
            }
            .to_pkcs8_der()
            .map_err(unwrappable)?
        }
        _ => return Err(Error::KeyNotWrappable),
    };
    Ok(Zeroizing::new(der.as_bytes().to_vec()))
}

fn padded(value: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
    if value.len() > len {
        return Err(Error::KeyNotWrappable);
    }
    let mut out = Zeroizing::new(vec![0u8; len - value.len()]);
    out.extend_from_slice(value);
    Ok(out)
}

fn bytes(kind: CK_ATTRIBUTE_TYPE, value: impl Into<Vec<u8>>) -> Attribute {
    Attribute::new(kind, Value::bytes(value))
}

/// A private key's attributes from PKCS#8 DER, for the key type the unwrap template
/// names; `ec_params` is the template's CKA_EC_PARAMS if it gave one (it must then agree).
/// The last element is CKA_PUBLIC_KEY_INFO.
pub fn decode(
    key_type: CK_KEY_TYPE,
    der: &[u8],
    ec_params: Option<&[u8]>,
) -> Result<Vec<Attribute>> {
    let invalid = |_| Error::WrappedKeyInvalid;
    let trimmed = crate::mech::rsa::trimmed;
    let mut attributes = Vec::new();
    match key_type {
        CKK_RSA => {
            let key = rsa::PrivateKey::from_pkcs8_der(der).map_err(invalid)?;
            attributes.push(bytes(CKA_MODULUS, trimmed(key.n())));
            attributes.push(bytes(CKA_PUBLIC_EXPONENT, trimmed(key.e())));
            attributes.push(bytes(CKA_PRIVATE_EXPONENT, trimmed(key.d())));
            if let [p, q] = key.primes() {
                attributes.push(bytes(CKA_PRIME_1, trimmed(p)));
                attributes.push(bytes(CKA_PRIME_2, trimmed(q)));
            }
            if let (Some(dp), Some(dq)) = (key.dp(), key.dq()) {
                attributes.push(bytes(CKA_EXPONENT_1, trimmed(dp)));
                attributes.push(bytes(CKA_EXPONENT_2, trimmed(dq)));
            }
            if let Some(coefficient) = key.crt_coefficient() {
                attributes.push(bytes(CKA_COEFFICIENT, trimmed(&coefficient)));
            }
            attributes.push(bytes(
                CKA_PUBLIC_KEY_INFO,
                crate::mech::rsa::public_key_info(&key.to_public_key())?,
            ));
        }
        CKK_EC => {
            use p256::elliptic_curve::sec1::ToSec1Point;
            use p256::pkcs8::EncodePublicKey;
            let (scalar, point, info, oid) = if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
                let public = key.public_key();
                let info = public
                    .to_public_key_der()
                    .map_err(|_| Error::WrappedKeyInvalid)?;
                (
                    key.to_bytes().to_vec(),
                    public.to_sec1_point(false).as_bytes().to_vec(),
                    info,
                    Curve::P256,
                )
            } else {
                let key = p384::SecretKey::from_pkcs8_der(der).map_err(invalid)?;
                let public = key.public_key();
                let info = public
                    .to_public_key_der()
                    .map_err(|_| Error::WrappedKeyInvalid)?;
                (
                    key.to_bytes().to_vec(),
                    public.to_sec1_point(false).as_bytes().to_vec(),
                    info,
                    Curve::P384,
                )
            };
            let params = match ec_params {
                Some(given) if Curve::from_params(given) != Some(oid) => {
                    return Err(Error::TemplateInconsistent(CKA_EC_PARAMS));
                }
                Some(given) => given.to_vec(),
                None => oid.oid().to_vec(),
            };
            attributes.push(Attribute::new(
                CKA_VALUE,
                Value::Bytes(Zeroizing::new(scalar)),
            ));
            attributes.push(bytes(CKA_EC_POINT, der_octet_string(&point)));
            attributes.push(bytes(CKA_EC_PARAMS, params));
            attributes.push(bytes(CKA_PUBLIC_KEY_INFO, info.as_bytes().to_vec()));
        }
        CKK_EC_EDWARDS => {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(invalid)?;
            let public = key.verifying_key();
            let info = public
                .to_public_key_der()
                .map_err(|_| Error::WrappedKeyInvalid)?;
            let params = ec_params.map_or_else(|| crate::mech::eddsa::OID.to_vec(), <[u8]>::to_vec);
            if !crate::mech::eddsa::is_ed25519(&params) {
                return Err(Error::TemplateInconsistent(CKA_EC_PARAMS));
            }
            attributes.push(Attribute::new(
                CKA_VALUE,
                Value::bytes(key.to_bytes().to_vec()),
            ));
            attributes.push(bytes(CKA_EC_POINT, der_octet_string(public.as_bytes())));
            attributes.push(bytes(CKA_EC_PARAMS, params));
            attributes.push(bytes(CKA_PUBLIC_KEY_INFO, info.as_bytes().to_vec()));
        }
        _ => return Err(Error::TemplateInconsistent(CKA_KEY_TYPE)),
    }
    Ok(attributes)
}

/// Check an imported (C_CreateObject) public or private key and compute what the token
/// adds to it: CKA_PUBLIC_KEY_INFO always, CKA_EC_POINT on EC and Ed25519 private keys
/// that lack it. A key the math refuses is `CKR_ATTRIBUTE_VALUE_INVALID` on the attribute
/// to blame.
pub fn describe(object: &Object) -> Result<Vec<Attribute>> {
    use p256::elliptic_curve::sec1::ToSec1Point;
    use p256::pkcs8::EncodePublicKey;
    let private = object.class() == CKO_PRIVATE_KEY;
    let mut computed = Vec::new();
    let info = match object.key_type() {
        Some(CKK_RSA) if private => {
            let key = crate::mech::rsa::private_key(object)
                .map_err(|_| Error::AttributeValueInvalid(CKA_PRIVATE_EXPONENT))?;
            crate::mech::rsa::public_key_info(&key.to_public_key())?
        }
        Some(CKK_RSA) => {
            let key = crate::mech::rsa::public_key(object)
                .map_err(|_| Error::AttributeValueInvalid(CKA_MODULUS))?;
            crate::mech::rsa::public_key_info(&key)?
        }
        Some(CKK_EC) => {
            let curve = object
                .bytes(CKA_EC_PARAMS)
                .and_then(Curve::from_params)
                .ok_or(Error::CurveNotSupported)?;
            let bad_point = |_| Error::AttributeValueInvalid(CKA_EC_POINT);
            let bad_value = |_| Error::AttributeValueInvalid(CKA_VALUE);
            let given_point = object.bytes(CKA_EC_POINT).map(unwrap_point);
            let (point, info) = match (curve, private) {
                (Curve::P256, true) => {
                    let key = p256::SecretKey::from_slice(&padded(
                        object.bytes(CKA_VALUE).unwrap_or_default(),
                        32,
                    )?)
                    .map_err(bad_value)?;
                    let public = key.public_key();
                    (
                        public.to_sec1_point(false).as_bytes().to_vec(),
                        public.to_public_key_der(),
                    )
                }
                (Curve::P384, true) => {
                    let key = p384::SecretKey::from_slice(&padded(
                        object.bytes(CKA_VALUE).unwrap_or_default(),
                        48,
                    )?)
                    .map_err(bad_value)?;
                    let public = key.public_key();
                    (
                        public.to_sec1_point(false).as_bytes().to_vec(),
                        public.to_public_key_der(),
                    )
                }
                // from_sec1_bytes refuses the identity and points off the curve.
                (Curve::P256, false) => {
                    let public = p256::PublicKey::from_sec1_bytes(given_point.unwrap_or_default())
                        .map_err(bad_point)?;
                    (
                        public.to_sec1_point(false).as_bytes().to_vec(),
                        public.to_public_key_der(),
                    )
                }
                (Curve::P384, false) => {
                    let public = p384::PublicKey::from_sec1_bytes(given_point.unwrap_or_default())
                        .map_err(bad_point)?;
                    (
                        public.to_sec1_point(false).as_bytes().to_vec(),
                        public.to_public_key_der(),
                    )
                }
            };
            match given_point {
                // A private key's point, if given, must be its own.
                Some(given) if private && given != point.as_slice() => {
                    return Err(Error::AttributeValueInvalid(CKA_EC_POINT));
                }
                None if private => computed.push(bytes(CKA_EC_POINT, der_octet_string(&point))),
                _ => {}
            }
            info.map_err(|err| Error::General(format!("encoding an EC public key: {err}")))?
                .as_bytes()
                .to_vec()
        }
        Some(CKK_EC_EDWARDS) => {
            use ed25519_dalek::pkcs8::EncodePublicKey as _;
            if !object
                .bytes(CKA_EC_PARAMS)
                .is_some_and(crate::mech::eddsa::is_ed25519)
            {
                return Err(Error::CurveNotSupported);
            }
            let bytes32 = |kind| -> Result<[u8; 32]> {
                object
                    .bytes(kind)
                    .map(|value| {
                        if kind == CKA_EC_POINT {
                            unwrap_point(value)
                        } else {
                            value
                        }
                    })
                    .and_then(|value| value.try_into().ok())
                    .ok_or(Error::AttributeValueInvalid(kind))
            };
            let public = if private {
                let seed = Zeroizing::new(bytes32(CKA_VALUE)?);
                let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
                match object.bytes(CKA_EC_POINT) {
                    Some(given) if unwrap_point(given) != public.as_bytes() => {
                        return Err(Error::AttributeValueInvalid(CKA_EC_POINT));
                    }
                    None => computed.push(bytes(CKA_EC_POINT, der_octet_string(public.as_bytes()))),
                    _ => {}
                }
                public
            } else {
                ed25519_dalek::VerifyingKey::from_bytes(&bytes32(CKA_EC_POINT)?)
                    .map_err(|_| Error::AttributeValueInvalid(CKA_EC_POINT))?
            };
            public
                .to_public_key_der()
                .map_err(|err| Error::General(format!("encoding an Ed25519 public key: {err}")))?
                .as_bytes()
                .to_vec()
        }
        _ => return Ok(computed),
    };
    computed.push(bytes(CKA_PUBLIC_KEY_INFO, info));
    Ok(computed)
}
