//! `keyferry rekey`: a new KEK beside the old one on the same token, every data-key blob
//! rewrapped to it, and the old KEK recorded as pending retirement — usable for old blobs
//! until `keyferry retire --run RUN` destroys or deactivates it, as key services rotate a
//! root key.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki_sys::*;

use crate::audit::{AuditLog, Event};
use crate::check;
use crate::error::MigrateError;
use crate::inventory;
use crate::journal::{self, Journal, Line, RunHeader, State};
use crate::rewrap;
use crate::token::Token;

/// The new KEK: made like the old one (size, usage, sensitivity, extractability), under
/// its own label; an existing key of that label is taken only when resuming.
pub fn new_kek(
    token: &Token,
    old: ObjectHandle,
    label: &str,
    id: Option<&[u8]>,
    resume: bool,
) -> Result<(ObjectHandle, bool), MigrateError> {
    let existing = token
        .session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|err| MigrateError::pkcs11("C_FindObjects", &err))?;
    match (existing.as_slice(), resume) {
        ([one], true) => return Ok((*one, false)),
        ([], _) => {}
        (_, true) => {
            return Err(MigrateError::Usage(format!(
                "{} keys are labelled \"{label}\"; resume needs exactly one",
                existing.len()
            )));
        }
        (_, false) => {
            return Err(MigrateError::Usage(format!(
                "a key labelled \"{label}\" exists; choose another --new-label, or --resume the rekey that made it"
            )));
        }
    }
    let old = inventory::read(token, old)?;
    let flag = |kind| old.flag(kind).unwrap_or(false);
    let template = vec![
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.map_or_else(|| old.id().to_vec(), <[u8]>::to_vec)),
        Attribute::ValueLen(
            old.ulong(CKA_VALUE_LEN)
                .filter(|&len| len > 0)
                .unwrap_or(32)
                .into(),
        ),
        Attribute::Private(old.flag(CKA_PRIVATE).unwrap_or(true)),
        Attribute::Sensitive(old.flag(CKA_SENSITIVE).unwrap_or(true)),
        Attribute::Extractable(flag(CKA_EXTRACTABLE)),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(flag(CKA_ENCRYPT)),
        Attribute::Decrypt(flag(CKA_DECRYPT)),
    ];
    let handle = token
        .session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|err| {
            MigrateError::pkcs11(format!("{}: generating the new KEK", token.who), &err)
        })?;
    Ok((handle, true))
}

/// Writes the run record: the old KEK pending retirement, the new KEK's check value.
pub fn record(
    path: &std::path::Path,
    run: &str,
    old: &Token,
    new: &Token,
    new_kek: ObjectHandle,
) -> Result<Journal, MigrateError> {
    let header = RunHeader {
        run: run.to_owned(),
        from: old.uri.to_string(),
        to: new.uri.to_string(),
        select: Vec::new(),
        transport: None,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kind: Some("rekey".to_owned()),
    };
    let mut journal = if path.exists() {
        Journal::resume(path)?.0
    } else {
        Journal::create(path, header)?
    };
    let old_kek = inventory::read(old, rewrap::find_kek(old)?)?;
    let new_object = inventory::read(new, new_kek)?;
    journal.append(&Line::Step {
        key: old_kek.identity().key(),
        object: old_kek.identity().describe(),
        state: State::PendingRetirement,
        proof: check::compute(new, &new.session, &new_object)
            .ok()
            .map(|kcv| kcv.to_string()),
        destination_unique_id: new_object
            .bytes(CKA_UNIQUE_ID)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
        error: None,
    })?;
    Ok(journal)
}

/// Audits the new KEK.
pub fn audit_generated(
    audit: &mut AuditLog,
    token: &Token,
    label: &str,
    run: &str,
) -> Result<(), MigrateError> {
    audit.append(Event {
        action: "rekey.generate".to_owned(),
        token: token.uri.to_string(),
        objects: vec![format!("secret AES \"{label}\"")],
        result: "ok".to_owned(),
        run: Some(run.to_owned()),
    })?;
    Ok(())
}

/// The default run record of a rekey.
pub fn default_path(run: &str) -> std::path::PathBuf {
    journal::default_path(run)
}
