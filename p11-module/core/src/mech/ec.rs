//! Elliptic curves (PKCS#11 3.0 §2.3): P-256 and P-384 key pairs and ECDSA, raw or with
//! the token hashing. Curves from RustCrypto's p256 and p384.

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use pkcs11_sys::*;

use crate::error::{Error, Result};
use crate::mech::digest::Algorithm;
use crate::mech::params::Parameter;
use crate::mech::sign::{Input, Signer};
use crate::mech::{KeyPair, Mechanism, random_secret};
use crate::token::attr::{self, Attribute, Value};
use crate::token::object::Object;

/// DER of the named-curve OIDs.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A supported Weierstrass curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

/// The DER of a PrintableString, as PKCS#11 3.0 allows CKA_EC_PARAMS to name a curve.
fn printable(name: &str) -> Vec<u8> {
    let mut der = vec![0x13, name.len() as u8];
    der.extend_from_slice(name.as_bytes());
    der
}

impl Curve {
    /// The curve CKA_EC_PARAMS names: a named-curve OID, or a printable curve name.
    pub fn from_params(params: &[u8]) -> Option<Self> {
        if params == P256_OID
            || ["prime256v1", "secp256r1", "P-256"]
                .iter()
                .any(|n| params == printable(n))
        {
            Some(Self::P256)
        } else if params == P384_OID
            || ["secp384r1", "P-384"]
                .iter()
                .any(|n| params == printable(n))
        {
            Some(Self::P384)
        } else {
            None
        }
    }

    /// The DER of the curve's named-curve OID.
    pub fn oid(self) -> &'static [u8] {
        match self {
            Self::P256 => P256_OID,
            Self::P384 => P384_OID,
        }
    }

    /// Field size in bytes: half an ECDSA signature.
    pub fn field_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

/// CKA_EC_POINT as PKCS#11 stores it: a DER OCTET STRING around the SEC1 point.
pub fn der_octet_string(point: &[u8]) -> Vec<u8> {
    let mut der = vec![0x04];
    if point.len() < 0x80 {
        der.push(point.len() as u8);
    } else {
        der.push(0x81);
        der.push(point.len() as u8);
    }
    der.extend_from_slice(point);
    der
}

/// The SEC1 point of a CKA_EC_POINT, which may be DER-wrapped (the spec's form) or raw.
/// Told apart by length: a raw point is never a valid DER wrapping of a valid point too,
/// while looking at the first bytes alone misreads raw points whose x starts 0x3f.
pub fn unwrap_point(value: &[u8]) -> &[u8] {
    // Uncompressed P-256 and P-384, compressed P-256 and P-384, Ed25519.
    const POINT_LENS: [usize; 5] = [65, 97, 33, 49, 32];
    let inner = match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        raw => return raw,
    };
    if POINT_LENS.contains(&inner.len()) && !POINT_LENS.contains(&value.len()) {
        inner
    } else {
        value
    }
}

fn curve_of(object: &Object) -> Result<Curve> {
    object
        .bytes(CKA_EC_PARAMS)
        .and_then(Curve::from_params)
        .ok_or(Error::KeyTypeInconsistent)
}

/// The private scalar, left-padded to the field size (PKCS#11 stores it as a big integer).
fn scalar(object: &Object, curve: Curve) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let value = object.bytes(CKA_VALUE).ok_or(Error::KeyTypeInconsistent)?;
    let field = curve.field_len();
    if value.len() > field {
        return Err(Error::KeyTypeInconsistent);
    }
    let mut padded = zeroize::Zeroizing::new(vec![0u8; field - value.len()]);
    padded.extend_from_slice(value);
    Ok(padded)
}

/// CKM_EC_KEY_PAIR_GEN.
pub struct KeyGen;

impl Mechanism for KeyGen {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 256,
            ulMaxKeySize: 384,
            flags: CKF_GENERATE_KEY_PAIR | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        }
    }

    fn generates_pair(&self) -> Option<CK_KEY_TYPE> {
        Some(CKK_EC)
    }

    fn generate_key_pair(&self, public: &[Attribute]) -> Result<KeyPair> {
        let params = attr::find(public, CKA_EC_PARAMS)
            .and_then(Value::as_bytes)
            .ok_or(Error::TemplateIncomplete(CKA_EC_PARAMS))?;
        let curve = Curve::from_params(params).ok_or(Error::CurveNotSupported)?;
        // Draw scalars until one is in range (for these curves nearly always the first).
        let (secret, point, public_key_info) = loop {
            let candidate = random_secret(curve.field_len())?;
            match keys_from_scalar(curve, &candidate) {
                Some((point, info)) => break (candidate, point, info),
                None => continue,
            }
        };
        let private = vec![
            Attribute::new(CKA_EC_PARAMS, Value::bytes(params.to_vec())),
            Attribute::new(CKA_VALUE, Value::Bytes(secret)),
            Attribute::new(CKA_EC_POINT, Value::bytes(der_octet_string(&point))),
        ];
        let public = vec![Attribute::new(
            CKA_EC_POINT,
            Value::bytes(der_octet_string(&point)),
        )];
        Ok(KeyPair {
            public,
            private,
            public_key_info,
        })
    }
}

/// The uncompressed public point and SubjectPublicKeyInfo of a scalar; `None` when the
/// scalar is zero or not below the group order.
fn keys_from_scalar(curve: Curve, scalar: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use p256::elliptic_curve::sec1::ToSec1Point;
    use p256::pkcs8::EncodePublicKey;
    match curve {
        Curve::P256 => {
            let key = p256::SecretKey::from_slice(scalar).ok()?;
            let public = key.public_key();
            Some((
                public.to_sec1_point(false).as_bytes().to_vec(),
                public.to_public_key_der().ok()?.as_bytes().to_vec(),
            ))
        }
        Curve::P384 => {
            let key = p384::SecretKey::from_slice(scalar).ok()?;
            let public = key.public_key();
            Some((
                public.to_sec1_point(false).as_bytes().to_vec(),
                public.to_public_key_der().ok()?.as_bytes().to_vec(),
            ))
        }
    }
}

/// CKM_ECDSA (the caller hashes) and CKM_ECDSA_SHA*.
pub struct Ecdsa(pub Option<Algorithm>);

/// The most input raw CKM_ECDSA takes. PKCS#11 3.0 allows any length, truncated to the
/// order's size inside the token; this only bounds what a session buffers.
const RAW_LIMIT: usize = 4096;

impl Mechanism for Ecdsa {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 256,
            ulMaxKeySize: 384,
            flags: CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        }
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_EC]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn signer(&self, key: &Object, parameter: &Parameter, sign: bool) -> Result<Box<dyn Signer>> {
        parameter.none()?;
        let curve = curve_of(key)?;
        let key = if sign {
            EcKey::Private(scalar(key, curve)?)
        } else {
            let point = key.bytes(CKA_EC_POINT).ok_or(Error::KeyTypeInconsistent)?;
            EcKey::Public(unwrap_point(point).to_vec())
        };
        Ok(Box::new(EcdsaSigner {
            curve,
            key,
            input: Input::new(self.0, RAW_LIMIT),
        }))
    }
}

enum EcKey {
    Private(zeroize::Zeroizing<Vec<u8>>),
    Public(Vec<u8>),
}

struct EcdsaSigner {
    curve: Curve,
    key: EcKey,
    input: Input,
}

impl Signer for EcdsaSigner {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn signature_len(&self) -> usize {
        2 * self.curve.field_len()
    }

    fn sign(self: Box<Self>) -> Result<Vec<u8>> {
        let EcKey::Private(scalar) = &self.key else {
            return Err(Error::KeyFunctionNotPermitted);
        };
        let mut digest = self.input.finish();
        // An empty digest is the integer 0, as one zero byte is; RustCrypto's RFC 6979
        // nonce asserts a non-empty input, and a panic here would poison the session.
        if digest.is_empty() {
            digest.push(0);
        }
        let bad_key = |_| Error::KeyTypeInconsistent;
        match self.curve {
            Curve::P256 => {
                let key = p256::ecdsa::SigningKey::from_slice(scalar).map_err(bad_key)?;
                let signature: p256::ecdsa::Signature =
                    key.sign_prehash(&digest).map_err(|_| Error::DataLenRange)?;
                Ok(signature.to_bytes().to_vec())
            }
            Curve::P384 => {
                let key = p384::ecdsa::SigningKey::from_slice(scalar).map_err(bad_key)?;
                let signature: p384::ecdsa::Signature =
                    key.sign_prehash(&digest).map_err(|_| Error::DataLenRange)?;
                Ok(signature.to_bytes().to_vec())
            }
        }
    }

    fn verify(self: Box<Self>, signature: &[u8]) -> Result<()> {
        if signature.len() != self.signature_len() {
            return Err(Error::SignatureLenRange);
        }
        let EcKey::Public(point) = &self.key else {
            return Err(Error::KeyFunctionNotPermitted);
        };
        let digest = self.input.finish();
        let bad_key = |_| Error::KeyTypeInconsistent;
        let verified = match self.curve {
            Curve::P256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
                p256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| Error::SignatureInvalid)
                    .map(|signature| key.verify_prehash(&digest, &signature).is_ok())?
            }
            Curve::P384 => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
                p384::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| Error::SignatureInvalid)
                    .map(|signature| key.verify_prehash(&digest, &signature).is_ok())?
            }
        };
        if verified {
            Ok(())
        } else {
            Err(Error::SignatureInvalid)
        }
    }
}

/// CKM_ECDH1_DERIVE (PKCS#11 3.0 §2.3.11): the shared x-coordinate Z with the peer's
/// point, used as is (CKD_NULL) or through the ANSI X9.63 KDF with a SHA hash.
pub struct Ecdh;

impl Mechanism for Ecdh {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 256,
            ulMaxKeySize: 384,
            flags: CKF_DERIVE | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        }
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_EC]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn key_derive(
        &self,
        base: &Object,
        parameter: &Parameter,
        len: Option<usize>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let Parameter::Ecdh {
            kdf,
            shared_data,
            public_data,
        } = parameter
        else {
            return Err(Error::MechanismParamInvalid);
        };
        let curve = curve_of(base)?;
        let secret = scalar(base, curve)?;
        let peer = unwrap_point(public_data);
        let invalid = |_| Error::MechanismParamInvalid;
        let shared = match curve {
            Curve::P256 => {
                let secret =
                    p256::SecretKey::from_slice(&secret).map_err(|_| Error::KeyTypeInconsistent)?;
                // from_sec1_bytes refuses the identity and points off the curve.
                let peer = p256::PublicKey::from_sec1_bytes(peer).map_err(invalid)?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                zeroize::Zeroizing::new(shared.raw_secret_bytes().to_vec())
            }
            Curve::P384 => {
                let secret =
                    p384::SecretKey::from_slice(&secret).map_err(|_| Error::KeyTypeInconsistent)?;
                let peer = p384::PublicKey::from_sec1_bytes(peer).map_err(invalid)?;
                let shared =
                    p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                zeroize::Zeroizing::new(shared.raw_secret_bytes().to_vec())
            }
        };
        // A derived key is at most a generic secret's length; checked before any allocation.
        if len.is_some_and(|len| len == 0 || len > crate::mech::generic::MAX_LEN) {
            return Err(Error::TemplateInconsistent(CKA_VALUE_LEN));
        }
        let hash = match *kdf {
            // PKCS#11 (2.40 §2.3.8, as SoftHSMv2 does): truncation removes bytes from the
            // leading end of Z.
            CKD_NULL if shared_data.is_empty() => {
                return match len {
                    Some(len) if len > shared.len() => {
                        Err(Error::TemplateInconsistent(CKA_VALUE_LEN))
                    }
                    Some(len) => Ok(zeroize::Zeroizing::new(
                        shared[shared.len() - len..].to_vec(),
                    )),
                    None => Ok(shared),
                };
            }
            CKD_SHA1_KDF => Algorithm::Sha1,
            CKD_SHA224_KDF => Algorithm::Sha224,
            CKD_SHA256_KDF => Algorithm::Sha256,
            CKD_SHA384_KDF => Algorithm::Sha384,
            CKD_SHA512_KDF => Algorithm::Sha512,
            _ => return Err(Error::MechanismParamInvalid),
        };
        let mut key = zeroize::Zeroizing::new(vec![0u8; len.unwrap_or(shared.len())]);
        let derived = match hash {
            Algorithm::Sha1 => {
                ansi_x963_kdf::derive_key_into::<sha1::Sha1>(&shared, shared_data, &mut key)
            }
            Algorithm::Sha224 => {
                ansi_x963_kdf::derive_key_into::<sha2::Sha224>(&shared, shared_data, &mut key)
            }
            Algorithm::Sha256 => {
                ansi_x963_kdf::derive_key_into::<sha2::Sha256>(&shared, shared_data, &mut key)
            }
            Algorithm::Sha384 => {
                ansi_x963_kdf::derive_key_into::<sha2::Sha384>(&shared, shared_data, &mut key)
            }
            Algorithm::Sha512 => {
                ansi_x963_kdf::derive_key_into::<sha2::Sha512>(&shared, shared_data, &mut key)
            }
        };
        derived.map_err(|_| Error::TemplateInconsistent(CKA_VALUE_LEN))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_points_that_look_like_der_stay_raw() {
        // A raw uncompressed P-256 point whose x starts 0x3f reads as 04 3f … like a DER
        // OCTET STRING of 63 bytes; no valid point is 63 bytes, so it stays raw.
        let mut raw = vec![0x04, 0x3f];
        raw.extend_from_slice(&[0x11; 63]);
        assert_eq!(unwrap_point(&raw), raw.as_slice());
        let wrapped = der_octet_string(&raw);
        assert_eq!(unwrap_point(&wrapped), raw.as_slice());
        let ed25519 = [0x04, 0x1e, 0x22, 0x33].repeat(8);
        assert_eq!(unwrap_point(&ed25519), ed25519.as_slice());
    }
}
