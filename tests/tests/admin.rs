//! keyferry-admin from the outside: PINs from files or the environment, clear errors with
//! hints, and the exit codes its --help promises.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keyferry_core::store::keys::Key256;
use keyferry_tests::{keyferry_build, keyferry_config, Module, SO_PIN, USER_PIN};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

struct Admin {
    dir: tempfile::TempDir,
}

impl Admin {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keyferry.toml"), keyferry_config("tokens")).unwrap();
        Self { dir }
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        let exe = std::env::var_os("KEYFERRY_ADMIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| keyferry_build().join("keyferry-admin"));
        assert!(
            exe.is_file(),
            "{} not found: cargo build -p keyferry-pkcs11",
            exe.display()
        );
        Command::new(exe)
            .args(args)
            .env("KEYFERRY_CONF", self.dir.path().join("keyferry.toml"))
            .env_remove("KEYFERRY_PIN")
            .env_remove("KEYFERRY_SO_PIN")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `init-token --free --label LABEL` with SO_PIN and USER_PIN from files, plus `extra`.
    fn init(&self, label: &str, extra: &[&str]) -> Output {
        self.file("so.pin", SO_PIN);
        self.file("user.pin", USER_PIN);
        let (so_pin, user_pin) = (self.path("so.pin"), self.path("user.pin"));
        let mut args = vec![
            "init-token",
            "--free",
            "--label",
            label,
            "--so-pin-file",
            &so_pin,
            "--pin-file",
            &user_pin,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `init-token --split-master-key TOTAL --parts-dir DIR`, which must succeed; its domain.
    fn split(&self, label: &str, total: u8, dir: &str) -> String {
        let output = self.init(
            label,
            &[
                "--split-master-key",
                &total.to_string(),
                "--parts-dir",
                &self.path(dir),
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        domain(&output)
    }

    /// `init-token --master-key-part FILE ...` with these part files.
    fn init_from_parts(&self, label: &str, parts: &[&str]) -> Output {
        let parts: Vec<String> = parts.iter().map(|part| self.path(part)).collect();
        let mut extra = Vec::new();
        for part in &parts {
            extra.extend(["--master-key-part", part.as_str()]);
        }
        self.init(label, &extra)
    }

    /// Log in to a token through libkeyferry_pkcs11.so in a second process (kf-worker),
    /// as the user or the SO; the return code's name.
    fn login(&self, token: &str, user: &str, pin: &str) -> String {
        let output = Command::new(WORKER)
            .args([user, token])
            .env("KEYFERRY_CONF", self.dir.path().join("keyferry.toml"))
            .env("TEST_KEYFERRY_MODULE", Module::Keyferry.path())
            .env("KF_TEST_PIN", pin)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout).trim().to_string()
    }

    fn token_files(&self) -> Vec<PathBuf> {
        let tokens = self.dir.path().join("tokens");
        let mut files: Vec<_> = std::fs::read_dir(&tokens)
            .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
            .unwrap_or_default();
        files.retain(|path| path.extension().is_some_and(|ext| ext == "kftoken"));
        files
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The domain (master-key check value) an init-token run printed.
fn domain(output: &Output) -> String {
    let stdout = text(&output.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    let (_, check) = first
        .split_once("; domain (master-key check value) ")
        .unwrap_or_else(|| panic!("no domain in {stdout:?}"));
    check.to_string()
}

/// The value of a `key: value` line of a part file.
fn part_field(path: &str, key: &str) -> String {
    let contents = std::fs::read_to_string(path).unwrap();
    contents
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {path}"))
        .to_string()
}

/// Rewrite one line of a part file.
fn edit_part(path: &str, edit: impl Fn(&str) -> String) {
    let contents = std::fs::read_to_string(path).unwrap();
    let edited: String = contents.lines().map(|line| edit(line) + "\n").collect();
    std::fs::write(path, edited).unwrap();
}

fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[test]
fn init_token_from_pin_files_creates_a_private_token_file_and_show_slots_lists_it() {
    let admin = Admin::new();
    admin.file("so.pin", "so-pin-1234\n");
    admin.file("user.pin", "user-pin-1234");
    let output = admin.run(&[
        "init-token",
        "--free",
        "--label",
        "prod",
        "--so-pin-file",
        &admin.path("so.pin"),
        "--pin-file",
        &admin.path("user.pin"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout)
        .starts_with("token \"prod\" initialised in slot 0; domain (master-key check value) "));
    let files = admin.token_files();
    assert_eq!(files.len(), 1);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(admin.dir.path().join("tokens"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let listed = text(&admin.run(&["show-slots"]).stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[1].starts_with("0 ") && lines[1].contains(" prod ") && lines[1].contains(" set "),
        "{listed}"
    );
    assert!(
        lines[2].starts_with("1 ") && lines[2].contains("free"),
        "{listed}"
    );
}

#[test]
fn delete_token_needs_the_right_so_pin() {
    let admin = Admin::new();
    admin.file("so.pin", "so-pin-1234");
    admin.file("wrong.pin", "not-the-pin");
    let created = admin.run(&[
        "init-token",
        "--free",
        "--label",
        "doomed",
        "--so-pin-file",
        &admin.path("so.pin"),
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let refused = admin.run(&[
        "delete-token",
        "--token",
        "doomed",
        "--so-pin-file",
        &admin.path("wrong.pin"),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        text(&refused.stderr),
        "error: PIN incorrect\nhint: check the PIN file or variable; each wrong PIN counts towards the lockout\n"
    );
    assert_eq!(admin.token_files().len(), 1);
    let deleted = admin.run(&[
        "delete-token",
        "--token",
        "doomed",
        "--so-pin-file",
        &admin.path("so.pin"),
    ]);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted.stderr));
    assert!(admin.token_files().is_empty());
}

#[test]
fn a_missing_pin_without_a_terminal_is_a_usage_error_with_a_hint() {
    let admin = Admin::new();
    let output = admin.run(&["init-token", "--free", "--label", "x"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: no SO PIN given\nhint: use --so-pin-file FILE, set KEYFERRY_SO_PIN, or run on a terminal to be prompted\n"
    );
    assert!(admin.token_files().is_empty());
}

#[test]
fn usage_and_config_errors_exit_2() {
    let admin = Admin::new();
    admin.file("so.pin", "so-pin-1234");
    let long = admin.run(&[
        "init-token",
        "--free",
        "--label",
        &"x".repeat(33),
        "--so-pin-file",
        &admin.path("so.pin"),
    ]);
    assert_eq!(long.status.code(), Some(2));
    assert!(text(&long.stderr).contains("longer than 32 bytes"));
    let unknown = admin.run(&[
        "delete-token",
        "--token",
        "nobody",
        "--so-pin-file",
        &admin.path("so.pin"),
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).starts_with("error: no token labelled \"nobody\"\nhint: "));
    admin.file("keyferry.toml", "token_dir = 42\n");
    let broken = admin.run(&["show-slots"]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        text(&broken.stderr).contains(&admin.path("keyferry.toml")),
        "{}",
        text(&broken.stderr)
    );
    // No flag takes a PIN value: a PIN on argv is refused by the parser itself.
    let on_argv = admin.run(&["init-token", "--free", "--label", "x", "--so-pin", "1234"]);
    assert_eq!(on_argv.status.code(), Some(2));
}

#[test]
fn short_pins_are_refused_before_anything_is_written() {
    let admin = Admin::new();
    admin.file("so.pin", "12");
    let output = admin.run(&[
        "init-token",
        "--free",
        "--label",
        "short",
        "--so-pin-file",
        &admin.path("so.pin"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(admin.token_files().is_empty());
    assert!(Path::new(&admin.path("tokens"))
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
}

#[test]
fn split_master_key_writes_private_part_files_and_the_parts_recreate_the_domain() {
    let admin = Admin::new();
    let output = admin.init(
        "first",
        &[
            "--split-master-key",
            "3",
            "--parts-dir",
            &admin.path("parts"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let domain = domain(&output);
    assert!(is_hex(&domain, 6), "{domain}");
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[0],
        format!("token \"first\" initialised in slot 0; domain (master-key check value) {domain}")
    );
    assert_eq!(
        std::fs::metadata(admin.path("parts"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let mut values = Vec::new();
    for (number, printed) in (1..=3).zip(&lines[1..]) {
        let path = admin.path(&format!("parts/part-{number}.key"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let contents = std::fs::read_to_string(&path).unwrap();
        let part_check = part_field(&path, "part-check");
        let value = part_field(&path, "value");
        assert!(is_hex(&part_check, 6), "{contents}");
        assert!(is_hex(&value, 64), "{contents}");
        assert_eq!(
            contents,
            format!(
                "keyferry master-key part\npart: {number} of 3\npart-check: {part_check}\n\
                 domain-check: {domain}\nvalue: {value}\n"
            )
        );
        assert_eq!(
            *printed,
            format!("part {number} of 3: {path} (part check value {part_check})")
        );
        // Nothing but the file holds the part: it is never printed.
        assert!(!stdout.contains(&value));
        let key = Key256::from_slice(&hex::decode(&value).unwrap()).unwrap();
        assert_eq!(hex::encode(key.check_value().unwrap()), part_check);
        values.push(key);
    }
    // The master key is the XOR of the parts: its check value is the domain.
    let mut master = [0u8; 32];
    for value in &values {
        for (byte, part) in master.iter_mut().zip(value.expose()) {
            *byte ^= part;
        }
    }
    let master = Key256::from_slice(&master).unwrap();
    assert_eq!(hex::encode(master.check_value().unwrap()), domain);

    // Any order of the parts will do.
    let copy = admin.init_from_parts(
        "second",
        &["parts/part-3.key", "parts/part-1.key", "parts/part-2.key"],
    );
    assert_eq!(copy.status.code(), Some(0), "{}", text(&copy.stderr));
    assert_eq!(
        text(&copy.stdout),
        format!(
            "token \"second\" initialised in slot 1; domain (master-key check value) {domain}\n"
        )
    );
    let listed = text(&admin.run(&["show-slots"]).stdout);
    let rows: Vec<&str> = listed.lines().collect();
    assert_eq!(rows.len(), 4, "{listed}");
    assert!(
        rows[0].ends_with(" domain (master-key check value)"),
        "{listed}"
    );
    for (row, label) in [(rows[1], " first "), (rows[2], " second ")] {
        assert!(
            row.contains(label) && row.ends_with(&format!(" set{}{domain}", " ".repeat(20))),
            "{listed}"
        );
    }
    for token in ["first", "second"] {
        assert_eq!(admin.login(token, "login", USER_PIN), "CKR_OK");
        assert_eq!(admin.login(token, "so-login", SO_PIN), "CKR_OK");
    }
}

#[test]
fn a_part_whose_value_does_not_match_its_check_value_is_refused_as_damaged() {
    let admin = Admin::new();
    admin.split("first", 3, "parts");
    // One hex digit of the value changed, its part-check left alone.
    edit_part(&admin.path("parts/part-2.key"), |line| {
        match line.strip_prefix("value: ") {
            Some(value) => {
                let flipped = if value.starts_with('0') { '1' } else { '0' };
                format!("value: {flipped}{}", &value[1..])
            }
            None => line.to_string(),
        }
    });
    let output = admin.init_from_parts(
        "second",
        &["parts/part-1.key", "parts/part-2.key", "parts/part-3.key"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: {}: its value does not match its check value; the file is damaged\n\
             hint: ask the custodian of part 2 of 3 for an intact copy\n",
            admin.path("parts/part-2.key")
        )
    );
    assert!(output.stdout.is_empty());
    assert_eq!(admin.token_files().len(), 1);
}

#[test]
fn a_missing_or_repeated_part_is_refused() {
    let admin = Admin::new();
    admin.split("first", 3, "parts");
    let missing = admin.init_from_parts("second", &["parts/part-1.key", "parts/part-3.key"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        text(&missing.stderr),
        "error: part 2 of 3 is missing\n\
         hint: pass every part of the split, one --master-key-part FILE each\n"
    );
    let only_one = admin.init_from_parts("second", &["parts/part-3.key"]);
    assert_eq!(only_one.status.code(), Some(2));
    assert_eq!(
        text(&only_one.stderr),
        "error: parts 1, 2 of 3 are missing\n\
         hint: pass every part of the split, one --master-key-part FILE each\n"
    );

    // The same part twice, once from a copy: still one custodian's part.
    std::fs::copy(admin.path("parts/part-2.key"), admin.path("copy.key")).unwrap();
    let repeated = admin.init_from_parts(
        "second",
        &[
            "parts/part-1.key",
            "parts/part-2.key",
            "copy.key",
            "parts/part-3.key",
        ],
    );
    assert_eq!(repeated.status.code(), Some(2));
    assert_eq!(
        text(&repeated.stderr),
        format!(
            "error: {} and {} are both part 2 of 3\nhint: pass each custodian's part once\n",
            admin.path("parts/part-2.key"),
            admin.path("copy.key")
        )
    );

    // The same value relabelled as the missing part 3.
    edit_part(&admin.path("copy.key"), |line| {
        if line.starts_with("part: ") {
            "part: 3 of 3".into()
        } else {
            line.to_string()
        }
    });
    let same_value = admin.init_from_parts(
        "second",
        &["parts/part-1.key", "parts/part-2.key", "copy.key"],
    );
    assert_eq!(same_value.status.code(), Some(2));
    assert_eq!(
        text(&same_value.stderr),
        format!(
            "error: {} and {} hold the same value\n\
             hint: the parts of a split all differ: one of these files was edited; ask the custodians for intact copies\n",
            admin.path("parts/part-2.key"),
            admin.path("copy.key")
        )
    );
    assert_eq!(admin.token_files().len(), 1);
}

#[test]
fn parts_of_different_splits_are_refused() {
    let admin = Admin::new();
    let domain_a = admin.split("a", 3, "a");
    let domain_b = admin.split("b", 2, "b");
    let domain_c = admin.split("c", 3, "c");
    assert!(domain_a != domain_c, "two random master keys, one domain");

    let other_total =
        admin.init_from_parts("mixed", &["a/part-1.key", "b/part-2.key", "a/part-3.key"]);
    assert_eq!(other_total.status.code(), Some(2));
    assert_eq!(
        text(&other_total.stderr),
        format!(
            "error: {} and {} come from different splits: part 1 of 3 of domain {domain_a}, \
             part 2 of 2 of domain {domain_b}\n\
             hint: pass the parts of one split only; each part file names its domain\n",
            admin.path("a/part-1.key"),
            admin.path("b/part-2.key")
        )
    );
    let other_domain =
        admin.init_from_parts("mixed", &["a/part-1.key", "a/part-2.key", "c/part-3.key"]);
    assert_eq!(other_domain.status.code(), Some(2));
    assert_eq!(
        text(&other_domain.stderr),
        format!(
            "error: {} and {} come from different splits: part 1 of 3 of domain {domain_a}, \
             part 3 of 3 of domain {domain_c}\n\
             hint: pass the parts of one split only; each part file names its domain\n",
            admin.path("a/part-1.key"),
            admin.path("c/part-3.key")
        )
    );

    // A part of another split that claims this split's domain: each file is intact, but
    // the parts do not add up to the domain they name.
    edit_part(&admin.path("c/part-3.key"), |line| {
        if line.starts_with("domain-check: ") {
            format!("domain-check: {domain_a}")
        } else {
            line.to_string()
        }
    });
    let mut master = [0u8; 32];
    for part in ["a/part-1.key", "a/part-2.key", "c/part-3.key"] {
        let value = hex::decode(part_field(&admin.path(part), "value")).unwrap();
        for (byte, part) in master.iter_mut().zip(value) {
            *byte ^= part;
        }
    }
    let combined = hex::encode(Key256::from_slice(&master).unwrap().check_value().unwrap());
    let forged = admin.init_from_parts("mixed", &["a/part-1.key", "a/part-2.key", "c/part-3.key"]);
    assert_eq!(forged.status.code(), Some(2));
    assert_eq!(
        text(&forged.stderr),
        format!(
            "error: the 3 parts combine to domain {combined}, not the domain {domain_a} they name\n\
             hint: a part file was altered; ask the custodians for intact copies\n"
        )
    );
    assert_eq!(admin.token_files().len(), 3);
}

#[test]
fn an_existing_part_file_is_never_overwritten() {
    let admin = Admin::new();
    std::fs::create_dir(admin.path("parts")).unwrap();
    admin.file("parts/part-2.key", "an older part\n");
    let output = admin.init(
        "first",
        &[
            "--split-master-key",
            "3",
            "--parts-dir",
            &admin.path("parts"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: {} already exists; a key part is never overwritten\n\
             hint: choose an empty --parts-dir, or move the old parts away once their custodians have them\n",
            admin.path("parts/part-2.key")
        )
    );
    assert_eq!(
        std::fs::read_to_string(admin.path("parts/part-2.key")).unwrap(),
        "an older part\n"
    );
    assert!(!Path::new(&admin.path("parts/part-1.key")).exists());
    assert!(!Path::new(&admin.path("parts/part-3.key")).exists());
    assert!(admin.token_files().is_empty());

    // A second ceremony into the directory of a first one leaves the first one's parts.
    admin.split("first", 2, "done");
    let before: Vec<Vec<u8>> = (1..=2)
        .map(|number| std::fs::read(admin.path(&format!("done/part-{number}.key"))).unwrap())
        .collect();
    let again = admin.init(
        "second",
        &[
            "--split-master-key",
            "3",
            "--parts-dir",
            &admin.path("done"),
        ],
    );
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        text(&again.stderr),
        format!(
            "error: {} already exists; a key part is never overwritten\n\
             hint: choose an empty --parts-dir, or move the old parts away once their custodians have them\n",
            admin.path("done/part-1.key")
        )
    );
    for (number, contents) in (1..=2).zip(before) {
        assert_eq!(
            std::fs::read(admin.path(&format!("done/part-{number}.key"))).unwrap(),
            contents
        );
    }
    assert!(!Path::new(&admin.path("done/part-3.key")).exists());
    assert_eq!(admin.token_files().len(), 1);
}

#[test]
fn malformed_part_files_are_refused_by_file_and_line_without_echoing_the_value() {
    let admin = Admin::new();
    admin.split("first", 2, "parts");
    let original = std::fs::read_to_string(admin.path("parts/part-1.key")).unwrap();
    let value = part_field(&admin.path("parts/part-1.key"), "value");
    let hint = "hint: a part file has exactly the five lines init-token --split-master-key wrote; \
                ask its custodian for an intact copy\n";
    let cases = [
        (
            original.replace(&value, &format!("{}g", &value[1..])),
            "line 5: the value is not hexadecimal",
        ),
        (
            original.replace(&value, &value[1..]),
            "line 5: the value has 63 characters, not 64 hex digits",
        ),
        (
            original.replace("part-check: ", "comment: x\npart-check: "),
            "line 3: expected \"part-check: <6 hex digits>\"",
        ),
        (
            original.replace(&format!("value: {value}\n"), ""),
            "line 5: expected \"value: <64 hex digits>\", found the end of the file",
        ),
        (
            original.replace("part: 1 of 2", "part: 3 of 2"),
            "line 2: expected \"part: K of N\" (N from 2 to 16, K from 1 to N)",
        ),
        (
            format!("{original}{value}\n"),
            "line 6: unexpected text after the value line",
        ),
        (
            original.replace("keyferry master-key part", "keyferry key part"),
            "line 1: expected \"keyferry master-key part\"; this is not a key-part file",
        ),
    ];
    for (contents, error) in cases {
        let path = admin.file("bad.key", &contents);
        let output = admin.init_from_parts("second", &["bad.key", "parts/part-2.key"]);
        assert_eq!(output.status.code(), Some(2), "{error}");
        let stderr = text(&output.stderr);
        assert_eq!(
            stderr,
            format!("error: {}, {error}\n{hint}", path.display())
        );
        assert!(!stderr.contains(&value[1..20]), "{stderr}");
    }
    assert_eq!(admin.token_files().len(), 1);
}

#[test]
fn key_part_flags_conflict_with_each_other_and_with_token() {
    let admin = Admin::new();
    admin.split("first", 2, "parts");
    let part = admin.path("parts/part-1.key");
    let more = admin.path("more");
    let both = admin.init(
        "second",
        &[
            "--split-master-key",
            "2",
            "--parts-dir",
            &more,
            "--master-key-part",
            &part,
        ],
    );
    assert_eq!(both.status.code(), Some(2));
    assert_eq!(
        text(&both.stderr),
        "error: --split-master-key and --master-key-part cannot be used together\n\
         hint: --split-master-key makes a new master key; --master-key-part recreates one from all its parts\n"
    );
    for (flag, args) in [
        (
            "--split-master-key",
            vec!["--split-master-key", "2", "--parts-dir", more.as_str()],
        ),
        (
            "--master-key-part",
            vec!["--master-key-part", part.as_str()],
        ),
    ] {
        let mut argv = vec!["init-token", "--token", "first", "--label", "again"];
        argv.extend(args);
        let output = admin.run(&argv);
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(
            text(&output.stderr),
            format!(
                "error: {flag} cannot be used with --token: re-initialising a token keeps a random master key\n\
                 hint: create a new token on the free slot: --free {flag} ...\n"
            )
        );
    }
    let no_dir = admin.init("second", &["--split-master-key", "2"]);
    assert_eq!(no_dir.status.code(), Some(2));
    assert_eq!(
        text(&no_dir.stderr),
        "error: --split-master-key needs --parts-dir\n\
         hint: name the directory the part files go to: --parts-dir DIR\n"
    );
    let one_part = admin.init("second", &["--split-master-key", "1", "--parts-dir", &more]);
    assert_eq!(one_part.status.code(), Some(2));
    assert!(
        text(&one_part.stderr).starts_with(
            "error: invalid value '1' for '--split-master-key <N>': 1 is not in 2..=16\n"
        ),
        "{}",
        text(&one_part.stderr)
    );
    assert!(!Path::new(&admin.path("more")).exists());
    assert_eq!(admin.token_files().len(), 1);
}

#[test]
fn a_split_whose_token_is_refused_leaves_no_part_files() {
    let admin = Admin::new();
    admin.file("short.pin", "12");
    admin.file("user.pin", "user-pin-1234");
    let without_user_pin = admin.run(&[
        "init-token",
        "--free",
        "--label",
        "short",
        "--so-pin-file",
        &admin.path("short.pin"),
        "--split-master-key",
        "2",
        "--parts-dir",
        &admin.path("parts"),
    ]);
    assert_eq!(without_user_pin.status.code(), Some(2));
    assert_eq!(
        text(&without_user_pin.stderr),
        "error: a token built from master-key parts needs a user PIN: its domain key object is the user's\nhint: pass --pin-file, set KEYFERRY_PIN, or run on a terminal\n"
    );
    let output = admin.run(&[
        "init-token",
        "--free",
        "--label",
        "short",
        "--so-pin-file",
        &admin.path("short.pin"),
        "--pin-file",
        &admin.path("user.pin"),
        "--split-master-key",
        "2",
        "--parts-dir",
        &admin.path("parts"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "error: PIN incorrect\nhint: check the PIN file or variable; each wrong PIN counts towards the lockout\n"
    );
    assert!(output.stdout.is_empty());
    // Parts of a master key no token has would only confuse the custodians.
    assert_eq!(std::fs::read_dir(admin.path("parts")).unwrap().count(), 0);
    assert!(admin.token_files().is_empty());
}
