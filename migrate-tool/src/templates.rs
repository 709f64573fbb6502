//! Which attributes a token refuses when it creates objects, learnt on session objects before
//! any real object is written. SoftHSMv2 2.6.1 leaves an empty token object behind every
//! C_UnwrapKey or C_CreateObject that fails on an attribute, so the real call must never be
//! the experiment.

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};

use crate::inventory;
use crate::names;
use crate::p11raw::{RawAttribute, RawError, RawMechanism, RawValue, Read};
use crate::samples;
use crate::token::Token;

/// One attribute a token refused for one class of object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// "secret", "private", "public", "cert", "data".
    pub class: String,
    /// CKA_ name.
    pub attribute: String,
    /// The code it answered.
    pub rv: String,
}

/// Attributes that are the object's material or identity, set by every base template.
const MATERIAL: [CK_ATTRIBUTE_TYPE; 7] = [
    CKA_KEY_TYPE,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_VALUE,
    CKA_CERTIFICATE_TYPE,
];

/// A harmless value of `kind` for a probe object of `class`.
fn sample(class: CK_OBJECT_CLASS, kind: CK_ATTRIBUTE_TYPE) -> Option<RawAttribute> {
    let flag = |value| Some(RawAttribute::flag(kind, value));
    match kind {
        CKA_LABEL => Some(RawAttribute::bytes(kind, b"keyferry-probe".to_vec())),
        CKA_ID => Some(RawAttribute::bytes(kind, vec![1])),
        CKA_START_DATE | CKA_END_DATE => Some(RawAttribute::bytes(kind, b"20261126".to_vec())),
        CKA_SUBJECT | CKA_ISSUER => Some(RawAttribute::bytes(
            kind,
            samples::bytes(samples::RSA_CERTIFICATE_SUBJECT),
        )),
        CKA_SERIAL_NUMBER => Some(RawAttribute::bytes(
            kind,
            samples::bytes(samples::RSA_CERTIFICATE_SERIAL),
        )),
        CKA_CERTIFICATE_CATEGORY => Some(RawAttribute::ulong(kind, 0)),
        CKA_APPLICATION => Some(RawAttribute::bytes(kind, b"keyferry".to_vec())),
        CKA_OBJECT_ID => Some(RawAttribute::bytes(
            kind,
            vec![0x06, 0x03, 0x2a, 0x03, 0x04],
        )),
        CKA_ALLOWED_MECHANISMS => {
            let mechanism = if class == CKO_SECRET_KEY {
                CKM_AES_ECB
            } else {
                CKM_ECDSA
            };
            Some(RawAttribute::bytes(kind, mechanism.to_ne_bytes().to_vec()))
        }
        CKA_WRAP_TEMPLATE | CKA_UNWRAP_TEMPLATE | CKA_DERIVE_TEMPLATE => Some(RawAttribute {
            kind,
            value: RawValue::Template(vec![RawAttribute::flag(CKA_SENSITIVE, true)]),
        }),
        CKA_WRAP_WITH_TRUSTED | CKA_ALWAYS_AUTHENTICATE => flag(false),
        _ if MATERIAL.contains(&kind) => None,
        // Usage flags and the remaining booleans (PRIVATE, MODIFIABLE, COPYABLE, DESTROYABLE,
        // SENSITIVE, EXTRACTABLE): true is a value every token takes on some object.
        _ => flag(true),
    }
}

/// Everything the probe made, destroyed at the end.
struct Made<'a> {
    session: &'a Session,
    handles: Vec<ObjectHandle>,
}

impl Made<'_> {
    fn keep(&mut self, outcome: Result<ObjectHandle, RawError>) -> Result<(), RawError> {
        outcome.map(|handle| self.handles.push(handle))
    }
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            let _ = self.session.destroy_object(handle);
        }
    }
}

/// Tries every copied attribute of every class on session objects; returns the refusals and
/// whether a generic secret's unwrap template may carry CKA_VALUE_LEN.
pub fn probe(
    token: &Token,
    session: &Session,
    kek: ObjectHandle,
    kwp: CK_MECHANISM_TYPE,
) -> (Vec<Refusal>, bool) {
    let raw = &token.module.raw;
    let mechanism = RawMechanism::Plain(kwp);
    let mut made = Made {
        session,
        handles: Vec::new(),
    };
    let mut refusals = Vec::new();
    let base = |class, extra: &[RawAttribute]| {
        let mut template = vec![
            RawAttribute::ulong(CKA_CLASS, class),
            RawAttribute::flag(CKA_TOKEN, false),
        ];
        template.extend_from_slice(extra);
        template
    };
    let secret_value = |bytes: &[u8], key_type| {
        let template = base(
            CKO_SECRET_KEY,
            &[
                RawAttribute::ulong(CKA_KEY_TYPE, key_type),
                RawAttribute::flag(CKA_SENSITIVE, false),
                RawAttribute::flag(CKA_EXTRACTABLE, true),
                RawAttribute::bytes(CKA_VALUE, bytes.to_vec()),
            ],
        );
        raw.create_object(session, &template)
    };
    let unwrap_base = |class, key_type| {
        base(
            class,
            &[
                RawAttribute::ulong(CKA_KEY_TYPE, key_type),
                RawAttribute::flag(CKA_SENSITIVE, false),
                RawAttribute::flag(CKA_EXTRACTABLE, true),
            ],
        )
    };
    let mut generic_value_len = false;
    // Secret keys, by unwrapping an AES key; CKA_VALUE_LEN with a 20-byte generic secret.
    if let Ok(aes) = secret_value(&[0x5a; 16], CKK_AES)
        && made.keep(Ok(aes)).is_ok()
        && let Ok(blob) = raw.wrap_key(session, &mechanism, kek, aes)
    {
        let template = unwrap_base(CKO_SECRET_KEY, CKK_AES);
        try_each(CKO_SECRET_KEY, &template, &mut refusals, |attempt| {
            made.keep(raw.unwrap_key(session, &mechanism, kek, &blob, attempt))
        });
    }
    if let Ok(generic) = secret_value(&[0x5a; 20], CKK_GENERIC_SECRET)
        && made.keep(Ok(generic)).is_ok()
        && let Ok(blob) = raw.wrap_key(session, &mechanism, kek, generic)
    {
        let mut template = unwrap_base(CKO_SECRET_KEY, CKK_GENERIC_SECRET);
        template.push(RawAttribute::ulong(CKA_VALUE_LEN, 20));
        generic_value_len = made
            .keep(raw.unwrap_key(session, &mechanism, kek, &blob, &template))
            .is_ok();
    }
    // Private and public keys, with a P-256 pair made for the purpose.
    let params = RawAttribute::bytes(CKA_EC_PARAMS, crate::transport::P256_PARAMS.to_vec());
    if let Ok((public, private)) = crate::transport::extractable_ec_pair(session) {
        made.handles.extend([public, private]);
        if let Ok(blob) = raw.wrap_key(session, &mechanism, kek, private) {
            let template = unwrap_base(CKO_PRIVATE_KEY, CKK_EC);
            try_each(CKO_PRIVATE_KEY, &template, &mut refusals, |attempt| {
                made.keep(raw.unwrap_key(session, &mechanism, kek, &blob, attempt))
            });
        }
        if let Ok(Read::Value(RawValue::Bytes(point))) =
            raw.attribute(session, public, CKA_EC_POINT)
        {
            let template = base(
                CKO_PUBLIC_KEY,
                &[
                    RawAttribute::ulong(CKA_KEY_TYPE, CKK_EC),
                    params,
                    RawAttribute::bytes(CKA_EC_POINT, point),
                ],
            );
            try_each(CKO_PUBLIC_KEY, &template, &mut refusals, |attempt| {
                made.keep(raw.create_object(session, attempt))
            });
        }
    }
    let certificate = base(
        CKO_CERTIFICATE,
        &[
            RawAttribute::ulong(CKA_CERTIFICATE_TYPE, CKC_X_509),
            RawAttribute::bytes(CKA_VALUE, samples::bytes(samples::RSA_CERTIFICATE)),
            RawAttribute::bytes(
                CKA_SUBJECT,
                samples::bytes(samples::RSA_CERTIFICATE_SUBJECT),
            ),
        ],
    );
    try_each(CKO_CERTIFICATE, &certificate, &mut refusals, |attempt| {
        made.keep(raw.create_object(session, attempt))
    });
    let data = base(
        CKO_DATA,
        &[RawAttribute::bytes(CKA_VALUE, b"keyferry".to_vec())],
    );
    try_each(CKO_DATA, &data, &mut refusals, |attempt| {
        made.keep(raw.create_object(session, attempt))
    });
    (refusals, generic_value_len)
}

/// The base template alone, then with each copied attribute of `class` added on its own.
fn try_each(
    class: CK_OBJECT_CLASS,
    template: &[RawAttribute],
    refusals: &mut Vec<Refusal>,
    mut attempt: impl FnMut(&[RawAttribute]) -> Result<(), RawError>,
) {
    if attempt(template).is_err() {
        // The class cannot be made at all this way; nothing to learn per attribute.
        return;
    }
    for kind in inventory::copied(class) {
        if template.iter().any(|attribute| attribute.kind == kind) {
            continue;
        }
        let Some(candidate) = sample(class, kind) else {
            continue;
        };
        let mut with = template.to_vec();
        with.push(candidate);
        if let Err(err) = attempt(&with) {
            refusals.push(Refusal {
                class: names::class(class),
                attribute: names::attribute(kind).to_owned(),
                rv: names::rv(err.rv),
            });
        }
    }
}
