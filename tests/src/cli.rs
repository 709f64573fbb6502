//! Running the `keyferry` CLI from tests: the binary beside the module under test, PINs in
//! the environment (never on argv), JSON Lines parsed back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use crate::{environment, keyferry_build, Module, USER_PIN};

/// The keyferry CLI of this build.
pub fn binary() -> PathBuf {
    let path = keyferry_build().join("keyferry");
    assert!(
        path.is_file(),
        "{} not found: build it with cargo build -p keyferry (scripts/test does)",
        path.display()
    );
    path
}

/// The URI of a token of `module`, with its module path.
pub fn uri(module: Module, label: &str) -> String {
    format!(
        "pkcs11:token={label}?module-path={}",
        module.path().display()
    )
}

/// What one CLI run gave.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (-1 when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// The `data` of every `{"type": kind}` JSON line on stdout.
    pub fn json(&self, kind: &str) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["type"] == kind)
            .map(|line| line["data"].clone())
            .collect()
    }

    /// The status of each object line, in order.
    pub fn status_column(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .map(|(_, _, status)| status)
            .collect()
    }

    /// Object statuses by label/class, for assertions.
    pub fn statuses(&self) -> Vec<(String, String, String)> {
        self.json("object")
            .into_iter()
            .map(|object| {
                (
                    object["label"].as_str().unwrap_or_default().to_owned(),
                    object["class"].as_str().unwrap_or_default().to_owned(),
                    object["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// The command with the test environment: module configuration and both PINs.
pub fn command(args: &[&str], dir: &Path) -> Command {
    environment();
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env("KEYFERRY_MODULE", Module::Keyferry.path())
        .env("KEYFERRY_FROM_PIN", USER_PIN)
        .env("KEYFERRY_TO_PIN", USER_PIN)
        .env("KEYFERRY_PIN", USER_PIN)
        .stdin(Stdio::null());
    command
}

/// Runs keyferry to the end.
pub fn run(args: &[&str], dir: &Path) -> Outcome {
    let output = command(args, dir).output().expect("running keyferry");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts keyferry without waiting (for kill tests).
pub fn spawn(args: &[&str], dir: &Path) -> Child {
    command(args, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting keyferry")
}

/// A token AES key with the usage a data key or KEK has, extractable.
pub fn aes_key(session: &Session, label: &str, id: &[u8], bytes: u64) -> ObjectHandle {
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
                Attribute::ValueLen(bytes.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
        .expect("C_GenerateKey AES")
}
