//! Planning: which source objects move, which are already there, which conflict and which
//! cannot move (with the attribute to blame and the remedy). Writes nothing.

use std::collections::HashMap;

use cryptoki_sys::*;
use serde::Serialize;

use crate::check::{self, Kcv, Method};
use crate::error::MigrateError;
use crate::inventory::{self, Identity, Object};
use crate::names;
use crate::p11raw::{RawValue, Read};
use crate::token::Token;
use crate::transport::{KekAgreement, Profile, Transport};

/// What happens to one source object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Wrapped on the source, unwrapped on the destination (secret and private keys).
    Move,
    /// Re-created from its readable attributes (public keys, certificates, data objects).
    Copy,
    /// Already on the destination with an equal check value: nothing to do.
    Skip,
    /// On the destination with a different value or more than once: left untouched.
    Conflict,
    /// Cannot move as asked; see the reason and remedy.
    Refuse,
}

impl Action {
    /// The word reports show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Move => "move",
            Self::Copy => "copy",
            Self::Skip => "skip",
            Self::Conflict => "conflict",
            Self::Refuse => "refuse",
        }
    }
}

/// Which attributes survive the move.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// Equal on the destination.
    pub preserved: Vec<&'static str>,
    /// Different on the destination (token-computed, or changed by the target), "CKA_X: why".
    pub changed: Vec<String>,
    /// Not on the destination, "CKA_X: why".
    pub dropped: Vec<String>,
}

/// One object's line in the plan.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The source object.
    pub object: Object,
    /// How it is matched on the destination.
    pub identity: Identity,
    /// What happens to it.
    pub action: Action,
    /// Why (skip, conflict, refuse).
    pub reason: Option<String>,
    /// The attribute to blame (refuse).
    pub blame: Option<String>,
    /// What to do instead (refuse, conflict).
    pub remedy: Option<String>,
    /// The check value on the source, when one could be computed.
    pub kcv: Option<Kcv>,
    /// The predicted attribute matrix (move, copy).
    pub matrix: Matrix,
    /// Wrap this secret with RSA-OAEP (this hash) straight to the destination's RSA key
    /// instead of RFC 5649: the source's RFC 5649 would zero-pad it (SoftHSMv2) and the
    /// destination could not trim it back, so the key would arrive longer than it left.
    pub direct: Option<String>,
}

/// The plan for a run.
pub struct Plan {
    /// Per source object, in source order.
    pub entries: Vec<Entry>,
    /// The transport for the objects that move, or why there is none.
    pub transport: Result<Transport, String>,
    /// Source profile.
    pub source_profile: Profile,
    /// Destination profile.
    pub destination_profile: Profile,
}

impl Plan {
    /// Counts by action.
    pub fn count(&self, action: Action) -> usize {
        self.entries
            .iter()
            .filter(|entry| entry.action == action)
            .count()
    }
}

/// `--select` patterns: `label=GLOB`, `id=HEX`, `class=secret|private|public|cert|data`, or a
/// bare GLOB on the label. An object is selected when any pattern matches (all when none).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    patterns: Vec<String>,
}

impl Selection {
    /// Parses patterns; an unknown `key=` is an error.
    pub fn new(patterns: &[String]) -> Result<Self, MigrateError> {
        for pattern in patterns {
            if let Some((key, _)) = pattern.split_once('=')
                && !matches!(key, "label" | "id" | "class")
            {
                return Err(MigrateError::Usage(format!(
                    "--select {pattern}: unknown key \"{key}\" (use label=GLOB, id=HEX or class=secret|private|public|cert|data)"
                )));
            }
        }
        Ok(Self {
            patterns: patterns.to_vec(),
        })
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `object` is selected.
    pub fn selects(&self, object: &Object) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|pattern| match pattern.split_once('=') {
                    Some(("label", glob_pattern)) => glob(glob_pattern, &object.label()),
                    Some(("id", id)) => hex::encode(object.id()).eq_ignore_ascii_case(id),
                    Some(("class", class)) => names::class(object.class) == class,
                    _ => glob(pattern, &object.label()),
                })
    }
}

/// `*` any run, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn walk(pattern: &[char], text: &[char]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some('*'), _) => {
                walk(&pattern[1..], text) || (!text.is_empty() && walk(pattern, &text[1..]))
            }
            (Some('?'), Some(_)) => walk(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => walk(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    walk(&pattern, &text)
}

/// Whether the URI's object filters (object=, id=, type=) select `object`.
fn uri_selects(token: &Token, object: &Object) -> bool {
    let uri = &token.uri;
    uri.object
        .as_deref()
        .is_none_or(|label| object.label() == label)
        && uri.id.as_deref().is_none_or(|id| object.id() == id)
        && uri.object_type.is_none_or(|kind| {
            let class = match kind {
                crate::uri::ObjectType::Public => CKO_PUBLIC_KEY,
                crate::uri::ObjectType::Private => CKO_PRIVATE_KEY,
                crate::uri::ObjectType::Cert => CKO_CERTIFICATE,
                crate::uri::ObjectType::SecretKey => CKO_SECRET_KEY,
                crate::uri::ObjectType::Data => CKO_DATA,
            };
            object.class == class
        })
}

/// A keyferry token's domain key: every token of a domain has its own, so it never moves.
fn is_domain_key(object: &Object) -> bool {
    object.class == CKO_SECRET_KEY
        && object.label() == names::DOMAIN_KEY_LABEL
        && object.bytes(CKA_ALLOWED_MECHANISMS)
            == Some(&names::CKM_KEYFERRY_DOMAIN_WRAP.to_ne_bytes()[..])
}

/// The selected source objects, by label, then CKA_ID, then secret, private, public, cert,
/// data: a stable order, whatever order the token lists them in.
pub fn selected(source: &Token, selection: &Selection) -> Result<Vec<Object>, MigrateError> {
    let mut objects: Vec<Object> = inventory::list(source)?
        .into_iter()
        .filter(|object| {
            !is_domain_key(object) && uri_selects(source, object) && selection.selects(object)
        })
        .collect();
    let rank = |class| match class {
        CKO_SECRET_KEY => 0,
        CKO_PRIVATE_KEY => 1,
        CKO_PUBLIC_KEY => 2,
        CKO_CERTIFICATE => 3,
        CKO_DATA => 4,
        _ => 5,
    };
    objects.sort_by(|a, b| {
        (a.label(), a.id(), rank(a.class), a.key_type()).cmp(&(
            b.label(),
            b.id(),
            rank(b.class),
            b.key_type(),
        ))
    });
    Ok(objects)
}

const NOT_EXTRACTABLE_REMEDY: &str = "move it by same-root domain clone (a destination built from the source's master-key parts), or create a new key on the destination and rewrap the data under it (keyferry rekey)";

/// Plans the move of `objects` from `source` to `destination`.
pub fn plan(
    source: &Token,
    destination: &Token,
    objects: Vec<Object>,
    source_profile: Profile,
    destination_profile: Profile,
    transport: Result<Transport, String>,
) -> Result<Plan, MigrateError> {
    let mut counts: HashMap<Identity, usize> = HashMap::new();
    for object in &objects {
        *counts.entry(object.identity()).or_default() += 1;
    }
    // The destination read once when it holds no more objects than are planned (a fresh
    // destination holds none): cheaper than a search per planned object.
    let on_destination: Option<HashMap<Identity, Vec<Object>>> =
        inventory::list_up_to(destination, objects.len())?.map(|listed| {
            let mut by_identity: HashMap<Identity, Vec<Object>> = HashMap::new();
            for object in listed {
                by_identity
                    .entry(object.identity())
                    .or_default()
                    .push(object);
            }
            by_identity
        });
    let kcvs = source.map_in_two(&objects, |source, object| {
        check::compute(source, &source.session, object)
    });
    let mut entries = Vec::with_capacity(objects.len());
    for (object, kcv) in objects.into_iter().zip(kcvs) {
        let identity = object.identity();
        let existing = match &on_destination {
            Some(by_identity) => by_identity.get(&identity).cloned().unwrap_or_default(),
            None => inventory::find(destination, &identity)?,
        };
        let mut entry = Entry {
            kcv: None,
            identity: identity.clone(),
            action: Action::Move,
            reason: None,
            blame: None,
            remedy: None,
            matrix: Matrix::default(),
            direct: None,
            object,
        };
        decide(
            source,
            destination,
            &mut entry,
            kcv,
            (counts[&identity], existing),
            (&source_profile, &destination_profile),
            &transport,
        )?;
        entries.push(entry);
    }
    Ok(Plan {
        entries,
        transport,
        source_profile,
        destination_profile,
    })
}

fn refuse(entry: &mut Entry, blame: Option<&str>, reason: String, remedy: &str) {
    entry.action = Action::Refuse;
    entry.blame = blame.map(str::to_owned);
    entry.reason = Some(reason);
    entry.remedy = Some(remedy.to_owned());
}

fn decide(
    source: &Token,
    destination: &Token,
    entry: &mut Entry,
    kcv: Result<Kcv, String>,
    (same_identity_on_source, existing): (usize, Vec<Object>),
    (source_profile, destination_profile): (&Profile, &Profile),
    transport: &Result<Transport, String>,
) -> Result<(), MigrateError> {
    let object = &entry.object;
    let wrapped = matches!(object.class, CKO_SECRET_KEY | CKO_PRIVATE_KEY);
    if !matches!(
        object.class,
        CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY | CKO_CERTIFICATE | CKO_DATA
    ) {
        refuse(
            entry,
            Some("CKA_CLASS"),
            format!(
                "objects of class {} are not migrated",
                names::class(object.class)
            ),
            "create it on the destination by hand",
        );
        return Ok(());
    }
    entry.kcv = kcv.as_ref().ok().cloned();
    if same_identity_on_source > 1 {
        refuse(
            entry,
            Some("CKA_ID"),
            format!(
                "{same_identity_on_source} source objects share this class, key type, label and CKA_ID, so their copies could not be told apart"
            ),
            "give each a distinct CKA_ID (or label) on the source",
        );
        return Ok(());
    }
    if !existing.is_empty() {
        return compare_existing(source, destination, entry, &existing);
    }
    entry.action = if wrapped { Action::Move } else { Action::Copy };
    let domain_clone = transport
        .as_ref()
        .is_ok_and(|transport| transport.agreement == KekAgreement::Domain);
    // A domain clone carries any key; the other transports only extractable ones.
    if wrapped && !domain_clone {
        let object = &entry.object;
        if object.flag(CKA_EXTRACTABLE) == Some(false) {
            refuse(
                entry,
                Some("CKA_EXTRACTABLE"),
                "not extractable: the token will not wrap it for any transport".to_owned(),
                NOT_EXTRACTABLE_REMEDY,
            );
            return Ok(());
        }
        if object.flag(CKA_WRAP_WITH_TRUSTED) == Some(true) {
            refuse(
                entry,
                Some("CKA_WRAP_WITH_TRUSTED"),
                "CKA_WRAP_WITH_TRUSTED is true: the token wraps it only under a key with CKA_TRUSTED true, which only its security officer can set, so no session transport key can carry it".to_owned(),
                "have the source's SO create a trusted transport key and wrap it by hand, or move it by same-root domain clone",
            );
            return Ok(());
        }
        if let Err(why) = transport {
            refuse(
                entry,
                None,
                format!("no transport works between these tokens: {why}"),
                "check both tokens' profiles with keyferry plan --verbose",
            );
            return Ok(());
        }
        if object.class == CKO_SECRET_KEY && entry.kcv.is_none() {
            let reason = kcv.err().unwrap_or_default();
            refuse(
                entry,
                Some("CKA_ENCRYPT/CKA_SIGN/CKA_DECRYPT/CKA_WRAP"),
                format!("it could not be verified after the move: {reason}"),
                "allow one of encrypt, sign, decrypt or wrap on the source key, or move it by domain clone",
            );
            return Ok(());
        }
        if object.class == CKO_PRIVATE_KEY
            && object.key_type() != Some(CKK_RSA)
            && object.flag(CKA_SIGN) != Some(true)
        {
            refuse(
                entry,
                Some("CKA_SIGN"),
                "it could not be verified after the move: the key may not sign, and only RSA keys can be checked by their public components".to_owned(),
                "allow signing on the source key, or move it by domain clone",
            );
            return Ok(());
        }
    }
    if let Ok(transport) = transport
        && needs_direct(&entry.object, source_profile, destination_profile)
        && !matches!(
            transport.agreement,
            KekAgreement::RsaAes | KekAgreement::Domain
        )
    {
        let destination_hashes = destination_profile.oaep_hashes.clone().unwrap_or_default();
        entry.direct = source_profile
            .oaep_hashes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|hash| destination_hashes.contains(hash));
    }
    entry.matrix = predict(
        entry,
        source_profile,
        destination_profile,
        transport.as_ref().ok(),
    );
    Ok(())
}

fn compare_existing(
    source: &Token,
    destination: &Token,
    entry: &mut Entry,
    existing: &[Object],
) -> Result<(), MigrateError> {
    if existing.len() > 1 {
        entry.action = Action::Conflict;
        entry.reason = Some(format!(
            "{} objects on the destination already carry this identity",
            existing.len()
        ));
        entry.remedy = Some("remove or relabel the extra copies on the destination".to_owned());
        return Ok(());
    }
    let there = &existing[0];
    match same_value(
        source,
        destination,
        &entry.object,
        entry.kcv.as_ref(),
        there,
    ) {
        Ok(proof) => {
            entry.action = Action::Skip;
            entry.reason = Some(format!("already on the destination ({proof})"));
        }
        Err(why) => {
            entry.action = Action::Conflict;
            entry.reason = Some(why);
            entry.remedy = Some(
                "the destination copy was left untouched; relabel one of them, or delete the destination copy if it is wrong".to_owned(),
            );
        }
    }
    Ok(())
}

/// Proves `there` (on the destination) holds the same key as `here` (on the source): the
/// first check value method both tokens can compute (SoftHSMv2 refuses HMAC-SHA256 with a
/// key under 32 bytes where keyferry computes it), compared.
pub fn same_value(
    source: &Token,
    destination: &Token,
    here: &Object,
    kcv: Option<&Kcv>,
    there: &Object,
) -> Result<String, String> {
    if here.class == CKO_PRIVATE_KEY {
        return verify_private(source, destination, here, there);
    }
    let mut failures = Vec::new();
    for method in check::methods(here) {
        let mine = match kcv {
            Some(kcv) if kcv.method == method => Ok(kcv.clone()),
            _ => check::compute_with(source, &source.session, here, method),
        };
        let mine = match mine {
            Ok(mine) => mine,
            Err(why) => {
                failures.push(format!("{} on the source: {why}", method.name()));
                continue;
            }
        };
        match check::compute_with(destination, &destination.session, there, method) {
            Ok(theirs) if theirs == mine => return Ok(mine.to_string()),
            Ok(theirs) => {
                return Err(format!(
                    "present on the destination with a different value ({mine} here, {theirs} there)"
                ));
            }
            Err(why) => failures.push(format!("{} on the destination: {why}", method.name())),
        }
    }
    if failures.is_empty() {
        Err("no check value method applies to it".to_owned())
    } else {
        Err(format!(
            "no check value both tokens can compute: {}",
            failures.join("; ")
        ))
    }
}

/// A private key on the destination signs; its source's public half verifies.
pub fn verify_private(
    source: &Token,
    destination: &Token,
    here: &Object,
    there: &Object,
) -> Result<String, String> {
    if there.flag(CKA_SIGN) == Some(true) {
        let public = check::public_half(source, &source.session, here)?;
        let outcome = check::sign_and_verify(&destination.session, there, &source.session, public);
        let _ = source.session.destroy_object(public);
        return outcome.map(str::to_owned);
    }
    let mine = check::compute_with(source, &source.session, here, Method::RsaPublicSha256)?;
    let theirs = check::compute_with(
        destination,
        &destination.session,
        there,
        Method::RsaPublicSha256,
    )?;
    if mine == theirs {
        Ok(mine.to_string())
    } else {
        Err(format!(
            "a different key pair ({mine} here, {theirs} there)"
        ))
    }
}

/// Whether a secret would arrive zero-padded by the source's RFC 5649 with no way for the
/// destination to trim it (SoftHSMv2 to SoftHSMv2 with a 20-byte HMAC key, for one).
pub fn needs_direct(
    object: &Object,
    source_profile: &Profile,
    destination_profile: &Profile,
) -> bool {
    object.class == CKO_SECRET_KEY
        && object.ulong(CKA_VALUE_LEN).is_some_and(|len| len % 8 != 0)
        && source_profile.rfc5649_zero_pads
        && !destination_profile.generic_value_len
}

/// Attributes the token sets itself, and what an unwrap or create does to them.
fn predict(
    entry: &Entry,
    source_profile: &Profile,
    destination_profile: &Profile,
    transport: Option<&Transport>,
) -> Matrix {
    let object = &entry.object;
    let mut matrix = Matrix::default();
    for kind in inventory::copied(object.class) {
        let name = names::attribute(kind);
        match object.attributes.get(&kind) {
            Some(Read::Value(_)) if destination_profile.refuses(object.class, kind) => {
                matrix
                    .dropped
                    .push(format!("{name}: the destination refuses it"));
            }
            Some(Read::Value(_)) => matrix.preserved.push(name),
            Some(Read::Failed(rv)) => matrix.dropped.push(format!(
                "{name}: unreadable on the source ({})",
                names::rv(*rv)
            )),
            Some(Read::Sensitive | Read::Absent) | None => {}
        }
    }
    let domain_clone =
        transport.is_some_and(|transport| transport.agreement == KekAgreement::Domain);
    if entry.action == Action::Move && !domain_clone {
        for (kind, now) in [
            (CKA_LOCAL, "false"),
            (CKA_ALWAYS_SENSITIVE, "false"),
            (CKA_NEVER_EXTRACTABLE, "false"),
        ] {
            if object.flag(kind) == Some(true) {
                matrix.changed.push(format!(
                    "{}: true → {now} (an unwrapped key was not generated on its token)",
                    names::attribute(kind)
                ));
            }
        }
        if object
            .ulong(CKA_KEY_GEN_MECHANISM)
            .is_some_and(|mechanism| mechanism != CK_UNAVAILABLE_INFORMATION)
        {
            matrix
                .changed
                .push("CKA_KEY_GEN_MECHANISM: unavailable on an unwrapped key".to_owned());
        }
        if entry.direct.is_none()
            && transport.is_some_and(|t| t.agreement != crate::transport::KekAgreement::RsaAes)
            && needs_direct(object, source_profile, destination_profile)
        {
            matrix.changed.push("CKA_VALUE_LEN: zero-padded to whole 64-bit blocks by the source's RFC 5649; the destination takes no CKA_VALUE_LEN to trim it and no RSA-OAEP hash works on both tokens".to_owned());
        }
    }
    if object.flag(CKA_TRUSTED) == Some(true) {
        matrix
            .dropped
            .push("CKA_TRUSTED: only the destination's SO can set it".to_owned());
    }
    if object.bytes(CKA_UNIQUE_ID).is_some() {
        matrix.changed.push(
            "CKA_UNIQUE_ID: the destination assigns its own (mapped in the report)".to_owned(),
        );
    }
    matrix
}

/// Why a token-set attribute differs on the destination.
fn why_changed(kind: CK_ATTRIBUTE_TYPE, theirs: &[u8]) -> &'static str {
    match kind {
        CKA_UNIQUE_ID => "assigned by the destination",
        CKA_LOCAL | CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE | CKA_KEY_GEN_MECHANISM => {
            "the destination did not generate the key (it was unwrapped or created)"
        }
        CKA_CHECK_VALUE if theirs.is_empty() => {
            "empty on the destination (SoftHSMv2 computes none for unwrapped keys)"
        }
        CKA_VALUE_LEN if theirs.iter().all(|&byte| byte == 0) => {
            "the destination reports 0 (SoftHSMv2 records none for unwrapped keys)"
        }
        _ => "set by the destination",
    }
}

/// The destination's attributes compared with the source's, after the move.
pub fn actual(source: &Object, destination: &Object) -> Matrix {
    let mut matrix = Matrix::default();
    let copied = inventory::copied(source.class);
    let kinds = copied
        .iter()
        .copied()
        .chain(inventory::TOKEN_SET.iter().copied());
    for kind in kinds {
        let name = names::attribute(kind);
        let here = source.attributes.get(&kind);
        let there = destination.attributes.get(&kind);
        match (here, there) {
            (Some(Read::Value(a)), Some(Read::Value(b))) if a == b && copied.contains(&kind) => {
                matrix.preserved.push(name);
            }
            (Some(Read::Value(a)), Some(Read::Value(b))) if a == b => {}
            (Some(Read::Value(_)), Some(Read::Value(RawValue::Bytes(theirs)))) => {
                matrix
                    .changed
                    .push(format!("{name}: {}", why_changed(kind, theirs)));
            }
            (Some(Read::Value(_)), Some(Read::Value(_))) => {
                matrix
                    .changed
                    .push(format!("{name}: set by the destination"));
            }
            (Some(Read::Value(_)), Some(Read::Failed(rv))) => {
                matrix.dropped.push(format!(
                    "{name}: unreadable on the destination ({})",
                    names::rv(*rv)
                ));
            }
            (Some(Read::Value(_)), _) => matrix
                .dropped
                .push(format!("{name}: not on the destination")),
            (Some(Read::Failed(rv)), _) => matrix.dropped.push(format!(
                "{name}: unreadable on the source ({})",
                names::rv(*rv)
            )),
            _ => {}
        }
    }
    matrix
}
