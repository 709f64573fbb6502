//! keyferry's token file across processes: what one process writes, another finds intact,
//! and two writers at once lose nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::collections::BTreeSet;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use keyferry_tests::{fresh_token, rv, user_session, worker, Module};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

#[test]
fn objects_keep_their_unique_id_and_check_value_in_a_new_process() {
    let (slot, token) = fresh_token(Module::Keyferry, "persist");
    let session = user_session(Module::Keyferry, slot);
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(b"imported".to_vec()),
            Attribute::Value(vec![0x42; 32]),
        ])
        .unwrap();
    session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"generated".to_vec()),
                Attribute::ValueLen(48.into()),
            ],
        )
        .unwrap();
    let mut here = BTreeSet::new();
    for key in session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap()
    {
        let wanted = [
            AttributeType::Label,
            AttributeType::UniqueId,
            AttributeType::CheckValue,
        ];
        let line = match session.get_attributes(key, &wanted).unwrap().as_slice() {
            [Attribute::Label(label), Attribute::UniqueId(id), Attribute::CheckValue(check)] => {
                format!(
                    "{} {} {}",
                    String::from_utf8_lossy(label),
                    String::from_utf8_lossy(id),
                    check
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect::<String>()
                )
            }
            other => panic!("unexpected attributes {other:?}"),
        };
        here.insert(line);
    }
    assert_eq!(here.len(), 2);
    let there: BTreeSet<String> = worker(WORKER, &["list", &token, "keys"], &[])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(here, there);
}

#[test]
fn two_processes_creating_200_objects_each_lose_nothing() {
    let (_, token) = fresh_token(Module::Keyferry, "writers");
    keyferry_tests::environment();
    let spawn = |prefix: &str| {
        std::process::Command::new(WORKER)
            .args(["create", &token, prefix, "200"])
            .env("TEST_KEYFERRY_MODULE", Module::Keyferry.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning kf-worker")
    };
    let writers = [spawn("a"), spawn("b")];
    for writer in writers {
        let output = writer.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "writer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listed = worker(WORKER, &["list", &token, "data"], &[]);
    let labels: BTreeSet<&str> = listed
        .lines()
        .filter_map(|line| line.split(' ').next())
        .collect();
    let expected: BTreeSet<String> = ["a", "b"]
        .iter()
        .flat_map(|prefix| (0..200).map(move |index| format!("{prefix}-{index}")))
        .collect();
    assert_eq!(labels.len(), 400);
    assert!(expected.iter().all(|label| labels.contains(label.as_str())));
    let unique_ids: BTreeSet<&str> = listed
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .collect();
    assert_eq!(
        unique_ids.len(),
        400,
        "every object has its own CKA_UNIQUE_ID"
    );
}

/// The module keeps a token's objects cached and checks the store for other processes'
/// commits before each use (one read of SQLite's WAL-index header, a `data_version` query
/// when it moved): a change or a destruction made elsewhere is seen at the very next call,
/// each time, after any number of uses without one.
#[test]
fn a_token_key_changed_or_destroyed_by_another_process_is_seen_at_its_next_use() {
    let (slot, token) = fresh_token(Module::Keyferry, "seen");
    let session = user_session(Module::Keyferry, slot);
    let key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"shared".to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let encrypt = || session.encrypt(&Mechanism::AesEcb, key, &[0u8; 16]);
    let elsewhere = |args: &[&str]| worker(WORKER, args, &[]).trim().to_owned();
    for round in 0..3 {
        for _ in 0..3 {
            encrypt().unwrap();
        }
        assert_eq!(
            elsewhere(&["set-encrypt", &token, "shared", "false"]),
            "CKR_OK"
        );
        for _ in 0..3 {
            assert_eq!(
                rv(encrypt()),
                RvError::KeyFunctionNotPermitted,
                "round {round}: CKA_ENCRYPT cleared by another process"
            );
        }
        assert_eq!(
            elsewhere(&["set-encrypt", &token, "shared", "true"]),
            "CKR_OK"
        );
    }
    encrypt().unwrap();
    assert_eq!(elsewhere(&["destroy", &token, "shared"]), "CKR_OK");
    assert_eq!(rv(encrypt()), RvError::KeyHandleInvalid);
}
