//! The key hierarchy: PIN keys (Argon2id) wrap the master key; a key derived from the
//! master key seals every object's secrets and authenticates its policy.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech;
use crate::store::KdfParams;

const NONCE_LEN: usize = 12;
/// Salt length for Argon2id.
pub const SALT_LEN: usize = 16;

/// A 256-bit key, zeroed on drop, shown by length only.
#[derive(Clone)]
pub struct Key256(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256(<32 bytes>)")
    }
}

impl Key256 {
    /// A fresh random key.
    pub fn random() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        mech::random(key.as_mut())?;
        Ok(Self(key))
    }

    /// A key from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    /// The raw bytes, for a caller that combines keys (key parts).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key check value: first three bytes of AES-256 of a zero block.
    pub fn check_value(&self) -> Result<Vec<u8>> {
        mech::key_check_value(Some(pkcs11_sys::CKK_AES), self.0.as_ref())
    }

    /// Whether two keys are equal, in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&*other.0).into()
    }

    /// The key that seals objects: HKDF-SHA256 of the master key with a fixed label.
    pub fn object_key(&self) -> Result<Self> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, self.0.as_ref());
        let mut okm = Zeroizing::new([0u8; 32]);
        hkdf.expand(b"keyferry object sealing key v1", okm.as_mut())
            .map_err(|_| Error::General("HKDF output length".into()))?;
        Ok(Self(okm))
    }

    /// The domain key: HKDF-SHA256 of the master key with its own label. Tokens built
    /// from the same key parts derive the same one (`mech::domain`).
    pub fn domain_key(&self) -> Result<Self> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, self.0.as_ref());
        let mut okm = Zeroizing::new([0u8; 32]);
        hkdf.expand(b"keyferry domain wrap key v1", okm.as_mut())
            .map_err(|_| Error::General("HKDF output length".into()))?;
        Ok(Self(okm))
    }

    /// AES-256-GCM seal: a random nonce, then ciphertext and tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let cipher = Aes256Gcm::new_from_slice(self.0.as_ref())
            .map_err(|_| Error::General("AES-256-GCM key length".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        mech::random(&mut nonce)?;
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::General("AES-256-GCM seal".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Open what `seal` wrote; `None` when the blob or its AAD was altered, or the key
    /// is wrong.
    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let cipher = Aes256Gcm::new_from_slice(self.0.as_ref()).ok()?;
        let (nonce, sealed) = blob.split_first_chunk::<NONCE_LEN>()?;
        cipher
            .decrypt(&Nonce::from(*nonce), Payload { msg: sealed, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

/// The key a PIN derives: Argon2id over the PIN and the token's salt.
pub fn pin_key(pin: &[u8], salt: &[u8], params: KdfParams) -> Result<Key256> {
    let argon_params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|err| Error::Config(format!("Argon2id parameters {params}: {err}")))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pin, salt, key.as_mut())
        .map_err(|err| Error::General(format!("Argon2id: {err}")))?;
    Ok(Key256(key))
}

/// The AAD of a wrapped master key: which token and which role it opens.
pub fn master_key_aad(serial: &str, role: &str) -> Vec<u8> {
    format!("keyferry master key v1|{serial}|{role}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn wrong_pin_or_aad_does_not_open_the_master_key() {
        let master = Key256::random().expect("random");
        let salt = [3u8; SALT_LEN];
        let wrapped = pin_key(b"1234", &salt, CHEAP)
            .and_then(|key| key.seal(b"aad", master.expose()))
            .expect("sealed");
        let right = pin_key(b"1234", &salt, CHEAP).expect("derived");
        let opened = right
            .open(b"aad", &wrapped)
            .expect("opens with the right PIN");
        assert!(Key256::from_slice(&opened).is_some_and(|key| key.ct_eq(&master)));
        assert!(
            pin_key(b"1235", &salt, CHEAP)
                .expect("derived")
                .open(b"aad", &wrapped)
                .is_none()
        );
        assert!(right.open(b"other", &wrapped).is_none());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let key = Key256::random().expect("random");
        let blob = key.seal(b"policy", b"secret").expect("sealed");
        for bit in 0..blob.len() * 8 {
            let mut tampered = blob.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert!(
                key.open(b"policy", &tampered).is_none(),
                "bit {bit} not caught"
            );
        }
    }
}
