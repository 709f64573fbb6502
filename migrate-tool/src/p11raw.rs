//! Raw PKCS#11 calls that `cryptoki` cannot express — mechanisms it has no variant for
//! (CKM_AES_KEY_WRAP_KWP 0x210B, CKM_RSA_AES_KEY_WRAP), raw mechanism parameters, nested
//! WRAP/UNWRAP/DERIVE templates and attribute-by-attribute reads — behind a safe interface.
//! This module is the tool's only unsafe code.
//!
//! It loads the same module file a second time (`dlopen` hands back the same library, so the
//! function list is the one cryptoki initialised) and takes session and object handles from
//! cryptoki's `Session` and `ObjectHandle`.

use std::ffi::c_void;
use std::path::Path;
use std::ptr;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_ECDH1_DERIVE_PARAMS, CK_FUNCTION_LIST, CK_MECHANISM,
    CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_RSA_AES_KEY_WRAP_PARAMS, CK_RSA_PKCS_OAEP_PARAMS,
    CK_RV, CK_ULONG, CK_UNAVAILABLE_INFORMATION, CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL, CKR_FUNCTION_NOT_SUPPORTED, CKR_OK,
    CKZ_DATA_SPECIFIED,
};
use zeroize::Zeroize;

use crate::names;

/// Attributes whose value is itself an attribute array (PKCS#11 3.0 §4.1 "templates").
pub const TEMPLATE_ATTRIBUTES: [CK_ATTRIBUTE_TYPE; 3] = [
    cryptoki_sys::CKA_WRAP_TEMPLATE,
    cryptoki_sys::CKA_UNWRAP_TEMPLATE,
    cryptoki_sys::CKA_DERIVE_TEMPLATE,
];

/// A failed raw call: which function and what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawError {
    /// The PKCS#11 function, e.g. "C_WrapKey".
    pub function: &'static str,
    /// Its return code.
    pub rv: CK_RV,
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} returned {}", self.function, names::rv(self.rv))
    }
}

impl std::error::Error for RawError {}

/// An attribute value as the token stores it: bytes, or a nested template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawValue {
    /// Plain bytes (numbers are native-endian CK_ULONGs, booleans one byte).
    Bytes(Vec<u8>),
    /// An attribute array (CKA_WRAP_TEMPLATE and friends).
    Template(Vec<RawAttribute>),
}

/// One attribute of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAttribute {
    /// CKA_*.
    pub kind: CK_ATTRIBUTE_TYPE,
    /// Its value.
    pub value: RawValue,
}

impl RawAttribute {
    /// A byte-valued attribute.
    pub fn bytes(kind: CK_ATTRIBUTE_TYPE, value: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            value: RawValue::Bytes(value.into()),
        }
    }

    /// A CK_BBOOL attribute.
    pub fn flag(kind: CK_ATTRIBUTE_TYPE, value: bool) -> Self {
        Self::bytes(kind, vec![u8::from(value)])
    }

    /// A CK_ULONG attribute.
    pub fn ulong(kind: CK_ATTRIBUTE_TYPE, value: CK_ULONG) -> Self {
        Self::bytes(kind, value.to_ne_bytes().to_vec())
    }
}

/// What reading one attribute gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The value.
    Value(RawValue),
    /// CKR_ATTRIBUTE_SENSITIVE: it exists but may not be revealed.
    Sensitive,
    /// CKR_ATTRIBUTE_TYPE_INVALID: the object has no such attribute.
    Absent,
    /// Reading it alone failed with this code (SoftHSMv2's dates on private objects).
    Failed(CK_RV),
}

/// A mechanism with its parameter, as the token receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawMechanism {
    /// No parameter (CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP...).
    Plain(CK_MECHANISM_TYPE),
    /// CKM_RSA_PKCS_OAEP with its hash and MGF (no label).
    Oaep {
        /// CKM_SHA_1, CKM_SHA256...
        hash: CK_MECHANISM_TYPE,
        /// CKG_MGF1_*.
        mgf: CK_ULONG,
    },
    /// CKM_RSA_AES_KEY_WRAP: an ephemeral AES key of `aes_bits` under OAEP, then RFC 5649.
    RsaAes {
        /// Size of the ephemeral AES key.
        aes_bits: CK_ULONG,
        /// OAEP hash.
        hash: CK_MECHANISM_TYPE,
        /// OAEP MGF.
        mgf: CK_ULONG,
    },
    /// CKM_ECDH1_DERIVE with a KDF and the peer's public point.
    Ecdh {
        /// CKD_*.
        kdf: CK_ULONG,
        /// The peer's EC point, raw (04 || X || Y).
        public: Vec<u8>,
    },
}

/// Owns the C parameter structures a `CK_MECHANISM` points into, for the length of one call.
enum ParamStorage {
    None,
    Oaep(Box<CK_RSA_PKCS_OAEP_PARAMS>),
    RsaAes {
        // Owned here because `params.pOAEPParams` points into it.
        _oaep: Box<CK_RSA_PKCS_OAEP_PARAMS>,
        params: Box<CK_RSA_AES_KEY_WRAP_PARAMS>,
    },
    Ecdh(Box<CK_ECDH1_DERIVE_PARAMS>),
}

impl RawMechanism {
    /// The mechanism type.
    pub fn kind(&self) -> CK_MECHANISM_TYPE {
        match self {
            Self::Plain(kind) => *kind,
            Self::Oaep { .. } => cryptoki_sys::CKM_RSA_PKCS_OAEP,
            Self::RsaAes { .. } => cryptoki_sys::CKM_RSA_AES_KEY_WRAP,
            Self::Ecdh { .. } => cryptoki_sys::CKM_ECDH1_DERIVE,
        }
    }

    /// Builds the C structure; `public` must outlive the call (it is borrowed by pointer).
    fn to_c(&self, public: &mut Vec<u8>) -> (CK_MECHANISM, ParamStorage) {
        let oaep = |hash, mgf| CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: hash,
            mgf,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: ptr::null_mut(),
            ulSourceDataLen: 0,
        };
        let mut storage = match self {
            Self::Plain(_) => ParamStorage::None,
            Self::Oaep { hash, mgf } => ParamStorage::Oaep(Box::new(oaep(*hash, *mgf))),
            Self::RsaAes {
                aes_bits,
                hash,
                mgf,
            } => {
                let mut inner = Box::new(oaep(*hash, *mgf));
                let outer = Box::new(CK_RSA_AES_KEY_WRAP_PARAMS {
                    ulAESKeyBits: *aes_bits,
                    pOAEPParams: &mut *inner,
                });
                ParamStorage::RsaAes {
                    _oaep: inner,
                    params: outer,
                }
            }
            Self::Ecdh { kdf, public: point } => {
                public.clone_from(point);
                ParamStorage::Ecdh(Box::new(CK_ECDH1_DERIVE_PARAMS {
                    kdf: *kdf,
                    ulSharedDataLen: 0,
                    pSharedData: ptr::null_mut(),
                    ulPublicDataLen: ulong(public.len()),
                    pPublicData: public.as_mut_ptr(),
                }))
            }
        };
        let (parameter, parameter_len): (*mut c_void, usize) = match &mut storage {
            ParamStorage::None => (ptr::null_mut(), 0),
            ParamStorage::Oaep(params) => (
                ptr::from_mut(&mut **params).cast(),
                size_of::<CK_RSA_PKCS_OAEP_PARAMS>(),
            ),
            ParamStorage::RsaAes { params, .. } => (
                ptr::from_mut(&mut **params).cast(),
                size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>(),
            ),
            ParamStorage::Ecdh(params) => (
                ptr::from_mut(&mut **params).cast(),
                size_of::<CK_ECDH1_DERIVE_PARAMS>(),
            ),
        };
        let mechanism = CK_MECHANISM {
            mechanism: self.kind(),
            pParameter: parameter,
            ulParameterLen: ulong(parameter_len),
        };
        (mechanism, storage)
    }
}

fn ulong(len: usize) -> CK_ULONG {
    // usize and CK_ULONG are both 64 bits on the platforms cryptoki-sys supports.
    CK_ULONG::try_from(len).unwrap_or(CK_ULONG::MAX)
}

/// A template laid out as C expects it; owns every buffer the CK_ATTRIBUTEs point to.
struct CTemplate {
    attributes: Vec<CK_ATTRIBUTE>,
    _buffers: Vec<Vec<u8>>,
    _nested: Vec<CTemplate>,
}

impl CTemplate {
    fn new(template: &[RawAttribute]) -> Self {
        let mut buffers = Vec::new();
        let mut nested = Vec::new();
        let mut attributes = Vec::with_capacity(template.len());
        for attribute in template {
            let (pointer, len) = match &attribute.value {
                RawValue::Bytes(bytes) => {
                    let mut copy = bytes.clone();
                    let pointer = if copy.is_empty() {
                        ptr::null_mut()
                    } else {
                        copy.as_mut_ptr().cast::<c_void>()
                    };
                    let len = copy.len();
                    buffers.push(copy);
                    (pointer, len)
                }
                RawValue::Template(inner) => {
                    let mut inner = CTemplate::new(inner);
                    let pointer = inner.attributes.as_mut_ptr().cast::<c_void>();
                    let len = inner.attributes.len() * size_of::<CK_ATTRIBUTE>();
                    nested.push(inner);
                    (pointer, len)
                }
            };
            attributes.push(CK_ATTRIBUTE {
                type_: attribute.kind,
                pValue: pointer,
                ulValueLen: ulong(len),
            });
        }
        Self {
            attributes,
            _buffers: buffers,
            _nested: nested,
        }
    }
}

/// The raw function list of one loaded module.
pub struct RawModule {
    // Keeps the library mapped while `functions` points into it.
    _library: cryptoki_sys::Pkcs11,
    functions: CK_FUNCTION_LIST,
}

// SAFETY: CK_FUNCTION_LIST holds only C function pointers; modules loaded by this tool are
// initialised with CKF_OS_LOCKING_OK, so calling them from several threads is allowed.
unsafe impl Send for RawModule {}
// SAFETY: as above; the list is never written after loading.
unsafe impl Sync for RawModule {}

macro_rules! function {
    ($self:ident, $name:ident) => {
        $self.functions.$name.ok_or(RawError {
            function: stringify!($name),
            rv: CKR_FUNCTION_NOT_SUPPORTED,
        })?
    };
}

/// The output buffer a one-call attempt starts with: more than any secret key's wrapped
/// blob or check value. A private key's PKCS#8 wrap (1.2 KiB for RSA-2048) takes the
/// length query after CKR_BUFFER_TOO_SMALL, as every call did before.
const ROOMY_OUTPUT: usize = 1024;

/// Attributes whose value is a CK_BBOOL or a CK_ULONG: no token hides them as sensitive
/// and none outgrows a buffer, so unavailable in a batch can only mean absent.
const FIXED_SIZE_PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[
    cryptoki_sys::CKA_CLASS,
    cryptoki_sys::CKA_KEY_TYPE,
    cryptoki_sys::CKA_TOKEN,
    cryptoki_sys::CKA_PRIVATE,
    cryptoki_sys::CKA_MODIFIABLE,
    cryptoki_sys::CKA_COPYABLE,
    cryptoki_sys::CKA_DESTROYABLE,
    cryptoki_sys::CKA_TRUSTED,
    cryptoki_sys::CKA_LOCAL,
    cryptoki_sys::CKA_SENSITIVE,
    cryptoki_sys::CKA_EXTRACTABLE,
    cryptoki_sys::CKA_ALWAYS_SENSITIVE,
    cryptoki_sys::CKA_NEVER_EXTRACTABLE,
    cryptoki_sys::CKA_WRAP_WITH_TRUSTED,
    cryptoki_sys::CKA_ALWAYS_AUTHENTICATE,
    cryptoki_sys::CKA_KEY_GEN_MECHANISM,
    cryptoki_sys::CKA_VALUE_LEN,
    cryptoki_sys::CKA_MODULUS_BITS,
    cryptoki_sys::CKA_ENCRYPT,
    cryptoki_sys::CKA_DECRYPT,
    cryptoki_sys::CKA_SIGN,
    cryptoki_sys::CKA_VERIFY,
    cryptoki_sys::CKA_SIGN_RECOVER,
    cryptoki_sys::CKA_VERIFY_RECOVER,
    cryptoki_sys::CKA_WRAP,
    cryptoki_sys::CKA_UNWRAP,
    cryptoki_sys::CKA_DERIVE,
    cryptoki_sys::CKA_CERTIFICATE_TYPE,
    cryptoki_sys::CKA_CERTIFICATE_CATEGORY,
];

/// The buffer a plain attribute is first read into: an RSA-4096 modulus, a P-521 point,
/// any label a person would type.
const ATTRIBUTE_ROOM: usize = 1024;

thread_local! {
    /// `RawModule::attributes`' scratch area, kept by each thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What one attribute of a batch says, from its slot; `None` when it needs a call of its
/// own (a template with entries, a value too long for its slot, sensitive or failed).
fn unpack(kind: CK_ATTRIBUTE_TYPE, attribute: &CK_ATTRIBUTE, slot: &[u8]) -> Option<Read> {
    let len = usize::try_from(attribute.ulValueLen).unwrap_or(usize::MAX);
    if attribute.ulValueLen == CK_UNAVAILABLE_INFORMATION {
        // A flag or a number is never secret and never longer than its slot: absent.
        FIXED_SIZE_PUBLIC.contains(&kind).then_some(Read::Absent)
    } else if TEMPLATE_ATTRIBUTES.contains(&kind) {
        // An empty attribute array needs no second look.
        (len == 0).then(|| Read::Value(RawValue::Template(Vec::new())))
    } else {
        slot.get(..len)
            .map(|value| Read::Value(RawValue::Bytes(value.to_vec())))
    }
}

/// The room an attribute gets in a batch: none for a template (its length comes first),
/// a CK_ULONG for a flag or a number, `ATTRIBUTE_ROOM` for the rest.
fn room_for(kind: CK_ATTRIBUTE_TYPE) -> usize {
    if TEMPLATE_ATTRIBUTES.contains(&kind) {
        0
    } else if FIXED_SIZE_PUBLIC.contains(&kind) {
        std::mem::size_of::<CK_ULONG>()
    } else {
        ATTRIBUTE_ROOM
    }
}

fn check(function: &'static str, rv: CK_RV) -> Result<(), RawError> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(RawError { function, rv })
    }
}

impl RawModule {
    /// Loads `path` (already loaded and initialised by cryptoki) and reads its function list.
    pub fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: loading a PKCS#11 module runs its initialisers; the same file is already
        // loaded by cryptoki, so this only takes another reference to it.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path) }
            .map_err(|err| format!("loading {}: {err}", path.display()))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        let get_list = library
            .C_GetFunctionList
            .as_ref()
            .map_err(|err| format!("{} has no C_GetFunctionList: {err}", path.display()))?;
        // SAFETY: C_GetFunctionList writes one pointer through a valid out-pointer.
        let rv = unsafe { get_list(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(format!(
                "C_GetFunctionList of {} returned {}",
                path.display(),
                names::rv(rv)
            ));
        }
        // SAFETY: the module returned a non-NULL pointer to its static function list, valid
        // while the library stays loaded (we hold `library`). We copy the table of pointers.
        let functions = unsafe { *list };
        Ok(Self {
            _library: library,
            functions,
        })
    }

    /// C_WrapKey with any mechanism; returns the blob.
    pub fn wrap_key(
        &self,
        session: &Session,
        mechanism: &RawMechanism,
        wrapping_key: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>, RawError> {
        let wrap = function!(self, C_WrapKey);
        let mut public = Vec::new();
        let (mut c_mechanism, _storage) = mechanism.to_c(&mut public);
        let mut call = |out: *mut u8, len: &mut CK_ULONG| {
            // SAFETY: the mechanism and its parameters live in `c_mechanism`/`_storage`/
            // `public` for the call; every caller below passes NULL (a length query) or a
            // buffer valid for `*len` bytes.
            unsafe {
                wrap(
                    session.handle(),
                    &mut c_mechanism,
                    wrapping_key.handle(),
                    key.handle(),
                    out,
                    len,
                )
            }
        };
        // First into a buffer that holds any secret key's blob, so those need one call, not
        // a length query and then the call; a short buffer (PKCS#11 3.0 §5.2:
        // CKR_BUFFER_TOO_SMALL) falls back to asking the length.
        let mut blob = vec![0u8; ROOMY_OUTPUT];
        let mut len = ulong(blob.len());
        let mut rv = call(blob.as_mut_ptr(), &mut len);
        if rv == CKR_BUFFER_TOO_SMALL {
            rv = call(ptr::null_mut(), &mut len);
            if rv == CKR_OK {
                blob = vec![0u8; usize::try_from(len).unwrap_or(0)];
                rv = call(blob.as_mut_ptr(), &mut len);
            }
        }
        check("C_WrapKey", rv)?;
        blob.truncate(usize::try_from(len).unwrap_or(0));
        Ok(blob)
    }

    /// A single-part C_Encrypt (`sign` false) or C_Sign (`sign` true) of `data` with a
    /// parameterless mechanism: the init, then one call into a buffer with room for any
    /// check value, falling back to the length query only when a token wants more.
    pub fn single_part(
        &self,
        session: &Session,
        sign: bool,
        mechanism: CK_MECHANISM_TYPE,
        key: ObjectHandle,
        data: &[u8],
    ) -> Result<Vec<u8>, RawError> {
        let (init_name, call_name) = if sign {
            ("C_SignInit", "C_Sign")
        } else {
            ("C_EncryptInit", "C_Encrypt")
        };
        let (init, call) = if sign {
            (function!(self, C_SignInit), function!(self, C_Sign))
        } else {
            (function!(self, C_EncryptInit), function!(self, C_Encrypt))
        };
        let mut c_mechanism = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: a parameterless mechanism that lives for the call.
        check(init_name, unsafe {
            init(session.handle(), &mut c_mechanism, key.handle())
        })?;
        // C_Encrypt and C_Sign take the input as a non-const pointer they only read.
        let mut input = data.to_vec();
        let mut once = |output: &mut Vec<u8>, len: &mut CK_ULONG| {
            // SAFETY: `input` is valid for its length and `output` for `*len` bytes (every
            // caller below passes its length) for the call.
            unsafe {
                call(
                    session.handle(),
                    input.as_mut_ptr(),
                    ulong(input.len()),
                    output.as_mut_ptr(),
                    len,
                )
            }
        };
        let mut output = vec![0u8; data.len() + ROOMY_OUTPUT];
        let mut len = ulong(output.len());
        let mut rv = once(&mut output, &mut len);
        if rv == CKR_BUFFER_TOO_SMALL {
            // The operation stays active and `len` says how much is needed (§5.2).
            output = vec![0u8; usize::try_from(len).unwrap_or(0)];
            rv = once(&mut output, &mut len);
        }
        check(call_name, rv)?;
        output.truncate(usize::try_from(len).unwrap_or(0));
        Ok(output)
    }

    /// C_UnwrapKey with any mechanism and a template that may nest templates.
    pub fn unwrap_key(
        &self,
        session: &Session,
        mechanism: &RawMechanism,
        unwrapping_key: ObjectHandle,
        blob: &[u8],
        template: &[RawAttribute],
    ) -> Result<ObjectHandle, RawError> {
        let unwrap = function!(self, C_UnwrapKey);
        let mut public = Vec::new();
        let (mut c_mechanism, _storage) = mechanism.to_c(&mut public);
        let mut c_template = CTemplate::new(template);
        let mut blob = blob.to_vec();
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: every pointer refers to memory owned by this frame for the call's length.
        let rv = unsafe {
            unwrap(
                session.handle(),
                &mut c_mechanism,
                unwrapping_key.handle(),
                blob.as_mut_ptr(),
                ulong(blob.len()),
                c_template.attributes.as_mut_ptr(),
                ulong(c_template.attributes.len()),
                &mut handle,
            )
        };
        check("C_UnwrapKey", rv)?;
        Ok(object_handle(handle))
    }

    /// C_DeriveKey with any mechanism.
    pub fn derive_key(
        &self,
        session: &Session,
        mechanism: &RawMechanism,
        base_key: ObjectHandle,
        template: &[RawAttribute],
    ) -> Result<ObjectHandle, RawError> {
        let derive = function!(self, C_DeriveKey);
        let mut public = Vec::new();
        let (mut c_mechanism, _storage) = mechanism.to_c(&mut public);
        let mut c_template = CTemplate::new(template);
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: every pointer refers to memory owned by this frame for the call's length.
        let rv = unsafe {
            derive(
                session.handle(),
                &mut c_mechanism,
                base_key.handle(),
                c_template.attributes.as_mut_ptr(),
                ulong(c_template.attributes.len()),
                &mut handle,
            )
        };
        check("C_DeriveKey", rv)?;
        Ok(object_handle(handle))
    }

    /// C_CreateObject with a template that may nest templates.
    pub fn create_object(
        &self,
        session: &Session,
        template: &[RawAttribute],
    ) -> Result<ObjectHandle, RawError> {
        let create = function!(self, C_CreateObject);
        let mut c_template = CTemplate::new(template);
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the template and everything it points to live in `c_template`.
        let rv = unsafe {
            create(
                session.handle(),
                c_template.attributes.as_mut_ptr(),
                ulong(c_template.attributes.len()),
                &mut handle,
            )
        };
        check("C_CreateObject", rv)?;
        Ok(object_handle(handle))
    }

    /// C_SetAttributeValue with plain or nested values.
    pub fn set_attributes(
        &self,
        session: &Session,
        object: ObjectHandle,
        template: &[RawAttribute],
    ) -> Result<(), RawError> {
        let set = function!(self, C_SetAttributeValue);
        let mut c_template = CTemplate::new(template);
        // SAFETY: the template and everything it points to live in `c_template`.
        let rv = unsafe {
            set(
                session.handle(),
                object.handle(),
                c_template.attributes.as_mut_ptr(),
                ulong(c_template.attributes.len()),
            )
        };
        check("C_SetAttributeValue", rv)
    }

    /// Reads attributes in one call for all of them, each plain attribute into a buffer
    /// with room for any usual value and each template attribute as a length query, the
    /// way PKCS#11 3.0 §5.7.5 lets one call answer for many; an attribute the batch cannot
    /// settle (unavailable: sensitive, absent or longer than its buffer; a non-empty
    /// template) is read on its own, and if the batch fails as a whole (SoftHSMv2 answers
    /// CKR_GENERAL_ERROR for dates on private objects) every attribute is, so one
    /// unreadable attribute hides no other.
    pub fn attributes(
        &self,
        session: &Session,
        object: ObjectHandle,
        kinds: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Read)>, RawError> {
        let alone = |kind: CK_ATTRIBUTE_TYPE| Ok((kind, self.attribute(session, object, kind)?));
        let call = self.attribute_getter(session, object)?;
        // A slot per attribute sized for what it can hold, in one scratch area that the
        // thread keeps: a fresh one per object cost more than the call. Each value is copied
        // out at its length and the area wiped after, so nothing read lingers in it.
        let rooms: Vec<usize> = kinds.iter().map(|&kind| room_for(kind)).collect();
        let total: usize = rooms.iter().sum();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < total {
                scratch.resize(total, 0);
            }
            let area = &mut scratch[..total];
            let mut batch = Vec::with_capacity(kinds.len());
            let mut rest = &mut area[..];
            for (&kind, &room) in kinds.iter().zip(&rooms) {
                let (slot, after) = rest.split_at_mut(room);
                batch.push(CK_ATTRIBUTE {
                    type_: kind,
                    pValue: if slot.is_empty() {
                        ptr::null_mut()
                    } else {
                        slot.as_mut_ptr().cast()
                    },
                    ulValueLen: ulong(slot.len()),
                });
                rest = after;
            }
            let read = if matches!(
                call(&mut batch),
                CKR_OK
                    | CKR_ATTRIBUTE_SENSITIVE
                    | CKR_ATTRIBUTE_TYPE_INVALID
                    | CKR_BUFFER_TOO_SMALL
            ) {
                let mut offset = 0;
                kinds
                    .iter()
                    .zip(batch)
                    .zip(&rooms)
                    .map(|((&kind, attribute), &room)| {
                        let slot = area.get(offset..offset + room).unwrap_or_default();
                        offset += room;
                        unpack(kind, &attribute, slot)
                            .map_or_else(|| alone(kind), |read| Ok((kind, read)))
                    })
                    .collect()
            } else {
                kinds.iter().map(|&kind| alone(kind)).collect()
            };
            area.zeroize();
            read
        })
    }

    /// C_GetAttributeValue on one object, for arrays this module builds: every pValue is
    /// NULL or points to a buffer of ulValueLen bytes that outlives the call.
    fn attribute_getter<'a>(
        &self,
        session: &'a Session,
        object: ObjectHandle,
    ) -> Result<impl Fn(&mut [CK_ATTRIBUTE]) -> CK_RV + 'a, RawError> {
        let get = function!(self, C_GetAttributeValue);
        Ok(move |attributes: &mut [CK_ATTRIBUTE]| {
            // SAFETY: `attributes` is a valid array; each pValue is NULL or valid for its
            // ulValueLen (this function's contract with its callers in this file).
            unsafe {
                get(
                    session.handle(),
                    object.handle(),
                    attributes.as_mut_ptr(),
                    ulong(attributes.len()),
                )
            }
        })
    }

    /// Reads one attribute; a template attribute is read with its nested values.
    pub fn attribute(
        &self,
        session: &Session,
        object: ObjectHandle,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Result<Read, RawError> {
        let call = self.attribute_getter(session, object)?;
        if !TEMPLATE_ATTRIBUTES.contains(&kind) {
            // One call where the value fits the buffer, which is nearly always.
            let mut value = vec![0u8; ATTRIBUTE_ROOM];
            let mut attempt = [CK_ATTRIBUTE {
                type_: kind,
                pValue: value.as_mut_ptr().cast(),
                ulValueLen: ulong(value.len()),
            }];
            match call(&mut attempt) {
                CKR_OK => {
                    let len = usize::try_from(attempt[0].ulValueLen).unwrap_or(usize::MAX);
                    if attempt[0].ulValueLen == CK_UNAVAILABLE_INFORMATION {
                        return Ok(Read::Absent);
                    }
                    if let Some(value) = value.get(..len) {
                        return Ok(Read::Value(RawValue::Bytes(value.to_vec())));
                    }
                }
                CKR_ATTRIBUTE_SENSITIVE => return Ok(Read::Sensitive),
                CKR_ATTRIBUTE_TYPE_INVALID => return Ok(Read::Absent),
                CKR_BUFFER_TOO_SMALL => {}
                rv => return Ok(Read::Failed(rv)),
            }
        }
        let mut query = [CK_ATTRIBUTE {
            type_: kind,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        match call(&mut query) {
            CKR_OK => {}
            CKR_ATTRIBUTE_SENSITIVE => return Ok(Read::Sensitive),
            CKR_ATTRIBUTE_TYPE_INVALID => return Ok(Read::Absent),
            rv => return Ok(Read::Failed(rv)),
        }
        if query[0].ulValueLen == CK_UNAVAILABLE_INFORMATION {
            return Ok(Read::Absent);
        }
        let len = usize::try_from(query[0].ulValueLen).unwrap_or(0);
        if TEMPLATE_ATTRIBUTES.contains(&kind) {
            return self.template_value(kind, len, call);
        }
        let mut value = vec![0u8; len];
        query[0].pValue = value.as_mut_ptr().cast();
        match call(&mut query) {
            CKR_OK => {
                value.truncate(usize::try_from(query[0].ulValueLen).unwrap_or(0));
                Ok(Read::Value(RawValue::Bytes(value)))
            }
            CKR_ATTRIBUTE_SENSITIVE => Ok(Read::Sensitive),
            rv => Ok(Read::Failed(rv)),
        }
    }

    /// PKCS#11 3.0 §5.7 C_GetAttributeValue on an attribute array: the first call gave the
    /// array size; the second gives each element's length; the third fills them.
    fn template_value(
        &self,
        kind: CK_ATTRIBUTE_TYPE,
        len: usize,
        call: impl Fn(&mut [CK_ATTRIBUTE]) -> CK_RV,
    ) -> Result<Read, RawError> {
        let count = len / size_of::<CK_ATTRIBUTE>();
        let mut inner = vec![
            CK_ATTRIBUTE {
                type_: 0,
                pValue: ptr::null_mut(),
                ulValueLen: 0
            };
            count
        ];
        let mut outer = [CK_ATTRIBUTE {
            type_: kind,
            pValue: inner.as_mut_ptr().cast(),
            ulValueLen: ulong(count * size_of::<CK_ATTRIBUTE>()),
        }];
        match call(&mut outer) {
            CKR_OK | CKR_BUFFER_TOO_SMALL => {}
            rv => return Ok(Read::Failed(rv)),
        }
        let mut buffers: Vec<Vec<u8>> = inner
            .iter()
            .map(|attribute| vec![0u8; usize::try_from(attribute.ulValueLen).unwrap_or(0)])
            .collect();
        for (attribute, buffer) in inner.iter_mut().zip(buffers.iter_mut()) {
            attribute.pValue = buffer.as_mut_ptr().cast();
        }
        outer[0].pValue = inner.as_mut_ptr().cast();
        match call(&mut outer) {
            CKR_OK => {}
            rv => return Ok(Read::Failed(rv)),
        }
        let template = inner
            .iter()
            .zip(buffers)
            .map(|(attribute, mut buffer)| {
                buffer.truncate(usize::try_from(attribute.ulValueLen).unwrap_or(0));
                RawAttribute::bytes(attribute.type_, buffer)
            })
            .collect();
        Ok(Read::Value(RawValue::Template(template)))
    }
}

/// A cryptoki handle for a handle a raw call returned.
fn object_handle(handle: CK_OBJECT_HANDLE) -> ObjectHandle {
    // SAFETY: the handle was just returned by the module for this session; cryptoki only
    // passes it back to the same module.
    unsafe { ObjectHandle::new_from_raw(handle) }
}
