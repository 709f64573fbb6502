//! keyferry-admin from the outside: PINs from files or the environment, clear errors with
//! hints, and the exit codes its --help promises.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keyferry_tests::{keyferry_build, keyferry_config};

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
        .starts_with("token \"prod\" initialised in slot 0; master key check value "));
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
