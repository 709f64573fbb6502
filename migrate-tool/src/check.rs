//! Key check values the tool computes itself, by a named method, and the cross-token proofs
//! for key pairs. A token's own CKA_CHECK_VALUE is a hint, never the proof.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inventory::Object;
use crate::names;
use crate::p11raw::RawMechanism;
use crate::token::Token;

/// The fixed message HMAC check values are computed over.
const MESSAGE: &[u8] = b"keyferry key check value";

/// The fixed, public 128-bit key the AES-KW check value wraps (it protects nothing).
const PROBE_KEY: [u8; 16] = *b"keyferry-kw-kcv!";

/// How a check value was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// AES-ECB encryption of a zero block (the classic KCV; CKA_CHECK_VALUE is its first 3 bytes).
    AesEcb,
    /// AES-CMAC of a zero block, where the key may sign but not encrypt.
    AesCmac,
    /// AES-ECB decryption of a zero block, where the key may only decrypt.
    AesEcbDecrypt,
    /// RFC 3394 wrap of a fixed public key, where the key may only wrap.
    AesKw,
    /// HMAC-SHA256 of a fixed message.
    HmacSha256,
    /// HMAC-SHA1 of a fixed message (SoftHSMv2 refuses HMAC-SHA256 with keys under 32 bytes).
    HmacSha1,
    /// SHA-256 of the RSA modulus and public exponent.
    RsaPublicSha256,
    /// SHA-256 of the EC point (public keys; private keys through their public half).
    EcPointSha256,
    /// SHA-256 of CKA_VALUE (certificates, data objects).
    ValueSha256,
}

impl Method {
    /// The name reports show.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesEcb => "aes-ecb",
            Self::AesCmac => "aes-cmac",
            Self::AesEcbDecrypt => "aes-ecb-decrypt",
            Self::AesKw => "aes-kw",
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha1 => "hmac-sha1",
            Self::RsaPublicSha256 => "rsa-public-sha256",
            Self::EcPointSha256 => "ec-point-sha256",
            Self::ValueSha256 => "value-sha256",
        }
    }
}

/// A check value: the method and the first bytes it produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kcv {
    /// How it was computed.
    pub method: Method,
    /// Hex of the first 8 bytes (3 for aes-ecb, as CKA_CHECK_VALUE).
    pub value: String,
}

impl std::fmt::Display for Kcv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.method.name(), self.value)
    }
}

fn kcv(method: Method, bytes: &[u8]) -> Kcv {
    let keep = if method == Method::AesEcb { 3 } else { 8 };
    Kcv {
        method,
        value: hex::encode(&bytes[..bytes.len().min(keep)]),
    }
}

/// The methods that can apply to an object, best first, given its usage flags.
pub fn methods(object: &Object) -> Vec<Method> {
    let allows = |kind| object.flag(kind) == Some(true);
    match (object.class, object.key_type()) {
        (CKO_SECRET_KEY, Some(CKK_AES)) => [
            (CKA_ENCRYPT, Method::AesEcb),
            (CKA_SIGN, Method::AesCmac),
            (CKA_DECRYPT, Method::AesEcbDecrypt),
            (CKA_WRAP, Method::AesKw),
        ]
        .into_iter()
        .filter(|&(usage, _)| allows(usage))
        .map(|(_, method)| method)
        .collect(),
        (CKO_SECRET_KEY, Some(_)) if allows(CKA_SIGN) => vec![Method::HmacSha256, Method::HmacSha1],
        (CKO_PRIVATE_KEY | CKO_PUBLIC_KEY, Some(CKK_RSA)) => vec![Method::RsaPublicSha256],
        (CKO_PUBLIC_KEY, Some(CKK_EC | CKK_EC_EDWARDS)) => vec![Method::EcPointSha256],
        (CKO_CERTIFICATE | CKO_DATA, _) => vec![Method::ValueSha256],
        _ => Vec::new(),
    }
}

/// The first method that works, and its value; `Err` says why none did.
pub fn compute(token: &Token, session: &Session, object: &Object) -> Result<Kcv, String> {
    let candidates = methods(object);
    if candidates.is_empty() {
        return Err(no_method_reason(object));
    }
    let mut failures = Vec::new();
    for method in candidates {
        match compute_with(token, session, object, method) {
            Ok(value) => return Ok(value),
            Err(reason) => failures.push(format!("{}: {reason}", method.name())),
        }
    }
    Err(failures.join("; "))
}

fn no_method_reason(object: &Object) -> String {
    match object.class {
        CKO_SECRET_KEY => {
            "no usage flag allows a check value (needs encrypt, sign, decrypt or wrap)".to_owned()
        }
        CKO_PRIVATE_KEY => "proved by signing, not by a check value".to_owned(),
        _ => "no check value method for this object".to_owned(),
    }
}

/// The check value by one method.
pub fn compute_with(
    token: &Token,
    session: &Session,
    object: &Object,
    method: Method,
) -> Result<Kcv, String> {
    let key = object.handle;
    let pkcs11 = |err: cryptoki::error::Error| names::cryptoki_error(&err);
    // One C_Encrypt or C_Sign each rather than cryptoki's length query and call: a check
    // value is computed twice per migrated key.
    let single_part = |sign: bool, mechanism: CK_MECHANISM_TYPE, data: &[u8]| {
        token
            .module
            .raw
            .single_part(session, sign, mechanism, key, data)
            .map_err(|err| err.to_string())
    };
    let bytes = match method {
        Method::AesEcb => single_part(false, CKM_AES_ECB, &[0u8; 16])?,
        Method::AesCmac => single_part(true, CKM_AES_CMAC, &[0u8; 16])?,
        Method::AesEcbDecrypt => session
            .decrypt(&Mechanism::AesEcb, key, &[0u8; 16])
            .map_err(pkcs11)?,
        Method::AesKw => kw_probe(token, session, key)?,
        Method::HmacSha256 => single_part(true, CKM_SHA256_HMAC, MESSAGE)?,
        Method::HmacSha1 => single_part(true, CKM_SHA_1_HMAC, MESSAGE)?,
        Method::RsaPublicSha256 => {
            let modulus = object.bytes(CKA_MODULUS).ok_or("CKA_MODULUS unreadable")?;
            let exponent = object
                .bytes(CKA_PUBLIC_EXPONENT)
                .ok_or("CKA_PUBLIC_EXPONENT unreadable")?;
            let mut hash = Sha256::new();
            hash.update(strip_zeros(modulus));
            hash.update(strip_zeros(exponent));
            hash.finalize().to_vec()
        }
        Method::EcPointSha256 => {
            let point = object
                .bytes(CKA_EC_POINT)
                .ok_or("CKA_EC_POINT unreadable")?;
            Sha256::digest(raw_point(point)).to_vec()
        }
        Method::ValueSha256 => {
            let value = object.bytes(CKA_VALUE).ok_or("CKA_VALUE unreadable")?;
            Sha256::digest(value).to_vec()
        }
    };
    Ok(kcv(method, &bytes))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let leading = bytes.iter().take_while(|&&byte| byte == 0).count();
    &bytes[leading..]
}

/// CKA_EC_POINT is a DER OCTET STRING around the point; some tokens give the bare point.
pub fn raw_point(point: &[u8]) -> &[u8] {
    match point {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && len & 0x80 == 0 => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => point,
    }
}

/// RFC 3394 of a fixed public key under `kek`: deterministic, so equal keys give equal blobs.
fn kw_probe(token: &Token, session: &Session, kek: ObjectHandle) -> Result<Vec<u8>, String> {
    let probe = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Value(PROBE_KEY.to_vec()),
        ])
        .map_err(|err| names::cryptoki_error(&err))?;
    let blob = token
        .module
        .raw
        .wrap_key(session, &RawMechanism::Plain(CKM_AES_KEY_WRAP), kek, probe)
        .map_err(|err| err.to_string());
    let _ = session.destroy_object(probe);
    blob
}

/// The public half of a private key as a session object on `token`, for verifying what the
/// other side signs: RSA from the private key's own modulus and exponent; EC and EdDSA from
/// the public key object that shares its CKA_ID.
pub fn public_half(
    token: &Token,
    session: &Session,
    private: &Object,
) -> Result<ObjectHandle, String> {
    let key_type = private.key_type().ok_or("no CKA_KEY_TYPE")?;
    let mut template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::Encrypt(key_type == CKK_RSA),
    ];
    match key_type {
        CKK_RSA => {
            template.push(Attribute::KeyType(KeyType::RSA));
            template.push(Attribute::Modulus(
                private
                    .bytes(CKA_MODULUS)
                    .ok_or("CKA_MODULUS unreadable")?
                    .to_vec(),
            ));
            template.push(Attribute::PublicExponent(
                private
                    .bytes(CKA_PUBLIC_EXPONENT)
                    .ok_or("CKA_PUBLIC_EXPONENT unreadable")?
                    .to_vec(),
            ));
        }
        CKK_EC | CKK_EC_EDWARDS => {
            let partner = partner_public(token, private)?;
            template.push(Attribute::KeyType(
                KeyType::try_from(key_type).map_err(|err| err.to_string())?,
            ));
            template.push(Attribute::EcParams(
                private
                    .bytes(CKA_EC_PARAMS)
                    .ok_or("CKA_EC_PARAMS unreadable")?
                    .to_vec(),
            ));
            template.push(Attribute::EcPoint(
                partner
                    .bytes(CKA_EC_POINT)
                    .ok_or("CKA_EC_POINT unreadable")?
                    .to_vec(),
            ));
        }
        other => {
            return Err(format!(
                "no signature check for key type {}",
                names::key_type(other)
            ));
        }
    }
    session
        .create_object(&template)
        .map_err(|err| names::cryptoki_error(&err))
}

/// The public key object that pairs with `private`: same key type and CKA_ID (and label, when
/// several share the id).
pub fn partner_public(token: &Token, private: &Object) -> Result<Object, String> {
    let mut identity = private.identity();
    identity.class = CKO_PUBLIC_KEY;
    let by_label = crate::inventory::find(token, &identity).map_err(|err| err.to_string())?;
    if let Some(found) = by_label.into_iter().next() {
        return Ok(found);
    }
    let handles = token
        .session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(private.id().to_vec()),
        ])
        .map_err(|err| names::cryptoki_error(&err))?;
    match handles.as_slice() {
        [one] => crate::inventory::read(token, *one).map_err(|err| err.to_string()),
        [] => Err("no public key with the same CKA_ID to check a signature against".to_owned()),
        _ => Err("several public keys share its CKA_ID".to_owned()),
    }
}

/// Signs a fixed message with `private` on `signer` and verifies it with `public` on
/// `verifier`: proves the two tokens hold the two halves of one key pair.
pub fn sign_and_verify(
    signer: &Session,
    private: &Object,
    verifier: &Session,
    public: ObjectHandle,
) -> Result<&'static str, String> {
    let pkcs11 = |err: cryptoki::error::Error| names::cryptoki_error(&err);
    let digest = Sha256::digest(MESSAGE).to_vec();
    let (mechanism, data, name) = match private.key_type() {
        Some(CKK_RSA) => (
            Mechanism::Sha256RsaPkcs,
            MESSAGE.to_vec(),
            "sign-verify:sha256-rsa-pkcs",
        ),
        Some(CKK_EC) => (Mechanism::Ecdsa, digest, "sign-verify:ecdsa-sha256"),
        Some(CKK_EC_EDWARDS) => (
            Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
            )),
            MESSAGE.to_vec(),
            "sign-verify:eddsa",
        ),
        _ => return Err("no signature check for this key type".to_owned()),
    };
    let signature = signer
        .sign(&mechanism, private.handle, &data)
        .map_err(pkcs11)?;
    verifier
        .verify(&mechanism, public, &data, &signature)
        .map_err(|err| {
            format!(
                "the signature does not verify: {}",
                names::cryptoki_error(&err)
            )
        })?;
    Ok(name)
}
