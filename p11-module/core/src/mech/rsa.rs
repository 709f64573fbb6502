//! RSA (PKCS#11 3.0 §2.1): key-pair generation, PKCS#1 v1.5 and PSS signatures, raw and
//! with the token hashing. Arithmetic from RustCrypto's rsa (constant-time bignums).

use pkcs11_sys::*;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BoxedUint, Pkcs1v15Sign, PrivateKey, Pss, PublicKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::cipher::{Cipher, Direction};
use crate::mech::digest::Algorithm;
use crate::mech::params::Parameter;
use crate::mech::sign::{Input, Signer};
use crate::mech::{KeyPair, Mechanism};
use crate::token::attr::{self, Attribute, Value};
use crate::token::object::Object;

/// Run `$body` with `$d` the RustCrypto digest type of an algorithm.
macro_rules! with_digest {
    ($algorithm:expr, |$d:ident| $body:expr) => {
        match $algorithm {
            Algorithm::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            Algorithm::Sha224 => {
                type $d = sha2::Sha224;
                $body
            }
            Algorithm::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            Algorithm::Sha384 => {
                type $d = sha2::Sha384;
                $body
            }
            Algorithm::Sha512 => {
                type $d = sha2::Sha512;
                $body
            }
        }
    };
}

/// Smallest and largest modulus, in bits.
const MIN_BITS: CK_ULONG = 2048;
const MAX_BITS: CK_ULONG = 4096;
/// PKCS#1 v1.5 padding takes at least 11 bytes of the modulus.
const PKCS1_OVERHEAD: usize = 11;

/// Big-endian bytes without leading zeros, as PKCS#11 big integers are stored.
pub fn trimmed(value: &BoxedUint) -> Vec<u8> {
    value.to_be_bytes_trimmed_vartime().into_vec()
}

fn uint(object: &Object, kind: CK_ATTRIBUTE_TYPE) -> Result<BoxedUint> {
    let bytes = object
        .bytes(kind)
        .filter(|b| !b.is_empty())
        .ok_or(Error::KeyTypeInconsistent)?;
    Ok(BoxedUint::from_be_slice_vartime(bytes))
}

/// The public key of an RSA public or private key object.
pub fn public_key(object: &Object) -> Result<PublicKey> {
    PublicKey::new(
        uint(object, CKA_MODULUS)?,
        uint(object, CKA_PUBLIC_EXPONENT)?,
    )
    .map_err(|_| Error::KeySizeRange)
}

/// The private key of an RSA private key object.
pub fn private_key(object: &Object) -> Result<PrivateKey> {
    let primes = match (object.bytes(CKA_PRIME_1), object.bytes(CKA_PRIME_2)) {
        (Some(p), Some(q)) if !p.is_empty() && !q.is_empty() => {
            vec![
                BoxedUint::from_be_slice_vartime(p),
                BoxedUint::from_be_slice_vartime(q),
            ]
        }
        _ => Vec::new(),
    };
    let n = uint(object, CKA_MODULUS)?;
    let e = uint(object, CKA_PUBLIC_EXPONENT)?;
    let d = uint(object, CKA_PRIVATE_EXPONENT)?;
    PrivateKey::from_components(n, e, d, primes).map_err(|_| Error::KeyTypeInconsistent)
}

/// The modulus length in bytes: the signature length.
fn modulus_len(object: &Object) -> Result<usize> {
    let modulus = object
        .bytes(CKA_MODULUS)
        .ok_or(Error::KeyTypeInconsistent)?;
    let skip = modulus.iter().take_while(|byte| **byte == 0).count();
    Ok(modulus.len() - skip)
}

/// CKM_RSA_PKCS_KEY_PAIR_GEN.
pub struct KeyGen;

impl Mechanism for KeyGen {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: MIN_BITS,
            ulMaxKeySize: MAX_BITS,
            flags: CKF_GENERATE_KEY_PAIR,
        }
    }

    fn generates_pair(&self) -> Option<CK_KEY_TYPE> {
        Some(CKK_RSA)
    }

    fn generate_key_pair(&self, public: &[Attribute]) -> Result<KeyPair> {
        let bits_value = attr::find(public, CKA_MODULUS_BITS)
            .ok_or(Error::TemplateIncomplete(CKA_MODULUS_BITS))?;
        let bits = attr::parse_ulong(CKA_MODULUS_BITS, bits_value)?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::KeySizeRange);
        }
        let exponent = match attr::find(public, CKA_PUBLIC_EXPONENT).and_then(Value::as_bytes) {
            Some(bytes) => new_key_exponent(bytes)?,
            None => BoxedUint::from(65537u64),
        };
        let key = PrivateKey::new_with_exp(&mut getrandom::SysRng, bits as usize, exponent)
            .map_err(|_| Error::AttributeValueInvalid(CKA_PUBLIC_EXPONENT))?;
        let n = trimmed(key.n());
        let e = trimmed(key.e());
        let mut private = vec![
            Attribute::new(CKA_MODULUS, Value::bytes(n.clone())),
            Attribute::new(CKA_PUBLIC_EXPONENT, Value::bytes(e.clone())),
            Attribute::new(CKA_PRIVATE_EXPONENT, Value::bytes(trimmed(key.d()))),
        ];
        if let [p, q] = key.primes() {
            private.push(Attribute::new(CKA_PRIME_1, Value::bytes(trimmed(p))));
            private.push(Attribute::new(CKA_PRIME_2, Value::bytes(trimmed(q))));
        }
        let crt = [(CKA_EXPONENT_1, key.dp()), (CKA_EXPONENT_2, key.dq())];
        for (kind, value) in crt {
            if let Some(value) = value {
                private.push(Attribute::new(kind, Value::bytes(trimmed(value))));
            }
        }
        if let Some(coefficient) = key.crt_coefficient() {
            private.push(Attribute::new(
                CKA_COEFFICIENT,
                Value::bytes(trimmed(&coefficient)),
            ));
        }
        let public_key_info = public_key_info(&key.to_public_key())?;
        let public = vec![
            Attribute::new(CKA_MODULUS, Value::bytes(n)),
            Attribute::new(CKA_PUBLIC_EXPONENT, Value::bytes(e)),
            Attribute::new(CKA_MODULUS_BITS, Value::ulong(bits)),
        ];
        Ok(KeyPair {
            public,
            private,
            public_key_info,
        })
    }
}

/// CKA_PUBLIC_EXPONENT of a key to generate: odd, at least 3 and at most RustCrypto's
/// limit. An even one (or 0, or 1) has no inverse modulo φ(n), and RustCrypto's prime
/// search would retry forever.
fn new_key_exponent(bytes: &[u8]) -> Result<BoxedUint> {
    let value = bytes.iter().try_fold(0u64, |value, byte| {
        value.checked_mul(256).map(|value| value | u64::from(*byte))
    });
    match value {
        Some(value) if value % 2 == 1 && (3..=PublicKey::MAX_PUB_EXPONENT).contains(&value) => {
            Ok(BoxedUint::from(value))
        }
        _ => Err(Error::AttributeValueInvalid(CKA_PUBLIC_EXPONENT)),
    }
}

/// The DER SubjectPublicKeyInfo of a public key.
pub fn public_key_info(key: &PublicKey) -> Result<Vec<u8>> {
    use rsa::pkcs8::EncodePublicKey;
    key.to_public_key_der()
        .map(|der| der.as_bytes().to_vec())
        .map_err(|err| Error::General(format!("encoding an RSA public key: {err}")))
}

/// How a signature is padded.
#[derive(Clone, Copy)]
enum Scheme {
    /// PKCS#1 v1.5 over a DigestInfo (`None`: the caller supplies the DigestInfo).
    Pkcs1(Option<Algorithm>),
    /// PSS with a hash and salt length.
    Pss(Algorithm, usize),
}

/// CKM_RSA_PKCS (signatures and encryption) and CKM_SHA*_RSA_PKCS (signatures).
pub struct Pkcs1Signature(pub Option<Algorithm>);

/// CKM_RSA_PKCS_PSS and CKM_SHA*_RSA_PKCS_PSS.
pub struct PssSignature(pub Option<Algorithm>);

fn signature_info() -> CK_MECHANISM_INFO {
    CK_MECHANISM_INFO {
        ulMinKeySize: MIN_BITS,
        ulMaxKeySize: MAX_BITS,
        flags: CKF_SIGN | CKF_VERIFY,
    }
}

/// The hash a CKM_/CKG_ identifier names.
fn algorithm(mechanism: CK_ULONG, mgf: bool) -> Option<Algorithm> {
    Some(match (mechanism, mgf) {
        (CKM_SHA_1, false) | (CKG_MGF1_SHA1, true) => Algorithm::Sha1,
        (CKM_SHA224, false) | (CKG_MGF1_SHA224, true) => Algorithm::Sha224,
        (CKM_SHA256, false) | (CKG_MGF1_SHA256, true) => Algorithm::Sha256,
        (CKM_SHA384, false) | (CKG_MGF1_SHA384, true) => Algorithm::Sha384,
        (CKM_SHA512, false) | (CKG_MGF1_SHA512, true) => Algorithm::Sha512,
        _ => return None,
    })
}

/// CK_RSA_PKCS_PSS_PARAMS: hashAlg, mgf, sLen. The MGF must use the same hash (RustCrypto
/// offers no other); with a hashing mechanism the hash must be that one.
fn pss_parameters(parameter: &Parameter, hashing: Option<Algorithm>) -> Result<(Algorithm, usize)> {
    let bytes = parameter.bytes()?;
    let word = std::mem::size_of::<CK_ULONG>();
    if bytes.len() != 3 * word {
        return Err(Error::MechanismParamInvalid);
    }
    let field =
        |index: usize| Parameter::Bytes(bytes[index * word..(index + 1) * word].to_vec()).ulong();
    let hash = algorithm(field(0)?, false).ok_or(Error::MechanismParamInvalid)?;
    let mgf = algorithm(field(1)?, true).ok_or(Error::MechanismParamInvalid)?;
    let salt = usize::try_from(field(2)?).map_err(|_| Error::MechanismParamInvalid)?;
    if mgf != hash || hashing.is_some_and(|hashing| hashing != hash) {
        return Err(Error::MechanismParamInvalid);
    }
    Ok((hash, salt))
}

impl Mechanism for Pkcs1Signature {
    fn info(&self) -> CK_MECHANISM_INFO {
        let mut info = signature_info();
        if self.0.is_none() {
            info.flags |= CKF_ENCRYPT | CKF_DECRYPT;
        }
        info
    }
    fn key_cipher(
        &self,
        key: &Object,
        direction: Direction,
        parameter: &Parameter,
    ) -> Result<Box<dyn Cipher>> {
        parameter.none()?;
        // PKCS#1 v1.5 decryption tells a caller whether any chosen ciphertext pads
        // correctly (Bleichenbacher); with a key that also unwraps, that would open the
        // keys wrapped to it with OAEP. So a key does one or the other.
        if direction == Direction::Decrypt && key.flag(CKA_UNWRAP) {
            return Err(Error::KeyFunctionNotPermitted);
        }
        RsaCipher::boxed(key, direction, Padding::Pkcs1)
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_RSA]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn signer(&self, key: &Object, parameter: &Parameter, sign: bool) -> Result<Box<dyn Signer>> {
        parameter.none()?;
        Ok(RsaSigner::new(key, Scheme::Pkcs1(self.0), sign)?)
    }
}

impl Mechanism for PssSignature {
    fn info(&self) -> CK_MECHANISM_INFO {
        signature_info()
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_RSA]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn signer(&self, key: &Object, parameter: &Parameter, sign: bool) -> Result<Box<dyn Signer>> {
        let (hash, salt) = pss_parameters(parameter, self.0)?;
        // RFC 8017 §9.1.1: the salt must leave room for the hash and two bytes.
        if salt + hash.output_len() + 2 > modulus_len(key)? {
            return Err(Error::MechanismParamInvalid);
        }
        let mut signer = RsaSigner::new(key, Scheme::Pss(hash, salt), sign)?;
        if self.0.is_none() {
            // The raw mechanism signs a digest the caller made: exactly the hash's length.
            signer.input = Input::new(None, hash.output_len());
            signer.exact = Some(hash.output_len());
        }
        Ok(signer)
    }
}

/// CKM_RSA_PKCS_OAEP: encryption with the parameter's hash for OAEP, its own hash for
/// MGF1 (Java's default pairs SHA-256 with MGF1-SHA1), and label.
pub struct OaepEncryption;

impl Mechanism for OaepEncryption {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: MIN_BITS,
            ulMaxKeySize: MAX_BITS,
            flags: CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP,
        }
    }
    fn key_wrap(&self, kek: &Object, parameter: &Parameter, material: &[u8]) -> Result<Vec<u8>> {
        let mut cipher = self.key_cipher(kek, Direction::Encrypt, parameter)?;
        cipher.update(material).map_err(|_| Error::KeySizeRange)?;
        Ok(cipher.finish().map_err(|_| Error::KeySizeRange)?.to_vec())
    }
    fn key_unwrap(
        &self,
        kek: &Object,
        parameter: &Parameter,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut cipher = self.key_cipher(kek, Direction::Decrypt, parameter)?;
        let wrapped_error = |err| match err {
            Error::EncryptedDataLenRange => Error::WrappedKeyLenRange,
            _ => Error::WrappedKeyInvalid,
        };
        cipher.update(blob).map_err(wrapped_error)?;
        cipher.finish().map_err(wrapped_error)
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_RSA]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn key_cipher(
        &self,
        key: &Object,
        direction: Direction,
        parameter: &Parameter,
    ) -> Result<Box<dyn Cipher>> {
        let Parameter::Oaep { hash, mgf, label } = parameter else {
            return Err(Error::MechanismParamInvalid);
        };
        let hash = algorithm(*hash, false).ok_or(Error::MechanismParamInvalid)?;
        let mgf = algorithm(*mgf, true).ok_or(Error::MechanismParamInvalid)?;
        RsaCipher::boxed(key, direction, Padding::Oaep(hash, mgf, label.clone()))
    }
}

/// How an RSA encryption is padded.
#[derive(Clone)]
enum Padding {
    Pkcs1,
    /// The OAEP hash, the MGF1 hash and the label.
    Oaep(Algorithm, Algorithm, Vec<u8>),
}

/// An RSA encryption or decryption: input gathered, processed at the end (one block).
#[derive(Clone)]
struct RsaCipher {
    key: RsaKey,
    direction: Direction,
    padding: Padding,
    data: Zeroizing<Vec<u8>>,
    /// The modulus length in bytes.
    len: usize,
}

impl RsaCipher {
    fn boxed(object: &Object, direction: Direction, padding: Padding) -> Result<Box<dyn Cipher>> {
        let len = modulus_len(object)?;
        let key = match direction {
            Direction::Encrypt => RsaKey::Public(public_key(object)?),
            Direction::Decrypt => RsaKey::Private(Box::new(private_key(object)?)),
        };
        Ok(Box::new(Self {
            key,
            direction,
            padding,
            data: Zeroizing::new(Vec::new()),
            len,
        }))
    }

    /// The longest message the padding leaves room for.
    fn message_limit(&self) -> usize {
        match &self.padding {
            Padding::Pkcs1 => self.len.saturating_sub(PKCS1_OVERHEAD),
            Padding::Oaep(hash, _, _) => self.len.saturating_sub(2 * hash.output_len() + 2),
        }
    }
}

impl Cipher for RsaCipher {
    fn output_len(&self, input_len: usize, finishing: bool) -> Result<usize> {
        let total = self.data.len() + input_len;
        match self.direction {
            Direction::Encrypt if total > self.message_limit() => Err(Error::DataLenRange),
            Direction::Decrypt if total > self.len || (finishing && total != self.len) => {
                Err(Error::EncryptedDataLenRange)
            }
            _ if !finishing => Ok(0),
            Direction::Encrypt => Ok(self.len),
            Direction::Decrypt => Ok(self.message_limit()),
        }
    }

    fn update(&mut self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.output_len(input.len(), false)?;
        crate::mech::extend_secret(&mut self.data, input);
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        self.output_len(0, true)?;
        let data = std::mem::take(&mut self.data);
        let rng = &mut getrandom::SysRng;
        match (&self.key, &self.padding) {
            (RsaKey::Public(key), Padding::Pkcs1) => key.encrypt(rng, rsa::Pkcs1v15Encrypt, &data),
            (RsaKey::Public(key), Padding::Oaep(hash, mgf, label)) => with_digest!(*hash, |D| {
                with_digest!(*mgf, |M| {
                    let padding = rsa::Oaep::<D, M>::new_with_mgf_hash_and_label(label.clone());
                    key.encrypt(rng, padding, &data)
                })
            }),
            // One error for every failure, so the code tells nothing of the padding.
            (RsaKey::Private(key), Padding::Pkcs1) => key
                .decrypt_blinded(rng, rsa::Pkcs1v15Encrypt, &data)
                .map_err(|_| rsa::Error::Decryption),
            (RsaKey::Private(key), Padding::Oaep(hash, mgf, label)) => with_digest!(*hash, |D| {
                with_digest!(*mgf, |M| {
                    let padding = rsa::Oaep::<D, M>::new_with_mgf_hash_and_label(label.clone());
                    key.decrypt_blinded(rng, padding, &data)
                        .map_err(|_| rsa::Error::Decryption)
                })
            }),
        }
        .map(Zeroizing::new)
        .map_err(|_| match self.direction {
            Direction::Encrypt => Error::DataLenRange,
            Direction::Decrypt => Error::EncryptedDataInvalid,
        })
    }

    fn box_clone(&self) -> Box<dyn Cipher> {
        Box::new(self.clone())
    }
}

/// Either half of an RSA key, by operation.
#[derive(Clone)]
enum RsaKey {
    Private(Box<PrivateKey>),
    Public(PublicKey),
}

struct RsaSigner {
    key: RsaKey,
    scheme: Scheme,
    input: Input,
    len: usize,
    /// The exact input length a raw PSS signature takes.
    exact: Option<usize>,
}

impl RsaSigner {
    fn new(object: &Object, scheme: Scheme, sign: bool) -> Result<Box<Self>> {
        let len = modulus_len(object)?;
        let key = if sign {
            RsaKey::Private(Box::new(private_key(object)?))
        } else {
            RsaKey::Public(public_key(object)?)
        };
        let input = match scheme {
            Scheme::Pkcs1(hash) => Input::new(hash, len.saturating_sub(PKCS1_OVERHEAD)),
            Scheme::Pss(hash, _) => Input::new(Some(hash), 0),
        };
        Ok(Box::new(Self {
            key,
            scheme,
            input,
            len,
            exact: None,
        }))
    }

    fn digest(self) -> Result<(RsaKey, Scheme, Zeroizing<Vec<u8>>)> {
        let Self {
            key,
            scheme,
            input,
            exact,
            ..
        } = self;
        let digest = input.finish();
        if exact.is_some_and(|exact| exact != digest.len()) {
            return Err(Error::DataLenRange);
        }
        Ok((key, scheme, digest))
    }
}

fn pkcs1_scheme(hash: Option<Algorithm>) -> Pkcs1v15Sign {
    match hash {
        None => Pkcs1v15Sign::new_unprefixed(),
        Some(hash) => with_digest!(hash, |D| Pkcs1v15Sign::new::<D>()),
    }
}

impl Signer for RsaSigner {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn signature_len(&self) -> usize {
        self.len
    }

    fn sign(self: Box<Self>) -> Result<Vec<u8>> {
        let (key, scheme, digest) = (*self).digest()?;
        let RsaKey::Private(key) = key else {
            return Err(Error::KeyFunctionNotPermitted);
        };
        let rng = &mut getrandom::SysRng;
        let signed = match scheme {
            Scheme::Pkcs1(hash) => key.sign_with_rng(rng, pkcs1_scheme(hash), &digest),
            Scheme::Pss(hash, salt) => {
                with_digest!(hash, |D| key.sign_with_rng(
                    rng,
                    Pss::<D>::new_with_salt(salt),
                    &digest
                ))
            }
        };
        signed.map_err(|_| Error::DataLenRange)
    }

    fn verify(self: Box<Self>, signature: &[u8]) -> Result<()> {
        if signature.len() != self.len {
            return Err(Error::SignatureLenRange);
        }
        let (key, scheme, digest) = (*self).digest()?;
        let RsaKey::Public(key) = key else {
            return Err(Error::KeyFunctionNotPermitted);
        };
        let verified = match scheme {
            Scheme::Pkcs1(hash) => key.verify(pkcs1_scheme(hash), &digest, signature),
            Scheme::Pss(hash, salt) => {
                with_digest!(hash, |D| key.verify(
                    Pss::<D>::new_with_salt(salt),
                    &digest,
                    signature
                ))
            }
        };
        verified.map_err(|_| Error::SignatureInvalid)
    }
}

/// CKM_RSA_AES_KEY_WRAP (PKCS#11 3.0 §2.1.21): a fresh AES key wrapped with RSA-OAEP to
/// the public key, followed by the target wrapped with RFC 5649 under that AES key — the
/// format cloud KMS import takes.
pub struct RsaAesKeyWrap;

impl RsaAesKeyWrap {
    fn parts(parameter: &Parameter) -> Result<(usize, &Parameter)> {
        let Parameter::RsaAes { aes_bits, oaep } = parameter else {
            return Err(Error::MechanismParamInvalid);
        };
        match aes_bits {
            128 | 192 | 256 => Ok((*aes_bits as usize / 8, oaep)),
            _ => Err(Error::MechanismParamInvalid),
        }
    }
}

impl Mechanism for RsaAesKeyWrap {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: MIN_BITS,
            ulMaxKeySize: MAX_BITS,
            flags: CKF_WRAP | CKF_UNWRAP,
        }
    }
    fn key_types(&self) -> &'static [CK_KEY_TYPE] {
        &[CKK_RSA]
    }
    fn asymmetric(&self) -> bool {
        true
    }
    fn key_size_ok(&self, _len: usize) -> bool {
        true
    }
    fn key_wrap(&self, kek: &Object, parameter: &Parameter, material: &[u8]) -> Result<Vec<u8>> {
        let (aes_len, oaep) = Self::parts(parameter)?;
        let temporary = crate::mech::random_secret(aes_len)?;
        let mut blob = OaepEncryption.key_wrap(kek, oaep, &temporary)?;
        blob.extend(crate::mech::kw::Rfc5649.wrap(
            &temporary,
            &Parameter::Bytes(Vec::new()),
            material,
        )?);
        Ok(blob)
    }
    fn key_unwrap(
        &self,
        kek: &Object,
        parameter: &Parameter,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (aes_len, oaep) = Self::parts(parameter)?;
        let split = modulus_len(kek)?;
        if blob.len() <= split {
            return Err(Error::WrappedKeyLenRange);
        }
        let (wrapped_key, wrapped_target) = blob.split_at(split);
        let temporary = OaepEncryption.key_unwrap(kek, oaep, wrapped_key)?;
        if temporary.len() != aes_len {
            return Err(Error::WrappedKeyInvalid);
        }
        crate::mech::kw::Rfc5649.unwrap(&temporary, &Parameter::Bytes(Vec::new()), wrapped_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pss(hash: CK_ULONG, mgf: CK_ULONG, salt: CK_ULONG) -> Parameter {
        Parameter::Bytes(
            [hash, mgf, salt]
                .iter()
                .flat_map(|word| word.to_ne_bytes())
                .collect(),
        )
    }

    #[test]
    fn trimmed_components_rebuild_the_key() {
        // PKCS#11 stores big integers without leading zeros; a key must come back whole
        // from them.
        let key = PrivateKey::new(&mut getrandom::SysRng, 2048).expect("key");
        let uint = |value: &BoxedUint| BoxedUint::from_be_slice_vartime(&trimmed(value));
        let primes = key.primes().iter().map(|prime| uint(prime)).collect();
        let rebuilt =
            PrivateKey::from_components(uint(key.n()), uint(key.e()), uint(key.d()), primes)
                .expect("rebuilt");
        assert!(rebuilt == key);
    }

    #[test]
    fn pss_parameters_must_name_one_hash_throughout() {
        assert_eq!(
            pss_parameters(&pss(CKM_SHA256, CKG_MGF1_SHA256, 32), None).ok(),
            Some((Algorithm::Sha256, 32))
        );
        for (parameter, hashing) in [
            (pss(CKM_SHA256, CKG_MGF1_SHA1, 32), None),
            (
                pss(CKM_SHA256, CKG_MGF1_SHA256, 32),
                Some(Algorithm::Sha384),
            ),
            (pss(CKM_MD5, CKG_MGF1_SHA256, 32), None),
            (Parameter::Bytes(vec![0; 8]), None),
        ] {
            assert!(matches!(
                pss_parameters(&parameter, hashing),
                Err(Error::MechanismParamInvalid)
            ));
        }
    }
}
