//! C_WrapKey, C_UnwrapKey and C_DeriveKey (PKCS#11 3.0 §5.14): which keys may leave and
//! enter, under which wrapping keys and templates, and keys derived from others.

use pkcs11_sys::*;

use crate::error::{Error, Result};
use crate::mech::params::Parameter;
use crate::mech::{self, Mechanism, domain, pkcs8};
use crate::token::Module;
use crate::token::attr::{Attribute, Value};
use crate::token::crypto::{Output, allowed, fixed_output, key_class};
use crate::token::object::{Object, Origin, Read};
use crate::token::slot::Login;

/// Checks on a wrapping or unwrapping key, with the error codes of its role.
struct KeyRole {
    type_inconsistent: Error,
    size_range: Error,
    usage: CK_ATTRIBUTE_TYPE,
}

fn wrapping_role() -> KeyRole {
    KeyRole {
        type_inconsistent: Error::WrappingKeyTypeInconsistent,
        size_range: Error::WrappingKeySizeRange,
        usage: CKA_WRAP,
    }
}

fn derive_role() -> KeyRole {
    KeyRole {
        type_inconsistent: Error::KeyTypeInconsistent,
        size_range: Error::KeySizeRange,
        usage: CKA_DERIVE,
    }
}

fn unwrapping_role() -> KeyRole {
    KeyRole {
        type_inconsistent: Error::UnwrappingKeyTypeInconsistent,
        size_range: Error::UnwrappingKeySizeRange,
        usage: CKA_UNWRAP,
    }
}

/// Every check a wrapping, unwrapping or base key's role needs.
fn check_role_key(
    key: &Object,
    role: KeyRole,
    mechanism: &dyn Mechanism,
    kind: CK_MECHANISM_TYPE,
) -> Result<()> {
    let type_ok = key.class() == key_class(mechanism, role.usage)
        && key
            .key_type()
            .is_some_and(|t| mechanism.key_types().contains(&t));
    if !type_ok {
        return Err(role.type_inconsistent);
    }
    if !key.flag(role.usage) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    allowed(key, kind)?;
    if key.is_locked() {
        return Err(Error::UserNotLoggedIn);
    }
    // A secret key's length is checked here, with the role's own error code; a key
    // pair's size is the mechanism's to judge.
    if !mechanism.asymmetric() {
        let value = key.bytes(CKA_VALUE).ok_or(role.type_inconsistent)?;
        if !mechanism.key_size_ok(value.len()) {
            return Err(role.size_range);
        }
    }
    Ok(())
}

/// CBC_PAD and GCM wrapping are opt-in: only under a key whose CKA_ALLOWED_MECHANISMS
/// names the mechanism. Unwrapping with CBC_PAD answers whether a chosen block pads
/// correctly — a padding oracle that decrypts anything under the key unless its unwrap
/// template pins the key type and length — and GCM wrapping takes the caller's IV, so a
/// reused IV reveals wrapped keys. A key configured for them has been thought about;
/// RFC 3394/5649 serve every other case.
fn check_opt_in(key: &Object, kind: CK_MECHANISM_TYPE) -> Result<()> {
    if !matches!(kind, CKM_AES_CBC_PAD | CKM_AES_GCM) {
        return Ok(());
    }
    let listed = key.bytes(CKA_ALLOWED_MECHANISMS).is_some_and(|list| {
        list.chunks_exact(std::mem::size_of::<CK_MECHANISM_TYPE>())
            .any(|chunk| {
                chunk
                    .try_into()
                    .map(CK_MECHANISM_TYPE::from_ne_bytes)
                    .is_ok_and(|m| m == kind)
            })
    });
    if listed {
        Ok(())
    } else {
        Err(Error::MechanismInvalid(kind))
    }
}

/// The nested template a key carries in `kind`, if any.
fn nested(key: &Object, kind: CK_ATTRIBUTE_TYPE) -> Vec<Attribute> {
    match key.read(kind) {
        Read::Value(Value::Nested(template)) => template.clone(),
        _ => Vec::new(),
    }
}

/// Whether `key` may leave the token wrapped by `kek` (PKCS#11 3.0 §4.9, §5.14.1):
/// extractable, trusted wrapping where required, and matching the wrapping key's
/// CKA_WRAP_TEMPLATE byte for byte.
fn check_wrappable(key: &Object, kek: &Object) -> Result<()> {
    // Secret keys leave as their value, private keys as PKCS#8; public keys,
    // certificates and data are not secret and never wrapped.
    if !matches!(key.class(), CKO_SECRET_KEY | CKO_PRIVATE_KEY) {
        return Err(Error::KeyNotWrappable);
    }
    if !key.flag(CKA_EXTRACTABLE) {
        return Err(Error::KeyUnextractable);
    }
    if key.flag(CKA_WRAP_WITH_TRUSTED) && !kek.flag(CKA_TRUSTED) {
        return Err(Error::KeyNotWrappable);
    }
    if !key.matches(&nested(kek, CKA_WRAP_TEMPLATE)) {
        return Err(Error::KeyNotWrappable);
    }
    if key.is_locked() {
        return Err(Error::UserNotLoggedIn);
    }
    Ok(())
}

/// The caller's template completed by a key's CKA_UNWRAP_TEMPLATE or CKA_DERIVE_TEMPLATE
/// (`kind`); an attribute given both ways must agree byte for byte.
fn with_template_of(
    template: &[Attribute],
    key: &Object,
    kind: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<Attribute>> {
    let mut merged = template.to_vec();
    for required in nested(key, kind) {
        match template.iter().find(|given| given.kind == required.kind) {
            Some(given) if given.value != required.value => {
                return Err(Error::TemplateInconsistent(required.kind));
            }
            Some(_) => {}
            None => merged.push(required),
        }
    }
    Ok(merged)
}

/// SoftHSMv2 2.6.1 pads a key that is not whole 64-bit blocks with zero bytes before
/// wrapping it, under RFC 3394 and under RFC 5649 alike, so its blob of a 20-byte secret
/// opens to 24 bytes. When the template's CKA_VALUE_LEN says the key is shorter by less
/// than a block and the surplus is all zero, the surplus is that padding and goes.
fn strip_zero_padding(material: &mut Vec<u8>, value_len: Option<CK_ULONG>) {
    let Some(len) = value_len.and_then(|len| usize::try_from(len).ok()) else {
        return;
    };
    let surplus = material.get(len..).unwrap_or_default();
    if !surplus.is_empty() && surplus.len() < 8 && surplus.iter().all(|byte| *byte == 0) {
        material.truncate(len);
    }
}

/// The same SoftHSMv2 habit for private keys: its blob of a PKCS#8 key whose DER is not
/// whole 64-bit blocks opens with up to seven zero bytes after the DER. The DER's own
/// length says where the key ends; a surplus of zero bytes shorter than a block goes.
fn strip_der_padding(material: &mut Vec<u8>) {
    let total = match material.as_slice() {
        [0x30, len, ..] if *len < 0x80 => 2 + usize::from(*len),
        [0x30, 0x81, len, ..] => 3 + usize::from(*len),
        [0x30, 0x82, high, low, ..] => 4 + (usize::from(*high) << 8 | usize::from(*low)),
        _ => return,
    };
    let surplus = material.get(total..).unwrap_or_default();
    if !surplus.is_empty() && surplus.len() < 8 && surplus.iter().all(|byte| *byte == 0) {
        material.truncate(total);
    }
}

/// The domain key, if `kek` is this token's domain key object; `not_it` otherwise.
fn domain_key_of(
    session: &crate::token::session::Session,
    kek: &Object,
    not_it: Error,
) -> Result<crate::store::keys::Key256> {
    let domain_key = session.token.lock()?.domain_key()?;
    let same: bool = kek
        .bytes(CKA_VALUE)
        .is_some_and(|value| subtle::ConstantTimeEq::ct_eq(value, &domain_key.expose()[..]).into());
    if same { Ok(domain_key) } else { Err(not_it) }
}

/// What a domain clone's caller may choose: where it lives and what it is called.
const CLONE_CHOICES: [CK_ATTRIBUTE_TYPE; 3] = [CKA_TOKEN, CKA_LABEL, CKA_ID];

impl Module {
    /// C_UnwrapKey with `CKM_KEYFERRY_DOMAIN_WRAP`: the object exactly as it was wrapped
    /// (LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, KEY_GEN_MECHANISM included) with a new
    /// CKA_UNIQUE_ID. The template may set CKA_TOKEN, CKA_LABEL and CKA_ID; any other
    /// attribute it names must equal the wrapped one.
    fn domain_unwrap(
        &self,
        session: &crate::token::session::Session,
        kek: &Object,
        blob: &[u8],
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let domain_key = domain_key_of(session, kek, Error::UnwrappingKeyTypeInconsistent)?;
        let encoded = domain::open(&domain_key, blob)?;
        let mut attributes =
            crate::token::attr::decode(&encoded).ok_or(Error::WrappedKeyInvalid)?;
        for given in template {
            match attributes
                .iter_mut()
                .find(|wrapped| wrapped.kind == given.kind)
            {
                Some(wrapped) if CLONE_CHOICES.contains(&given.kind) => {
                    wrapped.value = given.value.clone();
                }
                Some(wrapped) if wrapped.value == given.value => {}
                None if CLONE_CHOICES.contains(&given.kind) => attributes.push(given.clone()),
                _ => return Err(Error::TemplateInconsistent(given.kind)),
            }
        }
        let object = Object::from_stored(attributes).map_err(|_| Error::WrappedKeyInvalid)?;
        let mut state = session.token.lock()?;
        state.refresh_before_adding(&object)?;
        self.add(session, &mut state, object)
    }

    /// C_WrapKey: the blob, with the length-query protocol.
    pub fn wrap_key(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        wrapping_key: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        capacity: Option<usize>,
    ) -> Result<Output> {
        let session = self.session(handle)?;
        let mechanism = mech::lookup_for(kind, CKF_WRAP)?;
        let (kek, key) = self.two_objects_as(
            &session,
            (wrapping_key, Error::WrappingKeyHandleInvalid),
            (key, Error::KeyHandleInvalid),
        )?;
        let kek = kek?;
        check_role_key(&kek, wrapping_role(), mechanism, kind)?;
        check_opt_in(&kek, kind)?;
        let key = key?;
        if kind == domain::CKM_KEYFERRY_DOMAIN_WRAP {
            parameter.none()?;
            let domain_key = domain_key_of(&session, &kek, Error::WrappingKeyTypeInconsistent)?;
            if key.is_locked() {
                return Err(Error::UserNotLoggedIn);
            }
            // Every attribute travels, secrets and policy included; the clone gets its own
            // CKA_UNIQUE_ID.
            let attributes: Vec<Attribute> = key
                .attributes()
                .filter(|(kind, _)| *kind != CKA_UNIQUE_ID)
                .map(|(kind, value)| Attribute::new(kind, value.clone()))
                .collect();
            let encoded = zeroize::Zeroizing::new(crate::token::attr::encode(&attributes));
            let blob = domain::seal(&domain_key, &encoded)?;
            return Ok(
                fixed_output(blob.len(), capacity).unwrap_or_else(|| Output::Data(blob.into()))
            );
        }
        check_wrappable(&key, &kek)?;
        let material = match key.class() {
            CKO_PRIVATE_KEY => pkcs8::encode(&key)?,
            _ => zeroize::Zeroizing::new(
                key.bytes(CKA_VALUE).ok_or(Error::KeyNotWrappable)?.to_vec(),
            ),
        };
        let blob = mechanism.key_wrap(&kek, parameter, &material)?;
        Ok(fixed_output(blob.len(), capacity).unwrap_or_else(|| Output::Data(blob.into())))
    }

    /// C_UnwrapKey: a new secret key from a blob and a template.
    pub fn unwrap_key(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        unwrapping_key: CK_OBJECT_HANDLE,
        blob: &[u8],
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let mechanism = mech::lookup_for(kind, CKF_UNWRAP)?;
        let (kek, login) =
            self.object_and_login(&session, unwrapping_key, Error::UnwrappingKeyHandleInvalid)?;
        check_role_key(&kek, unwrapping_role(), mechanism, kind)?;
        check_opt_in(&kek, kind)?;
        if kind == domain::CKM_KEYFERRY_DOMAIN_WRAP {
            parameter.none()?;
            return self.domain_unwrap(&session, &kek, blob, template);
        }
        let template = with_template_of(template, &kek, CKA_UNWRAP_TEMPLATE)?;
        let class = template
            .iter()
            .find(|a| a.kind == CKA_CLASS)
            .ok_or(Error::TemplateIncomplete(CKA_CLASS))?;
        let class = crate::token::attr::parse_ulong(CKA_CLASS, &class.value)?;
        if !matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY) {
            return Err(Error::TemplateInconsistent(CKA_CLASS));
        }
        let mut key = Object::from_template(&template, &[], Origin::Unwrap, login == Login::So)?;
        let mut material = mechanism.key_unwrap(&kek, parameter, blob)?;
        if class == CKO_PRIVATE_KEY {
            let key_type = key
                .key_type()
                .ok_or(Error::TemplateIncomplete(CKA_KEY_TYPE))?;
            strip_der_padding(&mut material);
            for item in pkcs8::decode(key_type, &material, None)? {
                key.put(item.kind, item.value);
            }
        } else {
            strip_zero_padding(&mut material, key.ulong(CKA_VALUE_LEN));
            key.put(CKA_VALUE, Value::Bytes(material));
        }
        key.finish(Origin::Unwrap).map_err(|err| match err {
            // The blob held a value the key type cannot have.
            Error::AttributeValueInvalid(CKA_VALUE) => Error::WrappedKeyInvalid,
            other => other,
        })?;
        let mut state = session.token.lock()?;
        state.refresh_before_adding(&key)?;
        self.add(&session, &mut state, key)
    }

    /// C_DeriveKey: a new secret key whose value a mechanism computes from a base key.
    pub fn derive_key(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        base: CK_OBJECT_HANDLE,
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let mechanism = mech::lookup_for(kind, CKF_DERIVE)?;
        let (base, login) = self.object_and_login(&session, base, Error::KeyHandleInvalid)?;
        check_role_key(&base, derive_role(), mechanism, kind)?;
        let template = with_template_of(template, &base, CKA_DERIVE_TEMPLATE)?;
        let implied = [Attribute::new(CKA_CLASS, Value::ulong(CKO_SECRET_KEY))];
        let is_so = login == Login::So;
        let origin = Origin::Derive {
            mechanism: kind,
            always_sensitive: base.flag(CKA_ALWAYS_SENSITIVE),
            never_extractable: base.flag(CKA_NEVER_EXTRACTABLE),
        };
        let mut key = Object::from_template(&template, &implied, origin, is_so)?;
        let wanted = key
            .ulong(CKA_VALUE_LEN)
            .map(|len| usize::try_from(len).unwrap_or(usize::MAX));
        let mut material = mechanism.key_derive(&base, parameter, wanted)?;
        // CKA_VALUE_LEN takes the leading bytes; without it the key takes them all.
        if let Some(len) = key.ulong(CKA_VALUE_LEN) {
            let len =
                usize::try_from(len).map_err(|_| Error::TemplateInconsistent(CKA_VALUE_LEN))?;
            if len == 0 || len > material.len() {
                return Err(Error::TemplateInconsistent(CKA_VALUE_LEN));
            }
            material.truncate(len);
        }
        key.put(CKA_VALUE, Value::Bytes(material));
        key.finish(origin).map_err(|err| match err {
            Error::AttributeValueInvalid(CKA_VALUE) => Error::TemplateInconsistent(CKA_VALUE_LEN),
            other => other,
        })?;
        let mut state = session.token.lock()?;
        state.refresh_before_adding(&key)?;
        self.add(&session, &mut state, key)
    }
}
