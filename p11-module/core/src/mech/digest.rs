//! SHA-1 and SHA-2 digests (PKCS#11 3.0 §2.20–§2.23), and the hash choice HMAC shares.

use pkcs11_sys::*;
use sha2::Digest as _;

use crate::error::Result;
use crate::mech::Mechanism;
use crate::mech::params::Parameter;

/// A hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// A fresh hashing state.
    pub fn start(self) -> Box<dyn Hash> {
        match self {
            Self::Sha1 => Box::new(sha1::Sha1::new()),
            Self::Sha224 => Box::new(sha2::Sha224::new()),
            Self::Sha256 => Box::new(sha2::Sha256::new()),
            Self::Sha384 => Box::new(sha2::Sha384::new()),
            Self::Sha512 => Box::new(sha2::Sha512::new()),
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// A digest in progress.
pub trait Hash: Send {
    /// Absorb more data.
    fn update(&mut self, data: &[u8]);
    /// The digest; the state is spent.
    fn finish(self: Box<Self>) -> Vec<u8>;
    /// Output length in bytes.
    fn output_len(&self) -> usize;
}

impl<D: sha2::Digest + Send + 'static> Hash for D {
    fn update(&mut self, data: &[u8]) {
        sha2::Digest::update(self, data);
    }
    fn finish(self: Box<Self>) -> Vec<u8> {
        self.finalize().to_vec()
    }
    fn output_len(&self) -> usize {
        <D as sha2::Digest>::output_size()
    }
}

/// CKM_SHA_1, CKM_SHA224, … CKM_SHA512.
pub struct Digest(pub Algorithm);

impl Mechanism for Digest {
    fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: 0,
            ulMaxKeySize: 0,
            flags: CKF_DIGEST,
        }
    }

    fn digest(&self, parameter: &Parameter) -> Result<Box<dyn Hash>> {
        parameter.none()?;
        Ok(self.0.start())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn fips_180_abc_vectors() {
        let cases = [
            (
                Algorithm::Sha1,
                hex!("a9993e364706816aba3e25717850c26c9cd0d89d").to_vec(),
            ),
            (
                Algorithm::Sha224,
                hex!("23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7").to_vec(),
            ),
            (
                Algorithm::Sha256,
                hex!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").to_vec(),
            ),
        ];
        for (algorithm, expected) in cases {
            let mut hash = algorithm.start();
            hash.update(b"a");
            hash.update(b"bc");
            assert_eq!(hash.output_len(), algorithm.output_len());
            assert_eq!(hash.finish(), expected, "{algorithm:?}");
        }
    }
}
