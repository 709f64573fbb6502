//! Ed25519 (PKCS#11 3.0 §2.3.6, §2.3.14): key pairs and pure EdDSA signatures, from
//! RustCrypto's ed25519-dalek.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use pkcs11_sys::*;

use crate::error::{Error, Result};
use crate::mech::ec::{der_octet_string, unwrap_point};
use crate::mech::params::Parameter;
use crate::mech::sign::{Input, Signer};
use crate::mech::{KeyPair, Mechanism, random_secret};
use crate::token::attr::{self, Attribute, Value};
use crate::token::object::Object;

/// DER of the id-Ed25519 OID (1.3.101.112), and of the printable name PKCS#11 3.0 allows.
pub const OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
/// Pure EdDSA signs the whole message; this bounds what a session buffers.
const MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

/// Whether CKA_EC_PARAMS names Ed25519.
pub fn is_ed25519(params: &[u8]) -> bool {
    params == OID || params == ED25519_NAME
}

/// CKM_EC_EDWARDS_KEY_PAIR_GEN.
pub struct KeyGen;

impl Mechanism for KeyGen {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 255,
            ulMaxKeySize: 255,
            flags: CKF_GENERATE_KEY_PAIR,
        }
    }

    fn generates_pair(&self) -> Option<CK_KEY_TYPE> {
        Some(CKK_EC_EDWARDS)
    }

    fn generate_key_pair(&self, public: &[Attribute]) -> Result<KeyPair> {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let params = attr::find(public, CKA_EC_PARAMS)
            .and_then(Value::as_bytes)
            .ok_or(Error::TemplateIncomplete(CKA_EC_PARAMS))?;
        if !is_ed25519(params) {
            return Err(Error::CurveNotSupported);
        }
        let seed = random_secret(32)?;
        let seed_array: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| Error::General("seed length".into()))?;
        let signing = SigningKey::from_bytes(&seed_array);
        let verifying = signing.verifying_key();
        let public_key_info = verifying
            .to_public_key_der()
            .map_err(|err| Error::General(format!("encoding an Ed25519 public key: {err}")))?
            .as_bytes()
            .to_vec();
        let point = der_octet_string(verifying.as_bytes());
        let private = vec![
            Attribute::new(CKA_EC_PARAMS, Value::bytes(params.to_vec())),
            Attribute::new(CKA_VALUE, Value::Bytes(seed)),
            Attribute::new(CKA_EC_POINT, Value::bytes(point.clone())),
        ];
        let public = vec![Attribute::new(CKA_EC_POINT, Value::bytes(point))];
        Ok(KeyPair {
            public,
            private,
            public_key_info,
        })
    }
}

/// CKM_EDDSA, pure Ed25519 (no parameter, or none of the prehash/context options).
pub struct Eddsa;

impl Mechanism for Eddsa {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 255,
            ulMaxKeySize: 255,
            flags: CKF_SIGN | CKF_VERIFY,
        }
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_EC_EDWARDS]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn signer(&self, key: &Object, parameter: &Parameter, sign: bool) -> Result<Box<dyn Signer>> {
        parameter.none()?;
        if !key.bytes(CKA_EC_PARAMS).is_some_and(is_ed25519) {
            return Err(Error::KeyTypeInconsistent);
        }
        let bytes32 = |bytes: &[u8]| -> Result<[u8; 32]> {
            bytes.try_into().map_err(|_| Error::KeyTypeInconsistent)
        };
        let key = if sign {
            let seed = zeroize::Zeroizing::new(bytes32(
                key.bytes(CKA_VALUE).ok_or(Error::KeyTypeInconsistent)?,
            )?);
            EdKey::Private(Box::new(SigningKey::from_bytes(&seed)))
        } else {
            let point = unwrap_point(key.bytes(CKA_EC_POINT).ok_or(Error::KeyTypeInconsistent)?);
            EdKey::Public(
                VerifyingKey::from_bytes(&bytes32(point)?)
                    .map_err(|_| Error::KeyTypeInconsistent)?,
            )
        };
        Ok(Box::new(EddsaSigner {
            key,
            input: Input::new(None, MESSAGE_LIMIT),
        }))
    }
}

enum EdKey {
    Private(Box<SigningKey>),
    Public(VerifyingKey),
}

struct EddsaSigner {
    key: EdKey,
    input: Input,
}

impl Signer for EddsaSigner {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn signature_len(&self) -> usize {
        64
    }

    fn sign(self: Box<Self>) -> Result<Vec<u8>> {
        let EdKey::Private(key) = &self.key else {
            return Err(Error::KeyFunctionNotPermitted);
        };
        Ok(key.sign(&self.input.finish()).to_bytes().to_vec())
    }

    fn verify(self: Box<Self>, signature: &[u8]) -> Result<()> {
        let signature: [u8; 64] = signature.try_into().map_err(|_| Error::SignatureLenRange)?;
        let EdKey::Public(key) = &self.key else {
            return Err(Error::KeyFunctionNotPermitted);
        };
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        key.verify_strict(&self.input.finish(), &signature)
            .map_err(|_| Error::SignatureInvalid)
    }
}
