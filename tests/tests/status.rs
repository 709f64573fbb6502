//! `keyferry status` across three keystores (keyferry, keyferry, SoftHSMv2) after deliberate
//! drift — a missing key, a changed label and usage flag, a different value under the same
//! label — and `keyferry sync` fixing the first two and reporting the third.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup should panic loudly

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyferry_tests::cli::{self, uri};
use keyferry_tests::{fresh_token, user_session, Module};

fn key(session: &Session, label: &str, id: u8, value: u8, encrypt: bool) {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
            Attribute::Value(vec![value; 16]),
            Attribute::Encrypt(encrypt),
            Attribute::Decrypt(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ])
        .unwrap();
}

/// (key, copies) from `status --json`.
fn rows(outcome: &cli::Outcome) -> Vec<(String, Vec<String>)> {
    outcome
        .json("key")
        .into_iter()
        .map(|row| {
            let copies = row["copies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|copy| {
                    let state = copy["copy"]["state"].as_str().unwrap().to_owned();
                    match copy["copy"]["attributes"].as_array() {
                        Some(attributes) => format!(
                            "{state}: {}",
                            attributes
                                .iter()
                                .map(|a| a.as_str().unwrap())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        None => state,
                    }
                })
                .collect();
            (row["key"].as_str().unwrap().to_owned(), copies)
        })
        .collect()
}

#[test]
fn status_names_each_drift_and_sync_fixes_what_it_may() {
    let (k1_slot, k1) = fresh_token(Module::Keyferry, "status-k1");
    let (k2_slot, k2) = fresh_token(Module::Keyferry, "status-k2");
    let (s_slot, s) = fresh_token(Module::SoftHsm, "status-s");
    let (one, two, soft) = (
        user_session(Module::Keyferry, k1_slot),
        user_session(Module::Keyferry, k2_slot),
        user_session(Module::SoftHsm, s_slot),
    );
    for (label, id, value) in [("a", 1, 0xa1), ("b", 2, 0xb1), ("c", 3, 0xc1)] {
        key(&one, label, id, value, true);
    }
    key(&two, "a", 1, 0xaf, true); // another value under the same label
    key(&two, "c", 3, 0xc1, false); // a usage flag drifted; "b" is missing
    key(&two, "z", 9, 0x99, true); // only here: --prune's business
    key(&soft, "a", 1, 0xa1, true);
    key(&soft, "b", 2, 0xb1, true);
    key(&soft, "c-renamed", 3, 0xc1, true); // the label drifted

    let dir = tempfile::tempdir().unwrap();
    let stores = [
        uri(Module::Keyferry, &k1),
        uri(Module::Keyferry, &k2),
        uri(Module::SoftHsm, &s),
    ];
    let status = || {
        cli::run(
            &["status", &stores[0], &stores[1], &stores[2], "--json"],
            dir.path(),
        )
    };
    let before = status();
    assert_eq!(before.code, 1, "{}", before.stderr);
    assert_eq!(
        rows(&before),
        [
            (
                "secret AES \"a\" id 01".to_owned(),
                vec![
                    "reference".to_owned(),
                    "different".to_owned(),
                    "in-sync".to_owned()
                ]
            ),
            (
                "secret AES \"b\" id 02".to_owned(),
                vec![
                    "reference".to_owned(),
                    "missing".to_owned(),
                    "in-sync".to_owned()
                ]
            ),
            (
                "secret AES \"c\" id 03".to_owned(),
                vec![
                    "reference".to_owned(),
                    "drifted: CKA_ENCRYPT (false)".to_owned(),
                    "drifted: CKA_LABEL (\"c-renamed\")".to_owned()
                ]
            ),
            (
                "secret AES \"z\" id 09".to_owned(),
                vec![
                    "missing".to_owned(),
                    "reference".to_owned(),
                    "missing".to_owned()
                ]
            ),
        ]
    );

    let to_k2 = cli::run(
        &["sync", "--from", &stores[0], "--to", &stores[1], "--json"],
        dir.path(),
    );
    assert_eq!(
        to_k2.code, 3,
        "the value conflict stays reported: {}",
        to_k2.stdout
    );
    let fixed = to_k2.json("fixed");
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0]["key"], "secret AES \"c\" id 03");
    let mut statuses = to_k2.statuses();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("a".to_owned(), "secret".to_owned(), "conflict".to_owned()),
            ("b".to_owned(), "secret".to_owned(), "moved".to_owned()),
            ("c".to_owned(), "secret".to_owned(), "present".to_owned()),
        ]
    );
    let to_soft = cli::run(
        &["sync", "--from", &stores[0], "--to", &stores[2], "--json"],
        dir.path(),
    );
    assert_eq!(to_soft.code, 0, "{}{}", to_soft.stdout, to_soft.stderr);
    assert_eq!(to_soft.json("fixed")[0]["attributes"][0], "CKA_LABEL");

    let after = status();
    assert_eq!(after.code, 1, "a conflict remains");
    assert_eq!(
        rows(&after),
        [
            (
                "secret AES \"a\" id 01".to_owned(),
                vec![
                    "reference".to_owned(),
                    "different".to_owned(),
                    "in-sync".to_owned()
                ]
            ),
            (
                "secret AES \"b\" id 02".to_owned(),
                vec![
                    "reference".to_owned(),
                    "in-sync".to_owned(),
                    "in-sync".to_owned()
                ]
            ),
            (
                "secret AES \"c\" id 03".to_owned(),
                vec![
                    "reference".to_owned(),
                    "in-sync".to_owned(),
                    "in-sync".to_owned()
                ]
            ),
            (
                "secret AES \"z\" id 09".to_owned(),
                vec![
                    "missing".to_owned(),
                    "reference".to_owned(),
                    "missing".to_owned()
                ]
            ),
        ]
    );

    // Extras go only with --prune, and only once confirmed.
    let unconfirmed = cli::run(
        &["sync", "--from", &stores[0], "--to", &stores[1], "--prune"],
        dir.path(),
    );
    assert_eq!(unconfirmed.code, 2, "{}", unconfirmed.stdout);
    assert!(
        unconfirmed.stderr.contains("needs a confirmation"),
        "{}",
        unconfirmed.stderr
    );
    let pruned = cli::run(
        &[
            "sync", "--from", &stores[0], "--to", &stores[1], "--prune", "--yes", "--json",
        ],
        dir.path(),
    );
    assert_eq!(
        pruned.code, 3,
        "the conflict on \"a\" is still reported: {}",
        pruned.stdout
    );
    let gone: Vec<String> = pruned
        .json("pruned")
        .iter()
        .map(|line| line["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(gone, ["secret AES \"z\" id 09"]);
    assert_eq!(rows(&status()).len(), 3);
}
