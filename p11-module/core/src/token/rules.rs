//! Attribute rules as tables, one per class and key type, read alike by create, copy,
//! generate, set and get (after kryoptic's `OAFlags`). PKCS#11 3.0 §4 footnotes to Table 10.

use std::sync::OnceLock;

use pkcs11_sys::*;

use crate::token::attr::Value;

/// Must be present in `C_CreateObject`'s template (footnote 1).
pub const REQUIRED: u32 = 1 << 0;
/// Set by the token only; never in any template (footnotes 2, 4, 6 where the token computes).
pub const TOKEN_COMPUTED: u32 = 1 << 1;
/// May not be given to `C_GenerateKey`/`C_UnwrapKey`/`C_DeriveKey` (footnote 4).
pub const NOT_ON_GENERATE: u32 = 1 << 2;
/// `C_SetAttributeValue` and `C_CopyObject` may change it (footnote 8).
pub const MODIFIABLE: u32 = 1 << 3;
/// Can only change from false to true (CKA_SENSITIVE, CKA_WRAP_WITH_TRUSTED).
pub const ONLY_TO_TRUE: u32 = 1 << 4;
/// Can only change from true to false (CKA_EXTRACTABLE, CKA_COPYABLE).
pub const ONLY_TO_FALSE: u32 = 1 << 5;
/// Key material: unreadable when the key is sensitive or unextractable (footnote 7).
pub const SECRET: u32 = 1 << 6;
/// Only the SO may set it to true (CKA_TRUSTED).
pub const SO_ONLY_TRUE: u32 = 1 << 8;
/// `C_CopyObject` may set it even though `C_SetAttributeValue` may not (CKA_TOKEN, …).
pub const COPY_MAY_SET: u32 = 1 << 9;
/// Read-only once set at create: present in templates only at create.
const FIXED: u32 = 0;

/// What an attribute's value must look like.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// CK_BBOOL, one byte.
    Bool,
    /// CK_ULONG in the host's layout.
    Ulong,
    /// CK_DATE: empty or eight ASCII digits.
    Date,
    /// Any bytes (strings, DER, big integers).
    Bytes,
    /// An array of CK_MECHANISM_TYPE.
    Mechanisms,
    /// An array of CK_ATTRIBUTE.
    Template,
}

/// The value an attribute takes when a template leaves it out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Default {
    /// No value: absent until given (or computed).
    Absent,
    /// CK_FALSE.
    False,
    /// CK_TRUE.
    True,
    /// An empty byte string.
    Empty,
    /// A CK_ULONG.
    Ulong(CK_ULONG),
}

impl Default {
    /// The default as a value, `None` when absent.
    pub fn value(self) -> Option<Value> {
        match self {
            Self::Absent => None,
            Self::False => Some(Value::bool(false)),
            Self::True => Some(Value::bool(true)),
            Self::Empty => Some(Value::bytes(Vec::new())),
            Self::Ulong(value) => Some(Value::ulong(value)),
        }
    }
}

/// One attribute's rule.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// CKA_*.
    pub kind: CK_ATTRIBUTE_TYPE,
    /// Flags above.
    pub flags: u32,
    /// Its shape.
    pub shape: Shape,
    /// Its default.
    pub default: Default,
}

impl Rule {
    const fn new(kind: CK_ATTRIBUTE_TYPE, shape: Shape, flags: u32, default: Default) -> Self {
        Self {
            kind,
            flags,
            shape,
            default,
        }
    }

    /// Whether the rule carries `flag`.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

use self::Default::{Absent, Empty, False, True};
use Shape::{Bool, Bytes, Date, Mechanisms, Template, Ulong};

const COMMON: &[Rule] = &[
    Rule::new(CKA_CLASS, Ulong, REQUIRED, Absent),
    Rule::new(CKA_TOKEN, Bool, COPY_MAY_SET, False),
    Rule::new(CKA_PRIVATE, Bool, COPY_MAY_SET, Absent),
    Rule::new(CKA_MODIFIABLE, Bool, COPY_MAY_SET | ONLY_TO_FALSE, True),
    Rule::new(CKA_COPYABLE, Bool, MODIFIABLE | ONLY_TO_FALSE, True),
    Rule::new(CKA_DESTROYABLE, Bool, COPY_MAY_SET | ONLY_TO_FALSE, True),
    Rule::new(CKA_LABEL, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_UNIQUE_ID, Bytes, TOKEN_COMPUTED, Absent),
];

const DATA: &[Rule] = &[
    Rule::new(CKA_APPLICATION, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_OBJECT_ID, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_VALUE, Bytes, MODIFIABLE, Empty),
];

const CERTIFICATE: &[Rule] = &[
    Rule::new(CKA_CERTIFICATE_TYPE, Ulong, REQUIRED, Absent),
    Rule::new(CKA_TRUSTED, Bool, SO_ONLY_TRUE | MODIFIABLE, False),
    Rule::new(CKA_CERTIFICATE_CATEGORY, Ulong, FIXED, Absent),
    Rule::new(CKA_CHECK_VALUE, Bytes, FIXED, Absent),
    Rule::new(CKA_START_DATE, Date, MODIFIABLE, Empty),
    Rule::new(CKA_END_DATE, Date, MODIFIABLE, Empty),
    Rule::new(CKA_PUBLIC_KEY_INFO, Bytes, FIXED, Empty),
];

const X509_CERTIFICATE: &[Rule] = &[
    Rule::new(CKA_SUBJECT, Bytes, REQUIRED, Absent),
    Rule::new(CKA_ID, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_ISSUER, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_SERIAL_NUMBER, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_VALUE, Bytes, REQUIRED, Absent),
    Rule::new(CKA_URL, Bytes, FIXED, Empty),
    Rule::new(CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Bytes, FIXED, Empty),
    Rule::new(CKA_HASH_OF_ISSUER_PUBLIC_KEY, Bytes, FIXED, Empty),
    Rule::new(
        CKA_JAVA_MIDP_SECURITY_DOMAIN,
        Ulong,
        FIXED,
        Default::Ulong(CK_SECURITY_DOMAIN_UNSPECIFIED),
    ),
    Rule::new(
        CKA_NAME_HASH_ALGORITHM,
        Ulong,
        FIXED,
        Default::Ulong(CKM_SHA_1),
    ),
];

const KEY: &[Rule] = &[
    Rule::new(CKA_KEY_TYPE, Ulong, REQUIRED, Absent),
    Rule::new(CKA_ID, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_START_DATE, Date, MODIFIABLE, Empty),
    Rule::new(CKA_END_DATE, Date, MODIFIABLE, Empty),
    Rule::new(CKA_DERIVE, Bool, MODIFIABLE, False),
    Rule::new(CKA_LOCAL, Bool, TOKEN_COMPUTED, Absent),
    Rule::new(CKA_KEY_GEN_MECHANISM, Ulong, TOKEN_COMPUTED, Absent),
    Rule::new(CKA_ALLOWED_MECHANISMS, Mechanisms, FIXED, Absent),
];

const SECRET_KEY: &[Rule] = &[
    Rule::new(CKA_SENSITIVE, Bool, MODIFIABLE | ONLY_TO_TRUE, True),
    Rule::new(CKA_ENCRYPT, Bool, MODIFIABLE, True),
    Rule::new(CKA_DECRYPT, Bool, MODIFIABLE, True),
    Rule::new(CKA_SIGN, Bool, MODIFIABLE, True),
    Rule::new(CKA_VERIFY, Bool, MODIFIABLE, True),
    Rule::new(CKA_WRAP, Bool, MODIFIABLE, True),
    Rule::new(CKA_UNWRAP, Bool, MODIFIABLE, True),
    Rule::new(CKA_EXTRACTABLE, Bool, MODIFIABLE | ONLY_TO_FALSE, True),
    Rule::new(CKA_ALWAYS_SENSITIVE, Bool, TOKEN_COMPUTED, Absent),
    Rule::new(CKA_NEVER_EXTRACTABLE, Bool, TOKEN_COMPUTED, Absent),
    Rule::new(CKA_CHECK_VALUE, Bytes, FIXED, Absent),
    Rule::new(
        CKA_WRAP_WITH_TRUSTED,
        Bool,
        MODIFIABLE | ONLY_TO_TRUE,
        False,
    ),
    Rule::new(CKA_TRUSTED, Bool, SO_ONLY_TRUE | MODIFIABLE, False),
    Rule::new(CKA_WRAP_TEMPLATE, Template, FIXED, Absent),
    Rule::new(CKA_UNWRAP_TEMPLATE, Template, FIXED, Absent),
    Rule::new(CKA_DERIVE_TEMPLATE, Template, FIXED, Absent),
];

/// AES and generic secrets share their value rules.
const SECRET_VALUE: &[Rule] = &[
    Rule::new(
        CKA_VALUE,
        Bytes,
        REQUIRED | NOT_ON_GENERATE | SECRET,
        Absent,
    ),
    Rule::new(CKA_VALUE_LEN, Ulong, FIXED, Absent),
];

const PUBLIC_KEY: &[Rule] = &[
    Rule::new(CKA_SUBJECT, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_ENCRYPT, Bool, MODIFIABLE, True),
    Rule::new(CKA_VERIFY, Bool, MODIFIABLE, True),
    Rule::new(CKA_VERIFY_RECOVER, Bool, MODIFIABLE, True),
    Rule::new(CKA_WRAP, Bool, MODIFIABLE, True),
    Rule::new(CKA_TRUSTED, Bool, SO_ONLY_TRUE | MODIFIABLE, False),
    Rule::new(CKA_WRAP_TEMPLATE, Template, FIXED, Absent),
    Rule::new(CKA_PUBLIC_KEY_INFO, Bytes, FIXED, Empty),
];

const RSA_PUBLIC: &[Rule] = &[
    Rule::new(CKA_MODULUS, Bytes, REQUIRED | NOT_ON_GENERATE, Absent),
    // Given to C_GenerateKeyPair (footnote 3); at create, computed and checked if given.
    Rule::new(CKA_MODULUS_BITS, Ulong, FIXED, Absent),
    Rule::new(CKA_PUBLIC_EXPONENT, Bytes, REQUIRED, Absent),
];

const EC_PUBLIC: &[Rule] = &[
    Rule::new(CKA_EC_PARAMS, Bytes, REQUIRED, Absent),
    Rule::new(CKA_EC_POINT, Bytes, REQUIRED | NOT_ON_GENERATE, Absent),
];

const PRIVATE_KEY: &[Rule] = &[
    Rule::new(CKA_SUBJECT, Bytes, MODIFIABLE, Empty),
    Rule::new(CKA_SENSITIVE, Bool, MODIFIABLE | ONLY_TO_TRUE, True),
    Rule::new(CKA_DECRYPT, Bool, MODIFIABLE, True),
    Rule::new(CKA_SIGN, Bool, MODIFIABLE, True),
    Rule::new(CKA_SIGN_RECOVER, Bool, MODIFIABLE, True),
    // False by default: an RSA key that unwraps may not do PKCS#1 v1.5 decryption (mech/rsa.rs).
    Rule::new(CKA_UNWRAP, Bool, MODIFIABLE, False),
    Rule::new(CKA_EXTRACTABLE, Bool, MODIFIABLE | ONLY_TO_FALSE, True),
    Rule::new(CKA_ALWAYS_SENSITIVE, Bool, TOKEN_COMPUTED, Absent),
    Rule::new(CKA_NEVER_EXTRACTABLE, Bool, TOKEN_COMPUTED, Absent),
    Rule::new(
        CKA_WRAP_WITH_TRUSTED,
        Bool,
        MODIFIABLE | ONLY_TO_TRUE,
        False,
    ),
    Rule::new(CKA_UNWRAP_TEMPLATE, Template, FIXED, Absent),
    Rule::new(CKA_DERIVE_TEMPLATE, Template, FIXED, Absent),
    Rule::new(CKA_ALWAYS_AUTHENTICATE, Bool, FIXED, False),
    Rule::new(CKA_PUBLIC_KEY_INFO, Bytes, FIXED, Empty),
];

const RSA_PRIVATE: &[Rule] = &[
    Rule::new(CKA_MODULUS, Bytes, REQUIRED | NOT_ON_GENERATE, Absent),
    Rule::new(CKA_PUBLIC_EXPONENT, Bytes, NOT_ON_GENERATE, Absent),
    Rule::new(
        CKA_PRIVATE_EXPONENT,
        Bytes,
        REQUIRED | NOT_ON_GENERATE | SECRET,
        Absent,
    ),
    Rule::new(CKA_PRIME_1, Bytes, NOT_ON_GENERATE | SECRET, Absent),
    Rule::new(CKA_PRIME_2, Bytes, NOT_ON_GENERATE | SECRET, Absent),
    Rule::new(CKA_EXPONENT_1, Bytes, NOT_ON_GENERATE | SECRET, Absent),
    Rule::new(CKA_EXPONENT_2, Bytes, NOT_ON_GENERATE | SECRET, Absent),
    Rule::new(CKA_COEFFICIENT, Bytes, NOT_ON_GENERATE | SECRET, Absent),
];

const EC_PRIVATE: &[Rule] = &[
    Rule::new(CKA_EC_PARAMS, Bytes, REQUIRED | NOT_ON_GENERATE, Absent),
    Rule::new(
        CKA_VALUE,
        Bytes,
        REQUIRED | NOT_ON_GENERATE | SECRET,
        Absent,
    ),
    // Not in the 3.0 tables; kept readable on private keys so applications can match pairs.
    Rule::new(CKA_EC_POINT, Bytes, NOT_ON_GENERATE, Absent),
];

/// The rule tables of one kind of object, most general first.
/// The rule tables of one kind of object, general to specific, and their merge.
pub struct SchemaDef {
    tables: &'static [&'static [Rule]],
    /// The tables folded into one list sorted by attribute type, the more specific table
    /// winning; made on first use. Every object creation, copy, seal and open asks for
    /// rules, and merging the tables each time cost more than the AES of an unwrap.
    merged: OnceLock<Vec<&'static Rule>>,
}

impl SchemaDef {
    const fn new(tables: &'static [&'static [Rule]]) -> Self {
        Self {
            tables,
            merged: OnceLock::new(),
        }
    }

    fn merged(&self) -> &[&'static Rule] {
        self.merged.get_or_init(|| {
            let mut merged: Vec<&'static Rule> = Vec::new();
            for table in self.tables.iter().rev() {
                for rule in table.iter() {
                    if !merged.iter().any(|known| known.kind == rule.kind) {
                        merged.push(rule);
                    }
                }
            }
            merged.sort_by_key(|rule| rule.kind);
            merged
        })
    }
}

/// A kind of object's rules.
pub type Schema = &'static SchemaDef;

/// No rules at all (what a schema-less object would have; none is ever built).
pub static NO_RULES: SchemaDef = SchemaDef::new(&[]);
static DATA_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, DATA]);
static CERTIFICATE_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, CERTIFICATE, X509_CERTIFICATE]);
static SECRET_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, KEY, SECRET_KEY, SECRET_VALUE]);
static RSA_PUBLIC_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, KEY, PUBLIC_KEY, RSA_PUBLIC]);
static EC_PUBLIC_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, KEY, PUBLIC_KEY, EC_PUBLIC]);
static RSA_PRIVATE_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, KEY, PRIVATE_KEY, RSA_PRIVATE]);
static EC_PRIVATE_SCHEMA: SchemaDef = SchemaDef::new(&[COMMON, KEY, PRIVATE_KEY, EC_PRIVATE]);

/// The schema of a class and key type; `None` when we do not store such objects.
pub fn schema(class: CK_OBJECT_CLASS, key_type: Option<CK_KEY_TYPE>) -> Option<Schema> {
    Some(match (class, key_type) {
        (CKO_DATA, _) => &DATA_SCHEMA,
        (CKO_CERTIFICATE, _) => &CERTIFICATE_SCHEMA,
        (CKO_SECRET_KEY, Some(CKK_AES | CKK_GENERIC_SECRET)) => &SECRET_SCHEMA,
        (CKO_PUBLIC_KEY, Some(CKK_RSA)) => &RSA_PUBLIC_SCHEMA,
        (CKO_PUBLIC_KEY, Some(CKK_EC | CKK_EC_EDWARDS)) => &EC_PUBLIC_SCHEMA,
        (CKO_PRIVATE_KEY, Some(CKK_RSA)) => &RSA_PRIVATE_SCHEMA,
        (CKO_PRIVATE_KEY, Some(CKK_EC | CKK_EC_EDWARDS)) => &EC_PRIVATE_SCHEMA,
        _ => return None,
    })
}

/// The rule for `kind` in `schema`; a later (more specific) table wins.
pub fn rule(schema: Schema, kind: CK_ATTRIBUTE_TYPE) -> Option<&'static Rule> {
    let merged = schema.merged();
    merged
        .binary_search_by_key(&kind, |rule| rule.kind)
        .ok()
        .and_then(|index| merged.get(index).copied())
}

/// Every rule of a schema, specific tables overriding general ones, by attribute type.
pub fn rules(schema: Schema) -> impl Iterator<Item = &'static Rule> {
    schema.merged().iter().copied()
}

/// Default CKA_PRIVATE per class: keys that hold secrets are private, the rest public.
pub fn default_private(class: CK_OBJECT_CLASS) -> bool {
    matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_tables_override_general_ones() {
        let schema = schema(CKO_CERTIFICATE, None).expect("certificates have a schema");
        let id = rule(schema, CKA_ID).expect("certificates have CKA_ID");
        assert!(id.has(MODIFIABLE));
        assert_eq!(
            rules(schema)
                .filter(|rule| rule.kind == CKA_START_DATE)
                .count(),
            1
        );
    }

    #[test]
    fn secret_key_value_is_secret_and_required() {
        let schema = schema(CKO_SECRET_KEY, Some(CKK_AES)).expect("AES keys have a schema");
        let value = rule(schema, CKA_VALUE).expect("AES keys have CKA_VALUE");
        assert!(value.has(SECRET) && value.has(REQUIRED) && value.has(NOT_ON_GENERATE));
        assert!(schema_has_no_duplicates(schema));
    }

    fn schema_has_no_duplicates(schema: Schema) -> bool {
        let kinds: Vec<_> = rules(schema).map(|rule| rule.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == kinds.len()
    }

    #[test]
    fn unknown_classes_have_no_schema() {
        assert!(schema(CKO_SECRET_KEY, Some(CKK_DES3)).is_none());
        assert!(schema(CKO_HW_FEATURE, None).is_none());
    }
}
