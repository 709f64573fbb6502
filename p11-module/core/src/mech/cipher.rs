//! AES encryption and decryption, single- and multi-part: ECB, CBC, CBC_PAD, CTR, GCM.
//! The block cipher and modes come from RustCrypto (aes, cbc, ctr, aes-gcm).

use aes::cipher::consts::{U12, U13, U14, U15, U16};
use aes::cipher::{
    Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    IvState, KeyInit, KeyIvInit, StreamCipher, StreamCipherSeek,
};
use aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::{AeadCore, AeadInOut};
use pkcs11_sys::CK_ULONG;
use subtle::{ConstantTimeEq, ConstantTimeGreater, ConstantTimeLess};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::params::Parameter;
use crate::mech::{extend_secret, reserve_secret};

const BLOCK: usize = 16;

/// Which way an operation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// C_Encrypt*.
    Encrypt,
    /// C_Decrypt*.
    Decrypt,
}

impl Direction {
    /// The data-length error of this direction (PKCS#11 3.0 §5.8/§5.9).
    fn len_range(self) -> Error {
        match self {
            Self::Encrypt => Error::DataLenRange,
            Self::Decrypt => Error::EncryptedDataLenRange,
        }
    }
}

/// An encryption or decryption in progress.
pub trait Cipher: Send {
    /// The most bytes `update(input_len bytes)` — and `finish` after it, when `finishing`
    /// — can write; an error when that input length can never be valid.
    fn output_len(&self, input_len: usize, finishing: bool) -> Result<usize>;
    /// Process more input, returning what is ready.
    fn update(&mut self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
    /// End the operation, returning the rest.
    fn finish(&mut self) -> Result<Zeroizing<Vec<u8>>>;
    /// A copy, to try a call whose output may not fit without losing the state.
    fn box_clone(&self) -> Box<dyn Cipher>;
}

/// One AES block transform with its chaining state (ECB or CBC, either direction).
trait BlockStep: Send {
    fn apply(&mut self, block: &mut [u8]);
    fn box_clone(&self) -> Box<dyn BlockStep>;
}

#[derive(Clone)]
struct EcbEncrypt<C>(C);
#[derive(Clone)]
struct EcbDecrypt<C>(C);
// The mode types are deliberately not Clone; a copy is rebuilt from the block cipher
// and the mode's own chaining state (IvState).
struct CbcEncrypt<C: BlockCipherEncrypt>(C, cbc::Encryptor<C>);
struct CbcDecrypt<C: BlockCipherDecrypt>(C, cbc::Decryptor<C>);

fn as_block(block: &mut [u8]) -> &mut Array<u8, U16> {
    // Callers pass exact 16-byte chunks (chunks_exact_mut(BLOCK)).
    <&mut Array<u8, U16>>::try_from(block).unwrap_or_else(|_| unreachable!("16-byte chunk"))
}

impl<C: BlockCipherEncrypt<BlockSize = U16> + Clone + Send + 'static> BlockStep for EcbEncrypt<C> {
    fn apply(&mut self, block: &mut [u8]) {
        self.0.encrypt_block(as_block(block));
    }
    fn box_clone(&self) -> Box<dyn BlockStep> {
        Box::new(self.clone())
    }
}

impl<C: BlockCipherDecrypt<BlockSize = U16> + Clone + Send + 'static> BlockStep for EcbDecrypt<C> {
    fn apply(&mut self, block: &mut [u8]) {
        self.0.decrypt_block(as_block(block));
    }
    fn box_clone(&self) -> Box<dyn BlockStep> {
        Box::new(self.clone())
    }
}

impl<C: BlockCipherEncrypt<BlockSize = U16> + Clone + Send + 'static> BlockStep for CbcEncrypt<C> {
    fn apply(&mut self, block: &mut [u8]) {
        self.1.encrypt_block(as_block(block));
    }
    fn box_clone(&self) -> Box<dyn BlockStep> {
        Box::new(Self(
            self.0.clone(),
            cbc::Encryptor::inner_iv_init(self.0.clone(), &self.1.iv_state()),
        ))
    }
}

impl<C: BlockCipherDecrypt<BlockSize = U16> + Clone + Send + 'static> BlockStep for CbcDecrypt<C> {
    fn apply(&mut self, block: &mut [u8]) {
        self.1.decrypt_block(as_block(block));
    }
    fn box_clone(&self) -> Box<dyn BlockStep> {
        Box::new(Self(
            self.0.clone(),
            cbc::Decryptor::inner_iv_init(self.0.clone(), &self.1.iv_state()),
        ))
    }
}

/// Instantiate a generic over the AES variant matching the key length.
macro_rules! with_aes {
    ($key:expr, |$aes:ident| $body:expr) => {
        match $key.len() {
            16 => {
                type $aes = Aes128;
                $body
            }
            24 => {
                type $aes = Aes192;
                $body
            }
            32 => {
                type $aes = Aes256;
                $body
            }
            _ => Err(Error::KeySizeRange),
        }
    };
}

fn block_step(
    key: &[u8],
    direction: Direction,
    iv: Option<[u8; 16]>,
) -> Result<Box<dyn BlockStep>> {
    let bad_key = |_| Error::KeySizeRange;
    with_aes!(key, |A| {
        let step: Box<dyn BlockStep> = match (direction, iv) {
            (Direction::Encrypt, None) => {
                Box::new(EcbEncrypt(A::new_from_slice(key).map_err(bad_key)?))
            }
            (Direction::Decrypt, None) => {
                Box::new(EcbDecrypt(A::new_from_slice(key).map_err(bad_key)?))
            }
            (Direction::Encrypt, Some(iv)) => {
                let cipher = A::new_from_slice(key).map_err(bad_key)?;
                Box::new(CbcEncrypt(
                    cipher.clone(),
                    cbc::Encryptor::inner_iv_init(cipher, &Array::from(iv)),
                ))
            }
            (Direction::Decrypt, Some(iv)) => {
                let cipher = A::new_from_slice(key).map_err(bad_key)?;
                Box::new(CbcDecrypt(
                    cipher.clone(),
                    cbc::Decryptor::inner_iv_init(cipher, &Array::from(iv)),
                ))
            }
        };
        Ok(step)
    })
}

/// ECB, CBC and CBC_PAD: whole blocks as they come, the rest held for later.
pub struct BlockMode {
    step: Box<dyn BlockStep>,
    direction: Direction,
    padded: bool,
    pending: Zeroizing<Vec<u8>>,
}

impl BlockMode {
    /// ECB (no IV) or CBC (an IV), PKCS#7-padded when `padded`.
    pub fn new(
        key: &[u8],
        direction: Direction,
        iv: Option<[u8; 16]>,
        padded: bool,
    ) -> Result<Self> {
        Ok(Self {
            step: block_step(key, direction, iv)?,
            direction,
            padded,
            pending: Zeroizing::new(Vec::new()),
        })
    }

    /// Bytes held back after `total` bytes: a partial block, and for padded decryption
    /// the last full block too (it may end in padding).
    fn held(&self, total: usize) -> usize {
        match (
            self.padded && self.direction == Direction::Decrypt,
            total % BLOCK,
        ) {
            (true, 0) if total > 0 => BLOCK,
            (_, rest) => rest,
        }
    }

    fn run(&mut self, data: &mut [u8]) {
        for block in data.chunks_exact_mut(BLOCK) {
            self.step.apply(block);
        }
    }
}

impl Cipher for BlockMode {
    fn output_len(&self, input_len: usize, finishing: bool) -> Result<usize> {
        let total = self.pending.len() + input_len;
        if !finishing {
            return Ok(total - self.held(total));
        }
        match (self.padded, self.direction) {
            (true, Direction::Encrypt) => Ok((total / BLOCK + 1) * BLOCK),
            (true, Direction::Decrypt) if total % BLOCK == 0 && total > 0 => Ok(total),
            (false, _) if total % BLOCK == 0 => Ok(total),
            _ => Err(self.direction.len_range()),
        }
    }

    fn update(&mut self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        extend_secret(&mut self.pending, input);
        let ready = self.pending.len() - self.held(self.pending.len());
        let rest = Zeroizing::new(self.pending[ready..].to_vec());
        let mut out = std::mem::replace(&mut self.pending, rest);
        out.truncate(ready);
        self.run(&mut out);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        let mut last = std::mem::take(&mut self.pending);
        match (self.padded, self.direction) {
            (false, _) if last.is_empty() => Ok(last),
            (true, Direction::Encrypt) => {
                let pad = BLOCK - last.len() % BLOCK;
                extend_secret(&mut last, &[pad as u8; BLOCK][..pad]);
                self.run(&mut last);
                Ok(last)
            }
            (true, Direction::Decrypt) if last.len() == BLOCK => {
                self.run(&mut last);
                let len = unpadded_len(&last)?;
                last.truncate(len);
                Ok(last)
            }
            _ => Err(self.direction.len_range()),
        }
    }

    fn box_clone(&self) -> Box<dyn Cipher> {
        Box::new(Self {
            step: self.step.box_clone(),
            direction: self.direction,
            padded: self.padded,
            pending: self.pending.clone(),
        })
    }
}

/// The length of a PKCS#7-padded final block without its padding, checked in constant
/// time so the check cannot serve as a padding oracle by its timing.
fn unpadded_len(block: &[u8]) -> Result<usize> {
    let pad = block[BLOCK - 1];
    let mut bad = pad.ct_eq(&0) | (BLOCK as u8).ct_lt(&pad);
    for (index, byte) in block.iter().enumerate() {
        // Byte `index` is padding when it is among the last `pad` bytes.
        let in_padding = !((BLOCK - index) as u8).ct_gt(&pad);
        bad |= in_padding & !byte.ct_eq(&pad);
    }
    if bool::from(bad) {
        Err(Error::EncryptedDataInvalid)
    } else {
        Ok(BLOCK - pad as usize)
    }
}

/// CTR with a big-endian counter in the low `counter_bits` of the block (CK_AES_CTR_PARAMS).
pub struct Counter {
    key: Zeroizing<Vec<u8>>,
    block: [u8; 16],
    stream: CtrStream,
    /// Blocks the counter can still take before it would wrap.
    blocks_left: u128,
    /// Bytes used of the current block.
    offset: usize,
    /// Which length error a counter overrun is.
    direction: Direction,
}

/// The mode types are deliberately not Clone: a copy is a new stream sought to the same
/// position.
enum CtrStream {
    Aes128(ctr::Ctr128BE<Aes128>),
    Aes192(ctr::Ctr128BE<Aes192>),
    Aes256(ctr::Ctr128BE<Aes256>),
}

impl CtrStream {
    fn new(key: &[u8], block: &[u8; 16], position: u64) -> Result<Self> {
        let bad_key = |_| Error::KeySizeRange;
        let mut stream = match key.len() {
            16 => Self::Aes128(ctr::Ctr128BE::new_from_slices(key, block).map_err(bad_key)?),
            24 => Self::Aes192(ctr::Ctr128BE::new_from_slices(key, block).map_err(bad_key)?),
            32 => Self::Aes256(ctr::Ctr128BE::new_from_slices(key, block).map_err(bad_key)?),
            _ => return Err(Error::KeySizeRange),
        };
        match &mut stream {
            Self::Aes128(s) => s.seek(position),
            Self::Aes192(s) => s.seek(position),
            Self::Aes256(s) => s.seek(position),
        }
        Ok(stream)
    }

    fn apply(&mut self, data: &mut [u8]) {
        match self {
            Self::Aes128(s) => s.apply_keystream(data),
            Self::Aes192(s) => s.apply_keystream(data),
            Self::Aes256(s) => s.apply_keystream(data),
        }
    }

    fn position(&self) -> u64 {
        match self {
            Self::Aes128(s) => s.current_pos(),
            Self::Aes192(s) => s.current_pos(),
            Self::Aes256(s) => s.current_pos(),
        }
    }
}

impl Counter {
    /// From CK_AES_CTR_PARAMS: a CK_ULONG of counter bits (1–128), then the 16-byte block.
    pub fn new(key: &[u8], direction: Direction, parameter: &Parameter) -> Result<Self> {
        let bytes = parameter.bytes()?;
        let word = std::mem::size_of::<CK_ULONG>();
        if bytes.len() != word + BLOCK {
            return Err(Error::MechanismParamInvalid);
        }
        let (bits, block) = bytes.split_at(word);
        let bits = Parameter::Bytes(bits.to_vec()).ulong()?;
        if !(1..=128).contains(&bits) {
            return Err(Error::MechanismParamInvalid);
        }
        let block: [u8; 16] = block.try_into().map_err(|_| Error::MechanismParamInvalid)?;
        let start = u128::from_be_bytes(block);
        // 2^bits minus the counter's start; for 128 bits from zero that is 2^128, which
        // u128 cannot hold and no caller can exhaust, so it saturates.
        let blocks_left = match bits {
            128 => (u128::MAX - start).saturating_add(1),
            bits => (1u128 << bits) - (start & ((1u128 << bits) - 1)),
        };
        let stream = CtrStream::new(key, &block, 0)?;
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
            block,
            stream,
            blocks_left,
            offset: 0,
            direction,
        })
    }
}

impl Counter {
    /// Keystream blocks `len` more bytes start, beyond the one partly used.
    fn new_blocks(&self, len: usize) -> u128 {
        ((self.offset + len).div_ceil(BLOCK) - usize::from(self.offset > 0)) as u128
    }
}

impl Cipher for Counter {
    fn output_len(&self, input_len: usize, _finishing: bool) -> Result<usize> {
        // The counter must not wrap into the IV part of the block (PKCS#11 3.0 §2.10.5).
        if self.new_blocks(input_len) > self.blocks_left {
            return Err(self.direction.len_range());
        }
        Ok(input_len)
    }

    fn update(&mut self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.output_len(input.len(), false)?;
        let mut out = Zeroizing::new(input.to_vec());
        self.stream.apply(&mut out);
        self.blocks_left -= self.new_blocks(input.len());
        self.offset = (self.offset + input.len()) % BLOCK;
        Ok(out)
    }

    fn finish(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(Vec::new()))
    }

    fn box_clone(&self) -> Box<dyn Cipher> {
        // The stream was built from this key, so rebuilding it cannot fail.
        let stream = CtrStream::new(&self.key, &self.block, self.stream.position())
            .unwrap_or_else(|_| unreachable!("key length checked at init"));
        Box::new(Self {
            key: self.key.clone(),
            block: self.block,
            stream,
            blocks_left: self.blocks_left,
            offset: self.offset,
            direction: self.direction,
        })
    }
}

/// The most one GCM operation buffers: 64 MiB.
const GCM_LIMIT: usize = 64 * 1024 * 1024;

/// GCM: input is gathered and sealed or opened at the end, so no plaintext is released
/// before its tag is checked (PKCS#11 3.0 §2.10.8).
#[derive(Clone)]
pub struct Gcm {
    key: Zeroizing<Vec<u8>>,
    iv: Vec<u8>,
    aad: Vec<u8>,
    tag_len: usize,
    direction: Direction,
    data: Zeroizing<Vec<u8>>,
}

impl Gcm {
    /// From CK_GCM_PARAMS: a 96- or 128-bit IV (the 96-bit one NIST recommends, and the
    /// 128-bit one SoftHSMv2 also takes), any AAD, a 96–128-bit tag.
    pub fn new(key: &[u8], direction: Direction, parameter: &Parameter) -> Result<Self> {
        let Parameter::Gcm { iv, aad, tag_bits } = parameter else {
            return Err(Error::MechanismParamInvalid);
        };
        if !matches!(iv.len(), 12 | 16) {
            return Err(Error::MechanismParamInvalid);
        }
        let iv = iv.clone();
        let tag_len = match tag_bits {
            96 | 104 | 112 | 120 | 128 => (*tag_bits / 8) as usize,
            _ => return Err(Error::MechanismParamInvalid),
        };
        if !matches!(key.len(), 16 | 24 | 32) {
            return Err(Error::KeySizeRange);
        }
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
            iv,
            aad: aad.clone(),
            tag_len,
            direction,
            data: Zeroizing::new(Vec::new()),
        })
    }

    /// Seal `data` in place and return the tag.
    pub fn seal(&self, data: &mut [u8]) -> Result<Vec<u8>> {
        gcm_dispatch!(self, seal, data)
    }

    /// Open `data` in place against `tag`; on failure `data` is wiped.
    pub fn open(&self, data: &mut [u8], tag: &[u8]) -> Result<()> {
        let result = gcm_dispatch!(self, open, data, tag);
        if result.is_err() {
            data.fill(0);
        }
        result
    }
}

/// Call `$function::<Aes, NonceSize, TagSize>` for a GCM state's key, IV and tag lengths.
macro_rules! gcm_dispatch {
    ($gcm:expr, $function:ident, $($argument:expr),*) => {{
        let gcm = $gcm;
        macro_rules! by_tag {
            ($aes:ty, $nonce:ty) => {
                match gcm.tag_len {
                    12 => $function::<$aes, $nonce, U12>(&gcm.key, &gcm.iv, &gcm.aad, $($argument),*),
                    13 => $function::<$aes, $nonce, U13>(&gcm.key, &gcm.iv, &gcm.aad, $($argument),*),
                    14 => $function::<$aes, $nonce, U14>(&gcm.key, &gcm.iv, &gcm.aad, $($argument),*),
                    15 => $function::<$aes, $nonce, U15>(&gcm.key, &gcm.iv, &gcm.aad, $($argument),*),
                    _ => $function::<$aes, $nonce, U16>(&gcm.key, &gcm.iv, &gcm.aad, $($argument),*),
                }
            };
        }
        with_aes!(gcm.key, |A| if gcm.iv.len() == 16 { by_tag!(A, U16) } else { by_tag!(A, U12) })
    }};
}
use gcm_dispatch;

fn seal<A, N, T>(key: &[u8], iv: &[u8], aad: &[u8], data: &mut [u8]) -> Result<Vec<u8>>
where
    AesGcm<A, N, T>: KeyInit + AeadInOut + AeadCore<NonceSize = N>,
    N: aes::cipher::array::ArraySize,
    T: aes_gcm::TagSize,
{
    let cipher = AesGcm::<A, N, T>::new_from_slice(key).map_err(|_| Error::KeySizeRange)?;
    let nonce = Array::<u8, N>::try_from(iv).map_err(|_| Error::MechanismParamInvalid)?;
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, data.into())
        .map_err(|_| Error::DataLenRange)?;
    Ok(tag.to_vec())
}

fn open<A, N, T>(key: &[u8], iv: &[u8], aad: &[u8], data: &mut [u8], tag: &[u8]) -> Result<()>
where
    AesGcm<A, N, T>: KeyInit + AeadInOut + AeadCore<NonceSize = N>,
    N: aes::cipher::array::ArraySize,
    T: aes_gcm::TagSize,
{
    let cipher = AesGcm::<A, N, T>::new_from_slice(key).map_err(|_| Error::KeySizeRange)?;
    let nonce = Array::<u8, N>::try_from(iv).map_err(|_| Error::MechanismParamInvalid)?;
    let tag = Array::try_from(tag).map_err(|_| Error::EncryptedDataInvalid)?;
    cipher
        .decrypt_inout_detached(&nonce, aad, data.into(), &tag)
        .map_err(|_| Error::EncryptedDataInvalid)
}

impl Cipher for Gcm {
    fn output_len(&self, input_len: usize, finishing: bool) -> Result<usize> {
        let total = self.data.len() + input_len;
        // GCM holds its input until the tag; this bounds what one session buffers.
        if total > GCM_LIMIT {
            return Err(self.direction.len_range());
        }
        match (finishing, self.direction) {
            (false, _) => Ok(0),
            (true, Direction::Encrypt) => Ok(total + self.tag_len),
            (true, Direction::Decrypt) if total >= self.tag_len => Ok(total - self.tag_len),
            (true, Direction::Decrypt) => Err(Error::EncryptedDataLenRange),
        }
    }

    fn update(&mut self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.output_len(input.len(), false)?;
        // Room for the tag `finish` appends, so a 1 MiB message is not copied again.
        let capacity = self.data.len() + input.len() + self.tag_len;
        reserve_secret(&mut self.data, capacity);
        extend_secret(&mut self.data, input);
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        let mut data = std::mem::take(&mut self.data);
        match self.direction {
            Direction::Encrypt => {
                let tag = self.seal(&mut data)?;
                extend_secret(&mut data, &tag);
                Ok(data)
            }
            Direction::Decrypt => {
                let split = data
                    .len()
                    .checked_sub(self.tag_len)
                    .ok_or(Error::EncryptedDataLenRange)?;
                let tag = data[split..].to_vec();
                data.truncate(split);
                self.open(&mut data, &tag)?;
                Ok(data)
            }
        }
    }

    fn box_clone(&self) -> Box<dyn Cipher> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn run(cipher: &mut dyn Cipher, input: &[u8]) -> Result<Vec<u8>> {
        let mut out = cipher.update(input)?.to_vec();
        out.extend_from_slice(&cipher.finish()?);
        Ok(out)
    }

    #[test]
    fn cbc_pad_round_trips_every_length_and_chunking() {
        let key = [7u8; 32];
        let iv = [9u8; 16];
        for len in 0..50 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut enc = BlockMode::new(&key, Direction::Encrypt, Some(iv), true).expect("cipher");
            let expected_len = enc.output_len(len, true).expect("any length pads");
            let sealed = run(&mut enc, &plain).expect("encrypts");
            assert_eq!(sealed.len(), expected_len);
            for chunk in 1..20 {
                let mut dec =
                    BlockMode::new(&key, Direction::Decrypt, Some(iv), true).expect("cipher");
                let mut out = Vec::new();
                for part in sealed.chunks(chunk) {
                    out.extend_from_slice(&dec.update(part).expect("update"));
                }
                out.extend_from_slice(&dec.finish().expect("final"));
                assert_eq!(out, plain, "len {len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn bad_padding_is_encrypted_data_invalid() {
        for block in [[0u8; 16], [17u8; 16], {
            let mut b = [3u8; 16];
            b[14] = 2;
            b
        }] {
            assert!(matches!(
                unpadded_len(&block),
                Err(Error::EncryptedDataInvalid)
            ));
        }
        assert_eq!(unpadded_len(&[16u8; 16]).ok(), Some(0));
        assert!(matches!(
            unpadded_len(&[0xffu8; 16]),
            Err(Error::EncryptedDataInvalid)
        ));
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(unpadded_len(&one).ok(), Some(15));
    }

    #[test]
    fn unpadded_ecb_refuses_partial_blocks() {
        let mut ecb = BlockMode::new(&[0u8; 16], Direction::Encrypt, None, false).expect("cipher");
        assert!(matches!(ecb.output_len(15, true), Err(Error::DataLenRange)));
        ecb.update(&[0u8; 15]).expect("buffered");
        assert!(matches!(ecb.finish(), Err(Error::DataLenRange)));
    }

    #[test]
    fn gcm_matches_the_nist_test_case_4() {
        // McGrew & Viega GCM spec, test case 4 (AES-128, 96-bit IV, AAD).
        let key = hex!("feffe9928665731c6d6a8f9467308308");
        let parameter = Parameter::Gcm {
            iv: hex!("cafebabefacedbaddecaf888").to_vec(),
            aad: hex!("feedfacedeadbeeffeedfacedeadbeefabaddad2").to_vec(),
            tag_bits: 128,
        };
        let plain = hex!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
        );
        let expected = hex!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
            "5bc94fbc3221a5db94fae95ae7121a47"
        );
        let mut enc = Gcm::new(&key, Direction::Encrypt, &parameter).expect("cipher");
        assert_eq!(run(&mut enc, &plain).expect("seals"), expected);
        let mut dec = Gcm::new(&key, Direction::Decrypt, &parameter).expect("cipher");
        assert_eq!(run(&mut dec, &expected).expect("opens"), plain);
        let mut tampered = expected;
        tampered[0] ^= 1;
        let mut dec = Gcm::new(&key, Direction::Decrypt, &parameter).expect("cipher");
        assert!(matches!(
            run(&mut dec, &tampered),
            Err(Error::EncryptedDataInvalid)
        ));
    }

    #[test]
    fn ctr_with_a_full_128_bit_counter_from_zero_works() {
        let mut parameter = (128 as CK_ULONG).to_ne_bytes().to_vec();
        parameter.extend_from_slice(&[0u8; 16]);
        let mut ctr = Counter::new(&[1u8; 16], Direction::Encrypt, &Parameter::Bytes(parameter))
            .expect("cipher");
        assert_eq!(ctr.update(&[0u8; 40]).expect("encrypts").len(), 40);
    }

    #[test]
    fn ctr_refuses_to_wrap_a_short_counter() {
        let mut parameter = (8 as CK_ULONG).to_ne_bytes().to_vec();
        let mut block = [0u8; 16];
        block[15] = 0xfe;
        parameter.extend_from_slice(&block);
        let mut ctr = Counter::new(&[1u8; 16], Direction::Encrypt, &Parameter::Bytes(parameter))
            .expect("cipher");
        assert_eq!(ctr.output_len(32, false).ok(), Some(32));
        assert!(matches!(
            ctr.output_len(33, false),
            Err(Error::DataLenRange)
        ));
        ctr.update(&[0u8; 20]).expect("two blocks");
        assert!(matches!(ctr.update(&[0u8; 13]), Err(Error::DataLenRange)));
        ctr.update(&[0u8; 12]).expect("rest of the second block");
    }
}
