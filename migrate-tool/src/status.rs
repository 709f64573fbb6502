//! `keyferry status` and `keyferry sync`: which copies of each key exist in which keystore,
//! which are out of sync and why — and bringing a target back in line.
//!
//! A logical key is matched by class, key type, CKA_LABEL and CKA_ID and confirmed by a
//! check value; a copy with the same CKA_ID and an equal check value under another label is
//! the same key whose label drifted.

use std::collections::BTreeMap;

use cryptoki_sys::*;
use serde::Serialize;

use crate::check;
use crate::error::MigrateError;
use crate::inventory::{Identity, Object};
use crate::names;
use crate::plan;
use crate::token::Token;

/// Attributes a keystore may change on a key without it becoming another key; drift in
/// them is reported and `sync` sets them back.
pub const MODIFIABLE: [CK_ATTRIBUTE_TYPE; 10] = [
    CKA_LABEL,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_START_DATE,
    CKA_END_DATE,
];

/// One keystore's copy of a logical key.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Copy {
    /// The reference copy (the first keystore that has the key).
    Reference,
    /// Same value, same modifiable attributes.
    InSync,
    /// Same value; these attributes differ (name: value there).
    Drifted {
        /// "CKA_LABEL (\"c-renamed\")", "CKA_ENCRYPT (false)".
        attributes: Vec<String>,
    },
    /// Same identity, another value.
    Different {
        /// The check values, or why they could not be compared.
        reason: String,
    },
    /// Not in this keystore.
    Missing,
}

impl Copy {
    /// The word a table shows.
    pub fn word(&self) -> String {
        match self {
            Self::Reference => "reference".to_owned(),
            Self::InSync => "in sync".to_owned(),
            Self::Drifted { attributes } => format!("drifted: {}", attributes.join(", ")),
            Self::Different { .. } => "different value".to_owned(),
            Self::Missing => "missing".to_owned(),
        }
    }
}

/// A logical key across keystores.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// "secret AES \"kek\" id 01".
    pub key: String,
    /// One entry per keystore, in the order given.
    pub copies: Vec<Copy>,
}

impl Row {
    /// Whether every copy is present and in sync.
    pub fn in_sync(&self) -> bool {
        self.copies
            .iter()
            .all(|copy| matches!(copy, Copy::Reference | Copy::InSync))
    }
}

/// The objects a keystore holds, domain keys left out.
fn holdings(token: &Token, selection: &plan::Selection) -> Result<Vec<Object>, MigrateError> {
    plan::selected(token, selection)
}

fn shown(object: &Object, kind: CK_ATTRIBUTE_TYPE) -> String {
    match kind {
        CKA_LABEL => format!("\"{}\"", object.label()),
        CKA_START_DATE | CKA_END_DATE => {
            String::from_utf8_lossy(object.bytes(kind).unwrap_or_default()).into_owned()
        }
        _ => object
            .flag(kind)
            .map_or_else(|| "-".to_owned(), |flag| flag.to_string()),
    }
}

/// The modifiable attributes of `there` that differ from `here`.
pub fn drift(here: &Object, there: &Object) -> Vec<CK_ATTRIBUTE_TYPE> {
    MODIFIABLE
        .into_iter()
        .filter(|&kind| {
            let (mine, theirs) = (here.bytes(kind), there.bytes(kind));
            // A date one side cannot show (SoftHSMv2 on private objects) is not drift.
            mine.is_some() && theirs.is_some() && mine != theirs
        })
        .collect()
}

/// Where `reference`'s key is in `store`: by identity, else by CKA_ID with an equal value
/// (a drifted label).
pub fn locate(
    reference_token: &Token,
    reference: &Object,
    store: &Token,
    holdings: &[Object],
) -> Copy {
    locate_object(reference_token, reference, store, holdings).1
}

/// `locate`, with the copy found.
pub fn locate_object<'a>(
    reference_token: &Token,
    reference: &Object,
    store: &Token,
    holdings: &'a [Object],
) -> (Option<&'a Object>, Copy) {
    let identity = reference.identity();
    let kcv = check::compute(reference_token, &reference_token.session, reference).ok();
    if let Some(there) = holdings.iter().find(|object| object.identity() == identity) {
        let copy = match plan::same_value(reference_token, store, reference, kcv.as_ref(), there) {
            Ok(_) => {
                let drifted = drift(reference, there);
                if drifted.is_empty() {
                    Copy::InSync
                } else {
                    Copy::Drifted {
                        attributes: drifted
                            .into_iter()
                            .map(|kind| {
                                format!("{} ({})", names::attribute(kind), shown(there, kind))
                            })
                            .collect(),
                    }
                }
            }
            Err(reason) => Copy::Different { reason },
        };
        return (Some(there), copy);
    }
    if !identity.id.is_empty() {
        for there in holdings.iter().filter(|object| {
            object.class == identity.class
                && object.key_type() == identity.key_type
                && object.id() == identity.id
        }) {
            if plan::same_value(reference_token, store, reference, kcv.as_ref(), there).is_ok() {
                let mut attributes = vec![format!("CKA_LABEL ({})", shown(there, CKA_LABEL))];
                attributes.extend(
                    drift(reference, there)
                        .into_iter()
                        .filter(|&kind| kind != CKA_LABEL)
                        .map(|kind| format!("{} ({})", names::attribute(kind), shown(there, kind))),
                );
                return (Some(there), Copy::Drifted { attributes });
            }
        }
    }
    (None, Copy::Missing)
}

/// A key whose drift `fix_drift` set back: its description and the attributes set, or why
/// they could not be.
pub type Fixed = (String, Result<Vec<String>, String>);

/// Sets each drifted modifiable attribute of the target's copies back to the source's
/// value; returns a line per object fixed, or why it could not be.
pub fn fix_drift(
    source: &Token,
    target: &Token,
    selection: &plan::Selection,
    audit: &mut crate::audit::AuditLog,
) -> Result<Vec<Fixed>, MigrateError> {
    let theirs = holdings(target, selection)?;
    let mut fixed = Vec::new();
    for object in holdings(source, selection)? {
        let (Some(there), Copy::Drifted { .. }) = locate_object(source, &object, target, &theirs)
        else {
            continue;
        };
        let mut kinds = drift(&object, there);
        if object.label() != there.label() && !kinds.contains(&CKA_LABEL) {
            kinds.push(CKA_LABEL);
        }
        let template: Vec<crate::p11raw::RawAttribute> = kinds
            .iter()
            .filter_map(|&kind| {
                object
                    .bytes(kind)
                    .map(|value| crate::p11raw::RawAttribute::bytes(kind, value.to_vec()))
            })
            .collect();
        let names: Vec<String> = kinds
            .iter()
            .map(|&kind| names::attribute(kind).to_owned())
            .collect();
        let outcome = target
            .module
            .raw
            .set_attributes(&target.session, there.handle, &template)
            .map(|()| names.clone())
            .map_err(|err| err.to_string());
        audit.append(crate::audit::Event {
            action: "sync.set-attributes".to_owned(),
            token: target.uri.to_string(),
            objects: vec![object.identity().describe(), names.join(" ")],
            result: match &outcome {
                Ok(_) => "ok".to_owned(),
                Err(error) => format!("failed: {error}"),
            },
            run: None,
        })?;
        fixed.push((object.identity().describe(), outcome));
    }
    Ok(fixed)
}

/// Target objects no source object accounts for (by identity).
pub fn extras(
    source: &Token,
    target: &Token,
    selection: &plan::Selection,
) -> Result<Vec<Object>, MigrateError> {
    let mine: Vec<Identity> = holdings(source, selection)?
        .iter()
        .map(Object::identity)
        .collect();
    Ok(holdings(target, selection)?
        .into_iter()
        .filter(|object| !mine.contains(&object.identity()))
        .collect())
}

/// A row per logical key across `stores`, keys in the order the stores first show them.
pub fn status(stores: &[Token], selection: &plan::Selection) -> Result<Vec<Row>, MigrateError> {
    let held: Vec<Vec<Object>> = stores
        .iter()
        .map(|store| holdings(store, selection))
        .collect::<Result<_, _>>()?;
    let mut seen: BTreeMap<Identity, ()> = BTreeMap::new();
    let mut rows = Vec::new();
    for (owner, objects) in held.iter().enumerate() {
        for object in objects {
            let identity = object.identity();
            if seen.insert(identity.clone(), ()).is_some() {
                continue;
            }
            // A copy elsewhere whose label drifted is this key, not a key of its own.
            let drifted_copy = (0..owner).any(|earlier| {
                matches!(
                    locate(&stores[owner], object, &stores[earlier], &held[earlier]),
                    Copy::Drifted { .. } | Copy::InSync
                )
            });
            if drifted_copy {
                continue;
            }
            let copies = stores
                .iter()
                .zip(&held)
                .enumerate()
                .map(|(index, (store, objects))| match index {
                    i if i < owner => locate(&stores[owner], object, store, objects),
                    i if i == owner => Copy::Reference,
                    _ => locate(&stores[owner], object, store, objects),
                })
                .collect();
            rows.push(Row {
                key: identity.describe(),
                copies,
            });
        }
    }
    Ok(rows)
}
