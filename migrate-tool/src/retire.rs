//! `keyferry retire`: after a verified migration, the source copies go — destroyed, or
//! deactivated (no new encryption, wrapping, signing or derivation; old data still opens) —
//! but only those whose destination copy still proves equal, and only once confirmed.

use std::io::{BufRead, IsTerminal, Write};

use cryptoki::object::{Attribute, AttributeType};
use cryptoki_sys::*;

use crate::audit::{AuditLog, Event};
use crate::error::MigrateError;
use crate::inventory::{self, Identity};
use crate::journal::{Journal, Line, Recorded, State};
use crate::names;
use crate::plan;
use crate::report::ObjectReport;
use crate::token::Token;

/// The usage flags deactivation clears: whatever makes new ciphertext, wrapped keys,
/// signatures or derived keys. DECRYPT, UNWRAP and VERIFY stay, so old data still opens.
const NEW_USE: [(CK_ATTRIBUTE_TYPE, AttributeType); 4] = [
    (CKA_ENCRYPT, AttributeType::Encrypt),
    (CKA_WRAP, AttributeType::Wrap),
    (CKA_SIGN, AttributeType::Sign),
    (CKA_DERIVE, AttributeType::Derive),
];

/// What retire does to a source copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// C_DestroyObject.
    Destroy,
    /// Clear the usage flags that allow new use.
    Deactivate,
}

/// The objects a run moved and proved (or found already there and proved) that `mode` has
/// yet to retire, by identity.
pub fn candidates(recorded: &Recorded, mode: Mode) -> Vec<(String, Identity)> {
    let mut keys: Vec<(&String, &State)> = recorded.states.iter().collect();
    keys.sort();
    keys.into_iter()
        .filter(|(_, state)| match mode {
            Mode::Deactivate => matches!(
                state,
                State::Verified | State::Present | State::PendingRetirement
            ),
            Mode::Destroy => matches!(
                state,
                State::Verified | State::Present | State::PendingRetirement | State::Deactivated
            ),
        })
        .filter_map(|(key, _)| Identity::from_key(key).map(|identity| (key.clone(), identity)))
        .collect()
}

/// Asks on the terminal; without one, `--yes` is the only confirmation.
pub fn confirm(count: usize, mode: Mode, source: &Token) -> Result<bool, MigrateError> {
    if !std::io::stdin().is_terminal() {
        return Err(MigrateError::Usage(
            "retire destroys or deactivates source keys and needs a confirmation: pass --yes, or run on a terminal".to_owned(),
        ));
    }
    let verb = if mode == Mode::Destroy {
        "destroy"
    } else {
        "deactivate"
    };
    eprint!(
        "{verb} {count} source object(s) on {}? Type \"{verb}\" to go on: ",
        source.describe()
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|err| MigrateError::Usage(format!("reading the confirmation: {err}")))?;
    Ok(answer.trim() == verb)
}

/// The proof for a migration: the destination copy still holds the same key.
pub fn destination_copy_proves(
    source: &Token,
    destination: &Token,
    object: &inventory::Object,
) -> Result<String, String> {
    let there = inventory::find(destination, &object.identity()).map_err(|err| err.to_string())?;
    match there.as_slice() {
        [copy] => {
            let kcv = crate::check::compute(source, &source.session, object).ok();
            plan::same_value(source, destination, object, kcv.as_ref(), copy)
        }
        [] => Err("the destination copy is gone".to_owned()),
        _ => Err("several destination objects carry this identity".to_owned()),
    }
}

/// Retires each candidate `prove` still vouches for (its destination copy proves equal; for
/// a rekey, the new KEK is there).
#[allow(clippy::too_many_arguments)] // one call site; the records it writes are its arguments
pub fn retire(
    source: &Token,
    prove: &dyn Fn(&inventory::Object) -> Result<String, String>,
    candidates: &[(String, Identity)],
    mode: Mode,
    dry_run: bool,
    journal: &mut Journal,
    audit: &mut AuditLog,
    run: &str,
) -> Result<Vec<ObjectReport>, MigrateError> {
    let mut reports = Vec::with_capacity(candidates.len());
    for (key, identity) in candidates {
        if let Some(signal) = crate::interrupt::requested() {
            let mut report = gone(identity, &format!("{signal} came first"));
            report.status = "not-attempted".to_owned();
            reports.push(report);
            continue;
        }
        let here = inventory::find(source, identity)?;
        let object = match here.as_slice() {
            [object] => object,
            [] => {
                reports.push(gone(identity, "already gone from the source"));
                continue;
            }
            _ => {
                reports.push(gone(
                    identity,
                    "several source objects carry this identity; retire them by hand",
                ));
                continue;
            }
        };
        let mut report = ObjectReport::of(
            object,
            if mode == Mode::Destroy {
                "destroy"
            } else {
                "deactivate"
            },
        );
        let proof = prove(object);
        match proof {
            Err(why) => {
                report.status = "refused".to_owned();
                report.reason = Some(format!("{why}; the source copy stays"));
            }
            Ok(proof) if dry_run => {
                report.status = "would-retire".to_owned();
                report.proof = Some(proof);
            }
            Ok(proof) => {
                report.proof = Some(proof);
                let done = match mode {
                    Mode::Destroy => source
                        .session
                        .destroy_object(object.handle)
                        .map(|()| "destroyed"),
                    Mode::Deactivate => deactivate(source, object).map(|()| "deactivated"),
                };
                let result = match done {
                    Ok(status) => {
                        report.status = status.to_owned();
                        let state = if mode == Mode::Destroy {
                            State::Retired
                        } else {
                            State::Deactivated
                        };
                        journal.step(key, &identity.describe(), state)?;
                        "ok".to_owned()
                    }
                    Err(err) => {
                        report.status = "failed".to_owned();
                        let error = names::cryptoki_error(&err);
                        report.error = Some(error.clone());
                        format!("failed: {error}")
                    }
                };
                audit.append(Event {
                    action: format!(
                        "retire.{}",
                        if mode == Mode::Destroy {
                            "destroy"
                        } else {
                            "deactivate"
                        }
                    ),
                    token: source.uri.to_string(),
                    objects: vec![identity.describe()],
                    result,
                    run: Some(run.to_owned()),
                })?;
            }
        }
        reports.push(report);
    }
    journal.append(&Line::Finished {
        summary: serde_json::to_value(crate::report::summary(&reports)).unwrap_or_default(),
    })?;
    Ok(reports)
}

fn gone(identity: &Identity, why: &str) -> ObjectReport {
    ObjectReport {
        object: identity.describe(),
        class: names::class(identity.class),
        key_type: identity.key_type.map(names::key_type),
        label: String::from_utf8_lossy(&identity.label).into_owned(),
        id: hex::encode(&identity.id),
        bits: None,
        action: "retire".to_owned(),
        status: "skipped".to_owned(),
        transport: None,
        kcv: None,
        proof: None,
        attributes: plan::Matrix::default(),
        blame: None,
        reason: Some(why.to_owned()),
        remedy: None,
        error: None,
        source_unique_id: None,
        destination_unique_id: None,
    }
}

/// Clears each new-use flag the key has set, one at a time (a token may not know a flag
/// for every class).
fn deactivate(source: &Token, object: &inventory::Object) -> Result<(), cryptoki::error::Error> {
    for (kind, attribute) in NEW_USE {
        if object.flag(kind) == Some(true) {
            let cleared = match attribute {
                AttributeType::Encrypt => Attribute::Encrypt(false),
                AttributeType::Wrap => Attribute::Wrap(false),
                AttributeType::Sign => Attribute::Sign(false),
                _ => Attribute::Derive(false),
            };
            source
                .session
                .update_attributes(object.handle, &[cleared])?;
        }
    }
    Ok(())
}
