//! Signing and verifying in progress: one trait for MACs and signatures, and the input
//! shapes they share (a running hash, or the whole message buffered).

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::digest::{Algorithm, Hash};

/// A C_Sign* or C_Verify* operation.
pub trait Signer: Send {
    /// Absorb more data.
    fn update(&mut self, data: &[u8]) -> Result<()>;
    /// The length of the signature `sign` makes.
    fn signature_len(&self) -> usize;
    /// The signature; the state is spent.
    fn sign(self: Box<Self>) -> Result<Vec<u8>>;
    /// Check a signature; the state is spent. Wrong length: `CKR_SIGNATURE_LEN_RANGE`;
    /// mismatch: `CKR_SIGNATURE_INVALID`.
    fn verify(self: Box<Self>, signature: &[u8]) -> Result<()>;
}

/// What a signature covers: a hash the token computes, or input taken whole (the raw
/// mechanisms, whose input is already a digest, and pure EdDSA).
pub enum Input {
    /// CKM_SHA256_RSA_PKCS and the like.
    Hashed(Box<dyn Hash>),
    /// The input itself, up to a limit.
    Whole {
        /// What came so far.
        data: Zeroizing<Vec<u8>>,
        /// The most the mechanism takes.
        limit: usize,
    },
}

impl Input {
    /// A running hash, or the whole input when `hash` is `None`.
    pub fn new(hash: Option<Algorithm>, limit: usize) -> Self {
        match hash {
            Some(hash) => Self::Hashed(hash.start()),
            None => Self::Whole {
                data: Zeroizing::new(Vec::new()),
                limit,
            },
        }
    }

    /// Absorb more; input past the limit is `CKR_DATA_LEN_RANGE`.
    pub fn update(&mut self, more: &[u8]) -> Result<()> {
        match self {
            Self::Hashed(hash) => hash.update(more),
            Self::Whole { data, limit } => {
                if data.len() + more.len() > *limit {
                    return Err(Error::DataLenRange);
                }
                crate::mech::extend_secret(data, more);
            }
        }
        Ok(())
    }

    /// The digest, or the input.
    pub fn finish(self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Hashed(hash) => Zeroizing::new(hash.finish()),
            Self::Whole { data, .. } => data,
        }
    }
}
