//! One object's attributes and the rules that govern creating, copying, reading, changing
//! and matching them.

use std::collections::BTreeMap;

use pkcs11_sys::*;

use crate::error::{Error, Result};
use crate::mech;
use crate::token::attr::{self, Attribute, Template, Value};
use crate::token::rules::{self, Rule, Schema, Shape};

/// How an object comes into being; decides the token-computed attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `C_CreateObject`: the caller supplied every value.
    Create,
    /// `C_GenerateKey` with this mechanism: the token made the value.
    Generate(CK_MECHANISM_TYPE),
    /// `C_UnwrapKey`: the value came from outside, in a wrapped blob.
    Unwrap,
    /// `C_DeriveKey` with this mechanism from a base key with these ALWAYS_SENSITIVE and
    /// NEVER_EXTRACTABLE values (PKCS#11 3.0 §4.10, the derived key inherits them).
    Derive {
        /// The derivation mechanism.
        mechanism: CK_MECHANISM_TYPE,
        /// The base key's CKA_ALWAYS_SENSITIVE.
        always_sensitive: bool,
        /// The base key's CKA_NEVER_EXTRACTABLE.
        never_extractable: bool,
    },
}

/// What `C_GetAttributeValue` may tell about one attribute.
pub enum Read<'a> {
    /// The value.
    Value(&'a Value),
    /// The attribute is key material the object hides.
    Sensitive,
    /// The attribute does not belong to the object.
    TypeInvalid,
}

/// An object: its attributes, secrets included. No Debug: it may hold key material.
#[derive(Clone)]
pub struct Object {
    attrs: BTreeMap<CK_ATTRIBUTE_TYPE, Value>,
    /// Loaded without login: its sealed secrets are not here.
    locked: bool,
}

impl Object {
    /// Build an object from a caller's template, checking every rule of its class.
    /// `implied` carries what the mechanism fixes (CKA_CLASS, CKA_KEY_TYPE for key gen);
    /// `is_so` says whether the SO is logged in (CKA_TRUSTED). The caller adds what a
    /// mechanism makes (CKA_VALUE) and then calls `finish`.
    pub fn from_template(
        template: &[Attribute],
        implied: &[Attribute],
        origin: Origin,
        is_so: bool,
    ) -> Result<Self> {
        let mut attrs = BTreeMap::new();
        for item in template {
            match attrs.insert(item.kind, item.value.clone()) {
                Some(previous) if previous != item.value => {
                    return Err(Error::TemplateInconsistent(item.kind));
                }
                _ => {}
            }
        }
        for item in implied {
            match attrs.insert(item.kind, item.value.clone()) {
                Some(given) if given != item.value => {
                    return Err(Error::TemplateInconsistent(item.kind));
                }
                _ => {}
            }
        }
        let schema = schema_of(&attrs)?;
        for (&kind, value) in &attrs {
            let rule = rules::rule(schema, kind).ok_or(Error::AttributeTypeInvalid(kind))?;
            if rule.has(rules::TOKEN_COMPUTED) {
                return Err(Error::AttributeReadOnly(kind));
            }
            if rule.has(rules::NOT_ON_GENERATE) && origin != Origin::Create {
                return Err(Error::TemplateInconsistent(kind));
            }
            check_shape(rule, value)?;
            if rule.has(rules::SO_ONLY_TRUE) && attr::parse_bool(kind, value)? && !is_so {
                return Err(Error::AttributeReadOnly(kind));
            }
        }
        for rule in rules::rules(schema) {
            if attrs.contains_key(&rule.kind) {
                continue;
            }
            if rule.has(rules::REQUIRED) && origin == Origin::Create {
                return Err(Error::TemplateIncomplete(rule.kind));
            }
            if let Some(value) = rule.default.value() {
                attrs.insert(rule.kind, value);
            }
        }
        let mut object = Self {
            attrs,
            locked: false,
        };
        let class = object.class();
        if !object.attrs.contains_key(&CKA_PRIVATE) {
            object.put(CKA_PRIVATE, Value::bool(rules::default_private(class)));
        }
        Ok(object)
    }

    /// Rebuild an object from stored attributes, trusting them (they were authenticated).
    pub fn from_stored(template: Template) -> Result<Self> {
        let attrs: BTreeMap<_, _> = template.into_iter().map(|a| (a.kind, a.value)).collect();
        schema_of(&attrs)?;
        Ok(Self {
            attrs,
            locked: false,
        })
    }

    /// Mark the object as loaded without its sealed secrets (nobody logged in).
    pub fn lock_secrets(&mut self) {
        self.locked = true;
    }

    /// Whether its secrets are missing because nobody is logged in.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Whether objects of this kind carry key material.
    pub fn has_secrets_at_rest_rules(&self) -> bool {
        rules::rules(self.schema()).any(|rule| rule.has(rules::SECRET))
    }

    /// Fill in what the token computes, per origin, once every value is in place.
    pub fn finish(&mut self, origin: Origin) -> Result<()> {
        let class = self.class();
        if class == CKO_CERTIFICATE {
            if self.ulong(CKA_CERTIFICATE_TYPE) != Some(CKC_X_509) {
                return Err(Error::AttributeValueInvalid(CKA_CERTIFICATE_TYPE));
            }
            if !self.attrs.contains_key(&CKA_CERTIFICATE_CATEGORY) {
                self.put(
                    CKA_CERTIFICATE_CATEGORY,
                    Value::ulong(CK_CERTIFICATE_CATEGORY_UNSPECIFIED),
                );
            }
            let value = self.bytes(CKA_VALUE).unwrap_or_default();
            let computed = mech::digest_check_value(value);
            self.check_supplied(computed)?;
            return Ok(());
        }
        if !matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY) {
            return Ok(());
        }
        // (LOCAL, KEY_GEN_MECHANISM, whether the material was always sensitive and never
        // extractable before this object).
        let (local, mechanism, was_sensitive, was_unextractable) = match origin {
            Origin::Create | Origin::Unwrap => (false, CK_UNAVAILABLE_INFORMATION, false, false),
            Origin::Generate(mechanism) => (true, mechanism, true, true),
            // KEY_GEN_MECHANISM names how material was generated, and is meaningful only
            // with LOCAL (PKCS#11 3.0 §4.8); SoftHSMv2 leaves it unavailable too.
            Origin::Derive {
                always_sensitive,
                never_extractable,
                ..
            } => (
                false,
                CK_UNAVAILABLE_INFORMATION,
                always_sensitive,
                never_extractable,
            ),
        };
        self.put(CKA_LOCAL, Value::bool(local));
        self.put(CKA_KEY_GEN_MECHANISM, Value::ulong(mechanism));
        if class != CKO_PUBLIC_KEY {
            let sensitive = self.flag(CKA_SENSITIVE);
            let extractable = self.flag(CKA_EXTRACTABLE);
            self.put(
                CKA_ALWAYS_SENSITIVE,
                Value::bool(was_sensitive && sensitive),
            );
            self.put(
                CKA_NEVER_EXTRACTABLE,
                Value::bool(was_unextractable && !extractable),
            );
        }
        if class == CKO_PUBLIC_KEY && self.key_type() == Some(CKK_RSA) && origin == Origin::Create {
            let bits = self.bytes(CKA_MODULUS).map(bit_length).unwrap_or(0);
            if self
                .ulong(CKA_MODULUS_BITS)
                .is_some_and(|given| given != bits)
            {
                return Err(Error::TemplateInconsistent(CKA_MODULUS_BITS));
            }
            self.put(CKA_MODULUS_BITS, Value::ulong(bits));
        }
        // An imported key pair half is checked by the math and completed; a generated or
        // unwrapped one got these from its mechanism.
        if matches!(class, CKO_PUBLIC_KEY | CKO_PRIVATE_KEY) && origin == Origin::Create {
            for item in mech::pkcs8::describe(self)? {
                self.put(item.kind, item.value);
            }
        }
        if class == CKO_SECRET_KEY {
            let value_len = self.bytes(CKA_VALUE).map(<[u8]>::len).unwrap_or(0);
            mech::check_secret_len(self.key_type(), value_len)?;
            let value_len = CK_ULONG::try_from(value_len)
                .map_err(|_| Error::AttributeValueInvalid(CKA_VALUE))?;
            match self.ulong(CKA_VALUE_LEN) {
                Some(given) if given != value_len => {
                    return Err(Error::TemplateInconsistent(CKA_VALUE_LEN));
                }
                _ => self.put(CKA_VALUE_LEN, Value::ulong(value_len)),
            }
            let value = self.bytes(CKA_VALUE).unwrap_or_default();
            let computed = mech::key_check_value(self.key_type(), value)?;
            self.check_supplied(computed)?;
        }
        Ok(())
    }

    /// A supplied CKA_CHECK_VALUE must equal the computed one; an empty one means none
    /// was supplied. Either way the computed value is stored.
    fn check_supplied(&mut self, computed: Vec<u8>) -> Result<()> {
        match self.bytes(CKA_CHECK_VALUE) {
            Some(given) if !given.is_empty() && given != computed.as_slice() => {
                Err(Error::AttributeValueInvalid(CKA_CHECK_VALUE))
            }
            _ => {
                self.put(CKA_CHECK_VALUE, Value::bytes(computed));
                Ok(())
            }
        }
    }

    /// CKA_CLASS; every object has one (checked when built).
    pub fn class(&self) -> CK_OBJECT_CLASS {
        self.ulong(CKA_CLASS).unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }

    /// CKA_KEY_TYPE, for keys.
    pub fn key_type(&self) -> Option<CK_KEY_TYPE> {
        self.ulong(CKA_KEY_TYPE)
    }

    /// A boolean attribute; absent reads as false.
    pub fn flag(&self, kind: CK_ATTRIBUTE_TYPE) -> bool {
        self.attrs
            .get(&kind)
            .and_then(|v| attr::parse_bool(kind, v).ok())
            .unwrap_or(false)
    }

    /// A CK_ULONG attribute.
    pub fn ulong(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        self.attrs
            .get(&kind)
            .and_then(|v| attr::parse_ulong(kind, v).ok())
    }

    /// A byte-string attribute.
    pub fn bytes(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.attrs.get(&kind).and_then(Value::as_bytes)
    }

    /// Whether the object lives in the token file.
    pub fn is_token(&self) -> bool {
        self.flag(CKA_TOKEN)
    }

    /// Whether the object is visible only to a logged-in user.
    pub fn is_private(&self) -> bool {
        self.flag(CKA_PRIVATE)
    }

    /// Set an attribute without checks: for the token's own bookkeeping.
    pub fn put(&mut self, kind: CK_ATTRIBUTE_TYPE, value: Value) {
        self.attrs.insert(kind, value);
    }

    fn schema(&self) -> Schema {
        // Every Object was built through `schema_of`, so the schema exists.
        schema_of(&self.attrs).unwrap_or(&rules::NO_RULES)
    }

    /// What `C_GetAttributeValue` may reveal of `kind` (PKCS#11 3.0 §5.7.5).
    pub fn read(&self, kind: CK_ATTRIBUTE_TYPE) -> Read<'_> {
        static EMPTY: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| Value::bytes(vec![]));
        let Some(rule) = rules::rule(self.schema(), kind) else {
            return Read::TypeInvalid;
        };
        if rule.has(rules::SECRET) && (self.flag(CKA_SENSITIVE) || !self.flag(CKA_EXTRACTABLE)) {
            return Read::Sensitive;
        }
        if self.locked && self.is_secret_at_rest(kind) {
            return Read::Sensitive;
        }
        Read::Value(self.attrs.get(&kind).unwrap_or(&EMPTY))
    }

    /// Apply `C_SetAttributeValue`'s template: all checked first, then all applied.
    pub fn set(&mut self, template: &[Attribute], is_so: bool) -> Result<()> {
        if !self.flag(CKA_MODIFIABLE) {
            return Err(Error::ActionProhibited);
        }
        self.apply(template, is_so, rules::MODIFIABLE)
    }

    /// `C_CopyObject`: a copy with the template's changes; the caller gives it a new id.
    pub fn copy_with(&self, template: &[Attribute], is_so: bool) -> Result<Self> {
        if !self.flag(CKA_COPYABLE) {
            return Err(Error::ActionProhibited);
        }
        if self.locked {
            return Err(Error::UserNotLoggedIn);
        }
        let mut copy = self.clone();
        copy.apply(template, is_so, rules::MODIFIABLE | rules::COPY_MAY_SET)?;
        copy.attrs.remove(&CKA_UNIQUE_ID);
        Ok(copy)
    }

    fn apply(&mut self, template: &[Attribute], is_so: bool, allowed: u32) -> Result<()> {
        let schema = self.schema();
        for item in template {
            let rule =
                rules::rule(schema, item.kind).ok_or(Error::AttributeTypeInvalid(item.kind))?;
            if rule.flags & allowed == 0 {
                return Err(Error::AttributeReadOnly(item.kind));
            }
            check_shape(rule, &item.value)?;
            if rule.shape == Shape::Bool {
                let new = attr::parse_bool(item.kind, &item.value)?;
                let old = self.flag(item.kind);
                let forbidden = (rule.has(rules::ONLY_TO_TRUE) && old && !new)
                    || (rule.has(rules::ONLY_TO_FALSE) && !old && new)
                    || (rule.has(rules::SO_ONLY_TRUE) && new && !is_so);
                if forbidden {
                    return Err(Error::AttributeReadOnly(item.kind));
                }
            }
        }
        for item in template {
            self.attrs.insert(item.kind, item.value.clone());
        }
        Ok(())
    }

    /// Whether every attribute of `template` is present with an equal value. Hidden key
    /// material never matches, so a search cannot be used as an oracle for it.
    pub fn matches(&self, template: &[Attribute]) -> bool {
        template.iter().all(|item| match self.read(item.kind) {
            Read::Value(value) => *value == item.value,
            Read::Sensitive | Read::TypeInvalid => false,
        })
    }

    /// Whether `kind` must be encrypted at rest: key material always, and the value of
    /// any private object.
    pub fn is_secret_at_rest(&self, kind: CK_ATTRIBUTE_TYPE) -> bool {
        rules::rule(self.schema(), kind).is_some_and(|rule| rule.has(rules::SECRET))
            || (kind == CKA_VALUE && self.is_private())
    }

    /// Every attribute, in type order.
    pub fn attributes(&self) -> impl Iterator<Item = (CK_ATTRIBUTE_TYPE, &Value)> + Clone {
        self.attrs.iter().map(|(kind, value)| (*kind, value))
    }

    /// Bytes the object takes, for `C_GetObjectSize`.
    pub fn size(&self) -> usize {
        self.attrs.values().map(Value::c_len).sum::<usize>() + self.attrs.len() * 16
    }
}

fn schema_of(attrs: &BTreeMap<CK_ATTRIBUTE_TYPE, Value>) -> Result<Schema> {
    let class_value = attrs
        .get(&CKA_CLASS)
        .ok_or(Error::TemplateIncomplete(CKA_CLASS))?;
    let class = attr::parse_ulong(CKA_CLASS, class_value)?;
    let key_type = match class {
        CKO_SECRET_KEY | CKO_PUBLIC_KEY | CKO_PRIVATE_KEY => {
            let value = attrs
                .get(&CKA_KEY_TYPE)
                .ok_or(Error::TemplateIncomplete(CKA_KEY_TYPE))?;
            Some(attr::parse_ulong(CKA_KEY_TYPE, value)?)
        }
        _ => None,
    };
    rules::schema(class, key_type).ok_or(match key_type {
        Some(_) => Error::AttributeValueInvalid(CKA_KEY_TYPE),
        None => Error::AttributeValueInvalid(CKA_CLASS),
    })
}

fn check_shape(rule: &Rule, value: &Value) -> Result<()> {
    let kind = rule.kind;
    let ok = match (rule.shape, value) {
        (Shape::Bool, _) => attr::parse_bool(kind, value).is_ok(),
        (Shape::Ulong, _) => attr::parse_ulong(kind, value).is_ok(),
        (Shape::Date, Value::Bytes(bytes)) => {
            bytes.is_empty() || (bytes.len() == 8 && bytes.iter().all(u8::is_ascii_digit))
        }
        (Shape::Mechanisms, Value::Bytes(bytes)) => {
            bytes.len() % std::mem::size_of::<CK_MECHANISM_TYPE>() == 0
        }
        (Shape::Bytes, Value::Bytes(_)) | (Shape::Template, Value::Nested(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::AttributeValueInvalid(kind))
    }
}

fn bit_length(big_endian: &[u8]) -> CK_ULONG {
    let skip = big_endian.iter().take_while(|byte| **byte == 0).count();
    match big_endian.get(skip) {
        Some(first) => {
            let bytes = (big_endian.len() - skip - 1) as CK_ULONG;
            bytes * 8 + CK_ULONG::from(8 - first.leading_zeros() as u8)
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aes_template(value: &[u8]) -> Template {
        vec![
            Attribute::new(CKA_CLASS, Value::ulong(CKO_SECRET_KEY)),
            Attribute::new(CKA_KEY_TYPE, Value::ulong(CKK_AES)),
            Attribute::new(CKA_VALUE, Value::bytes(value.to_vec())),
        ]
    }

    fn created(template: &[Attribute]) -> Result<Object> {
        let mut object = Object::from_template(template, &[], Origin::Create, false)?;
        object.finish(Origin::Create)?;
        Ok(object)
    }

    #[test]
    fn created_aes_key_gets_defaults_and_computed_attributes() {
        let key = created(&aes_template(&[0u8; 16])).expect("a valid AES key");
        assert!(key.flag(CKA_SENSITIVE) && key.flag(CKA_PRIVATE) && !key.flag(CKA_LOCAL));
        assert!(!key.flag(CKA_ALWAYS_SENSITIVE) && !key.flag(CKA_NEVER_EXTRACTABLE));
        assert_eq!(key.ulong(CKA_VALUE_LEN), Some(16));
        assert_eq!(
            key.ulong(CKA_KEY_GEN_MECHANISM),
            Some(CK_UNAVAILABLE_INFORMATION)
        );
        // AES-128 of the zero key over the zero block starts 66 e9 4b.
        assert_eq!(key.bytes(CKA_CHECK_VALUE), Some(&[0x66, 0xe9, 0x4b][..]));
        assert!(matches!(key.read(CKA_VALUE), Read::Sensitive));
    }

    #[test]
    fn wrong_check_value_and_length_are_refused() {
        let mut template = aes_template(&[0u8; 16]);
        template.push(Attribute::new(CKA_CHECK_VALUE, Value::bytes(vec![1, 2, 3])));
        assert!(matches!(
            created(&template),
            Err(Error::AttributeValueInvalid(CKA_CHECK_VALUE))
        ));
        assert!(matches!(
            created(&aes_template(&[0u8; 15])),
            Err(Error::AttributeValueInvalid(CKA_VALUE))
        ));
    }

    #[test]
    fn one_way_attributes_only_go_one_way() {
        let mut template = aes_template(&[7u8; 32]);
        template.push(Attribute::new(CKA_SENSITIVE, Value::bool(false)));
        let mut key = created(&template).expect("valid");
        let unset = [Attribute::new(CKA_EXTRACTABLE, Value::bool(false))];
        key.set(&unset, false)
            .expect("EXTRACTABLE may become false");
        let reset = [Attribute::new(CKA_EXTRACTABLE, Value::bool(true))];
        assert!(matches!(
            key.set(&reset, false),
            Err(Error::AttributeReadOnly(CKA_EXTRACTABLE))
        ));
        let trusted = [Attribute::new(CKA_TRUSTED, Value::bool(true))];
        assert!(matches!(
            key.set(&trusted, false),
            Err(Error::AttributeReadOnly(CKA_TRUSTED))
        ));
        key.set(&trusted, true).expect("the SO may trust a key");
    }

    #[test]
    fn token_computed_attributes_are_read_only_in_templates() {
        let mut template = aes_template(&[0u8; 16]);
        template.push(Attribute::new(CKA_LOCAL, Value::bool(true)));
        assert!(matches!(
            created(&template),
            Err(Error::AttributeReadOnly(CKA_LOCAL))
        ));
    }

    #[test]
    fn modulus_bits_ignore_leading_zeros() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[]), 0);
    }
}
