//! What is on a token: every object with the attributes the tool copies, compares and shows.

use std::collections::{BTreeMap, HashMap};

use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki_sys::*;
use serde::Serialize;

use crate::error::MigrateError;
use crate::names;
use crate::p11raw::{RawAttribute, RawValue, Read};
use crate::token::Token;

/// Attributes every object may carry and the tool reproduces.
const COMMON: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_LABEL,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
];

/// Attributes of every key.
const KEY: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_DERIVE,
    CKA_ALLOWED_MECHANISMS,
];

/// Secret keys: usage, policy and templates.
const SECRET: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_WRAP_TEMPLATE,
    CKA_UNWRAP_TEMPLATE,
    CKA_DERIVE_TEMPLATE,
];

/// Private keys.
const PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SUBJECT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_UNWRAP,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_UNWRAP_TEMPLATE,
    CKA_DERIVE_TEMPLATE,
];

/// Public keys; the key material itself is copied, not wrapped.
const PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SUBJECT,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_WRAP_TEMPLATE,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
];

/// Certificates.
const CERTIFICATE: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_ID,
    CKA_CERTIFICATE_TYPE,
    CKA_CERTIFICATE_CATEGORY,
    CKA_SUBJECT,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_VALUE,
    CKA_START_DATE,
    CKA_END_DATE,
];

/// Data objects.
const DATA: &[CK_ATTRIBUTE_TYPE] = &[CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE];

/// Read for reports and checks, never written: the token computes them, or only the SO may.
pub const TOKEN_SET: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_TRUSTED,
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_KEY_GEN_MECHANISM,
    CKA_UNIQUE_ID,
    CKA_CHECK_VALUE,
    CKA_VALUE_LEN,
    CKA_MODULUS_BITS,
];

/// Public components of a private key: read to verify and to size it, never written (the
/// wrapped PKCS#8 carries them).
const PRIVATE_PUBLIC_PARTS: &[CK_ATTRIBUTE_TYPE] =
    &[CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS];

/// The attributes the tool reproduces on the destination for objects of `class`.
pub fn copied(class: CK_OBJECT_CLASS) -> Vec<CK_ATTRIBUTE_TYPE> {
    let specific: &[&[CK_ATTRIBUTE_TYPE]] = match class {
        CKO_SECRET_KEY => &[KEY, SECRET],
        CKO_PRIVATE_KEY => &[KEY, PRIVATE],
        CKO_PUBLIC_KEY => &[KEY, PUBLIC],
        CKO_CERTIFICATE => &[CERTIFICATE],
        CKO_DATA => &[DATA],
        _ => &[],
    };
    COMMON
        .iter()
        .chain(specific.iter().flat_map(|list| list.iter()))
        .copied()
        .collect()
}

/// One object and what the tool read of it.
#[derive(Clone, Debug)]
pub struct Object {
    /// Its handle in the session it was read in.
    pub handle: ObjectHandle,
    /// CKA_CLASS.
    pub class: CK_OBJECT_CLASS,
    /// Every attribute read, copied ones and token-set ones.
    pub attributes: BTreeMap<CK_ATTRIBUTE_TYPE, Read>,
}

impl Object {
    /// The value of an attribute, when it could be read.
    pub fn bytes(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        match self.attributes.get(&kind) {
            Some(Read::Value(RawValue::Bytes(bytes))) => Some(bytes),
            _ => None,
        }
    }

    /// A CK_BBOOL attribute.
    pub fn flag(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<bool> {
        self.bytes(kind)
            .and_then(|bytes| bytes.first())
            .map(|&byte| byte != 0)
    }

    /// A CK_ULONG attribute.
    pub fn ulong(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        let bytes = self.bytes(kind)?;
        Some(CK_ULONG::from_ne_bytes(bytes.try_into().ok()?))
    }

    /// CKA_KEY_TYPE of a key.
    pub fn key_type(&self) -> Option<CK_KEY_TYPE> {
        self.ulong(CKA_KEY_TYPE)
    }

    /// CKA_LABEL as text (lossy).
    pub fn label(&self) -> String {
        String::from_utf8_lossy(self.bytes(CKA_LABEL).unwrap_or_default()).into_owned()
    }

    /// CKA_ID.
    pub fn id(&self) -> &[u8] {
        self.bytes(CKA_ID).unwrap_or_default()
    }

    /// How objects are matched between tokens: class, key type, label and CKA_ID.
    pub fn identity(&self) -> Identity {
        Identity {
            class: self.class,
            key_type: self.key_type(),
            label: self.bytes(CKA_LABEL).unwrap_or_default().to_vec(),
            id: self.id().to_vec(),
        }
    }

    /// Key size in bits where the token says (VALUE_LEN, MODULUS_BITS, curve).
    pub fn bits(&self) -> Option<u64> {
        // SoftHSMv2 reports CKA_VALUE_LEN 0 on keys it unwrapped: unknown, not empty.
        if let Some(len) = self.ulong(CKA_VALUE_LEN).filter(|&len| len > 0) {
            return Some(len * 8);
        }
        if let Some(bits) = self.ulong(CKA_MODULUS_BITS) {
            return Some(bits);
        }
        if let Some(modulus) = self.bytes(CKA_MODULUS) {
            let leading = modulus.iter().take_while(|&&byte| byte == 0).count();
            return u64::try_from((modulus.len() - leading) * 8).ok();
        }
        self.bytes(CKA_EC_PARAMS).and_then(curve_bits)
    }

    /// "AES", "RSA", "cert", "data".
    pub fn kind(&self) -> String {
        match self.key_type() {
            Some(key_type) => names::key_type(key_type),
            None => names::class(self.class),
        }
    }

    /// The copyable attributes that could be read, as a template for the destination.
    pub fn template(&self) -> Vec<RawAttribute> {
        copied(self.class)
            .into_iter()
            .filter_map(|kind| match self.attributes.get(&kind) {
                Some(Read::Value(value)) => Some(RawAttribute {
                    kind,
                    value: value.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The usage flags that are true, by short name.
    pub fn usage(&self) -> Vec<&'static str> {
        [
            (CKA_ENCRYPT, "encrypt"),
            (CKA_DECRYPT, "decrypt"),
            (CKA_SIGN, "sign"),
            (CKA_VERIFY, "verify"),
            (CKA_WRAP, "wrap"),
            (CKA_UNWRAP, "unwrap"),
            (CKA_DERIVE, "derive"),
        ]
        .into_iter()
        .filter(|&(kind, _)| self.flag(kind) == Some(true))
        .map(|(_, name)| name)
        .collect()
    }
}

/// Named-curve OIDs (DER) of the curves tokens commonly hold, with their sizes.
fn curve_bits(params: &[u8]) -> Option<u64> {
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    match params {
        P256 => Some(256),
        P384 => Some(384),
        P521 => Some(521),
        ED25519 => Some(255),
        _ => None,
    }
}

/// What identifies "the same key" on two tokens.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Identity {
    /// CKA_CLASS.
    pub class: CK_OBJECT_CLASS,
    /// CKA_KEY_TYPE for keys.
    pub key_type: Option<CK_KEY_TYPE>,
    /// CKA_LABEL bytes.
    pub label: Vec<u8>,
    /// CKA_ID bytes.
    pub id: Vec<u8>,
}

impl Identity {
    /// "secret AES \"kek-2024\" id 01".
    pub fn describe(&self) -> String {
        let kind = match self.key_type {
            Some(key_type) => format!("{} {}", names::class(self.class), names::key_type(key_type)),
            None => names::class(self.class),
        };
        format!(
            "{kind} \"{}\" id {}",
            String::from_utf8_lossy(&self.label),
            if self.id.is_empty() {
                "-".to_owned()
            } else {
                hex::encode(&self.id)
            }
        )
    }

    /// The stable key the journal records objects under.
    pub fn key(&self) -> String {
        format!(
            "{:x}/{}/{}/{}",
            self.class,
            self.key_type
                .map(|kind| format!("{kind:x}"))
                .unwrap_or_default(),
            hex::encode(&self.label),
            hex::encode(&self.id)
        )
    }

    /// The identity a journal key names (the inverse of `key`).
    pub fn from_key(key: &str) -> Option<Self> {
        let mut parts = key.split('/');
        let class = CK_ULONG::from_str_radix(parts.next()?, 16).ok()?;
        let key_type = match parts.next()? {
            "" => None,
            text => Some(CK_ULONG::from_str_radix(text, 16).ok()?),
        };
        let label = hex::decode(parts.next()?).ok()?;
        let id = hex::decode(parts.next()?).ok()?;
        parts.next().is_none().then_some(Self {
            class,
            key_type,
            label,
            id,
        })
    }

    /// A search template that finds this object on a token (refined by `find`).
    fn template(&self) -> Vec<cryptoki::object::Attribute> {
        use cryptoki::object::{Attribute, KeyType, ObjectClass};
        let mut template = vec![Attribute::Token(true), Attribute::Label(self.label.clone())];
        if let Ok(class) = ObjectClass::try_from(self.class) {
            template.push(Attribute::Class(class));
        }
        if let Some(key_type) = self.key_type.and_then(|kind| KeyType::try_from(kind).ok()) {
            template.push(Attribute::KeyType(key_type));
        }
        template
    }
}

/// Reads one object's attributes.
pub fn read(token: &Token, handle: ObjectHandle) -> Result<Object, MigrateError> {
    read_as(token, handle, None)
}

/// `read`, with the class already known (found by class, or just made as one).
pub fn read_as(
    token: &Token,
    handle: ObjectHandle,
    known_class: Option<CK_OBJECT_CLASS>,
) -> Result<Object, MigrateError> {
    let raw = &token.module.raw;
    let class = match known_class {
        Some(class) => class,
        None => read_class(token, handle)?,
    };
    let public_parts = if class == CKO_PRIVATE_KEY {
        PRIVATE_PUBLIC_PARTS
    } else {
        &[]
    };
    let kinds: Vec<CK_ATTRIBUTE_TYPE> = std::iter::once(CKA_CLASS)
        .chain(copied(class))
        .chain(TOKEN_SET.iter().copied())
        .chain(public_parts.iter().copied())
        .collect();
    let attributes = raw
        .attributes(&token.session, handle, &kinds)
        .map_err(|err| MigrateError::Pkcs11 {
            context: format!("{}: reading attributes", token.who),
            reason: err.to_string(),
        })?;
    let object = Object {
        handle,
        class,
        attributes: attributes.into_iter().collect(),
    };
    match object.ulong(CKA_CLASS) {
        // Not of the class it was taken for: read again as what it is.
        Some(actual) if actual != class => read_as(token, handle, Some(actual)),
        _ => Ok(object),
    }
}

fn read_class(token: &Token, handle: ObjectHandle) -> Result<CK_OBJECT_CLASS, MigrateError> {
    let raw = &token.module.raw;
    let class_read = raw
        .attribute(&token.session, handle, CKA_CLASS)
        .map_err(|err| MigrateError::Pkcs11 {
            context: format!("{}: reading CKA_CLASS", token.who),
            reason: err.to_string(),
        })?;
    Ok(match class_read {
        Read::Value(RawValue::Bytes(bytes)) => bytes
            .as_slice()
            .try_into()
            .map(CK_ULONG::from_ne_bytes)
            .unwrap_or(CK_UNAVAILABLE_INFORMATION),
        _ => CK_UNAVAILABLE_INFORMATION,
    })
}

/// The classes the tool copies, searched for one by one so that their objects need no
/// separate read of CKA_CLASS.
const LISTED_CLASSES: &[ObjectClass] = &[
    ObjectClass::SECRET_KEY,
    ObjectClass::PRIVATE_KEY,
    ObjectClass::PUBLIC_KEY,
    ObjectClass::CERTIFICATE,
    ObjectClass::DATA,
];

/// Every token object the session can see (never this process's own session objects:
/// the probes and transport keys, which may come and go on other sessions meanwhile).
pub fn list(token: &Token) -> Result<Vec<Object>, MigrateError> {
    Ok(list_up_to(token, usize::MAX)?.unwrap_or_default())
}

/// Every token object, or `None` without reading any when there are more than
/// `limit`.
pub fn list_up_to(token: &Token, limit: usize) -> Result<Option<Vec<Object>>, MigrateError> {
    let search = |template: &[Attribute]| {
        token
            .session
            .find_objects(template)
            .map_err(|err| MigrateError::pkcs11(format!("{}: C_FindObjects", token.who), &err))
    };
    let mut classes: HashMap<CK_OBJECT_HANDLE, CK_OBJECT_CLASS> = HashMap::new();
    for &class in LISTED_CLASSES {
        for handle in search(&[Attribute::Token(true), Attribute::Class(class)])? {
            classes.insert(handle.handle(), CK_OBJECT_CLASS::from(class));
        }
    }
    // Every object, in the token's order; those of other classes read their class.
    let handles = search(&[Attribute::Token(true)])?;
    if handles.len() > limit {
        return Ok(None);
    }
    token
        .map_in_two(&handles, |token, handle| {
            read_as(token, *handle, classes.get(&handle.handle()).copied())
        })
        .into_iter()
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The objects on the token with this identity, read.
pub fn find(token: &Token, identity: &Identity) -> Result<Vec<Object>, MigrateError> {
    let handles = token
        .session
        .find_objects(&identity.template())
        .map_err(|err| MigrateError::pkcs11(format!("{}: C_FindObjects", token.who), &err))?;
    let mut found = Vec::new();
    for handle in handles {
        let object = read_as(token, handle, Some(identity.class))?;
        if object.identity() == *identity {
            found.push(object);
        }
    }
    Ok(found)
}
