//! Attribute values as the core sees them, and their one binary encoding (storage, AAD).

use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An attribute's value: bytes as PKCS#11 lays them out, or a nested template
/// (`CKF_ARRAY_ATTRIBUTE`, e.g. CKA_WRAP_TEMPLATE).
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Plain bytes; zeroed on drop because some of them are key material.
    Bytes(Zeroizing<Vec<u8>>),
    /// An array of attributes.
    Nested(Template),
}

impl Value {
    /// Plain bytes.
    pub fn bytes(value: impl Into<Vec<u8>>) -> Self {
        Self::Bytes(Zeroizing::new(value.into()))
    }

    /// A CK_BBOOL.
    pub fn bool(value: bool) -> Self {
        Self::bytes(vec![if value { CK_TRUE } else { CK_FALSE }])
    }

    /// A CK_ULONG in the host's layout, as the C caller reads it.
    pub fn ulong(value: CK_ULONG) -> Self {
        Self::bytes(value.to_ne_bytes().to_vec())
    }

    /// The bytes of a plain value, `None` for a nested template.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(bytes) => Some(bytes),
            Self::Nested(_) => None,
        }
    }

    /// Encoded length as the C caller sees it: bytes, or a count of CK_ATTRIBUTE structs.
    pub fn c_len(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len(),
            Self::Nested(template) => template.len() * std::mem::size_of::<CK_ATTRIBUTE>(),
        }
    }
}

/// One attribute of a template or an object.
#[derive(Clone, PartialEq, Eq)]
pub struct Attribute {
    /// CKA_*.
    pub kind: CK_ATTRIBUTE_TYPE,
    /// Its value.
    pub value: Value,
}

impl Attribute {
    /// An attribute from its parts.
    pub fn new(kind: CK_ATTRIBUTE_TYPE, value: Value) -> Self {
        Self { kind, value }
    }
}

// Shown by type and length only: a template may carry key material.
impl std::fmt::Debug for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Value::Bytes(bytes) => write!(f, "0x{:x}=<{} bytes>", self.kind, bytes.len()),
            Value::Nested(inner) => write!(f, "0x{:x}={inner:?}", self.kind),
        }
    }
}

/// A list of attributes, as a caller passes it.
pub type Template = Vec<Attribute>;

/// Read a CK_BBOOL; anything but one byte is invalid.
pub fn parse_bool(kind: CK_ATTRIBUTE_TYPE, value: &Value) -> Result<bool> {
    match value.as_bytes() {
        Some([byte]) => Ok(*byte != CK_FALSE),
        _ => Err(Error::AttributeValueInvalid(kind)),
    }
}

/// Read a CK_ULONG in the host's layout.
pub fn parse_ulong(kind: CK_ATTRIBUTE_TYPE, value: &Value) -> Result<CK_ULONG> {
    let bytes = value.as_bytes().ok_or(Error::AttributeValueInvalid(kind))?;
    let array: [u8; std::mem::size_of::<CK_ULONG>()] = bytes
        .try_into()
        .map_err(|_| Error::AttributeValueInvalid(kind))?;
    Ok(CK_ULONG::from_ne_bytes(array))
}

/// Find an attribute in a template.
pub fn find(template: &[Attribute], kind: CK_ATTRIBUTE_TYPE) -> Option<&Value> {
    template
        .iter()
        .find(|attr| attr.kind == kind)
        .map(|attr| &attr.value)
}

const TAG_BYTES: u8 = 0;
const TAG_NESTED: u8 = 1;
/// Deepest nesting accepted when decoding; PKCS#11 templates nest one level.
const MAX_DEPTH: usize = 4;

/// Encode attributes: per attribute a u64 type, a tag, a u32 length, then the body.
/// Little-endian, so a token file reads the same on every host.
pub fn encode(template: &[Attribute]) -> Vec<u8> {
    encode_pairs(template.iter().map(|attr| (attr.kind, &attr.value)))
}

/// `encode` of attributes held elsewhere (an object's), without copying their values
/// into a template first.
pub fn encode_pairs<'a>(
    pairs: impl Iterator<Item = (CK_ATTRIBUTE_TYPE, &'a Value)> + Clone,
) -> Vec<u8> {
    // Sized up front: growing would leave copies of key material in freed memory.
    let mut out = Vec::with_capacity(pairs.clone().map(|(_, value)| 13 + value_len(value)).sum());
    for (kind, value) in pairs {
        encode_one(kind, value, &mut out);
    }
    out
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Bytes(bytes) => bytes.len(),
        Value::Nested(inner) => inner.iter().map(|attr| 13 + value_len(&attr.value)).sum(),
    }
}

#[allow(
    clippy::unnecessary_cast,
    reason = "CK_ULONG is u64 here but u32 on Windows; the cast keeps the code portable"
)]
fn encode_one(kind: CK_ATTRIBUTE_TYPE, value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(&(kind as u64).to_le_bytes());
    match value {
        Value::Bytes(bytes) => {
            out.push(TAG_BYTES);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        Value::Nested(inner) => {
            out.push(TAG_NESTED);
            out.extend_from_slice(&(value_len(value) as u32).to_le_bytes());
            for attr in inner {
                encode_one(attr.kind, &attr.value, out);
            }
        }
    }
}

/// Decode what `encode` wrote; `None` on any malformation.
pub fn decode(bytes: &[u8]) -> Option<Template> {
    decode_depth(bytes, 0)
}

fn decode_depth(mut bytes: &[u8], depth: usize) -> Option<Template> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut template = Vec::new();
    while !bytes.is_empty() {
        let (kind, rest) = bytes.split_first_chunk::<8>()?;
        let (tag, rest) = rest.split_first()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (body, rest) = rest.split_at(len);
        let kind = CK_ATTRIBUTE_TYPE::try_from(u64::from_le_bytes(*kind)).ok()?;
        let value = match *tag {
            TAG_BYTES => Value::bytes(body.to_vec()),
            TAG_NESTED => Value::Nested(decode_depth(body, depth + 1)?),
            _ => return None,
        };
        template.push(Attribute::new(kind, value));
        bytes = rest;
    }
    Some(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_nested_templates() {
        let template = vec![
            Attribute::new(CKA_LABEL, Value::bytes(b"root".to_vec())),
            Attribute::new(
                CKA_WRAP_TEMPLATE,
                Value::Nested(vec![Attribute::new(CKA_SENSITIVE, Value::bool(true))]),
            ),
            Attribute::new(CKA_VALUE_LEN, Value::ulong(32)),
        ];
        let encoded = encode(&template);
        assert_eq!(encoded.len(), encoded.capacity());
        assert!(decode(&encoded) == Some(template));
    }

    /// The bytes every stored object's attributes and AAD are made of: changing them
    /// would make every existing token unreadable.
    #[test]
    fn the_encoding_is_pinned_byte_for_byte() {
        let template = vec![
            Attribute::new(CKA_LABEL, Value::bytes(b"ab".to_vec())),
            Attribute::new(
                CKA_WRAP_TEMPLATE,
                Value::Nested(vec![Attribute::new(CKA_SENSITIVE, Value::bool(true))]),
            ),
        ];
        let pinned = hex_literal::hex!(
            "0300000000000000 00 02000000 6162"
            "1102004000000000 01 0e000000"
            "0301000000000000 00 01000000 01"
        );
        assert_eq!(encode(&template), pinned);
        assert_eq!(
            encode_pairs(template.iter().map(|attr| (attr.kind, &attr.value))),
            pinned
        );
    }

    #[test]
    fn decoding_rejects_truncation_at_every_length() {
        let encoded = encode(&[Attribute::new(CKA_ID, Value::bytes(vec![1, 2, 3]))]);
        for len in 1..encoded.len() {
            assert!(decode(&encoded[..len]).is_none(), "accepted {len} bytes");
        }
    }

    #[test]
    fn bool_and_ulong_reject_wrong_lengths() {
        assert!(matches!(
            parse_bool(CKA_TOKEN, &Value::bytes(vec![1, 0])),
            Err(Error::AttributeValueInvalid(CKA_TOKEN))
        ));
        assert!(matches!(
            parse_ulong(CKA_VALUE_LEN, &Value::bytes(vec![1])),
            Err(Error::AttributeValueInvalid(CKA_VALUE_LEN))
        ));
        assert_eq!(parse_ulong(CKA_VALUE_LEN, &Value::ulong(24)).ok(), Some(24));
    }
}
