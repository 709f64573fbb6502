//! Security checks through cryptoki: no secret or PIN in logs, CLI or admin output, or in
//! clear in a token file; private file modes; PIN length limits; sensitive attributes
//! that stay unreadable through copy, set and unwrap; the Argon2id raise at login.
//!
//! PIN lockout is proven in lockout.rs and policy tampering in tamper.rs; not repeated.
//! Every test here first calls `setup()`, which points KEYFERRY_CONF at a configuration
//! with `log_level = "trace"` and a log file before keyferry is loaded in this process, so
//! the module, the `keyferry` CLI and keyferry-admin all log everything they would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

#[path = "../../migrate-tool/src/samples.rs"]
#[allow(dead_code)] // shared with the CLI, which uses the certificates these tests do not
mod samples;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use keyferry_tests::cli::{self, uri};
use keyferry_tests::{
    environment, fresh_token, keyferry_build, keyferry_token_dir, pin, rv, spare_slot,
    user_session, worker, Module, SO_PIN, USER_PIN,
};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

/// Wrong PINs the tests type; as secret as the right ones.
const WRONG_USER_PIN: &str = "wrong-user-pin-Zq81x";
const WRONG_SO_PIN: &str = "wrong-so-pin-Kv27w";

/// Argon2id cost of every test token (tests/src/lib.rs and `setup`).
const CHEAP_KDF: &str = "[kdf]\nmemory_kib = 64\niterations = 1\nparallelism = 1\n";

const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The traced configuration for this test binary; returns the log file.
fn setup() -> &'static Path {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = environment();
        let conf = dir.join("security.toml");
        std::fs::write(
            &conf,
            format!(
                "token_dir = \"tokens\"\nmax_pin_attempts = 10\nmin_pin_len = 4\n\
                 log_level = \"trace\"\nlog_file = \"security.log\"\n{CHEAP_KDF}"
            ),
        )
        .unwrap();
        // Edition 2021 (see tests/Cargo.toml): every test waits here before any loads keyferry.
        std::env::set_var("KEYFERRY_CONF", &conf);
        Module::Keyferry.pkcs11();
        dir.join("security.log")
    })
}

/// A secret the tests know, to look for wherever keyferry writes.
struct Secret {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Secret {
    fn new(name: &'static str, bytes: Vec<u8>) -> Self {
        Self { name, bytes }
    }

    /// Every spelling the secret could leak in: raw, hex either case, base64 of every
    /// flavour, and each 8-byte window raw, in hex and as Rust's `{:?}` of a byte slice
    /// (catching a truncated or partial dump).
    fn spellings(&self) -> Vec<(String, Vec<u8>)> {
        let bytes = &self.bytes;
        let mut spellings = vec![
            ("raw".to_string(), bytes.clone()),
            ("hex".to_string(), hex::encode(bytes).into_bytes()),
            ("HEX".to_string(), hex::encode_upper(bytes).into_bytes()),
            (
                "base64".to_string(),
                Base64::encode_string(bytes).into_bytes(),
            ),
            (
                "base64 unpadded".to_string(),
                Base64Unpadded::encode_string(bytes).into_bytes(),
            ),
            (
                "base64url".to_string(),
                Base64Url::encode_string(bytes).into_bytes(),
            ),
            (
                "base64url unpadded".to_string(),
                Base64UrlUnpadded::encode_string(bytes).into_bytes(),
            ),
        ];
        for (start, window) in bytes.windows(8).enumerate() {
            let debug = format!("{window:?}");
            spellings.extend([
                (format!("raw bytes {start}.."), window.to_vec()),
                (
                    format!("hex of bytes {start}.."),
                    hex::encode(window).into_bytes(),
                ),
                (
                    format!("HEX of bytes {start}.."),
                    hex::encode_upper(window).into_bytes(),
                ),
                (
                    format!("{{:?}} of bytes {start}.."),
                    debug.trim_matches(['[', ']']).as_bytes().to_vec(),
                ),
            ]);
        }
        spellings
    }
}

/// Distinctive key bytes: no run, no repeat within the key.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| {
            let index = u8::try_from(index).unwrap();
            seed.wrapping_mul(29) ^ index.wrapping_mul(73).wrapping_add(0x3b)
        })
        .collect()
}

fn pins() -> Vec<Secret> {
    [
        ("SO PIN", SO_PIN),
        ("user PIN", USER_PIN),
        ("wrong user PIN", WRONG_USER_PIN),
        ("wrong SO PIN", WRONG_SO_PIN),
    ]
    .into_iter()
    .map(|(name, text)| Secret::new(name, text.as_bytes().to_vec()))
    .collect()
}

fn key_secrets() -> Vec<Secret> {
    vec![
        Secret::new("AES-256 data key", pattern(1, 32)),
        Secret::new("AES-128 KEK", pattern(2, 16)),
        Secret::new("HMAC key", pattern(3, 32)),
        Secret::new(
            "RSA private exponent",
            samples::bytes(samples::RSA_PRIVATE_EXPONENT),
        ),
        Secret::new("RSA prime 1", samples::bytes(samples::RSA_PRIME_1)),
        Secret::new("RSA prime 2", samples::bytes(samples::RSA_PRIME_2)),
        Secret::new("RSA exponent 1", samples::bytes(samples::RSA_EXPONENT_1)),
        Secret::new("RSA exponent 2", samples::bytes(samples::RSA_EXPONENT_2)),
        Secret::new("RSA coefficient", samples::bytes(samples::RSA_COEFFICIENT)),
        Secret::new(
            "EC private value",
            samples::bytes(samples::EC_PRIVATE_VALUE),
        ),
    ]
}

/// A secret's name, one spelling of it and that spelling's bytes.
type Needle<'a> = (&'a str, String, Vec<u8>);

/// Panics naming the secret, its spelling and the place when any secret is in any of
/// `places` (name, contents). Every needle is at least 8 bytes long, so each position of
/// each place is looked up once by its next 8 bytes: thousands of needles over a few
/// hundred KiB stay fast in a debug build.
fn assert_no_secret(places: &[(String, Vec<u8>)], secrets: &[Secret]) {
    // By the needle's first 8 bytes: (secret, spelling, needle).
    let mut needles: HashMap<u64, Vec<Needle>> = HashMap::new();
    for secret in secrets {
        for (spelling, needle) in secret.spellings() {
            let prefix: [u8; 8] = needle[..8].try_into().unwrap();
            needles
                .entry(u64::from_le_bytes(prefix))
                .or_default()
                .push((secret.name, spelling, needle));
        }
    }
    for (place, text) in places {
        for (start, window) in text.windows(8).enumerate() {
            let prefix = u64::from_le_bytes(window.try_into().unwrap());
            for (name, spelling, needle) in needles.get(&prefix).into_iter().flatten() {
                assert!(
                    !text[start..].starts_with(needle),
                    "{name} ({spelling}) found in {place}"
                );
            }
        }
    }
}

fn secret_key(
    label: &str,
    key_type: KeyType,
    value: Vec<u8>,
    usage: &[Attribute],
) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
        Attribute::Value(value),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
    ];
    template.extend_from_slice(usage);
    template
}

/// Imports the known keys: AES-256, an AES-128 KEK, an HMAC secret and the sample RSA and
/// P-256 pairs, all sensitive and extractable (so the CLI can move them); returns
/// (aes, kek, hmac, rsa private, ec private).
fn import_known_keys(session: &Session) -> [ObjectHandle; 5] {
    let secrets = key_secrets();
    let value = |name: &str| {
        secrets
            .iter()
            .find(|secret| secret.name == name)
            .unwrap()
            .bytes
            .clone()
    };
    let aes = session
        .create_object(&secret_key(
            "sec-aes",
            KeyType::AES,
            value("AES-256 data key"),
            &[
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Sign(false),
                Attribute::Wrap(false),
            ],
        ))
        .unwrap();
    let kek = session
        .create_object(&secret_key(
            "sec-kek",
            KeyType::AES,
            value("AES-128 KEK"),
            &[
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(true),
            ],
        ))
        .unwrap();
    let hmac = session
        .create_object(&secret_key(
            "sec-hmac",
            KeyType::GENERIC_SECRET,
            value("HMAC key"),
            &[Attribute::Sign(true), Attribute::Verify(true)],
        ))
        .unwrap();
    let private = |label: &str, key_type: KeyType, mut parts: Vec<Attribute>| {
        parts.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ]);
        session.create_object(&parts).unwrap()
    };
    let public = |label: &str, key_type: KeyType, mut parts: Vec<Attribute>| {
        parts.extend([
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
            Attribute::Verify(true),
        ]);
        session.create_object(&parts).unwrap()
    };
    let modulus = samples::bytes(samples::RSA_MODULUS);
    let exponent = samples::bytes(samples::RSA_PUBLIC_EXPONENT);
    let rsa = private(
        "sec-rsa",
        KeyType::RSA,
        vec![
            Attribute::Modulus(modulus.clone()),
            Attribute::PublicExponent(exponent.clone()),
            Attribute::PrivateExponent(value("RSA private exponent")),
            Attribute::Prime1(value("RSA prime 1")),
            Attribute::Prime2(value("RSA prime 2")),
            Attribute::Exponent1(value("RSA exponent 1")),
            Attribute::Exponent2(value("RSA exponent 2")),
            Attribute::Coefficient(value("RSA coefficient")),
        ],
    );
    public(
        "sec-rsa",
        KeyType::RSA,
        vec![
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(exponent),
        ],
    );
    let ec = private(
        "sec-ec",
        KeyType::EC,
        vec![
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Value(value("EC private value")),
        ],
    );
    let point = samples::bytes(samples::EC_POINT);
    let mut point_der = vec![0x04, u8::try_from(point.len()).unwrap()];
    point_der.extend(point);
    public(
        "sec-ec",
        KeyType::EC,
        vec![
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::EcPoint(point_der),
        ],
    );
    [aes, kek, hmac, rsa, ec]
}

/// Uses every key, and fails on purpose: wrong mechanism, wrong PINs, a tampered blob.
fn exercise(session: &Session, [aes, kek, hmac, rsa, ec]: [ObjectHandle; 5]) {
    let message = b"keyferry security test message".to_vec();
    let iv = [7u8; 16];
    let ciphertext = session
        .encrypt(&Mechanism::AesCbcPad(iv), aes, &message)
        .unwrap();
    assert_eq!(
        session
            .decrypt(&Mechanism::AesCbcPad(iv), aes, &ciphertext)
            .unwrap(),
        message
    );
    let mac = session
        .sign(&Mechanism::Sha256Hmac, hmac, &message)
        .unwrap();
    session
        .verify(&Mechanism::Sha256Hmac, hmac, &message, &mac)
        .unwrap();
    session
        .sign(&Mechanism::Sha256RsaPkcs, rsa, &message)
        .unwrap();
    session.sign(&Mechanism::EcdsaSha256, ec, &message).unwrap();
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrap, kek, aes).unwrap();
    let unwrap_template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Encrypt(true),
    ];
    session
        .unwrap_key(&Mechanism::AesKeyWrap, kek, &wrapped, &unwrap_template)
        .unwrap();
    let wrapped_ec = session
        .wrap_key(&Mechanism::AesKeyWrapPad, kek, ec)
        .unwrap();
    assert!(!wrapped_ec.is_empty());

    // Failing calls, whose errors are logged.
    let mut tampered = wrapped.clone();
    tampered[9] ^= 0x40;
    assert_eq!(
        rv(session.unwrap_key(&Mechanism::AesKeyWrap, kek, &tampered, &unwrap_template)),
        RvError::WrappedKeyInvalid
    );
    assert_eq!(
        rv(session.sign(&Mechanism::Sha256Hmac, aes, &message)),
        RvError::KeyFunctionNotPermitted
    );
    assert_eq!(
        rv(session.sign(&Mechanism::Sha256RsaPkcs, hmac, &message)),
        RvError::KeyTypeInconsistent
    );
    assert_eq!(
        rv(session.encrypt(&Mechanism::AesKeyWrap, aes, &message[..7])),
        RvError::MechanismInvalid
    );
    assert_eq!(
        rv(session.wrap_key(&Mechanism::AesKeyWrap, aes, kek)),
        RvError::KeyFunctionNotPermitted
    );
}

fn admin(args: &[&str], conf: &Path, envs: &[(&str, &str)]) -> Output {
    let exe = keyferry_build().join("keyferry-admin");
    assert!(
        exe.is_file(),
        "{} not found: cargo build -p keyferry-pkcs11",
        exe.display()
    );
    Command::new(exe)
        .args(args)
        .env("KEYFERRY_CONF", conf)
        .env_remove("KEYFERRY_PIN")
        .env_remove("KEYFERRY_SO_PIN")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn token_file(slot: cryptoki::slot::Slot) -> PathBuf {
    let serial = Module::Keyferry
        .pkcs11()
        .get_token_info(slot)
        .unwrap()
        .serial_number()
        .trim()
        .to_string();
    keyferry_token_dir().join(format!("{serial}.kftoken"))
}

/// The token file and its WAL and shared-memory files, those that exist.
fn token_files(slot: cryptoki::slot::Slot) -> Vec<PathBuf> {
    let file = token_file(slot);
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", file.display())))
        .filter(|path| path.exists())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn no_secret_or_pin_reaches_a_log_an_output_or_a_token_file_in_clear() {
    let log = setup();
    let (source_slot, source) = fresh_token(Module::Keyferry, "sec-src");
    let (destination_slot, destination) = fresh_token(Module::Keyferry, "sec-dst");
    let pkcs11 = Module::Keyferry.pkcs11();

    // A wrong PIN, then the right one, then out and in again.
    let session = pkcs11.open_rw_session(source_slot).unwrap();
    assert_eq!(
        rv(session.login(UserType::User, Some(&pin(WRONG_USER_PIN)))),
        RvError::PinIncorrect
    );
    assert_eq!(
        rv(session.login(UserType::So, Some(&pin(WRONG_SO_PIN)))),
        RvError::PinIncorrect
    );
    session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    exercise(&session, import_known_keys(&session));
    session.logout().unwrap();
    session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    // A logout drops the handles of private objects; find the keys again.
    let find = |class: ObjectClass, label: &str| {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "{label}");
        found[0]
    };
    let secret = ObjectClass::SECRET_KEY;
    let private = ObjectClass::PRIVATE_KEY;
    exercise(
        &session,
        [
            find(secret, "sec-aes"),
            find(secret, "sec-kek"),
            find(secret, "sec-hmac"),
            find(private, "sec-rsa"),
            find(private, "sec-ec"),
        ],
    );

    // The CLI: inventory, plan, migrate, verify, and runs refused for a wrong PIN.
    let work = tempfile::tempdir().unwrap();
    let (from, to) = (
        uri(Module::Keyferry, &source),
        uri(Module::Keyferry, &destination),
    );
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut record = |what: &str, outcome: &cli::Outcome| {
        outputs.push((
            format!("{what} stdout"),
            outcome.stdout.clone().into_bytes(),
        ));
        outputs.push((
            format!("{what} stderr"),
            outcome.stderr.clone().into_bytes(),
        ));
    };
    for (what, args, code) in [
        ("inventory", vec!["inventory", from.as_str()], 0),
        (
            "inventory --json",
            vec!["inventory", from.as_str(), "--json"],
            0,
        ),
        (
            "plan",
            vec!["plan", "--from", from.as_str(), "--to", to.as_str()],
            0,
        ),
        (
            "migrate",
            vec![
                "migrate",
                "--from",
                from.as_str(),
                "--to",
                to.as_str(),
                "--json",
            ],
            0,
        ),
        (
            "verify",
            vec!["verify", "--from", from.as_str(), "--to", to.as_str()],
            0,
        ),
    ] {
        let outcome = cli::run(&args, work.path());
        assert_eq!(
            outcome.code, code,
            "{what}:\n{}\n{}",
            outcome.stdout, outcome.stderr
        );
        record(what, &outcome);
    }
    let migrated = outputs
        .iter()
        .find(|(what, _)| what == "migrate stdout")
        .map(|(_, text)| String::from_utf8_lossy(text).into_owned())
        .unwrap();
    for label in ["sec-aes", "sec-kek", "sec-hmac", "sec-rsa", "sec-ec"] {
        assert!(migrated.contains(label), "{label} not migrated: {migrated}");
    }
    for (what, variable, args) in [
        (
            "plan, wrong source PIN",
            "KEYFERRY_FROM_PIN",
            vec!["plan", "--from", &from, "--to", &to],
        ),
        (
            "migrate, wrong destination PIN",
            "KEYFERRY_TO_PIN",
            vec!["migrate", "--from", &from, "--to", &to],
        ),
        (
            "inventory, wrong PIN",
            "KEYFERRY_PIN",
            vec!["inventory", &from],
        ),
    ] {
        let output = cli::command(&args, work.path())
            .env("KEYFERRY_FROM_PIN", USER_PIN)
            .env(variable, WRONG_USER_PIN)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{what}: {output:?}");
        assert!(!output.stderr.is_empty(), "{what} says why");
        outputs.push((format!("{what} stdout"), output.stdout));
        outputs.push((format!("{what} stderr"), output.stderr));
    }

    // keyferry-admin: the slot table, and a refused delete with a wrong SO PIN.
    let conf = environment().join("security.toml");
    let listed = admin(&["show-slots"], &conf, &[]);
    assert_eq!(listed.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&source));
    let refused = admin(
        &["delete-token", "--token", &source],
        &conf,
        &[("KEYFERRY_SO_PIN", WRONG_SO_PIN)],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    for (what, output) in [("show-slots", listed), ("delete-token", refused)] {
        outputs.push((format!("keyferry-admin {what} stdout"), output.stdout));
        outputs.push((format!("keyferry-admin {what} stderr"), output.stderr));
    }

    // The log saw this test's calls, including the failures: the grep below can fail.
    let logged = std::fs::read(log).unwrap();
    let text = String::from_utf8_lossy(&logged);
    assert!(text.contains(&source), "the token's creation is logged");
    for function in ["C_Login", "C_UnwrapKey", "C_SignInit"] {
        assert!(text.contains(function), "{function} failures are logged");
    }

    let mut secrets = key_secrets();
    secrets.extend(pins());
    outputs.push((log.display().to_string(), logged));
    for file in files_under(work.path()) {
        outputs.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    // A token file holds keys sealed and PINs not at all.
    for slot in [source_slot, destination_slot] {
        let files = token_files(slot);
        assert!(!files.is_empty());
        for file in files {
            outputs.push((file.display().to_string(), read_elsewhere(&file)));
        }
    }
    assert_no_secret(&outputs, &secrets);
}

#[test]
fn the_secret_scan_finds_every_spelling_it_looks_for() {
    let secrets = key_secrets();
    let rsa = secrets
        .iter()
        .find(|secret| secret.name == "RSA prime 1")
        .unwrap();
    for (spelling, needle) in rsa.spellings() {
        let mut text = b"2026-01-01 DEBUG keyferry: value=".to_vec();
        text.extend(&needle);
        text.extend(b" end\n");
        let places = vec![
            ("clean".to_string(), b"nothing here".to_vec()),
            ("probe".to_string(), text),
        ];
        let found =
            std::panic::catch_unwind(|| assert_no_secret(&places, std::slice::from_ref(rsa)));
        let message = found.expect_err(&spelling);
        let message = message.downcast_ref::<String>().unwrap();
        assert!(
            message.starts_with("RSA prime 1 (") && message.ends_with(" found in probe"),
            "{message}"
        );
    }
    assert_no_secret(&[("clean".to_string(), b"nothing here".to_vec())], &secrets);
}

#[test]
fn token_files_and_the_token_directory_are_private() {
    setup();
    let (slot, _) = fresh_token(Module::Keyferry, "sec-modes");
    // An open session keeps the SQLite connection, and with it the WAL files, alive.
    let session = user_session(Module::Keyferry, slot);
    session
        .create_object(&secret_key(
            "sec-mode-key",
            KeyType::AES,
            pattern(9, 16),
            &[],
        ))
        .unwrap();
    let files = token_files(slot);
    assert!(
        files
            .iter()
            .any(|file| file.display().to_string().ends_with("-wal")),
        "{files:?}"
    );
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // This process's module created the token directory, and its log file.
    assert_eq!(mode(&keyferry_token_dir()), 0o700);
    assert_eq!(mode(setup()), 0o600);

    // keyferry-admin creates a missing token directory, with its parents, owner-only.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("keyferry.toml");
    std::fs::write(
        &conf,
        format!("token_dir = \"nested/tokens\"\nmin_pin_len = 4\n{CHEAP_KDF}"),
    )
    .unwrap();
    let created = admin(
        &["init-token", "--free", "--label", "modes"],
        &conf,
        &[("KEYFERRY_SO_PIN", SO_PIN), ("KEYFERRY_PIN", USER_PIN)],
    );
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    for made in ["nested", "nested/tokens"] {
        assert_eq!(mode(&dir.path().join(made)), 0o700, "{made}");
    }
    let files = files_under(&dir.path().join("nested/tokens"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
    // Key-part files (0600) and their directory (0700) are checked in admin.rs, in
    // split_master_key_writes_private_part_files_and_the_parts_recreate_the_domain;
    // keyferry-admin writes no PIN files.
}

#[test]
fn pins_outside_the_length_limits_are_refused_with_the_spec_codes() {
    setup();
    let short = "abc";
    let long = "p".repeat(256);
    for module in Module::ALL {
        let pkcs11 = module.pkcs11();
        let spare = spare_slot(pkcs11);
        let initialised = pkcs11.get_slots_with_initialized_token().unwrap().len();
        // PKCS#11 3.0 §5.6.1 lists no CKR_PIN_LEN_RANGE for C_InitToken: an SO PIN it
        // cannot accept is CKR_PIN_INCORRECT (SoftHSMv2 answers the same).
        for so_pin in [short, long.as_str()] {
            assert_eq!(
                rv(pkcs11.init_token(spare, &pin(so_pin), "sec-pin-len")),
                RvError::PinIncorrect,
                "{module:?} C_InitToken, {} bytes",
                so_pin.len()
            );
        }
        assert_eq!(
            pkcs11.get_slots_with_initialized_token().unwrap().len(),
            initialised,
            "{module:?}: no token was made"
        );

        let (slot, _) = fresh_token(module, "sec-pin-len");
        let session = pkcs11.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
        for new_pin in [short, long.as_str()] {
            assert_eq!(
                rv(session.init_pin(&pin(new_pin))),
                RvError::PinLenRange,
                "{module:?} C_InitPIN, {} bytes",
                new_pin.len()
            );
            assert_eq!(
                rv(session.set_pin(&pin(SO_PIN), &pin(new_pin))),
                RvError::PinLenRange,
                "{module:?} C_SetPIN (SO), {} bytes",
                new_pin.len()
            );
        }
        session.logout().unwrap();
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        for new_pin in [short, long.as_str()] {
            assert_eq!(
                rv(session.set_pin(&pin(USER_PIN), &pin(new_pin))),
                RvError::PinLenRange,
                "{module:?} C_SetPIN (user), {} bytes",
                new_pin.len()
            );
        }
        session.logout().unwrap();
        // Nothing changed, nothing was counted against either PIN.
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        session.logout().unwrap();
        session.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
        let info = pkcs11.get_token_info(slot).unwrap();
        assert!(
            !info.user_pin_count_low() && !info.so_pin_count_low(),
            "{module:?}"
        );
        assert_eq!(info.min_pin_length(), 4, "{module:?}");
        assert_eq!(info.max_pin_length(), 255, "{module:?}");
    }
}

/// The attribute is refused with exactly CKR_ATTRIBUTE_SENSITIVE, and a read of it with
/// others leaves it out while returning the rest (cryptoki drops an attribute whose length
/// came back CK_UNAVAILABLE_INFORMATION; the C-ABI test ffi::tests::object checks that
/// length word directly).
fn assert_unreadable(session: &Session, key: ObjectHandle, kind: AttributeType, what: &str) {
    let info = session.get_attribute_info(key, &[kind]).unwrap();
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "{what}: {kind:?} gave {info:?}"
    );
    let read = session
        .get_attributes(key, &[kind, AttributeType::Class])
        .unwrap();
    assert_eq!(read.len(), 1, "{what}: {kind:?} came back: {read:?}");
    assert!(matches!(read[0], Attribute::Class(_)), "{what}");
}

const RSA_PRIVATE_PARTS: [AttributeType; 6] = [
    AttributeType::PrivateExponent,
    AttributeType::Prime1,
    AttributeType::Prime2,
    AttributeType::Exponent1,
    AttributeType::Exponent2,
    AttributeType::Coefficient,
];

#[test]
fn sensitive_and_unextractable_secrets_stay_unreadable_through_copy_set_and_unwrap() {
    setup();
    let (slot, _) = fresh_token(Module::Keyferry, "sec-attrs");
    let session = user_session(Module::Keyferry, slot);
    let [aes, kek, _, rsa, ec] = import_known_keys(&session);
    let unextractable = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(b"sec-unextractable".to_vec()),
            Attribute::Value(pattern(5, 32)),
            Attribute::Sensitive(false),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
        ])
        .unwrap();
    let readable = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(pattern(6, 16)),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ])
        .unwrap();
    // The control: a key neither sensitive nor unextractable shows its value.
    assert_eq!(
        session
            .get_attributes(readable, &[AttributeType::Value])
            .unwrap(),
        vec![Attribute::Value(pattern(6, 16))]
    );

    assert_unreadable(&session, aes, AttributeType::Value, "sensitive AES");
    assert_unreadable(
        &session,
        unextractable,
        AttributeType::Value,
        "unextractable AES",
    );
    for part in RSA_PRIVATE_PARTS {
        assert_unreadable(&session, rsa, part, "RSA private key");
    }
    assert_unreadable(&session, ec, AttributeType::Value, "EC private key");
    // Public parts stay readable.
    assert_eq!(
        session
            .get_attributes(rsa, &[AttributeType::Modulus])
            .unwrap(),
        vec![Attribute::Modulus(samples::bytes(samples::RSA_MODULUS))]
    );

    // PKCS#11 3.0 §4.9/§4.10 (and §4.1.3 for C_CopyObject): SENSITIVE only goes to true,
    // EXTRACTABLE only to false; any other change is CKR_ATTRIBUTE_READ_ONLY.
    for (key, what) in [(aes, "AES"), (rsa, "RSA"), (ec, "EC")] {
        assert_eq!(
            rv(session.copy_object(key, &[Attribute::Sensitive(false)])),
            RvError::AttributeReadOnly,
            "copy {what} SENSITIVE=false"
        );
        assert_eq!(
            rv(session.update_attributes(key, &[Attribute::Sensitive(false)])),
            RvError::AttributeReadOnly,
            "set {what} SENSITIVE=false"
        );
    }
    assert_eq!(
        rv(session.copy_object(unextractable, &[Attribute::Extractable(true)])),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        rv(session.update_attributes(unextractable, &[Attribute::Extractable(true)])),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        rv(session.copy_object(
            unextractable,
            &[Attribute::Extractable(true), Attribute::Sensitive(false)]
        )),
        RvError::AttributeReadOnly
    );
    // The refused calls changed nothing, and what a copy may do keeps the secret hidden.
    assert_unreadable(&session, aes, AttributeType::Value, "AES after refusals");
    assert_unreadable(
        &session,
        unextractable,
        AttributeType::Value,
        "after refusals",
    );
    let copy = session
        .copy_object(
            aes,
            &[Attribute::Token(false), Attribute::Extractable(false)],
        )
        .unwrap();
    assert_unreadable(&session, copy, AttributeType::Value, "copy of the AES key");
    let rsa_copy = session
        .copy_object(
            rsa,
            &[Attribute::Token(false), Attribute::Label(b"copy".to_vec())],
        )
        .unwrap();
    for part in RSA_PRIVATE_PARTS {
        assert_unreadable(&session, rsa_copy, part, "copy of the RSA key");
    }
    // The one-way change is allowed, and then holds.
    session
        .update_attributes(readable, &[Attribute::Sensitive(true)])
        .unwrap();
    assert_unreadable(&session, readable, AttributeType::Value, "made sensitive");
    assert_eq!(
        rv(session.update_attributes(readable, &[Attribute::Sensitive(false)])),
        RvError::AttributeReadOnly
    );

    // Keys that arrive by C_UnwrapKey with SENSITIVE=true.
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrap, kek, aes).unwrap();
    let unwrapped = session
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    assert_unreadable(&session, unwrapped, AttributeType::Value, "unwrapped AES");
    assert_eq!(
        rv(session.update_attributes(unwrapped, &[Attribute::Sensitive(false)])),
        RvError::AttributeReadOnly
    );
    let wrapped_ec = session
        .wrap_key(&Mechanism::AesKeyWrapPad, kek, ec)
        .unwrap();
    let unwrapped_ec = session
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &wrapped_ec,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
            ],
        )
        .unwrap();
    assert_unreadable(&session, unwrapped_ec, AttributeType::Value, "unwrapped EC");
    assert_eq!(
        rv(session.copy_object(unwrapped_ec, &[Attribute::Sensitive(false)])),
        RvError::AttributeReadOnly
    );
}

/// One PIN's recorded Argon2id cost, read straight from the token file (by a worker
/// process: see its `query` job for why not here).
fn stored_kdf(file: &Path, role: &str) -> String {
    worker(
        WORKER,
        &[
            "query",
            &file.display().to_string(),
            &format!("SELECT {role}_kdf FROM token"),
        ],
        &[],
    )
    .trim()
    .to_owned()
}

/// A file's bytes, read by another process: opening and closing a live token file here
/// would drop the locks this process's module holds on it (see kf-worker's `query`).
fn read_elsewhere(file: &Path) -> Vec<u8> {
    let output = std::process::Command::new("cat")
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "cat {}", file.display());
    output.stdout
}

/// A configuration over this process's token directory with the given Argon2id cost.
fn kdf_config(name: &str, memory_kib: u32, iterations: u32) -> PathBuf {
    let path = environment().join(name);
    std::fs::write(
        &path,
        format!(
            "token_dir = \"{}\"\nmin_pin_len = 4\n\
             [kdf]\nmemory_kib = {memory_kib}\niterations = {iterations}\nparallelism = 1\n",
            keyferry_token_dir().display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_login_raises_a_cheaper_stored_argon2id_cost_to_the_configured_one_and_never_lowers_it() {
    setup();
    let (slot, token) = fresh_token(Module::Keyferry, "sec-kdf");
    let file = token_file(slot);
    let cheap = "argon2id:m=64,t=1,p=1";
    let raised = "argon2id:m=128,t=2,p=1";
    assert_eq!(stored_kdf(&file, "user"), cheap);
    assert_eq!(stored_kdf(&file, "so"), cheap);
    let raised_conf = kdf_config("sec-kdf-raised.toml", 128, 2);
    let lower_conf = kdf_config("sec-kdf-lower.toml", 64, 1);
    let mixed_conf = kdf_config("sec-kdf-mixed.toml", 256, 1);
    let login = |conf: &Path, command: &str, pin: &str| {
        let conf = conf.display().to_string();
        worker(
            WORKER,
            &[command, &token],
            &[("KEYFERRY_CONF", &conf), ("KF_TEST_PIN", pin)],
        )
        .trim()
        .to_string()
    };

    // A wrong PIN raises nothing.
    assert_eq!(login(&raised_conf, "login", WRONG_USER_PIN), "PinIncorrect");
    assert_eq!(stored_kdf(&file, "user"), cheap);

    assert_eq!(login(&raised_conf, "login", USER_PIN), "CKR_OK");
    assert_eq!(stored_kdf(&file, "user"), raised);
    assert_eq!(
        stored_kdf(&file, "so"),
        cheap,
        "only the PIN that logged in"
    );
    let shown = admin(&["show-slots"], &raised_conf, &[]);
    let table = String::from_utf8_lossy(&shown.stdout);
    let row = table
        .lines()
        .find(|line| line.contains(&format!(" {token} ")))
        .unwrap_or_else(|| panic!("{token} not in {table}"));
    assert!(
        row.contains(&format!(" {cheap} ")) && row.contains(&format!(" {raised} ")),
        "{table}"
    );
    assert!(
        table.lines().next().unwrap().contains("SO PIN KDF"),
        "{table}"
    );

    // The raised wrap opens in a new process under every configuration; a lower or a
    // trading (more memory, fewer passes) one leaves it as it is.
    for conf in [&raised_conf, &lower_conf, &mixed_conf] {
        assert_eq!(
            login(conf, "login", USER_PIN),
            "CKR_OK",
            "{}",
            conf.display()
        );
        assert_eq!(stored_kdf(&file, "user"), raised, "{}", conf.display());
    }
    // And in this process, whose module read the token before the raise.
    let session = user_session(Module::Keyferry, slot);
    session.logout().unwrap();
    assert_eq!(stored_kdf(&file, "user"), raised);

    assert_eq!(login(&raised_conf, "so-login", SO_PIN), "CKR_OK");
    assert_eq!(stored_kdf(&file, "so"), raised);
    assert_eq!(login(&lower_conf, "so-login", SO_PIN), "CKR_OK");
    assert_eq!(stored_kdf(&file, "so"), raised);
}
