//! `keyferry rewrap`: data keys kept outside any token as wrapped blobs are unwrapped under
//! the old KEK and wrapped under the new one — possibly on another token — as session
//! objects, so no key is ever in clear outside a token. Every new blob is proved by
//! unwrapping it again and comparing check values.
//!
//! Input: a directory (one blob per file, the file name its id) or a JSON Lines file of
//! `{"id": …, "blob": base64, "mechanism": "CKM_AES_KEY_WRAP_KWP" | "0x210B" | …}`. Output: a
//! JSON Lines file of `{"id", "blob", "mechanism"}`, written to `OUT.partial` as it goes
//! and renamed to OUT when every record is done; failures go to `OUT.failed`, one
//! `{"id", "error"}` per line, and never stop the rest. `OUT.partial` is the journal: a
//! killed run resumes with `--resume` and skips every id already in it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};

use crate::error::MigrateError;
use crate::names::{self, CKM_AES_KEY_WRAP_KWP};
use crate::p11raw::{RawAttribute, RawMechanism};
use crate::token::Token;
use crate::transport::{self, Link, Profile};

/// How often the output is flushed to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One blob to rewrap.
struct Record {
    id: String,
    blob: Result<Vec<u8>, String>,
    mechanism: Result<CK_MECHANISM_TYPE, String>,
}

/// An input line.
#[derive(Deserialize)]
struct InputLine {
    id: String,
    blob: String,
    mechanism: Option<String>,
}

/// An output line.
#[derive(Serialize, Deserialize)]
struct OutputLine {
    id: String,
    blob: String,
    mechanism: String,
}

/// A failure line.
#[derive(Serialize)]
struct FailureLine<'a> {
    id: &'a str,
    error: &'a str,
}

/// What a rewrap run did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Records read (skipped ones included).
    pub processed: u64,
    /// Rewrapped and proved in this run.
    pub rewrapped: u64,
    /// Done by an earlier, interrupted run.
    pub skipped: u64,
    /// Failed, each with its reason in OUT.failed.
    pub failed: u64,
}

/// How a run behaves.
pub struct Options {
    /// Parallel workers, each with its own sessions.
    pub jobs: usize,
    /// The mechanism the new blobs use (RFC 5649 by default).
    pub mechanism: CK_MECHANISM_TYPE,
    /// The mechanism of directory input, whose files carry none.
    pub input_mechanism: CK_MECHANISM_TYPE,
    /// The key type of the data keys.
    pub key_type: CK_KEY_TYPE,
    /// Finish an interrupted run.
    pub resume: bool,
}

/// "CKM_AES_KEY_WRAP_KWP", "0x210B", "CKM_AES_KEY_WRAP_PAD", "CKM_AES_KEY_WRAP" → number.
pub fn parse_mechanism(text: &str) -> Result<CK_MECHANISM_TYPE, String> {
    let number = match text {
        "CKM_AES_KEY_WRAP_KWP" | "rfc5649" => CKM_AES_KEY_WRAP_KWP,
        "CKM_AES_KEY_WRAP_PAD" => CKM_AES_KEY_WRAP_PAD,
        "CKM_AES_KEY_WRAP" | "rfc3394" => CKM_AES_KEY_WRAP,
        _ => match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => CK_MECHANISM_TYPE::from_str_radix(hex, 16)
                .map_err(|_| format!("mechanism {text:?} is not a number"))?,
            None => {
                return Err(format!(
                    "unknown mechanism {text:?} (use CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP or a 0x number)"
                ));
            }
        },
    };
    match number {
        CKM_AES_KEY_WRAP_KWP | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP => Ok(number),
        other => Err(format!(
            "mechanism {} cannot carry data keys here",
            names::mechanism(other)
        )),
    }
}

/// The number this token takes for a mechanism: RFC 5649 goes by whichever of 0x210A and
/// 0x210B the token's profile showed working.
fn on_token(mechanism: CK_MECHANISM_TYPE, profile: &Profile) -> CK_MECHANISM_TYPE {
    if !matches!(mechanism, CKM_AES_KEY_WRAP_KWP | CKM_AES_KEY_WRAP_PAD) {
        return mechanism;
    }
    let works = |number| profile.rfc5649.contains(&names::mechanism(number));
    if works(mechanism) {
        mechanism
    } else if works(CKM_AES_KEY_WRAP_KWP) {
        CKM_AES_KEY_WRAP_KWP
    } else {
        CKM_AES_KEY_WRAP_PAD
    }
}

/// The key a KEK URI names (object= and/or id=): exactly one secret key.
pub fn find_kek(token: &Token) -> Result<ObjectHandle, MigrateError> {
    let mut template = vec![Attribute::Class(ObjectClass::SECRET_KEY)];
    if let Some(label) = &token.uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &token.uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    if template.len() == 1 {
        return Err(MigrateError::Usage(format!(
            "{} names no key: add object=LABEL (or id=) to its URI",
            token.who
        )));
    }
    let found = token
        .session
        .find_objects(&template)
        .map_err(|err| MigrateError::pkcs11(format!("{}: C_FindObjects", token.who), &err))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(MigrateError::Token {
            who: token.who.clone(),
            reason: format!("no secret key matches {}", token.uri),
        }),
        several => Err(MigrateError::Token {
            who: token.who.clone(),
            reason: format!(
                "{} secret keys match {}; add id= to pick one",
                several.len(),
                token.uri
            ),
        }),
    }
}

/// Records handed to a worker at once, and results handed back: one channel message per
/// batch rather than per blob keeps the threads from waking each other 13 times a blob.
const BATCH: usize = 64;

/// Collects records into batches for the workers.
struct Batcher<'a> {
    sender: &'a SyncSender<Vec<Record>>,
    batch: Vec<Record>,
}

impl Batcher<'_> {
    /// Queue a record; false once the workers are gone.
    fn push(&mut self, record: Record) -> bool {
        self.batch.push(record);
        self.batch.len() < BATCH || self.flush()
    }

    /// Send what is queued; false once the workers are gone.
    fn flush(&mut self) -> bool {
        self.batch.is_empty()
            || self
                .sender
                .send(std::mem::replace(
                    &mut self.batch,
                    Vec::with_capacity(BATCH),
                ))
                .is_ok()
    }
}

/// Reads the input: a directory of blob files or a JSON Lines file, in batches.
fn read_input(
    input: &Path,
    input_mechanism: CK_MECHANISM_TYPE,
    sender: &SyncSender<Vec<Record>>,
    skip: &HashSet<String>,
) -> Result<(), String> {
    let mut batcher = Batcher {
        sender,
        batch: Vec::with_capacity(BATCH),
    };
    read_records(input, input_mechanism, skip, &mut batcher)?;
    batcher.flush();
    Ok(())
}

fn read_records(
    input: &Path,
    input_mechanism: CK_MECHANISM_TYPE,
    skip: &HashSet<String>,
    batcher: &mut Batcher<'_>,
) -> Result<(), String> {
    if input.is_dir() {
        let entries =
            std::fs::read_dir(input).map_err(|err| format!("{}: {err}", input.display()))?;
        for entry in entries {
            let entry = entry.map_err(|err| format!("{}: {err}", input.display()))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if skip.contains(&id) || !entry.path().is_file() {
                continue;
            }
            let blob = std::fs::read(entry.path())
                .map_err(|err| format!("{}: {err}", entry.path().display()));
            if !batcher.push(Record {
                id,
                blob,
                mechanism: Ok(input_mechanism),
            }) {
                break;
            }
        }
        return Ok(());
    }
    let file = File::open(input).map_err(|err| format!("{}: {err}", input.display()))?;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|err| format!("{} line {}: {err}", input.display(), index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<InputLine>(&line) {
            Ok(parsed) => Record {
                blob: Base64::decode_vec(&parsed.blob)
                    .map_err(|_| "the blob is not base64".to_owned()),
                mechanism: parsed
                    .mechanism
                    .as_deref()
                    .map_or(Ok(input_mechanism), parse_mechanism),
                id: parsed.id,
            },
            Err(err) => Record {
                id: format!("line {}", index + 1),
                blob: Err(format!("not a {{id, blob, mechanism}} record: {err}")),
                mechanism: Ok(input_mechanism),
            },
        };
        if skip.contains(&record.id) {
            continue;
        }
        if !batcher.push(record) {
            break;
        }
    }
    Ok(())
}

/// A blob's id and what became of it.
type Outcome = (String, Result<OutputLine, String>);

/// What one worker owns: its sessions and, across tokens, its link.
struct Worker<'a> {
    old: &'a Token,
    new: &'a Token,
    link: Option<Link<'a>>,
    old_kek: ObjectHandle,
    new_kek: ObjectHandle,
    old_profile: &'a Profile,
    new_profile: &'a Profile,
    options: &'a Options,
}

/// A session key's template: usable to wrap and to check, never stored.
fn session_key(key_type: CK_KEY_TYPE) -> Vec<RawAttribute> {
    let mut template = vec![
        RawAttribute::ulong(CKA_CLASS, CKO_SECRET_KEY),
        RawAttribute::ulong(CKA_KEY_TYPE, key_type),
        RawAttribute::flag(CKA_TOKEN, false),
        RawAttribute::flag(CKA_SENSITIVE, true),
        RawAttribute::flag(CKA_EXTRACTABLE, true),
    ];
    template.push(if key_type == CKK_AES {
        RawAttribute::flag(CKA_ENCRYPT, true)
    } else {
        RawAttribute::flag(CKA_SIGN, true)
    });
    template
}

impl Worker<'_> {
    fn check_value(&self, token: &Token, key: ObjectHandle) -> Result<Vec<u8>, String> {
        let (sign, mechanism, data): (bool, CK_MECHANISM_TYPE, &[u8]) =
            if self.options.key_type == CKK_AES {
                (false, CKM_AES_ECB, &[0u8; 16])
            } else {
                (true, CKM_SHA_1_HMAC, b"keyferry key check value")
            };
        token
            .module
            .raw
            .single_part(&token.session, sign, mechanism, key, data)
            .map_err(|err| err.to_string())
    }

    /// Rewraps one blob; every session object it makes is gone when it returns.
    fn rewrap(&self, record: &Record) -> Result<OutputLine, String> {
        let blob = record.blob.as_ref().map_err(Clone::clone)?;
        let mechanism = *record.mechanism.as_ref().map_err(Clone::clone)?;
        let template = session_key(self.options.key_type);
        let mut made: Vec<(&Token, ObjectHandle)> = Vec::new();
        let outcome = (|| {
            let old_mechanism = RawMechanism::Plain(on_token(mechanism, self.old_profile));
            let key = self
                .old
                .module
                .raw
                .unwrap_key(
                    &self.old.session,
                    &old_mechanism,
                    self.old_kek,
                    blob,
                    &template,
                )
                .map_err(|err| format!("unwrapping under the old KEK: {err}"))?;
            made.push((self.old, key));
            let before = self.check_value(self.old, key)?;
            let key = match &self.link {
                None => key,
                Some(link) => {
                    let carried = link
                        .wrap_handle(key)
                        .map_err(|err| format!("carrying to the new token: {err}"))?;
                    let there = link
                        .unwrap(&carried, &template)
                        .map_err(|err| format!("carrying to the new token: {err}"))?;
                    made.push((self.new, there));
                    there
                }
            };
            let new_mechanism =
                RawMechanism::Plain(on_token(self.options.mechanism, self.new_profile));
            let new_blob = self
                .new
                .module
                .raw
                .wrap_key(&self.new.session, &new_mechanism, self.new_kek, key)
                .map_err(|err| format!("wrapping under the new KEK: {err}"))?;
            let proof = self
                .new
                .module
                .raw
                .unwrap_key(
                    &self.new.session,
                    &new_mechanism,
                    self.new_kek,
                    &new_blob,
                    &template,
                )
                .map_err(|err| format!("checking the new blob: {err}"))?;
            made.push((self.new, proof));
            if self.check_value(self.new, proof)? != before {
                return Err("the new blob holds another key than the old one".to_owned());
            }
            Ok(OutputLine {
                id: record.id.clone(),
                blob: Base64::encode_string(&new_blob),
                mechanism: names::mechanism(self.options.mechanism),
            })
        })();
        for (token, handle) in made {
            let _ = token.session.destroy_object(handle);
        }
        outcome
    }
}

/// The ids an interrupted run already wrote, after dropping a torn last line.
fn done_ids(partial: &Path) -> Result<HashSet<String>, MigrateError> {
    let bytes = crate::journal::drop_torn_tail(partial)
        .map_err(|err| MigrateError::Usage(format!("{}: {err}", partial.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .map(|line| {
            serde_json::from_str::<OutputLine>(line)
                .map(|line| line.id)
                .map_err(|err| {
                    MigrateError::Usage(format!(
                        "{} is not rewrap output ({err}); remove it to start again",
                        partial.display()
                    ))
                })
        })
        .collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Rewraps every record of `input` from `old`'s KEK to `new`'s into `output`.
pub fn run(
    old: &Token,
    new: &Token,
    input: &Path,
    output: &Path,
    options: &Options,
) -> Result<Summary, MigrateError> {
    if !input.exists() {
        return Err(MigrateError::Usage(format!(
            "{}: no such file or directory",
            input.display()
        )));
    }
    if output.exists() {
        return Err(MigrateError::Usage(format!(
            "{} exists; rewrap never overwrites an output",
            output.display()
        )));
    }
    let partial = with_suffix(output, ".partial");
    let failed_path = with_suffix(output, ".failed");
    let skip = match (partial.exists(), options.resume) {
        (true, true) => done_ids(&partial)?,
        (true, false) => {
            return Err(MigrateError::Usage(format!(
                "{} is left from an interrupted run; pass --resume to finish it, or remove it",
                partial.display()
            )));
        }
        (false, _) => HashSet::new(),
    };
    let old_kek = find_kek(old)?;
    let new_kek = find_kek(new)?;
    let old_profile = transport::probe(old, &old.session, false);
    let same_token = old.module.path == new.module.path && old.slot == new.slot;
    let new_profile = if same_token {
        old_profile.clone()
    } else {
        transport::probe(new, &new.session, false)
    };
    let link_transport = if same_token {
        None
    } else {
        Some(
            transport::negotiate(&old_profile, &new_profile, None).map_err(|why| {
                MigrateError::Pkcs11 {
                    context: "choosing how keys cross from the old KEK's token to the new one's"
                        .to_owned(),
                    reason: why,
                }
            })?,
        )
    };
    let open = |path: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| MigrateError::Usage(format!("{}: {err}", path.display())))
    };
    // Buffered: a line not yet flushed is simply redone by --resume.
    let mut out = BufWriter::new(open(&partial)?);
    let mut failures = BufWriter::new(open(&failed_path)?);
    let mut summary = Summary {
        skipped: u64::try_from(skip.len()).unwrap_or(0),
        ..Summary::default()
    };
    summary.processed = summary.skipped;

    let jobs = options.jobs.max(1);
    let (record_sender, records) = sync_channel::<Vec<Record>>(jobs * 4);
    let records = Arc::new(Mutex::new(records));
    let (result_sender, results) = sync_channel::<Vec<Outcome>>(jobs * 4);
    let bar = crate::migrate::progress(0, "rewrapping");
    let outcome = std::thread::scope(|scope| -> Result<(), MigrateError> {
        // The reader owns the sender: when the input ends, the workers' receive ends too.
        let skip = &skip;
        let reader =
            scope.spawn(move || read_input(input, options.input_mechanism, &record_sender, skip));
        let mut workers = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let old = old.fork()?;
            let new = new.fork()?;
            let records = Arc::clone(&records);
            let results = result_sender.clone();
            let (old_profile, new_profile, link_transport) =
                (&old_profile, &new_profile, link_transport.clone());
            workers.push(scope.spawn(move || {
                work(
                    &old,
                    &new,
                    link_transport,
                    (old_kek, new_kek),
                    (old_profile, new_profile),
                    options,
                    &records,
                    &results,
                )
            }));
        }
        drop(result_sender);
        let mut last_sync = Instant::now();
        for (id, result) in results.iter().flatten() {
            summary.processed += 1;
            bar.inc(1);
            let written = match &result {
                Ok(line) => {
                    summary.rewrapped += 1;
                    serde_json::to_string(line).map(|text| writeln!(out, "{text}"))
                }
                Err(error) => {
                    summary.failed += 1;
                    serde_json::to_string(&FailureLine { id: &id, error })
                        .map(|text| writeln!(failures, "{text}"))
                }
            };
            written
                .map_err(|err| MigrateError::Usage(err.to_string()))?
                .map_err(|err| MigrateError::Usage(format!("{}: {err}", partial.display())))?;
            if last_sync.elapsed() >= SYNC_EVERY {
                out.flush()
                    .and_then(|()| failures.flush())
                    .and_then(|()| out.get_ref().sync_data())
                    .and_then(|()| failures.get_ref().sync_data())
                    .map_err(|err| MigrateError::Usage(err.to_string()))?;
                last_sync = Instant::now();
            }
        }
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(_) => return Err(MigrateError::Usage("a rewrap worker panicked".to_owned())),
            }
        }
        match reader.join() {
            Ok(result) => result.map_err(MigrateError::Usage),
            Err(_) => Err(MigrateError::Usage("the input reader panicked".to_owned())),
        }
    });
    bar.finish_and_clear();
    outcome?;
    out.flush()
        .and_then(|()| failures.flush())
        .and_then(|()| out.get_ref().sync_all())
        .and_then(|()| failures.get_ref().sync_all())
        .map_err(|err| MigrateError::Usage(err.to_string()))?;
    std::fs::rename(&partial, output)
        .map_err(|err| MigrateError::Usage(format!("{}: {err}", output.display())))?;
    if summary.failed == 0 {
        let _ = std::fs::remove_file(&failed_path);
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)] // a thread's whole world, passed once
fn work(
    old: &Token,
    new: &Token,
    link_transport: Option<transport::Transport>,
    (old_kek, new_kek): (ObjectHandle, ObjectHandle),
    (old_profile, new_profile): (&Profile, &Profile),
    options: &Options,
    records: &Mutex<Receiver<Vec<Record>>>,
    results: &SyncSender<Vec<Outcome>>,
) -> Result<(), MigrateError> {
    let link =
        match link_transport {
            Some(transport) => Some(Link::establish(old, new, transport).map_err(|reason| {
                MigrateError::Pkcs11 {
                    context: "agreeing a transport key between the two KEKs' tokens".to_owned(),
                    reason,
                }
            })?),
            None => None,
        };
    let worker = Worker {
        old,
        new,
        link,
        old_kek,
        new_kek,
        old_profile,
        new_profile,
        options,
    };
    loop {
        let batch = match records.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return Err(MigrateError::Usage("a rewrap worker panicked".to_owned())),
        };
        let Ok(batch) = batch else { return Ok(()) };
        let done = batch
            .into_iter()
            .map(|record| {
                let result = worker.rewrap(&record);
                (record.id, result)
            })
            .collect();
        if results.send(done).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests
mod tests {
    use super::*;

    #[test]
    fn mechanisms_are_named_or_numbered() {
        assert_eq!(parse_mechanism("CKM_AES_KEY_WRAP_KWP"), Ok(0x210B));
        assert_eq!(parse_mechanism("0x210B"), Ok(0x210B));
        assert_eq!(parse_mechanism("0x210a"), Ok(0x210A));
        assert_eq!(parse_mechanism("CKM_AES_KEY_WRAP"), Ok(0x2109));
        assert!(
            parse_mechanism("0x1082")
                .unwrap_err()
                .contains("cannot carry data keys")
        );
        assert!(
            parse_mechanism("rot13")
                .unwrap_err()
                .starts_with("unknown mechanism")
        );
    }
}
