//! A token file edited behind keyferry's back: the edited object is refused with a clear
//! log line; every other object keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::path::PathBuf;

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyferry_core::token::attr::{self, Value};
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

/// Flip a boolean attribute of the object labelled `label`, as someone with the sqlite3
/// CLI would: straight in the stored row.
fn flip(token_file: &PathBuf, label: &str, kind: CK_ATTRIBUTE_TYPE) {
    let conn = rusqlite::Connection::open(token_file).unwrap();
    let stored: Vec<u8> = conn
        .query_row(
            "SELECT attrs FROM objects WHERE label = ?1",
            [label.as_bytes()],
            |row| row.get(0),
        )
        .unwrap();
    let mut attributes = attr::decode(&stored).expect("a readable row");
    let target = attributes
        .iter_mut()
        .find(|a| a.kind == kind)
        .expect("the attribute is stored");
    let flipped = target
        .value
        .as_bytes()
        .map(|bytes| u8::from(bytes == [0]))
        .unwrap();
    target.value = Value::bytes(vec![flipped]);
    let changed = conn
        .execute(
            "UPDATE objects SET attrs = ?1 WHERE label = ?2",
            rusqlite::params![attr::encode(&attributes), label.as_bytes()],
        )
        .unwrap();
    assert_eq!(changed, 1);
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
    flip(&file, "locked-away", CKA_EXTRACTABLE);
    flip(&file, "kept-secret", CKA_SENSITIVE);

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
    let conn = rusqlite::Connection::open(token_file(&session)).unwrap();
    conn.execute(
        "UPDATE objects SET label = ?1 WHERE label = ?2",
        [b"renamed".as_slice(), b"original".as_slice()],
    )
    .unwrap();
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
    let conn = rusqlite::Connection::open(token_file(&session)).unwrap();
    let stored: Vec<u8> = conn
        .query_row(
            "SELECT attrs FROM objects WHERE label = ?1",
            [b"public-note".as_slice()],
            |row| row.get(0),
        )
        .unwrap();
    let mut attributes = attr::decode(&stored).expect("a readable row");
    let value = attributes
        .iter_mut()
        .find(|a| a.kind == pkcs11_sys::CKA_VALUE)
        .expect("stored in clear");
    value.value = Value::bytes(b"trust ME".to_vec());
    conn.execute(
        "UPDATE objects SET attrs = ?1 WHERE label = ?2",
        rusqlite::params![attr::encode(&attributes), b"public-note".as_slice()],
    )
    .unwrap();
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
    let conn = rusqlite::Connection::open(token_file(&session)).unwrap();
    conn.execute(
        "UPDATE objects SET private = 'yes', attrs = 42 WHERE label = ?1",
        [b"mangled".as_slice()],
    )
    .unwrap();
    let all = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap();
    assert_eq!(all, vec![kept]);
}
