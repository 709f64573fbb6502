//! Snapshots of what the `keyferry` CLI prints against real tokens: a plan on fixed tokens
//! and the error for a wrong PIN. Serial numbers, labels and module paths change per run and
//! are redacted. Refresh with `SNAPSHOTS=overwrite cargo test -p keyferry-tests --test
//! cli_output` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup should panic loudly

use std::path::Path;

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyferry_tests::cli::{self, uri};
use keyferry_tests::{fresh_token, user_session, Module};

fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name);
    if std::env::var_os("SNAPSHOTS").is_some_and(|value| value == "overwrite") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (SNAPSHOTS=overwrite makes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (SNAPSHOTS=overwrite refreshes it)",
        path.display()
    );
}

fn fixed_secret(
    session: &Session,
    label: &str,
    id: u8,
    key_type: KeyType,
    value: &[u8],
    extractable: bool,
) {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(vec![id]),
        Attribute::Value(value.to_vec()),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
    ];
    if key_type == KeyType::AES {
        template.extend([
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ]);
    } else {
        template.extend([Attribute::Sign(true), Attribute::Verify(true)]);
    }
    session.create_object(&template).unwrap();
}

/// Every serial number in the output, replaced.
fn redact(text: &str, labels: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (label, placeholder) in labels {
        text = text.replace(label, placeholder);
    }
    text = text.replace(&Module::Keyferry.path().display().to_string(), "[KEYFERRY]");
    let softhsm = std::fs::canonicalize(Module::SoftHsm.path()).unwrap();
    text = text.replace(&softhsm.display().to_string(), "[SOFTHSM]");
    text = text.replace(&Module::SoftHsm.path().display().to_string(), "[SOFTHSM]");
    text.lines()
        .map(|line| match line.find("serial ") {
            Some(at) => {
                let end = line[at + 7..]
                    .find([',', ')'])
                    .map_or(line.len(), |end| at + 7 + end);
                format!("{}serial [SERIAL]{}", &line[..at], &line[end..])
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn plan_on_fixed_tokens() {
    let (source_slot, source) = fresh_token(Module::Keyferry, "fixed-src");
    let (destination_slot, destination) = fresh_token(Module::SoftHsm, "fixed-dst");
    let here = user_session(Module::Keyferry, source_slot);
    let there = user_session(Module::SoftHsm, destination_slot);
    fixed_secret(&here, "root-kek", 0x01, KeyType::AES, &[0x11; 32], true);
    fixed_secret(&here, "hsm-bound", 0x02, KeyType::AES, &[0x22; 32], false);
    fixed_secret(&here, "dek-payments", 0x10, KeyType::AES, &[0x33; 16], true);
    fixed_secret(
        &here,
        "hmac-audit",
        0x20,
        KeyType::GENERIC_SECRET,
        &[0x44; 20],
        true,
    );
    fixed_secret(
        &here,
        "already-there",
        0x30,
        KeyType::AES,
        &[0x55; 16],
        true,
    );
    fixed_secret(
        &there,
        "already-there",
        0x30,
        KeyType::AES,
        &[0x55; 16],
        true,
    );
    fixed_secret(&here, "clashing", 0x31, KeyType::AES, &[0x66; 16], true);
    fixed_secret(&there, "clashing", 0x31, KeyType::AES, &[0x77; 16], true);
    let dir = tempfile::tempdir().unwrap();
    let outcome = cli::run(
        &[
            "plan",
            "--from",
            &uri(Module::Keyferry, &source),
            "--to",
            &uri(Module::SoftHsm, &destination),
        ],
        dir.path(),
    );
    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    assert_eq!(outcome.stderr, "");
    let labels = [
        (source.as_str(), "[SOURCE]"),
        (destination.as_str(), "[DESTINATION]"),
    ];
    snapshot("plan-fixed-tokens.txt", &redact(&outcome.stdout, &labels));
}

#[test]
fn a_wrong_pin_is_one_clear_line_and_exit_code_2() {
    let (_, source) = fresh_token(Module::Keyferry, "pin-src");
    let (_, destination) = fresh_token(Module::SoftHsm, "pin-dst");
    let dir = tempfile::tempdir().unwrap();
    let output = cli::command(
        &[
            "plan",
            "--from",
            &uri(Module::Keyferry, &source),
            "--to",
            &uri(Module::SoftHsm, &destination),
        ],
        dir.path(),
    )
    .env("KEYFERRY_FROM_PIN", "not-the-pin")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    let labels = [
        (source.as_str(), "[SOURCE]"),
        (destination.as_str(), "[DESTINATION]"),
    ];
    snapshot(
        "wrong-pin.stderr",
        &redact(&String::from_utf8_lossy(&output.stderr), &labels),
    );
}
