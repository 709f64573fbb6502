//! Mechanism parameters as the core sees them: the C shell reads the structures with
//! pointers (CK_GCM_PARAMS, …) and hands over owned values.

use pkcs11_sys::CK_ULONG;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// One mechanism's parameter.
#[derive(Clone, PartialEq, Eq)]
pub enum Parameter {
    /// No parameter, or one laid out as plain bytes (an IV, CK_AES_CTR_PARAMS,
    /// CK_MAC_GENERAL_PARAMS).
    Bytes(Vec<u8>),
    /// CK_GCM_PARAMS.
    Gcm {
        /// The IV.
        iv: Vec<u8>,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// Tag length in bits.
        tag_bits: CK_ULONG,
    },
    /// CK_RSA_PKCS_OAEP_PARAMS.
    Oaep {
        /// hashAlg: CKM_SHA_1, CKM_SHA256, …
        hash: CK_ULONG,
        /// mgf: CKG_MGF1_SHA1, …
        mgf: CK_ULONG,
        /// The label (source data), empty when none.
        label: Vec<u8>,
    },
    /// CK_RSA_AES_KEY_WRAP_PARAMS.
    RsaAes {
        /// ulAESKeyBits: the temporary AES key's size.
        aes_bits: CK_ULONG,
        /// The OAEP parameters for the temporary key (a `Parameter::Oaep`).
        oaep: Box<Parameter>,
    },
    /// CK_ECDH1_DERIVE_PARAMS.
    Ecdh {
        /// CKD_NULL, CKD_SHA256_KDF, …
        kdf: CK_ULONG,
        /// SharedInfo for the KDF (empty for CKD_NULL).
        shared_data: Vec<u8>,
        /// The other party's public point, raw or DER.
        public_data: Vec<u8>,
    },
    /// CK_KEY_DERIVATION_STRING_DATA (CKM_AES_ECB_ENCRYPT_DATA).
    DeriveData(Zeroizing<Vec<u8>>),
    /// CK_AES_CBC_ENCRYPT_DATA_PARAMS (CKM_AES_CBC_ENCRYPT_DATA).
    CbcDeriveData {
        /// The IV.
        iv: [u8; 16],
        /// The data to encrypt.
        data: Zeroizing<Vec<u8>>,
    },
}

impl Parameter {
    /// The parameter's bytes; a structured parameter here is invalid.
    pub fn bytes(&self) -> Result<&[u8]> {
        match self {
            Self::Bytes(bytes) => Ok(bytes),
            _ => Err(Error::MechanismParamInvalid),
        }
    }

    /// Refuse any parameter: for mechanisms that take none.
    pub fn none(&self) -> Result<()> {
        if self.bytes()?.is_empty() {
            Ok(())
        } else {
            Err(Error::MechanismParamInvalid)
        }
    }

    /// A CK_ULONG parameter (CK_MAC_GENERAL_PARAMS), in the host's layout.
    pub fn ulong(&self) -> Result<CK_ULONG> {
        let bytes: [u8; std::mem::size_of::<CK_ULONG>()] = self
            .bytes()?
            .try_into()
            .map_err(|_| Error::MechanismParamInvalid)?;
        Ok(CK_ULONG::from_ne_bytes(bytes))
    }

    /// A 16-byte IV.
    pub fn iv16(&self) -> Result<[u8; 16]> {
        self.bytes()?
            .try_into()
            .map_err(|_| Error::MechanismParamInvalid)
    }
}
