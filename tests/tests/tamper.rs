//! A token file edited behind keyferry's back: the edited object is refused with a clear
//! log line; every other object keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::path::{Path, PathBuf};

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyferry_tests::{fresh_token, keyferry_token_dir, rv, user_session, worker, Module};
use pkcs11_sys::{CKA_EXTRACTABLE, CKA_SENSITIVE, CK_ATTRIBUTE_TYPE};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

fn key(session: &Session, label: &str, byte: u8) -> cryptoki::object::ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(vec![byte; 32]),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ])
        .unwrap()
}

/// Set a stored attribute of the object labelled `label`, as someone with the sqlite3 CLI
/// would: straight in its row, from another process (see kf-worker's `set-stored`).
fn set_stored(token_file: &Path, label: &str, kind: CK_ATTRIBUTE_TYPE, value: &[u8]) {
    let file = token_file.to_str().unwrap();
    let kind = kind.to_string();
    worker(
        WORKER,
        &["set-stored", file, label, &kind, &hex::encode(value)],
        &[],
    );
}

/// Run one SQL statement on a token file from another process.
fn exec(token_file: &Path, sql: &str) {
    worker(WORKER, &["exec", token_file.to_str().unwrap(), sql], &[]);
}

fn token_file(session: &Session) -> PathBuf {
    let slot = session.get_session_info().unwrap().slot_id();
    let serial = Module::Keyferry
        .pkcs11()
        .get_token_info(slot)
        .unwrap()
        .serial_number()
        .to_string();
    keyferry_token_dir().join(format!("{}.kftoken", serial.trim()))
}

#[test]
fn flipped_policy_attributes_are_caught_and_the_rest_of_the_token_works() {
    let (slot, token) = fresh_token(Module::Keyferry, "tamper");
    let session = user_session(Module::Keyferry, slot);
    let unextractable = key(&session, "locked-away", 1);
    let sensitive = key(&session, "kept-secret", 2);
    let untouched = key(&session, "untouched", 3);
    let file = token_file(&session);
    // Each made the other way by `key`: not extractable, sensitive.
    set_stored(&file, "locked-away", CKA_EXTRACTABLE, &[1]);
    set_stored(&file, "kept-secret", CKA_SENSITIVE, &[0]);

    // Handles this process already holds: the objects fail authentication on reload.
    for handle in [unextractable, sensitive] {
        assert_eq!(
            rv(session.get_attributes(handle, &[AttributeType::Label])),
            RvError::DeviceError
        );
    }
    // A search leaves them out; the untouched key is still there and usable.
    for label in ["locked-away", "kept-secret"] {
        assert!(session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap()
            .is_empty());
    }
    assert_eq!(
        session
            .find_objects(&[Attribute::Label(b"untouched".to_vec())])
            .unwrap(),
        vec![untouched]
    );
    let check = session
        .get_attributes(untouched, &[AttributeType::CheckValue])
        .unwrap();
    assert!(matches!(check.as_slice(), [Attribute::CheckValue(value)] if value.len() == 3));

    // A new process sees the same: only the untouched key.
    let listed = worker(WORKER, &["list", &token, "keys"], &[]);
    let labels: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert_eq!(labels, vec!["untouched"]);
}

#[test]
fn a_row_whose_indexed_label_was_edited_is_refused() {
    let (slot, _) = fresh_token(Module::Keyferry, "relabel");
    let session = user_session(Module::Keyferry, slot);
    let handle = key(&session, "original", 4);
    exec(
        &token_file(&session),
        &format!(
            "UPDATE objects SET label = x'{}' WHERE label = x'{}'",
            hex::encode("renamed"),
            hex::encode("original")
        ),
    );
    assert_eq!(
        rv(session.get_attributes(handle, &[AttributeType::Label])),
        RvError::DeviceError
    );
    assert!(session
        .find_objects(&[Attribute::Label(b"renamed".to_vec())])
        .unwrap()
        .is_empty());
}

#[test]
fn public_objects_written_under_a_login_are_sealed_too() {
    let (slot, _) = fresh_token(Module::Keyferry, "public");
    let session = user_session(Module::Keyferry, slot);
    let note = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(b"public-note".to_vec()),
            Attribute::Value(b"trust me".to_vec()),
        ])
        .unwrap();
    // Stored in clear (a public object), so it can be edited in place.
    set_stored(
        &token_file(&session),
        "public-note",
        pkcs11_sys::CKA_VALUE,
        b"trust ME",
    );
    assert_eq!(
        rv(session.get_attributes(note, &[AttributeType::Value])),
        RvError::DeviceError
    );
    assert!(session
        .find_objects(&[Attribute::Label(b"public-note".to_vec())])
        .unwrap()
        .is_empty());
}

#[test]
fn a_row_sqlite_cannot_even_decode_is_left_out_of_searches() {
    let (slot, _) = fresh_token(Module::Keyferry, "corrupt");
    let session = user_session(Module::Keyferry, slot);
    key(&session, "mangled", 5);
    let kept = key(&session, "kept", 6);
    exec(
        &token_file(&session),
        &format!(
            "UPDATE objects SET private = 'yes', attrs = 42 WHERE label = x'{}'",
            hex::encode("mangled")
        ),
    );
    let all = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap();
    assert_eq!(all, vec![kept]);
}
