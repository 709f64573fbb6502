//! Carrying out a plan: wrap on the source, unwrap on the destination, read back, verify,
//! journal every step. Never writes to or deletes from the source.

use std::collections::HashMap;
use std::io::IsTerminal;

use cryptoki_sys::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::audit::{AuditLog, Event};
use crate::error::MigrateError;
use crate::inventory::{self, Object};
use crate::journal::{Journal, Line, State};
use crate::names;
use crate::p11raw::{RawAttribute, RawValue};
use crate::plan::{self, Action, Entry, Plan};
use crate::report::ObjectReport;
use crate::token::Token;
use crate::transport::{KekAgreement, Link, Profile};

/// How a run behaves.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Stop at the first failed object.
    pub fail_fast: bool,
    /// The run id, for the audit log.
    pub run: String,
}

/// A progress bar on stderr, drawn only on a terminal.
pub fn progress(len: usize, message: &'static str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(u64::try_from(len).unwrap_or(0)), target);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// The template a destination object is created with; a domain clone recreates the object
/// from its blob, and the template only places it.
fn template_for(entry: &Entry, domain_clone: bool, profile: &Profile) -> Vec<RawAttribute> {
    if domain_clone && entry.action == Action::Move {
        vec![RawAttribute::flag(CKA_TOKEN, true)]
    } else {
        destination_template(entry, profile)
    }
}

/// The template a destination object is created with, attribute by attribute.
fn destination_template(entry: &Entry, destination_profile: &Profile) -> Vec<RawAttribute> {
    let object = &entry.object;
    let mut template = vec![
        RawAttribute::ulong(CKA_CLASS, object.class),
        RawAttribute::flag(CKA_TOKEN, true),
    ];
    template.extend(object.template().into_iter().filter(|attribute| {
        worth_sending(attribute) && !destination_profile.refuses(object.class, attribute.kind)
    }));
    if object.class == CKO_SECRET_KEY
        && object.key_type() != Some(CKK_AES)
        && destination_profile.generic_value_len
        && let Some(len) = object.ulong(CKA_VALUE_LEN)
    {
        // Lets a destination trim the zero padding SoftHSMv2's RFC 5649 adds.
        template.push(RawAttribute::ulong(CKA_VALUE_LEN, len));
    }
    template
}

/// An empty date, subject, mechanism list or template says no more than leaving it out, and
/// some tokens refuse the empty form.
fn worth_sending(attribute: &RawAttribute) -> bool {
    match &attribute.value {
        RawValue::Bytes(bytes) => {
            !(bytes.is_empty()
                && matches!(
                    attribute.kind,
                    CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT | CKA_ALLOWED_MECHANISMS
                ))
        }
        RawValue::Template(inner) => !inner.is_empty(),
    }
}

fn unique_id(object: &Object) -> Option<String> {
    object
        .bytes(CKA_UNIQUE_ID)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// Outcomes go to the bookkeeping this many at a time: one wake-up of its thread per
/// object cost the token loop more than the bookkeeping it handed over.
const BATCH: usize = 16;

/// Batches the token loop may run ahead of the bookkeeping by: enough to keep both busy,
/// few enough that memory stays flat however many objects a plan holds.
const BOOKKEEPING_BACKLOG: usize = 16;

/// Whether the link clones keys within one domain (the blob recreates the whole object).
fn is_domain_clone(link: &Link) -> bool {
    link.transport.agreement == KekAgreement::Domain
}

/// Batches of wrapped keys the source may run ahead of the destination's unwraps by. The
/// keys go over in batches of `BATCH` for the same reason outcomes do: one hand-over per
/// key woke a thread per key, 25 ms per 1 000 keys of the key loop waiting in `recv`.
const WRAPPED_AHEAD: usize = 2;

/// Whether `entry` is wrapped ahead, on a source session of its own: it moves under the
/// link's transport key (not by RSA-OAEP straight to the destination's key).
fn wrapped_ahead(entry: &Entry) -> bool {
    entry.action == Action::Move && entry.direct.is_none()
}

/// What became of one plan entry at the tokens, handed to the bookkeeping.
enum Outcome {
    /// Skipped, a conflict or refused: nothing was asked of the tokens.
    Untouched,
    /// Left alone after an earlier failure under `--fail-fast`.
    NotAttempted,
    /// Moved or copied: the last step reached, and the proof and the copy read back, or
    /// why not.
    Carried {
        reached: State,
        result: Result<(String, Object), String>,
    },
}

/// Runs the plan; `done` holds the objects an earlier, interrupted run finished.
///
/// The tokens are driven on this thread, one object after the other; the journal, the
/// audit log and the reports are written on a second one, so that writing them overlaps
/// the destination's commit of the next object. The journal is under group commit, so
/// a line never had to be durable before the next token call (see `Journal::group_commit`).
pub fn execute(
    source: &Token,
    destination: &Token,
    plan: &Plan,
    journal: &mut Journal,
    audit: &mut AuditLog,
    done: &HashMap<String, State>,
    options: &Options,
) -> Result<Vec<ObjectReport>, MigrateError> {
    journal.group_commit();
    audit.group_commit();
    let planned: Vec<&Entry> = plan
        .entries
        .iter()
        .filter(|entry| matches!(entry.action, Action::Move | Action::Copy))
        .collect();
    for entry in &planned {
        let key = entry.identity.key();
        if !done.contains_key(&key) {
            journal.step(&key, &entry.identity.describe(), State::Planned)?;
        }
    }
    let needs_link = planned.iter().any(|entry| entry.action == Action::Move);
    let mut link = match (&plan.transport, needs_link) {
        (Ok(transport), true) => Some(
            Link::establish(source, destination, transport.clone()).map_err(|reason| {
                MigrateError::Pkcs11 {
                    context: format!("agreeing a transport key ({})", transport.describe()),
                    reason,
                }
            })?,
        ),
        _ => None,
    };
    if let Some(link) = &mut link
        && planned.iter().any(|entry| entry.direct.is_some())
    {
        link.enable_direct()
            .map_err(|reason| MigrateError::Pkcs11 {
                context: "making the RSA key for exact-length secrets".to_owned(),
                reason,
            })?;
    }
    if let Ok(transport) = &plan.transport {
        journal.append(&Line::Transport {
            transport: serde_json::to_value(transport).unwrap_or_default(),
            profiles: serde_json::json!({"source": plan.source_profile, "destination": plan.destination_profile}),
        })?;
    }
    let books = Books {
        plan,
        journal,
        audit,
        done,
        options,
        destination: destination.uri.to_string(),
    };
    let bar = progress(plan.entries.len(), "migrating");
    let reports = std::thread::scope(|scope| {
        let (outcomes, received) = std::sync::mpsc::sync_channel(BOOKKEEPING_BACKLOG);
        let keeper = scope.spawn(move || books.keep(&received));
        // The source wraps the next keys while the destination unwraps and proves this one,
        // so that the two tokens work side by side; without a second source session every
        // key is wrapped in turn here.
        let (wrapped, blobs) = std::sync::mpsc::sync_channel(WRAPPED_AHEAD);
        let feeder = link
            .as_ref()
            .and_then(Link::wrapper)
            .filter(|_| plan.entries.iter().any(wrapped_ahead))
            .and_then(|wrapper| Some((wrapper, source.fork().ok()?)));
        let feeding = feeder.is_some();
        let domain_clone = link.as_ref().is_some_and(is_domain_clone);
        if let Some((wrapper, other)) = feeder {
            scope.spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                for entry in plan.entries.iter().filter(|entry| wrapped_ahead(entry)) {
                    // Its template too: building it is work the key loop need not wait for.
                    let template = template_for(entry, domain_clone, &plan.destination_profile);
                    let blob = wrapper.wrap(&other, entry.object.handle);
                    batch.push(Wrapped { template, blob });
                    if batch.len() == BATCH
                        && wrapped
                            .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                            .is_err()
                    {
                        // The run stopped: the keys wrapped ahead are not needed.
                        return;
                    }
                }
                // Fails only if the run stopped.
                let _ = wrapped.send(batch);
            });
        }
        let mut ready = Vec::new().into_iter();
        let mut stop = false;
        let mut batch = Vec::with_capacity(BATCH);
        for entry in &plan.entries {
            bar.inc(1);
            stop = stop || crate::interrupt::requested().is_some();
            let outcome = match entry.action {
                Action::Move | Action::Copy if stop => Outcome::NotAttempted,
                Action::Move | Action::Copy => {
                    // None if the feeder is gone (it stops only when this loop does).
                    let blob = (feeding && wrapped_ahead(entry))
                        .then(|| {
                            ready.next().or_else(|| {
                                ready = blobs.recv().ok()?.into_iter();
                                ready.next()
                            })
                        })
                        .flatten();
                    let (reached, result) = carry(
                        source,
                        destination,
                        (entry, blob),
                        link.as_ref(),
                        &plan.destination_profile,
                    );
                    stop = options.fail_fast && result.is_err();
                    Outcome::Carried { reached, result }
                }
                Action::Skip | Action::Conflict | Action::Refuse if stop => Outcome::NotAttempted,
                Action::Skip | Action::Conflict | Action::Refuse => Outcome::Untouched,
            };
            batch.push(outcome);
            if batch.len() < BATCH {
                continue;
            }
            if outcomes
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_err()
            {
                // The bookkeeping stopped on an error, which `join` returns.
                break;
            }
        }
        // Lets a feeder still wrapping ahead of a stopped run end.
        drop(blobs);
        // A send that fails finds the bookkeeping stopped on an error, which `join` returns.
        let _ = outcomes.send(batch);
        drop(outcomes);
        keeper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    bar.finish_and_clear();
    drop(link);
    reports
}

/// The journal, the audit log and the reports of one run, kept on their own thread.
struct Books<'a> {
    plan: &'a Plan,
    journal: &'a mut Journal,
    audit: &'a mut AuditLog,
    done: &'a HashMap<String, State>,
    options: &'a Options,
    /// The destination's URI, for the audit log.
    destination: String,
}

impl Books<'_> {
    /// Records each entry's outcome, in plan order; the reports, once every line is durable.
    fn keep(
        mut self,
        outcomes: &std::sync::mpsc::Receiver<Vec<Outcome>>,
    ) -> Result<Vec<ObjectReport>, MigrateError> {
        let mut reports = Vec::with_capacity(self.plan.entries.len());
        let mut entries = self.plan.entries.iter();
        for batch in outcomes {
            // The batch first: `zip` takes from its left side first, and an entry taken
            // past the batch's end would be lost.
            for (outcome, entry) in batch.into_iter().zip(entries.by_ref()) {
                reports.push(self.record(entry, outcome)?);
            }
            // One write each per batch: a killed run loses the lines of the objects whose
            // batch was not written yet, which resume needs none of (see
            // `Journal::group_commit`).
            self.journal.flush()?;
            self.audit.flush()?;
        }
        self.journal.sync()?;
        self.audit.sync()?;
        Ok(reports)
    }

    fn record(&mut self, entry: &Entry, outcome: Outcome) -> Result<ObjectReport, MigrateError> {
        let mut report = ObjectReport::planned(entry, self.plan.transport.as_ref().ok());
        let key = entry.identity.key();
        let (reached, result) = match outcome {
            Outcome::NotAttempted => {
                report.status = "not-attempted".to_owned();
                return Ok(report);
            }
            Outcome::Untouched => {
                match entry.action {
                    Action::Skip => {
                        // An earlier run may have put the object there and died before
                        // journalling it (or failed at its proof): the plan has just proved
                        // it equal, so it is recorded as present, for `retire` to find.
                        if self.done.get(&key).is_some_and(|state| state.settled()) {
                            report.status = "done-earlier".to_owned();
                        } else {
                            report.status = "present".to_owned();
                            self.journal
                                .step(&key, &entry.identity.describe(), State::Present)?;
                        }
                    }
                    Action::Conflict => report.status = "conflict".to_owned(),
                    Action::Refuse => report.status = "refused".to_owned(),
                    Action::Move | Action::Copy => report.status = "not-attempted".to_owned(),
                }
                return Ok(report);
            }
            Outcome::Carried { reached, result } => (reached, result),
        };
        let describe = entry.identity.describe();
        for state in [State::Wrapped, State::Unwrapped] {
            if state <= reached && (state != State::Wrapped || entry.action == Action::Move) {
                self.journal.step(&key, &describe, state)?;
            }
        }
        match result {
            Ok((proof, there)) => {
                report.status = if entry.action == Action::Move {
                    "moved"
                } else {
                    "copied"
                }
                .to_owned();
                report.attributes = plan::actual(&entry.object, &there);
                report.destination_unique_id = unique_id(&there);
                self.journal.append(&Line::Step {
                    key,
                    object: describe,
                    state: State::Verified,
                    proof: Some(proof.clone()),
                    destination_unique_id: report.destination_unique_id.clone(),
                    error: None,
                })?;
                self.audit_event(
                    entry,
                    format!("ok, verified by {proof}"),
                    report.destination_unique_id.as_ref(),
                );
                report.proof = Some(proof);
            }
            Err(error) => {
                report.status = "failed".to_owned();
                self.journal.append(&Line::Step {
                    key,
                    object: describe,
                    state: State::Failed,
                    proof: None,
                    destination_unique_id: None,
                    error: Some(error.clone()),
                })?;
                self.audit_event(entry, format!("failed: {error}"), None);
                report.error = Some(error);
            }
        }
        Ok(report)
    }

    /// The object's audit entry, written with its batch's.
    fn audit_event(&mut self, entry: &Entry, result: String, unique_id: Option<&String>) {
        let mut objects = vec![entry.identity.describe()];
        objects.extend(unique_id.map(|id| format!("CKA_UNIQUE_ID {id}")));
        self.audit.defer(Event {
            action: format!("migrate.{}", entry.action.name()),
            token: self.destination.clone(),
            objects,
            result,
            run: Some(self.options.run.clone()),
        });
    }
}

/// Moves or copies one object (with its blob if it was wrapped ahead) and proves it
/// arrived; on a failed proof the new object goes. Returns the last step reached with the
/// proof and the copy, or why it failed.
fn carry(
    source: &Token,
    destination: &Token,
    entry: (&Entry, Option<Wrapped>),
    link: Option<&Link>,
    destination_profile: &Profile,
) -> (State, Result<(String, Object), String>) {
    let mut reached = State::Planned;
    let result = carry_steps(
        source,
        destination,
        entry,
        link,
        destination_profile,
        &mut reached,
    );
    (reached, result)
}

/// A key wrapped ahead on the source, or why it could not be, with its template.
struct Wrapped {
    template: Vec<RawAttribute>,
    blob: Result<Vec<u8>, crate::p11raw::RawError>,
}

fn carry_steps(
    source: &Token,
    destination: &Token,
    (entry, wrapped): (&Entry, Option<Wrapped>),
    link: Option<&Link>,
    destination_profile: &Profile,
    reached: &mut State,
) -> Result<(String, Object), String> {
    let (template, blob) = match wrapped {
        Some(Wrapped { template, blob }) => (template, Some(blob)),
        None => (
            template_for(
                entry,
                link.is_some_and(is_domain_clone),
                destination_profile,
            ),
            None,
        ),
    };
    let raw = &destination.module.raw;
    let handle = if entry.action == Action::Move {
        let link = link.ok_or("no transport key")?;
        let blob = match (blob, &entry.direct) {
            (Some(blob), _) => blob,
            (None, Some(hash)) => link.wrap_direct(&entry.object, hash),
            (None, None) => link.wrap(&entry.object),
        }
        .map_err(|err| format!("wrapping on the source: {err}"))?;
        *reached = State::Wrapped;
        // One attempt only: the template holds nothing the destination's profile refuses,
        // and a failed attempt can leave an empty object behind (SoftHSMv2).
        match &entry.direct {
            Some(hash) => link.unwrap_direct(&blob, &template, hash),
            None => link.unwrap(&blob, &template),
        }
        .map_err(|err| format!("unwrapping on the destination: {err}"))?
    } else {
        raw.create_object(&destination.session, &template)
            .map_err(|err| format!("creating on the destination: {err}"))?
    };
    *reached = State::Unwrapped;
    let verified = inventory::read_as(destination, handle, Some(entry.object.class))
        .map_err(|err| err.to_string())
        .and_then(|there| {
            let proof = if entry.object.class == CKO_PRIVATE_KEY {
                plan::verify_private(source, destination, &entry.object, &there)
            } else {
                plan::same_value(
                    source,
                    destination,
                    &entry.object,
                    entry.kcv.as_ref(),
                    &there,
                )
            };
            proof.map(|proof| (proof, there))
        });
    match verified {
        Ok(done) => Ok(done),
        Err(why) => {
            let removed = match destination.session.destroy_object(handle) {
                Ok(()) => "the destination copy was removed".to_owned(),
                Err(err) => format!(
                    "removing the destination copy failed too: {}",
                    names::cryptoki_error(&err)
                ),
            };
            Err(format!("verification failed: {why}; {removed}"))
        }
    }
}

/// `keyferry verify`: each selected source object against its destination copy.
pub fn verify(
    source: &Token,
    destination: &Token,
    objects: Vec<Object>,
) -> Result<Vec<ObjectReport>, MigrateError> {
    let bar = progress(objects.len(), "verifying");
    let mut reports = Vec::with_capacity(objects.len());
    for object in objects {
        bar.inc(1);
        let identity = object.identity();
        let kcv = crate::check::compute(source, &source.session, &object).ok();
        let mut report = ObjectReport::of(&object, "verify");
        report.kcv = kcv.as_ref().map(ToString::to_string);
        let existing = inventory::find(destination, &identity)?;
        match existing.as_slice() {
            [] => {
                report.status = "missing".to_owned();
                report.reason = Some("not on the destination".to_owned());
            }
            [there] => match plan::same_value(source, destination, &object, kcv.as_ref(), there) {
                Ok(proof) => {
                    report.status = "verified".to_owned();
                    report.proof = Some(proof);
                    report.attributes = plan::actual(&object, there);
                    report.destination_unique_id = unique_id(there);
                }
                Err(why) => {
                    report.status = "mismatch".to_owned();
                    report.reason = Some(why);
                }
            },
            several => {
                report.status = "mismatch".to_owned();
                report.reason = Some(format!("{} copies on the destination", several.len()));
            }
        }
        reports.push(report);
    }
    bar.finish_and_clear();
    Ok(reports)
}
