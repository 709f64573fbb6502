//! Spec names for the numbers tokens speak in (CKR_, CKA_, CKM_, CKO_, CKK_), for reports.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::error::{Rv, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{AttributeType, KeyType, ObjectClass};
use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_KEY_TYPE, CK_MECHANISM_TYPE, CK_OBJECT_CLASS, CK_RV};

/// CKM_AES_KEY_WRAP_KWP, PKCS#11 3.0's number for RFC 5649 (SoftHSMv2 uses 0x210A).
pub const CKM_AES_KEY_WRAP_KWP: CK_MECHANISM_TYPE = 0x210B;

/// keyferry's same-root clone mechanism: CKM_VENDOR_DEFINED | "KF" | 1 (README.md).
pub const CKM_KEYFERRY_DOMAIN_WRAP: CK_MECHANISM_TYPE =
    cryptoki_sys::CKM_VENDOR_DEFINED | 0x4b46_0001;

/// CKA_LABEL of a keyferry token's domain key object.
pub const DOMAIN_KEY_LABEL: &str = "keyferry-domain-key";

/// "CKR_PIN_INCORRECT" for 0xA0.
pub fn rv(rv: CK_RV) -> String {
    match Rv::from(rv) {
        Rv::Ok => "CKR_OK".to_owned(),
        Rv::Error(RvError::VendorDefined(code)) => format!("CKR_VENDOR_DEFINED+{code:#x}"),
        Rv::Error(error) => format!("CKR_{}", screaming_snake(&format!("{error:?}"))),
    }
}

/// The CKR_ name of a cryptoki error, or its own text when it is not a return code.
pub fn cryptoki_error(error: &cryptoki::error::Error) -> String {
    match error {
        cryptoki::error::Error::Pkcs11(rv_error, function) => {
            format!(
                "{function:?} returned CKR_{}",
                screaming_snake(&format!("{rv_error:?}"))
            )
        }
        other => other.to_string(),
    }
}

/// The return code inside a cryptoki error, when it carries one.
pub fn cryptoki_rv(error: &cryptoki::error::Error) -> Option<String> {
    match error {
        cryptoki::error::Error::Pkcs11(rv_error, _) => {
            Some(format!("CKR_{}", screaming_snake(&format!("{rv_error:?}"))))
        }
        _ => None,
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(character.to_ascii_uppercase());
    }
    out
}

/// "CKA_LABEL" for 0x3.
///
/// Each name is made once and kept: a migration's plan and report name the same few dozen
/// attributes for every object, and the tool only ever asks about a bounded set.
pub fn attribute(kind: CK_ATTRIBUTE_TYPE) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<CK_ATTRIBUTE_TYPE, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    names
        .entry(kind)
        .or_insert_with(|| String::leak(attribute_name(kind)))
}

fn attribute_name(kind: CK_ATTRIBUTE_TYPE) -> String {
    match kind {
        cryptoki_sys::CKA_WRAP_TEMPLATE => return "CKA_WRAP_TEMPLATE".to_owned(),
        cryptoki_sys::CKA_UNWRAP_TEMPLATE => return "CKA_UNWRAP_TEMPLATE".to_owned(),
        cryptoki_sys::CKA_DERIVE_TEMPLATE => return "CKA_DERIVE_TEMPLATE".to_owned(),
        _ => {}
    }
    match AttributeType::try_from(kind) {
        Ok(attribute) => attribute.to_string(),
        Err(_) => format!("CKA_{kind:#x}"),
    }
}

/// "CKM_AES_KEY_WRAP_PAD" for 0x210A.
pub fn mechanism(kind: CK_MECHANISM_TYPE) -> String {
    match kind {
        CKM_AES_KEY_WRAP_KWP => "CKM_AES_KEY_WRAP_KWP".to_owned(),
        CKM_KEYFERRY_DOMAIN_WRAP => "CKM_KEYFERRY_DOMAIN_WRAP".to_owned(),
        cryptoki_sys::CKM_RSA_AES_KEY_WRAP => "CKM_RSA_AES_KEY_WRAP".to_owned(),
        _ => match MechanismType::try_from(kind) {
            Ok(mechanism) => mechanism.to_string(),
            Err(_) => format!("{kind:#x}"),
        },
    }
}

/// A short class name: "secret", "private", "public", "cert", "data".
pub fn class(class: CK_OBJECT_CLASS) -> String {
    match class {
        cryptoki_sys::CKO_SECRET_KEY => "secret".to_owned(),
        cryptoki_sys::CKO_PRIVATE_KEY => "private".to_owned(),
        cryptoki_sys::CKO_PUBLIC_KEY => "public".to_owned(),
        cryptoki_sys::CKO_CERTIFICATE => "cert".to_owned(),
        cryptoki_sys::CKO_DATA => "data".to_owned(),
        other => ObjectClass::try_from(other)
            .map(|class| class.to_string())
            .unwrap_or_else(|_| format!("CKO_{other:#x}")),
    }
}

/// A short key type name: "AES", "GENERIC", "RSA", "EC", "EC_EDWARDS".
pub fn key_type(key_type: CK_KEY_TYPE) -> String {
    match key_type {
        cryptoki_sys::CKK_GENERIC_SECRET => "GENERIC".to_owned(),
        _ => KeyType::try_from(key_type)
            .map(|kind| kind.to_string().trim_start_matches("CKK_").to_owned())
            .unwrap_or_else(|_| format!("CKK_{key_type:#x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_read_as_in_the_spec() {
        assert_eq!(rv(cryptoki_sys::CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
        assert_eq!(rv(cryptoki_sys::CKR_OK), "CKR_OK");
        assert_eq!(
            rv(cryptoki_sys::CKR_WRAPPED_KEY_INVALID),
            "CKR_WRAPPED_KEY_INVALID"
        );
        assert_eq!(
            rv(cryptoki_sys::CKR_CRYPTOKI_NOT_INITIALIZED),
            "CKR_CRYPTOKI_NOT_INITIALIZED"
        );
    }

    #[test]
    fn mechanisms_and_attributes_read_as_in_the_spec() {
        assert_eq!(mechanism(0x210B), "CKM_AES_KEY_WRAP_KWP");
        assert_eq!(mechanism(0x210A), "CKM_AES_KEY_WRAP_PAD");
        assert_eq!(attribute(cryptoki_sys::CKA_LABEL), "CKA_LABEL");
        assert_eq!(
            attribute(cryptoki_sys::CKA_UNWRAP_TEMPLATE),
            "CKA_UNWRAP_TEMPLATE"
        );
        assert_eq!(key_type(cryptoki_sys::CKK_AES), "AES");
        assert_eq!(class(cryptoki_sys::CKO_PRIVATE_KEY), "private");
    }
}
