//! The audit log: an append-only, hash-chained JSON-lines record of every state-changing step.
//!
//! Each line is one [`Entry`]: what happened ([`Event`]), when, by whom, on which host, its
//! place in the chain (`seq`) and two hashes. Only descriptive strings go in: the API takes no
//! key material, PIN or wrapped blob, so none can reach the file.
//!
//! # Hashing rule
//!
//! `hash` is the lowercase hex SHA-256 of the entry written as compact JSON (serde_json, no
//! whitespace, its string escaping: `"`, `\` and control characters only, other characters as
//! UTF-8) with `hash` set to the empty string, keys in this order:
//!
//! ```text
//! seq, time, user, host, action, token, objects, result, run, prev, hash
//! ```
//!
//! Put another way: take a line as written, drop its `\n`, replace the final
//! `"hash":"<64 hex digits>"` with `"hash":""` and hash those bytes. `prev` is the previous
//! entry's `hash`, 64 zeros for `seq` 1. A line must be byte for byte that serialization: an
//! added key, reordered keys or changed spacing count as an edit even when the hash still
//! matches, because the hash alone would not cover them.
//!
//! # What the chain catches, and what it cannot
//!
//! Anyone who edits, reorders, inserts or deletes a line without rewriting every line after it
//! breaks the chain, and [`verify`] names the first bad line. Deleting the last lines, or
//! rewriting the whole chain (the hash has no key), leaves a chain that verifies: only a head
//! hash kept somewhere else (a ticket, the run report) catches that, via `expect_head`.
//!
//! One writer at a time: [`AuditLog::append`] continues a chain another writer extended
//! between its appends, but two processes appending at the same instant fork the chain.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first entry, and the head of an empty log.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why a log with a torn last line does not verify.
const TORN: &str = "incomplete: the last line has no newline (a write was cut off); \
                    keyferry removes it the next time it opens the log for appending";

/// Why the audit log cannot be read, trusted or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A line is not what the chain requires: the log was edited, reordered or cut.
    #[error("audit log line {line}: {reason}")]
    Broken {
        /// The first bad line, 1-based.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The chain verifies but does not end where it should.
    #[error(
        "audit log ends at hash {found}, expected {expected}: \
         entries were deleted from its end or the chain was rewritten"
    )]
    HeadMismatch {
        /// The head recorded elsewhere (or last written by this process).
        expected: String,
        /// The head the file has.
        found: String,
    },
    /// The log cannot be opened, read or written.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What happened, as the caller describes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// What was done, e.g. "migrate.create", "retire.destroy", "rekey.generate".
    pub action: String,
    /// The token's URI (without a PIN) or description.
    pub token: String,
    /// Descriptions or ids of the objects concerned.
    pub objects: Vec<String>,
    /// "ok", or the error text.
    pub result: String,
    /// The run id, when there is one.
    pub run: Option<String>,
}

/// One line of the log: the event plus its place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// 1, 2, 3 ... with no gaps.
    pub seq: u64,
    /// RFC 3339 UTC with seconds, e.g. "2026-11-26T13:49:17Z".
    pub time: String,
    /// The login name from the environment: descriptive, not proof of identity.
    pub user: String,
    /// The host name.
    pub host: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
    /// `hash` of the previous entry; 64 zeros for `seq` 1.
    pub prev: String,
    /// Hex SHA-256 of this entry with `hash` set to "" (see the module doc).
    pub hash: String,
}

/// An audit log open for appending, positioned at the head of its chain.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The file's length after this handle's last read or write: if it differs at the next
    /// append, someone else wrote in between.
    len: u64,
    last_seq: u64,
    last_hash: String,
    user: String,
    host: String,
    /// Under group commit, when the entries written so far were last made durable.
    group_commit: Option<Instant>,
    /// Events deferred with their time, chained and written together at the next `flush`.
    deferred: Vec<(String, Event)>,
}

/// How long an entry may wait for its fsync under group commit.
const GROUP_COMMIT: Duration = Duration::from_millis(50);

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.group_commit.is_some() {
            // Best effort: `sync` already ran at the end of every complete run.
            let _ = self.sync();
        }
    }
}

impl AuditLog {
    /// Opens (creating with mode 0600 if missing) and reads the chain's head; an existing log
    /// whose chain does not verify is refused ([`AuditError::Broken`]) so nothing is appended
    /// to a tampered log. A torn final line without '\n' (crash mid-append) is truncated away
    /// (to just after the last '\n'), once the lines before it verify.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_read(path, None)
    }

    /// Opens the log for appending; `read` is its chain as read ahead, and whether it was
    /// read to the end of the file: the whole file is read again when it has changed since.
    fn open_read(path: &Path, read: Option<(Chain, u64)>) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        let len = file
            .metadata()
            .map_err(|source| io_error(path, source))?
            .len();
        let head = match read {
            Some((chain, read_len)) if read_len == len => chain,
            _ => read_chain(path, BufReader::new(&file), 0)?,
        };
        if head.torn_line.is_some() {
            // `append` returns only after sync_data, so a line without its newline was never
            // acknowledged to anyone: it goes, and the next entry starts on a line of its own.
            file.set_len(head.complete_len)
                .and_then(|()| file.sync_data())
                .map_err(|source| io_error(path, source))?;
        }
        if head.complete_len == 0 {
            sync_parent_dir(path);
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            len: head.complete_len,
            last_seq: head.entries,
            last_hash: head.hash,
            user: user_name(),
            host: host_name(),
            group_commit: None,
            deferred: Vec::new(),
        })
    }

    /// From now on, entries are fsync'd together, at most `GROUP_COMMIT` after they were
    /// written and always by `sync` (only a crash of the machine can lose the last entries
    /// written, and the chain of those before them still verifies), and `defer` may hold
    /// entries back until the next `flush`. For `migrate`, whose objects are found again by
    /// identity on resume.
    pub fn group_commit(&mut self) {
        self.group_commit = Some(Instant::now());
    }

    /// Makes every entry appended or deferred so far durable.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|source| io_error(&self.path, source))?;
        if self.group_commit.is_some() {
            self.group_commit = Some(Instant::now());
        }
        Ok(())
    }

    /// Appends one entry (and any deferred before it), write_all + sync_data before
    /// returning (unless under group commit); returns the entry.
    pub fn append(&mut self, event: Event) -> Result<Entry, AuditError> {
        self.defer(event);
        // `defer` has just added an event, so there is a last entry written.
        Ok(self
            .write_deferred()?
            .expect("the event just deferred is written"))
    }

    /// Records `event` at this time, to be chained and written with the others deferred at
    /// the next `flush`, `sync` or `append`: one write for a batch of objects.
    pub fn defer(&mut self, event: Event) {
        self.deferred.push((rfc3339_utc(now_seconds()), event));
    }

    /// Writes the deferred entries.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.write_deferred().map(drop)
    }

    /// Chains the deferred events onto the log's head (another writer's entries included)
    /// and writes them in one write, fsync'd unless group commit lets them wait; returns
    /// the last entry written.
    fn write_deferred(&mut self) -> Result<Option<Entry>, AuditError> {
        if self.deferred.is_empty() {
            return Ok(None);
        }
        let deferred = std::mem::take(&mut self.deferred);
        self.catch_up()?;
        let mut lines = Vec::new();
        let mut last: Option<Entry> = None;
        for (time, event) in deferred {
            let mut entry = Entry {
                // Cannot overflow: the sequence counts lines that were read or written.
                seq: last.as_ref().map_or(self.last_seq, |entry| entry.seq) + 1,
                time,
                user: self.user.clone(),
                host: self.host.clone(),
                event,
                prev: last
                    .as_ref()
                    .map_or_else(|| self.last_hash.clone(), |entry| entry.hash.clone()),
                hash: String::new(),
            };
            entry.hash = chain_hash(&entry).map_err(|err| io_error(&self.path, err.into()))?;
            serde_json::to_writer(&mut lines, &entry)
                .map_err(|err| io_error(&self.path, err.into()))?;
            lines.push(b'\n');
            last = Some(entry);
        }
        let due = self
            .group_commit
            .is_none_or(|synced| synced.elapsed() >= GROUP_COMMIT);
        if let Err(source) = self.file.write_all(&lines).and_then(|()| {
            if due {
                self.file.sync_data()?;
            }
            Ok(())
        }) {
            // Take back a partial line so the next entry does not run into it; the caller
            // learns that these were not recorded.
            let _ = self.file.set_len(self.len);
            return Err(io_error(&self.path, source));
        }
        if due && self.group_commit.is_some() {
            self.group_commit = Some(Instant::now());
        }
        self.len += lines.len() as u64;
        if let Some(entry) = &last {
            self.last_seq = entry.seq;
            self.last_hash.clone_from(&entry.hash);
        }
        Ok(last)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle (or process) may have appended since this one last wrote: continue its
    /// chain instead of forking it, but only if our own last entry is still where we left it.
    fn catch_up(&mut self) -> Result<(), AuditError> {
        let len = self
            .file
            .metadata()
            .map_err(|source| io_error(&self.path, source))?
            .len();
        if len == self.len {
            return Ok(());
        }
        // Reads follow the file position; O_APPEND writes go to the end whatever it is.
        (&self.file)
            .seek(SeekFrom::Start(0))
            .map_err(|source| io_error(&self.path, source))?;
        let head = read_chain(&self.path, BufReader::new(&self.file), self.last_seq)?;
        if head.hash_at_mark.as_deref() != Some(self.last_hash.as_str()) {
            return Err(AuditError::HeadMismatch {
                expected: self.last_hash.clone(),
                found: head.hash_at_mark.unwrap_or(head.hash),
            });
        }
        if let Some(line) = head.torn_line {
            // Unlike at `open`, this may be another writer's line in flight: leave it be.
            return Err(AuditError::Broken {
                line,
                reason: TORN.to_owned(),
            });
        }
        self.len = head.complete_len;
        self.last_seq = head.entries;
        self.last_hash = head.hash;
        Ok(())
    }
}

/// An audit log being read and checked on another thread, so that a long log costs no
/// time while the caller opens its tokens; [`Prepared::open`] then opens it for appending.
pub struct Prepared {
    path: PathBuf,
    reading: std::thread::JoinHandle<Result<Option<(Chain, u64)>, AuditError>>,
}

impl Prepared {
    /// Starts reading `path` (a log that does not exist yet reads as empty). Reading
    /// writes nothing: a run that stops before [`Prepared::open`] leaves no file behind.
    pub fn start(path: &Path) -> Self {
        let owned = path.to_owned();
        let reading = std::thread::spawn(move || {
            let file = match File::open(&owned) {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(io_error(&owned, source)),
            };
            let len = file
                .metadata()
                .map_err(|source| io_error(&owned, source))?
                .len();
            let chain = read_chain(&owned, BufReader::new(file.take(len)), 0)?;
            Ok(Some((chain, len)))
        });
        Self {
            path: path.to_owned(),
            reading,
        }
    }

    /// [`AuditLog::open`], with the chain read ahead unless the file changed meanwhile.
    pub fn open(self) -> Result<AuditLog, AuditError> {
        let read = self
            .reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        AuditLog::open_read(&self.path, read)
    }
}

/// What `audit verify` found for an intact log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// How many entries the log holds.
    pub entries: u64,
    /// Hash of the last entry, or 64 zeros for an empty log.
    pub head: String,
}

/// Checks every line: JSON shape, seq = previous + 1 starting at 1, prev = previous hash, hash
/// recomputed, line written canonically. `Err(AuditError::Broken { line, reason })` names the
/// first bad line (1-based) and what is wrong with it.
///
/// A chain alone cannot show that its last lines were deleted (nor that the whole chain was
/// rewritten, as the hash has no key): what remains still verifies. `expect_head`, a head
/// hash kept outside the log (compared ignoring ASCII case), catches that: when given, the
/// last entry's hash must equal it, else [`AuditError::HeadMismatch`].
pub fn verify(path: &Path, expect_head: Option<&str>) -> Result<Verified, AuditError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let head = read_chain(path, BufReader::new(file), 0)?;
    if let Some(line) = head.torn_line {
        return Err(AuditError::Broken {
            line,
            reason: TORN.to_owned(),
        });
    }
    if let Some(expected) =
        expect_head.filter(|expected| !expected.eq_ignore_ascii_case(&head.hash))
    {
        return Err(AuditError::HeadMismatch {
            expected: expected.to_owned(),
            found: head.hash,
        });
    }
    Ok(Verified {
        entries: head.entries,
        head: head.hash,
    })
}

/// How far a log's chain verifies.
struct Chain {
    /// Complete, verified lines.
    entries: u64,
    /// Hash of the last of them, or 64 zeros.
    hash: String,
    /// Hash of the entry whose seq is the `mark` asked for (64 zeros for mark 0), if present.
    hash_at_mark: Option<String>,
    /// Bytes up to and including the last '\n'.
    complete_len: u64,
    /// The line number of trailing bytes without a '\n', if any; they are not checked.
    torn_line: Option<usize>,
}

/// Reads and checks every complete line, stopping at the first bad one.
fn read_chain(path: &Path, mut reader: impl BufRead, mark: u64) -> Result<Chain, AuditError> {
    let mut chain = Chain {
        entries: 0,
        hash: GENESIS.to_owned(),
        hash_at_mark: (mark == 0).then(|| GENESIS.to_owned()),
        complete_len: 0,
        torn_line: None,
    };
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|source| io_error(path, source))?;
        if read == 0 {
            return Ok(chain);
        }
        line += 1;
        let Some(text) = buffer.strip_suffix(b"\n") else {
            chain.torn_line = Some(line);
            return Ok(chain);
        };
        let entry = check_line(text, line, chain.entries, &chain.hash)
            .map_err(|reason| AuditError::Broken { line, reason })?;
        chain.entries = entry.seq;
        if entry.seq == mark {
            chain.hash_at_mark = Some(entry.hash.clone());
        }
        chain.hash = entry.hash;
        chain.complete_len += read as u64;
    }
}

/// Checks one line (without its '\n') against the chain so far; the error is the reason.
fn check_line(text: &[u8], line: usize, last_seq: u64, last_hash: &str) -> Result<Entry, String> {
    if text.is_empty() {
        return Err("not an audit entry: the line is empty".to_owned());
    }
    let entry: Entry =
        serde_json::from_slice(text).map_err(|err| format!("not an audit entry: {err}"))?;
    // Cannot overflow: `last_seq` equals the number of lines already checked.
    if entry.seq != last_seq + 1 {
        return Err(if last_seq == 0 {
            format!(
                "out of order or a line is missing: the log starts at seq {}, not 1",
                entry.seq
            )
        } else {
            format!(
                "out of order or a line is missing: seq {} after {last_seq}",
                entry.seq
            )
        });
    }
    if entry.prev != last_hash {
        return Err(if last_seq == 0 {
            "prev of the first entry is not 64 zeros".to_owned()
        } else {
            format!("prev does not match line {}'s hash", line.saturating_sub(1))
        });
    }
    let reserialized = |err: serde_json::Error| format!("cannot be re-serialized: {err}");
    let canonical = serde_json::to_vec(&entry).map_err(reserialized)?;
    let hash = if canonical == text {
        // The line is the entry's serialization, `hash` last: its bytes are hashed with the
        // hash's value cut out (the module doc's rule) instead of serializing it again.
        let sealed = serde_json::to_vec(&entry.hash).map_err(reserialized)?;
        let unsealed = &text[..text.len() - sealed.len() - 1];
        hex::encode(
            Sha256::new()
                .chain_update(unsealed)
                .chain_update(b"\"\"}")
                .finalize(),
        )
    } else {
        chain_hash(&entry).map_err(reserialized)?
    };
    if entry.hash != hash {
        return Err("edited: hash does not match its contents".to_owned());
    }
    if canonical != text {
        return Err("edited: not written the way keyferry writes it \
                    (an added or reordered key, or changed spacing)"
            .to_owned());
    }
    Ok(entry)
}

/// The hash `entry` must carry: see the module doc.
fn chain_hash(entry: &Entry) -> Result<String, serde_json::Error> {
    let unsealed = Entry {
        hash: String::new(),
        ..entry.clone()
    };
    Ok(hex::encode(Sha256::digest(serde_json::to_vec(&unsealed)?)))
}

fn io_error(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A new log's directory entry must survive a crash too. Best effort: the entries themselves
/// are synced, and a failure here changes nothing the caller could act on.
fn sync_parent_dir(path: &Path) {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(dir) = parent.and_then(|parent| File::open(parent).ok()) {
        let _ = dir.sync_all();
    }
}

fn now_seconds() -> u64 {
    // A clock before 1970 is broken anyway; the entry then says 1970 rather than failing the
    // step it records.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Seconds since the Unix epoch as RFC 3339 UTC, e.g. "2026-11-26T13:49:17Z".
fn rfc3339_utc(seconds: u64) -> String {
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian: Howard Hinnant's
/// `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms"), unsigned because the
/// days are never before 1970.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01 so that each leap day is the last day of its year.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// The login name, from the environment: no libc here, and the field describes, it does not
/// authenticate.
fn user_name() -> String {
    env_value("USER")
        .or_else(|| env_value("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| env_value("HOSTNAME"))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn event(action: &str, object: &str) -> Event {
        Event {
            action: action.to_owned(),
            token: "pkcs11:token=new-root".to_owned(),
            objects: vec![object.to_owned()],
            result: "ok".to_owned(),
            run: Some("7f3a0001".to_owned()),
        }
    }

    /// A log of three entries in a fresh directory.
    fn three(dir: &tempfile::TempDir) -> (PathBuf, Vec<Entry>) {
        let path = dir.path().join("keyferry-audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        let entries = vec![
            log.append(event("migrate.create", "kek-2024")).unwrap(),
            log.append(event("migrate.create", "data-key-1")).unwrap(),
            log.append(event("retire.destroy", "kek-2024")).unwrap(),
        ];
        (path, entries)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        std::fs::write(path, text).unwrap();
    }

    fn broken(result: Result<Verified, AuditError>) -> (usize, String) {
        match result {
            Err(AuditError::Broken { line, reason }) => (line, reason),
            other => panic!("expected Broken, got {other:?}"),
        }
    }

    #[test]
    fn a_fresh_log_verifies_with_its_last_hash_as_head() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        assert_eq!(
            verify(&path, None).unwrap(),
            Verified {
                entries: 3,
                head: entries[2].hash.clone()
            }
        );
        assert_eq!(
            entries.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[1].prev, entries[0].hash);
        assert_eq!(entries[2].prev, entries[1].hash);
        assert_eq!(entries[1].event, event("migrate.create", "data-key-1"));
        assert_eq!(
            verify(&path, Some(&entries[2].hash.to_uppercase()))
                .unwrap()
                .entries,
            3
        );
    }

    #[test]
    fn the_hash_follows_the_documented_rule() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        let second = &lines(&path)[1];
        assert!(second.starts_with(r#"{"seq":2,"time":""#));
        let sealed = format!(r#","hash":"{}"}}"#, entries[1].hash);
        let unsealed = second.replace(&sealed, r#","hash":""}"#);
        assert_ne!(&unsealed, second);
        assert_eq!(
            hex::encode(Sha256::digest(unsealed.as_bytes())),
            entries[1].hash
        );
        assert_eq!(serde_json::from_str::<Entry>(second).unwrap(), entries[1]);
    }

    #[test]
    fn an_edited_field_is_found_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text[1] = text[1].replace(r#""result":"ok""#, r#""result":"failed""#);
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (2, "edited: hash does not match its contents".to_owned())
        );
    }

    #[test]
    fn an_added_key_is_an_edit_even_though_the_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text[1] = text[1].replacen('{', r##"{"note":"approved","##, 1);
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (
                2,
                "edited: not written the way keyferry writes it \
                 (an added or reordered key, or changed spacing)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn swapped_lines_are_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text.swap(1, 2);
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (
                2,
                "out of order or a line is missing: seq 3 after 1".to_owned()
            )
        );
    }

    #[test]
    fn a_deleted_line_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text.remove(1);
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (
                2,
                "out of order or a line is missing: seq 3 after 1".to_owned()
            )
        );
    }

    #[test]
    fn a_deleted_first_line_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text.remove(0);
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (
                1,
                "out of order or a line is missing: the log starts at seq 2, not 1".to_owned()
            )
        );
    }

    /// A line with a correct hash of its own contents, as a forger would write it.
    fn forged(seq: u64, prev: &str) -> String {
        let mut entry = Entry {
            seq,
            time: "2026-11-26T13:49:17Z".to_owned(),
            user: "root".to_owned(),
            host: "vault".to_owned(),
            event: event("retire.destroy", "audit-evidence"),
            prev: prev.to_owned(),
            hash: String::new(),
        };
        entry.hash = chain_hash(&entry).unwrap();
        serde_json::to_string(&entry).unwrap()
    }

    #[test]
    fn an_inserted_line_with_the_wrong_prev_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text.insert(1, forged(2, &"ab".repeat(32)));
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (2, "prev does not match line 1's hash".to_owned())
        );
    }

    #[test]
    fn an_inserted_line_that_fits_before_it_breaks_the_line_after() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        let mut text = lines(&path);
        text.insert(1, forged(2, &entries[0].hash));
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (
                3,
                "out of order or a line is missing: seq 2 after 2".to_owned()
            )
        );
    }

    #[test]
    fn a_first_line_with_a_nonzero_prev_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_lines(&path, &[forged(1, &"ab".repeat(32))]);
        assert_eq!(
            broken(verify(&path, None)),
            (1, "prev of the first entry is not 64 zeros".to_owned())
        );
    }

    #[test]
    fn a_line_that_is_not_an_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text[1] = "garbage".to_owned();
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (
                2,
                "not an audit entry: expected value at line 1 column 1".to_owned()
            )
        );
        text[1] = String::new();
        write_lines(&path, &text);
        assert_eq!(
            broken(verify(&path, None)),
            (2, "not an audit entry: the line is empty".to_owned())
        );
    }

    #[test]
    fn a_deleted_last_line_is_caught_only_by_the_expected_head() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        let mut text = lines(&path);
        text.pop();
        write_lines(&path, &text);
        assert_eq!(
            verify(&path, None).unwrap(),
            Verified {
                entries: 2,
                head: entries[1].hash.clone()
            }
        );
        match verify(&path, Some(&entries[2].hash)) {
            Err(AuditError::HeadMismatch { expected, found }) => {
                assert_eq!(expected, entries[2].hash);
                assert_eq!(found, entries[1].hash);
            }
            other => panic!("expected HeadMismatch, got {other:?}"),
        }
    }

    #[test]
    fn reopening_continues_the_seq_and_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.path(), path);
        let fourth = log.append(event("rekey.generate", "kek-2026")).unwrap();
        assert_eq!(fourth.seq, 4);
        assert_eq!(fourth.prev, entries[2].hash);
        assert_eq!(
            verify(&path, Some(&fourth.hash)).unwrap(),
            Verified {
                entries: 4,
                head: fourth.hash
            }
        );
    }

    #[test]
    fn a_new_log_is_private_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.jsonl");
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.path(), path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            verify(&path, Some(GENESIS)).unwrap(),
            Verified {
                entries: 0,
                head: GENESIS.to_owned()
            }
        );
    }

    #[test]
    fn a_torn_last_line_fails_verify_and_is_truncated_by_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        let intact = std::fs::read(&path).unwrap();
        let mut torn = intact.clone();
        torn.extend_from_slice(br#"{"seq":4,"time":"2026-11-"#);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(broken(verify(&path, None)), (4, TORN.to_owned()));

        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), intact);
        let fourth = log.append(event("sync.fix", "kek-2024")).unwrap();
        assert_eq!(fourth.seq, 4);
        assert_eq!(fourth.prev, entries[2].hash);
        assert_eq!(verify(&path, None).unwrap().entries, 4);
    }

    #[test]
    fn open_refuses_a_tampered_log_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let mut text = lines(&path);
        text[1] = text[1].replace(r#""result":"ok""#, r#""result":"failed""#);
        write_lines(&path, &text);
        // A torn tail too: a refused log must not be truncated either.
        let mut tampered = std::fs::read(&path).unwrap();
        tampered.extend_from_slice(b"{\"seq\":4");
        std::fs::write(&path, &tampered).unwrap();
        match AuditLog::open(&path) {
            Err(AuditError::Broken { line, reason }) => {
                assert_eq!(line, 2);
                assert_eq!(reason, "edited: hash does not match its contents");
            }
            Err(other) => panic!("expected Broken, got {other:?}"),
            Ok(_) => panic!("a tampered log was opened"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), tampered);
    }

    #[test]
    fn deferred_entries_wait_for_flush_and_chain_onto_another_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut batched = AuditLog::open(&path).unwrap();
        batched.group_commit();
        let mut other = AuditLog::open(&path).unwrap();
        batched.defer(event("migrate.move", "a"));
        batched.defer(event("migrate.move", "b"));
        assert!(lines(&path).is_empty(), "nothing is written before flush");
        // Another writer appends between the deferral and the flush.
        let first = other.append(event("retire.destroy", "x")).unwrap();
        batched.flush().unwrap();
        let written = lines(&path);
        assert_eq!(written.len(), 3);
        let a: Entry = serde_json::from_str(&written[1]).unwrap();
        let b: Entry = serde_json::from_str(&written[2]).unwrap();
        assert_eq!((a.seq, b.seq), (2, 3));
        assert_eq!(a.prev, first.hash);
        assert_eq!(a.event.objects, ["a"]);
        assert_eq!(b.prev, a.hash);
        assert_eq!(verify(&path, Some(&b.hash)).unwrap().entries, 3);
        // A flush with nothing deferred writes nothing.
        batched.flush().unwrap();
        assert_eq!(lines(&path).len(), 3);
    }

    #[test]
    fn a_handle_dropped_with_entries_deferred_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = AuditLog::open(&path).unwrap();
        log.group_commit();
        log.defer(event("migrate.move", "a"));
        drop(log);
        assert_eq!(verify(&path, None).unwrap().entries, 1);
    }

    #[test]
    fn a_log_read_ahead_opens_at_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = three(&dir);
        let mut log = Prepared::start(&path).open().unwrap();
        let fourth = log.append(event("rekey.generate", "kek-2026")).unwrap();
        assert_eq!(fourth.seq, 4);
        assert_eq!(fourth.prev, entries[2].hash);
        // A log that does not exist yet is read as empty and made at `open`, not before.
        let fresh = dir.path().join("fresh.jsonl");
        let prepared = Prepared::start(&fresh);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!fresh.exists(), "reading ahead wrote nothing");
        let mut log = prepared.open().unwrap();
        assert_eq!(log.append(event("migrate.move", "a")).unwrap().seq, 1);
    }

    #[test]
    fn a_log_read_ahead_is_read_again_when_it_changed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three(&dir);
        let fourth = AuditLog::open(&path)
            .unwrap()
            .append(event("retire.destroy", "kek-2024"))
            .unwrap();
        let whole = std::fs::read(&path).unwrap();
        // The read ahead finds another writer's fourth line half written...
        std::fs::write(&path, &whole[..whole.len() - 20]).unwrap();
        let prepared = Prepared::start(&path);
        std::thread::sleep(std::time::Duration::from_millis(50));
        // ...which is complete by the time the log is opened: it must stay.
        std::fs::write(&path, &whole).unwrap();
        let fifth = prepared
            .open()
            .unwrap()
            .append(event("rekey.generate", "kek-2026"))
            .unwrap();
        assert_eq!(fifth.seq, 5);
        assert_eq!(fifth.prev, fourth.hash);
        // And a tampered log found by the read ahead is refused, untouched.
        let mut text = lines(&path);
        text[0] = text[0].replace(r#""result":"ok""#, r#""result":"failed""#);
        write_lines(&path, &text);
        match Prepared::start(&path).open() {
            Err(AuditError::Broken { line, .. }) => assert_eq!(line, 1),
            Err(other) => panic!("expected Broken, got {other:?}"),
            Ok(_) => panic!("a tampered log was opened"),
        }
        assert_eq!(lines(&path), text);
    }

    #[test]
    fn two_handles_take_turns_on_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut first = AuditLog::open(&path).unwrap();
        let mut second = AuditLog::open(&path).unwrap();
        let one = first.append(event("migrate.create", "a")).unwrap();
        let two = second.append(event("retire.destroy", "b")).unwrap();
        let three = first.append(event("rekey.generate", "c")).unwrap();
        assert_eq!((one.seq, two.seq, three.seq), (1, 2, 3));
        assert_eq!(two.prev, one.hash);
        assert_eq!(three.prev, two.hash);
        assert_eq!(verify(&path, Some(&three.hash)).unwrap().entries, 3);
    }

    #[test]
    fn append_refuses_a_log_cut_behind_its_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = AuditLog::open(&path).unwrap();
        let one = log.append(event("migrate.create", "a")).unwrap();
        let two = log.append(event("migrate.create", "b")).unwrap();
        let mut text = lines(&path);
        text.pop();
        write_lines(&path, &text);
        match log.append(event("retire.destroy", "a")) {
            Err(AuditError::HeadMismatch { expected, found }) => {
                assert_eq!(expected, two.hash);
                assert_eq!(found, one.hash);
            }
            other => panic!("expected HeadMismatch, got {other:?}"),
        }
        assert_eq!(lines(&path), text);
    }

    #[test]
    fn messages_are_one_line_and_name_what_failed() {
        let broken = AuditError::Broken {
            line: 4,
            reason: "edited: hash does not match its contents".to_owned(),
        };
        assert_eq!(
            broken.to_string(),
            "audit log line 4: edited: hash does not match its contents"
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("keyferry-audit.jsonl");
        let err = verify(&missing, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "audit log {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let mismatch = AuditError::HeadMismatch {
            expected: "aa".to_owned(),
            found: "bb".to_owned(),
        };
        assert_eq!(
            mismatch.to_string(),
            "audit log ends at hash bb, expected aa: \
             entries were deleted from its end or the chain was rewritten"
        );
    }

    #[test]
    fn entries_carry_an_rfc3339_utc_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_, entries) = three(&dir);
        let time = entries[0].time.as_bytes();
        assert_eq!(time.len(), 20);
        assert_eq!(time[10], b'T');
        assert_eq!(time.last(), Some(&b'Z'));
        assert_eq!(
            (time[4], time[7], time[13], time[16]),
            (b'-', b'-', b':', b':')
        );
        assert!(entries[0].time.as_str() >= "2026-");
    }

    #[test]
    fn known_dates_convert() {
        // Cross-checked with `date -u -d @SECONDS +%Y-%m-%dT%H:%M:%SZ`.
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_700_957), "2026-11-26T13:49:17Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
    }
}
