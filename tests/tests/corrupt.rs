//! A token directory holding one damaged token file beside a good one: C_Initialize
//! succeeds, the good token logs in and encrypts, the damaged token is left out (its slot
//! ID answers CKR_SLOT_ID_INVALID), the log names the file, and keyferry changes not one
//! byte of it. Each scenario runs in fresh kf-worker processes, since the module reads the
//! token directory only in C_Initialize.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::path::{Path, PathBuf};

use keyferry_tests::{keyferry_build, keyferry_config, worker, SO_PIN, USER_PIN};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

/// FIPS-197 Appendix C.1, what kf-worker's `encrypt` job prints from a working token.
const FIPS_197_C1: &str = "CKR_OK 69c4e0d86a7b0430d8cdb78070b4c55a";

/// How the victim's file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut to this many bytes.
    TruncatedTo(usize),
    /// Cut to half its length.
    TruncatedToHalf,
    /// Overwritten, at its own length, with bytes of this seed.
    Random(u64),
    /// `PRAGMA user_version` set to this.
    SchemaVersion(i64),
}

/// Two tokens made by softhsm-config/make-keyferry-tokens: "victim" in slot 0 (made
/// first), "good" in slot 1, and a keyferry.toml that logs to keyferry.log.
struct Scenario {
    dir: tempfile::TempDir,
    victim: PathBuf,
}

impl Scenario {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/make-keyferry-tokens");
        let output = std::process::Command::new(&script)
            .arg(dir.path())
            .args(["victim", SO_PIN, USER_PIN, "good", SO_PIN, USER_PIN])
            .env("KEYFERRY_ADMIN", keyferry_build().join("keyferry-admin"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "make-keyferry-tokens: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Top-level keys first: keyferry_config ends inside its [kdf] table.
        let config = format!(
            "log_file = \"keyferry.log\"\nlog_level = \"warn\"\n{}",
            keyferry_config("tokens")
        );
        std::fs::write(dir.path().join("keyferry.toml"), config).unwrap();
        let victim = token_files(&dir.path().join("tokens"))
            .into_iter()
            .find(|file| label_of(file) == "victim")
            .expect("the victim's token file");
        Self { dir, victim }
    }

    /// kf-worker JOB in a fresh process on this scenario's configuration.
    fn worker(&self, job: &[&str]) -> String {
        let conf = self.dir.path().join("keyferry.toml");
        worker(
            WORKER,
            job,
            &[
                ("KEYFERRY_CONF", conf.to_str().unwrap()),
                ("KF_TEST_PIN", USER_PIN),
            ],
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyferry.log")).unwrap_or_default()
    }
}

/// The token files of a directory, sorted.
fn token_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "kftoken"))
        .collect();
    files.sort();
    files
}

/// The files beside `file` whose names start with its name (its -wal, -shm, -journal).
fn companions(file: &Path) -> Vec<String> {
    let name = file.file_name().unwrap().to_str().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|other| other.starts_with(name) && other != name)
        .collect();
    names.sort();
    names
}

/// The label a token file records, read without writing.
fn label_of(file: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT label FROM token", [], |row| row.get(0))
        .unwrap()
}

/// `len` bytes of xorshift64 from `seed`: random enough to be no SQLite file, and the
/// same bytes on every run.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn damage(file: &Path, how: Damage) {
    // keyferry-admin leaves the first token's -wal and -shm behind when it makes the
    // second; the damage is to the token file alone.
    for suffix in ["-wal", "-shm"] {
        let mut companion = file.as_os_str().to_owned();
        companion.push(suffix);
        let _ = std::fs::remove_file(companion);
    }
    let bytes = std::fs::read(file).unwrap();
    match how {
        Damage::TruncatedTo(len) => std::fs::write(file, &bytes[..len]).unwrap(),
        Damage::TruncatedToHalf => std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Random(seed) => std::fs::write(file, noise(seed, bytes.len())).unwrap(),
        Damage::SchemaVersion(version) => {
            let conn = rusqlite::Connection::open(file).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
    }
}

/// Damage the victim, start keyferry twice in fresh processes, and check the outcome;
/// `reason` is what the log must say about the file.
fn left_out_untouched(how: Damage, reason: &str) {
    let scenario = Scenario::new();
    damage(&scenario.victim, how);
    let victim_before = std::fs::read(&scenario.victim).unwrap();
    assert_eq!(companions(&scenario.victim), Vec::<String>::new());

    // C_Initialize succeeded (kf-worker exits 0); the good token keeps slot 1, slot 2 is
    // the spare; the victim's slot 0 is gone.
    assert_eq!(scenario.worker(&["slots"]), "1 good\n2 -\n", "{how:?}");
    assert_eq!(
        scenario.worker(&["token-info", "0"]).trim(),
        "SlotIdInvalid",
        "{how:?}"
    );
    assert_eq!(scenario.worker(&["login", "good"]).trim(), "CKR_OK");
    assert_eq!(scenario.worker(&["encrypt", "good"]).trim(), FIPS_197_C1);

    let log = scenario.log();
    let line = log
        .lines()
        .find(|line| line.contains("token left out"))
        .unwrap_or_else(|| panic!("{how:?}: no 'token left out' line in the log:\n{log}"));
    assert!(line.contains("ERROR"), "{how:?}: {line}");
    assert!(
        line.contains(scenario.victim.to_str().unwrap()),
        "{how:?}: the line does not name the file: {line}"
    );
    assert!(line.contains(reason), "{how:?}: {line}");
    // One line per C_Initialize: four workers, four lines, all about the victim.
    let victim_lines = log.lines().filter(|l| l.contains("token left out")).count();
    assert_eq!(victim_lines, 4, "{how:?}:\n{log}");

    // The damaged file keeps every byte and gets no -wal/-shm beside it. (The good
    // token's file is written by its logins, as it should be.)
    assert!(
        std::fs::read(&scenario.victim).unwrap() == victim_before,
        "{how:?}: the damaged file was rewritten"
    );
    assert_eq!(
        companions(&scenario.victim),
        Vec::<String>::new(),
        "{how:?}"
    );
}

#[test]
fn an_empty_token_file_is_left_out_untouched() {
    left_out_untouched(
        Damage::TruncatedTo(0),
        "not a keyferry token file: empty file",
    );
}

#[test]
fn a_token_file_cut_to_100_bytes_is_left_out_untouched() {
    left_out_untouched(
        Damage::TruncatedTo(100),
        "not a keyferry token file: database disk image is malformed",
    );
}

#[test]
fn a_token_file_cut_in_half_is_left_out_untouched() {
    left_out_untouched(
        Damage::TruncatedToHalf,
        "not a keyferry token file: database disk image is malformed",
    );
}

#[test]
fn a_token_file_of_random_bytes_is_left_out_untouched() {
    left_out_untouched(
        Damage::Random(0x6b66_636f_7272_7570),
        "not a keyferry token file: not an SQLite database (bad header)",
    );
}

#[test]
fn a_token_file_with_schema_version_0_is_left_out_untouched() {
    left_out_untouched(
        Damage::SchemaVersion(0),
        "not a keyferry token file: unknown schema version 0",
    );
}

#[test]
fn a_token_file_from_a_newer_keyferry_is_left_out_untouched() {
    left_out_untouched(
        Damage::SchemaVersion(2),
        "token schema version 2 is newer than this keyferry (knows 1)",
    );
}
