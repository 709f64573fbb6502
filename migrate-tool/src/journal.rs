//! The run journal: one JSON line per step, fsync'd before the next step (or, for `migrate`,
//! in groups), read back to resume.
//!
//! Line types: `run` (first line: run id, tokens, selection), `transport`, `step` (an object
//! reached a state), `finished` (a summary). A torn last line (the process died while writing
//! it) is ignored; anything else that does not parse stops the resume with its line number.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::MigrateError;

/// The states an object goes through, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// In the plan.
    Planned,
    /// Wrapped on the source.
    Wrapped,
    /// Created on the destination.
    Unwrapped,
    /// Proved equal on both tokens.
    Verified,
    /// Already on the destination with an equal check value (nothing written).
    Present,
    /// Failed; see the error.
    Failed,
    /// An old KEK a rekey replaced: usable for old blobs until retired.
    PendingRetirement,
    /// Source copy deactivated after the migration (no new use; old data still opens).
    Deactivated,
    /// Source copy destroyed after the migration.
    Retired,
}

impl State {
    /// On the destination and proved there (by this run or by the plan), retired or not:
    /// nothing left to carry. A failed object is not settled, whatever the order says.
    pub fn settled(self) -> bool {
        matches!(
            self,
            Self::Verified
                | Self::Present
                | Self::PendingRetirement
                | Self::Deactivated
                | Self::Retired
        )
    }
}

/// The first line: what the run is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunHeader {
    /// Run id.
    pub run: String,
    /// Source URI (no PIN).
    pub from: String,
    /// Destination URI (no PIN).
    pub to: String,
    /// `--select` patterns.
    pub select: Vec<String>,
    /// `--transport`, when forced.
    pub transport: Option<String>,
    /// Seconds since the epoch.
    pub started: u64,
    /// The keyferry version that wrote it.
    pub version: String,
    /// "rekey" for a rekey's run record (`from` the old KEK, `to` the new); absent for a
    /// migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One journal line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Line {
    /// The run header.
    Run(RunHeader),
    /// The transport and both token profiles, once negotiated.
    Transport {
        /// Transport description.
        transport: serde_json::Value,
        /// Profiles of source and destination.
        profiles: serde_json::Value,
    },
    /// An object reached a state.
    Step {
        /// Identity key (class/key type/label/id, hex).
        key: String,
        /// Human description.
        object: String,
        /// The state.
        state: State,
        /// Check value or proof, once verified.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
        /// Destination CKA_UNIQUE_ID, when the token has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination_unique_id: Option<String>,
        /// Error, when failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The run ended (a resumed run appends another).
    Finished {
        /// Counts by outcome.
        summary: serde_json::Value,
    },
}

/// How long a line may wait for its fsync under group commit (see `group_commit`).
const GROUP_COMMIT: Duration = Duration::from_millis(50);

/// An open journal, appended to.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Under group commit, when the lines written so far were last made durable.
    group_commit: Option<Instant>,
    /// Under group commit, lines not yet written: they go to the file together, at the
    /// next `flush` or `sync`.
    pending: Vec<u8>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.group_commit.is_some() {
            // Best effort: `sync` already ran at the end of every complete run.
            let _ = self.file.write_all(&self.pending);
            let _ = self.file.sync_data();
        }
    }
}

/// What an existing journal says.
pub struct Recorded {
    /// The header.
    pub header: RunHeader,
    /// The last state of each object, by identity key.
    pub states: HashMap<String, State>,
}

/// `keyferry-RUN.journal` in the current directory.
pub fn default_path(run: &str) -> PathBuf {
    PathBuf::from(format!("keyferry-{run}.journal"))
}

impl Journal {
    /// Creates a new journal, header included, atomically: a crash leaves either no journal
    /// or one with its header. Refuses to overwrite one.
    pub fn create(path: &Path, header: RunHeader) -> Result<Self, MigrateError> {
        if path.exists() {
            return Err(journal_error(
                path,
                "it already exists; resume its run with --resume, or choose another --journal"
                    .to_owned(),
            ));
        }
        let mut text = serde_json::to_string(&Line::Run(header))
            .map_err(|err| journal_error(path, err.to_string()))?;
        text.push('\n');
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let written = File::create(&partial)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
            })
            .and_then(|()| std::fs::rename(&partial, path));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(journal_error(path, format!("cannot create it: {err}")));
        }
        // The directory entry must survive a crash too.
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|err| journal_error(path, format!("cannot append to it: {err}")))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            group_commit: None,
            pending: Vec::new(),
        })
    }

    /// Opens an existing journal to resume: reads it, then appends.
    pub fn resume(path: &Path) -> Result<(Self, Recorded), MigrateError> {
        let recorded = read(path)?;
        drop_torn_tail(path)
            .map_err(|err| journal_error(path, format!("cannot drop its torn last line: {err}")))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|err| journal_error(path, format!("cannot append to it: {err}")))?;
        Ok((
            Self {
                path: path.to_owned(),
                file,
                group_commit: None,
                pending: Vec::new(),
            },
            recorded,
        ))
    }

    /// From now on, lines are written together at each `flush` (migrate: once per batch of
    /// objects) and fsync'd together, at most `GROUP_COMMIT` after they were appended and
    /// always by `sync`. For `migrate` only: a crash or a kill may lose the last lines, and
    /// resume needs none of them, because it re-plans and finds every object already on
    /// the destination by its identity and proves it again. One fsync per step made the
    /// journal, not the tokens, the cost of a migration.
    pub fn group_commit(&mut self) {
        self.group_commit = Some(Instant::now());
    }

    /// Appends one line; fsyncs it before returning unless under group commit.
    pub fn append(&mut self, line: &Line) -> Result<(), MigrateError> {
        serde_json::to_writer(&mut self.pending, line)
            .map_err(|err| journal_error(&self.path, err.to_string()))?;
        self.pending.push(b'\n');
        match self.group_commit {
            Some(synced) if synced.elapsed() < GROUP_COMMIT => Ok(()),
            _ => self.sync(),
        }
    }

    /// Writes the lines appended so far, without waiting for them to be durable: under
    /// group commit, once per batch of objects rather than once per line.
    pub fn flush(&mut self) -> Result<(), MigrateError> {
        let written = self.file.write_all(&self.pending);
        // Written or failed, never written twice: the run stops on a failure.
        self.pending.clear();
        written.map_err(|err| journal_error(&self.path, format!("cannot write: {err}")))
    }

    /// Makes every line appended so far durable.
    pub fn sync(&mut self) -> Result<(), MigrateError> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|err| journal_error(&self.path, format!("cannot write: {err}")))?;
        if self.group_commit.is_some() {
            self.group_commit = Some(Instant::now());
        }
        Ok(())
    }

    /// Records that an object reached `state`.
    pub fn step(&mut self, key: &str, object: &str, state: State) -> Result<(), MigrateError> {
        self.append(&Line::Step {
            key: key.to_owned(),
            object: object.to_owned(),
            state,
            proof: None,
            destination_unique_id: None,
            error: None,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// After a crash the last line of an append-only file may be torn (no newline): it never
/// counted, so it goes and the next line starts on a line of its own. Returns what is kept.
pub fn drop_torn_tail(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    let keep = bytes
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |index| index + 1);
    if keep < bytes.len() {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(u64::try_from(keep).unwrap_or(0))?;
        file.sync_all()?;
        bytes.truncate(keep);
    }
    Ok(bytes)
}

fn journal_error(path: &Path, reason: String) -> MigrateError {
    MigrateError::Journal {
        path: path.to_owned(),
        reason,
    }
}

/// Reads a journal: the header and each object's last state.
pub fn read(path: &Path) -> Result<Recorded, MigrateError> {
    let file = File::open(path)
        .map_err(|err| journal_error(path, format!("cannot open it: {}", io_reason(&err))))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|err| journal_error(path, format!("cannot read it: {}", io_reason(&err))))?;
    let mut header = None;
    let mut states = HashMap::new();
    let last = lines.len();
    for (index, text) in lines.iter().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = match serde_json::from_str(text) {
            Ok(line) => line,
            // The last line may be torn by a crash mid-write: it never counted.
            Err(_) if index + 1 == last => break,
            Err(err) => {
                return Err(journal_error(
                    path,
                    format!("line {} is not a journal entry: {err}", index + 1),
                ));
            }
        };
        match line {
            Line::Run(run) if header.is_none() => header = Some(run),
            Line::Run(_) => {
                return Err(journal_error(
                    path,
                    format!("line {}: a second run header", index + 1),
                ));
            }
            Line::Step { key, state, .. } => {
                states.insert(key, state);
            }
            Line::Transport { .. } | Line::Finished { .. } => {}
        }
    }
    let header = header.ok_or_else(|| {
        journal_error(
            path,
            "it has no run header (not a keyferry journal)".to_owned(),
        )
    })?;
    Ok(Recorded { header, states })
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

/// A fresh run id: 8 hex digits from the OS RNG.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 4];
    // An RNG failure leaves zeros; the journal's create_new still refuses a clash.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header() -> RunHeader {
        RunHeader {
            run: "0badcafe".to_owned(),
            from: "pkcs11:token=a".to_owned(),
            to: "pkcs11:token=b".to_owned(),
            select: Vec::new(),
            transport: None,
            started: 1,
            version: "test".to_owned(),
            kind: None,
        }
    }

    #[test]
    fn under_group_commit_lines_wait_for_flush_and_none_is_lost_or_doubled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::create(&path, header()).unwrap();
        journal.group_commit();
        journal.step("k1", "key one", State::Planned).unwrap();
        journal.step("k2", "key two", State::Planned).unwrap();
        assert_eq!(
            read(&path).unwrap().states.len(),
            0,
            "not written before flush"
        );
        journal.flush().unwrap();
        journal.flush().unwrap();
        journal.step("k1", "key one", State::Verified).unwrap();
        // Dropped without a flush: the last line is written then.
        drop(journal);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "header and three steps, once each");
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.states["k1"], State::Verified);
        assert_eq!(recorded.states["k2"], State::Planned);
    }

    #[test]
    fn steps_are_read_back_with_the_last_state_winning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::create(&path, header()).unwrap();
        journal.step("k1", "key one", State::Planned).unwrap();
        journal.step("k1", "key one", State::Verified).unwrap();
        journal.step("k2", "key two", State::Wrapped).unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.header.run, "0badcafe");
        assert_eq!(recorded.states["k1"], State::Verified);
        assert_eq!(recorded.states["k2"], State::Wrapped);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_the_next_append_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::create(&path, header()).unwrap();
        journal.step("k1", "key one", State::Verified).unwrap();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"type":"step","key":"k2","obj"#)
            .unwrap();
        drop(file);
        let (mut journal, recorded) = Journal::resume(&path).unwrap();
        assert_eq!(recorded.states.len(), 1);
        journal.step("k2", "key two", State::Verified).unwrap();
        let recorded = read(&path).unwrap();
        assert_eq!(recorded.states["k2"], State::Verified);
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::create(&path, header()).unwrap();
        journal
            .append(&Line::Finished {
                summary: serde_json::json!({}),
            })
            .unwrap();
        drop(journal);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            format!("{text}garbage\n{{\"type\":\"finished\",\"summary\":{{}}}}\n"),
        )
        .unwrap();
        let err = read(&path).err().unwrap();
        assert!(
            err.to_string().contains("line 3 is not a journal entry"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_journal_says_so() {
        let err = read(Path::new("/nonexistent/keyferry-x.journal"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "journal /nonexistent/keyferry-x.journal: cannot open it: no such file"
        );
    }

    #[test]
    fn an_existing_journal_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        Journal::create(&path, header()).unwrap();
        assert!(Journal::create(&path, header()).is_err());
    }
}
