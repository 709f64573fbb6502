//! The only code that touches caller memory: pointers and lengths in, Rust types out,
//! and the PKCS#11 output conventions (length queries, `CKR_BUFFER_TOO_SMALL`).

use keyferry_core::mech::params::Parameter;
use keyferry_core::token::attr::{Attribute, Template, Value};
use keyferry_core::token::crypto::Output;
use keyferry_core::token::object::{Object, Read};
use keyferry_core::{Error, Result};
use pkcs11_sys::*;
use zeroize::Zeroizing;

/// Bytes of one CK_ATTRIBUTE, the unit of nested-template lengths.
const ATTRIBUTE_SIZE: usize = std::mem::size_of::<CK_ATTRIBUTE>();

/// A CK_ULONG length as usize.
fn length(len: CK_ULONG) -> Result<usize> {
    usize::try_from(len).map_err(|_| Error::ArgumentsBad("length"))
}

/// # Safety
/// `p` is NULL or valid for `len` bytes, as the PKCS#11 caller promises.
pub(crate) unsafe fn in_slice<'a>(p: *const u8, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = length(len)?;
    match (p.is_null(), len) {
        (true, 0) => Ok(&[]),
        (true, _) => Err(Error::ArgumentsBad("NULL buffer with a length")),
        // SAFETY: non-NULL and valid for `len` bytes by this function's contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, len) }),
    }
}

/// A PIN or label pointer: NULL is refused (no protected authentication path here).
///
/// # Safety
/// As `in_slice`.
pub(crate) unsafe fn in_pin<'a>(p: *const u8, len: CK_ULONG) -> Result<&'a [u8]> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL PIN"));
    }
    // SAFETY: the caller's contract is ours.
    unsafe { in_slice(p, len) }
}

/// # Safety
/// `p` is NULL or valid for `len` writable bytes.
pub(crate) unsafe fn out_slice<'a>(p: *mut u8, len: CK_ULONG) -> Result<&'a mut [u8]> {
    let len = length(len)?;
    match (p.is_null(), len) {
        (true, 0) => Ok(&mut []),
        (true, _) => Err(Error::ArgumentsBad("NULL buffer with a length")),
        // SAFETY: non-NULL and valid for `len` writable bytes by this function's contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts_mut(p, len) }),
    }
}

/// A required output location.
///
/// # Safety
/// `p` is NULL or valid for writing one `T`.
pub(crate) unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
    // SAFETY: non-NULL pointers are valid for one `T` by this function's contract.
    unsafe { p.as_mut() }.ok_or(Error::ArgumentsBad("NULL output pointer"))
}

/// Write a list with the length-query protocol (PKCS#11 3.0 §5.2): a NULL buffer asks for
/// the count; a short buffer gets `CKR_BUFFER_TOO_SMALL` and the count needed.
///
/// # Safety
/// `count` is valid for one CK_ULONG; `p` is NULL or valid for `*count` items.
pub(crate) unsafe fn out_list<T: Copy>(p: *mut T, count: *mut CK_ULONG, items: &[T]) -> Result<()> {
    // SAFETY: the caller's contract is ours.
    let count = unsafe { out(count) }?;
    let needed = items.len() as CK_ULONG;
    if p.is_null() {
        *count = needed;
        return Ok(());
    }
    // The capacity is read before the length word is written.
    let capacity = length(*count)?;
    *count = needed;
    if capacity < items.len() {
        return Err(Error::BufferTooSmall);
    }
    // SAFETY: non-NULL and valid for `capacity >= items.len()` items by the contract.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) };
    Ok(())
}

/// The attributes whose value is itself an array of CK_ATTRIBUTE.
fn is_template_attribute(kind: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        kind,
        CKA_WRAP_TEMPLATE | CKA_UNWRAP_TEMPLATE | CKA_DERIVE_TEMPLATE
    )
}

/// The caller's attribute array.
///
/// # Safety
/// `p` is NULL or valid for `count` CK_ATTRIBUTEs.
unsafe fn attribute_array<'a>(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<&'a [CK_ATTRIBUTE]> {
    let count = length(count)?;
    match (p.is_null(), count) {
        (true, 0) => Ok(&[]),
        (true, _) => Err(Error::ArgumentsBad("NULL template with a count")),
        // SAFETY: non-NULL and valid for `count` attributes by this function's contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, count) }),
    }
}

/// Read a template, nested templates included, into owned values.
///
/// # Safety
/// `p` is NULL or valid for `count` CK_ATTRIBUTEs whose `pValue`s are NULL or valid for
/// `ulValueLen` bytes (for template attributes: for that many bytes of CK_ATTRIBUTEs).
pub(crate) unsafe fn in_template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template> {
    // SAFETY: the caller's contract is ours.
    unsafe { read_template(p, count, true) }
}

/// # Safety
/// As `in_template`.
unsafe fn read_template(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
    nesting_allowed: bool,
) -> Result<Template> {
    // SAFETY: the caller's contract is ours.
    let attributes = unsafe { attribute_array(p, count) }?;
    let mut template = Vec::with_capacity(attributes.len());
    for attribute in attributes {
        let kind = attribute.type_;
        let len = length(attribute.ulValueLen)?;
        if attribute.pValue.is_null() && len != 0 {
            return Err(Error::AttributeValueInvalid(kind));
        }
        let value = if is_template_attribute(kind) {
            if !nesting_allowed || len % ATTRIBUTE_SIZE != 0 {
                return Err(Error::AttributeValueInvalid(kind));
            }
            let inner = attribute.pValue as *const CK_ATTRIBUTE;
            // SAFETY: pValue is valid for `len` bytes of CK_ATTRIBUTEs by the contract.
            Value::Nested(unsafe {
                read_template(inner, (len / ATTRIBUTE_SIZE) as CK_ULONG, false)
            }?)
        } else {
            // SAFETY: pValue is NULL with length 0 or valid for `len` bytes by the contract.
            Value::bytes(
                unsafe { in_slice(attribute.pValue as *const u8, attribute.ulValueLen) }?.to_vec(),
            )
        };
        template.push(Attribute::new(kind, value));
    }
    Ok(template)
}

/// Answer `C_GetAttributeValue` into the caller's template, processing every attribute
/// (PKCS#11 3.0 §5.7.5) and returning the most telling error.
///
/// # Safety
/// `p` is NULL or valid for `count` writable CK_ATTRIBUTEs whose `pValue`s are NULL or
/// valid for `ulValueLen` writable bytes.
pub(crate) unsafe fn out_attributes(
    object: &Object,
    p: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<()> {
    let count = length(count)?;
    let attributes: &mut [CK_ATTRIBUTE] = match (p.is_null(), count) {
        (true, 0) => &mut [],
        (true, _) => return Err(Error::ArgumentsBad("NULL template with a count")),
        // SAFETY: non-NULL and valid for `count` writable attributes by the contract.
        (false, _) => unsafe { std::slice::from_raw_parts_mut(p, count) },
    };
    let (mut sensitive, mut invalid, mut too_small) = (None, None, false);
    for attribute in attributes.iter_mut() {
        let kind = attribute.type_;
        match object.read(kind) {
            Read::TypeInvalid => {
                attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                invalid.get_or_insert(kind);
            }
            Read::Sensitive => {
                attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                sensitive.get_or_insert(kind);
            }
            // SAFETY: the caller's contract covers this attribute.
            Read::Value(value) => too_small |= !unsafe { write_value(attribute, value) }?,
        }
    }
    match (sensitive, invalid, too_small) {
        (Some(kind), _, _) => Err(Error::AttributeSensitive(kind)),
        (None, Some(kind), _) => Err(Error::AttributeTypeInvalid(kind)),
        (None, None, true) => Err(Error::BufferTooSmall),
        (None, None, false) => Ok(()),
    }
}

/// Write one value; false when the caller's buffer was too small.
///
/// # Safety
/// `attribute.pValue` is NULL or valid for `ulValueLen` writable bytes (for a template
/// value: that many bytes of writable CK_ATTRIBUTEs, each valid likewise).
unsafe fn write_value(attribute: &mut CK_ATTRIBUTE, value: &Value) -> Result<bool> {
    let needed = value.c_len();
    if attribute.pValue.is_null() {
        attribute.ulValueLen = needed as CK_ULONG;
        return Ok(true);
    }
    if length(attribute.ulValueLen)? < needed {
        attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
        return Ok(false);
    }
    match value {
        Value::Bytes(bytes) => {
            // SAFETY: pValue is valid for ulValueLen >= bytes.len() writable bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    attribute.pValue as *mut u8,
                    bytes.len(),
                )
            };
        }
        Value::Nested(inner) => {
            let slots = attribute.pValue as *mut CK_ATTRIBUTE;
            // SAFETY: pValue holds at least inner.len() writable CK_ATTRIBUTEs.
            let slots = unsafe { std::slice::from_raw_parts_mut(slots, inner.len()) };
            let mut complete = true;
            for (slot, item) in slots.iter_mut().zip(inner) {
                slot.type_ = item.kind;
                // SAFETY: each nested attribute's buffer is the caller's, as for the outer one.
                complete &= unsafe { write_value(slot, &item.value) }?;
            }
            if !complete {
                attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                return Ok(false);
            }
        }
    }
    attribute.ulValueLen = needed as CK_ULONG;
    Ok(true)
}

/// A mechanism and its parameter: the structures with pointers are read here
/// (CK_GCM_PARAMS, CK_KEY_DERIVATION_STRING_DATA, CK_AES_CBC_ENCRYPT_DATA_PARAMS); every
/// other parameter is passed on as bytes for the mechanism to check.
///
/// # Safety
/// `p` is NULL or points to a CK_MECHANISM whose parameter is NULL or valid for
/// `ulParameterLen` bytes, and for the structured parameters above, whose pointers are
/// NULL or valid for their lengths.
pub(crate) unsafe fn in_mechanism(
    p: *const CK_MECHANISM,
) -> Result<(CK_MECHANISM_TYPE, Parameter)> {
    // SAFETY: non-NULL pointers are valid for one CK_MECHANISM by the contract.
    let mechanism = unsafe { p.as_ref() }.ok_or(Error::ArgumentsBad("NULL mechanism"))?;
    let invalid = |_| Error::MechanismParamInvalid;
    let raw = mechanism.pParameter as *const u8;
    let parameter = match mechanism.mechanism {
        CKM_AES_GCM => {
            // SAFETY: the contract covers a CK_GCM_PARAMS behind a parameter of its size.
            let gcm = unsafe { in_struct::<CK_GCM_PARAMS>(raw, mechanism.ulParameterLen) }?;
            Parameter::Gcm {
                // SAFETY: the IV and AAD pointers are valid for their lengths by the contract.
                iv: unsafe { in_slice(gcm.pIv, gcm.ulIvLen) }
                    .map_err(invalid)?
                    .to_vec(),
                // SAFETY: as above.
                aad: unsafe { in_slice(gcm.pAAD, gcm.ulAADLen) }
                    .map_err(invalid)?
                    .to_vec(),
                tag_bits: gcm.ulTagBits,
            }
        }
        CKM_RSA_PKCS_OAEP => {
            // SAFETY: the contract covers the structure and its source-data pointer.
            let oaep =
                unsafe { in_struct::<CK_RSA_PKCS_OAEP_PARAMS>(raw, mechanism.ulParameterLen) }?;
            // SAFETY: as above.
            unsafe { oaep_parameter(oaep) }?
        }
        CKM_RSA_AES_KEY_WRAP => {
            // SAFETY: the contract covers the structure and the OAEP parameters it points to.
            let params =
                unsafe { in_struct::<CK_RSA_AES_KEY_WRAP_PARAMS>(raw, mechanism.ulParameterLen) }?;
            // SAFETY: as above; NULL is refused.
            let oaep =
                unsafe { params.pOAEPParams.as_ref() }.ok_or(Error::MechanismParamInvalid)?;
            // SAFETY: as above.
            let oaep = unsafe { oaep_parameter(oaep) }?;
            Parameter::RsaAes {
                aes_bits: params.ulAESKeyBits,
                oaep: Box::new(oaep),
            }
        }
        CKM_ECDH1_DERIVE => {
            // SAFETY: the contract covers the structure and its two data pointers.
            let ecdh =
                unsafe { in_struct::<CK_ECDH1_DERIVE_PARAMS>(raw, mechanism.ulParameterLen) }?;
            // SAFETY: as above.
            let shared =
                unsafe { in_slice(ecdh.pSharedData, ecdh.ulSharedDataLen) }.map_err(invalid)?;
            // SAFETY: as above.
            let public =
                unsafe { in_slice(ecdh.pPublicData, ecdh.ulPublicDataLen) }.map_err(invalid)?;
            Parameter::Ecdh {
                kdf: ecdh.kdf,
                shared_data: shared.to_vec(),
                public_data: public.to_vec(),
            }
        }
        CKM_AES_ECB_ENCRYPT_DATA => {
            // SAFETY: the contract covers the structure and its data pointer.
            let data = unsafe {
                in_struct::<CK_KEY_DERIVATION_STRING_DATA>(raw, mechanism.ulParameterLen)
            }?;
            // SAFETY: as above.
            let bytes = unsafe { in_slice(data.pData, data.ulLen) }.map_err(invalid)?;
            Parameter::DeriveData(Zeroizing::new(bytes.to_vec()))
        }
        CKM_AES_CBC_ENCRYPT_DATA => {
            // SAFETY: the contract covers the structure and its data pointer.
            let data = unsafe {
                in_struct::<CK_AES_CBC_ENCRYPT_DATA_PARAMS>(raw, mechanism.ulParameterLen)
            }?;
            // SAFETY: as above.
            let bytes = unsafe { in_slice(data.pData, data.length) }.map_err(invalid)?;
            Parameter::CbcDeriveData {
                iv: data.iv,
                data: Zeroizing::new(bytes.to_vec()),
            }
        }
        // SAFETY: the parameter is NULL or valid for its length by the contract.
        _ => Parameter::Bytes(
            unsafe { in_slice(raw, mechanism.ulParameterLen) }
                .map_err(invalid)?
                .to_vec(),
        ),
    };
    Ok((mechanism.mechanism, parameter))
}

/// CK_RSA_PKCS_OAEP_PARAMS as a parameter.
///
/// # Safety
/// `pSourceData` is NULL or valid for `ulSourceDataLen` bytes.
unsafe fn oaep_parameter(oaep: &CK_RSA_PKCS_OAEP_PARAMS) -> Result<Parameter> {
    // SAFETY: the caller's contract is ours.
    let label = unsafe { in_slice(oaep.pSourceData as *const u8, oaep.ulSourceDataLen) }
        .map_err(|_| Error::MechanismParamInvalid)?;
    // PKCS#11 3.0 §2.1.8: the only source is CKZ_DATA_SPECIFIED (0 with no label).
    if oaep.source != CKZ_DATA_SPECIFIED && !(oaep.source == 0 && label.is_empty()) {
        return Err(Error::MechanismParamInvalid);
    }
    Ok(Parameter::Oaep {
        hash: oaep.hashAlg,
        mgf: oaep.mgf,
        label: label.to_vec(),
    })
}

/// A parameter structure, which must be exactly its size.
///
/// # Safety
/// `p` is NULL or valid for `len` bytes.
unsafe fn in_struct<'a, T>(p: *const u8, len: CK_ULONG) -> Result<&'a T> {
    if p.is_null()
        || length(len)? != std::mem::size_of::<T>()
        || p.align_offset(std::mem::align_of::<T>()) != 0
    {
        return Err(Error::MechanismParamInvalid);
    }
    // SAFETY: non-NULL, aligned and valid for size_of::<T>() bytes, checked above.
    Ok(unsafe { &*(p as *const T) })
}

/// Write a call's output with the length-query protocol: `produce` gets the caller's
/// capacity (`None` for a NULL buffer) and says what to report.
///
/// # Safety
/// `len` is NULL or valid for one CK_ULONG; `p` is NULL or valid for `*len` writable bytes.
pub(crate) unsafe fn out_bytes(
    p: *mut u8,
    len: *mut CK_ULONG,
    produce: impl FnOnce(Option<usize>) -> Result<Output>,
) -> Result<()> {
    // SAFETY: the caller's contract is ours.
    let len = unsafe { out(len) }?;
    let capacity = if p.is_null() {
        None
    } else {
        Some(length(*len)?)
    };
    match produce(capacity)? {
        Output::Length(needed) => {
            *len = needed as CK_ULONG;
            Ok(())
        }
        Output::TooSmall(needed) => {
            *len = needed as CK_ULONG;
            Err(Error::BufferTooSmall)
        }
        Output::Data(data) => {
            // SAFETY: `produce` returns Data only when it fits the capacity read from `*len`,
            // for which `p` is valid.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
            *len = data.len() as CK_ULONG;
            Ok(())
        }
    }
}
