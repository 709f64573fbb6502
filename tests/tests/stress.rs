//! Concurrency under load: two processes of eight threads each, every thread with its own
//! logged-in session, hammer one keyferry token with finds, AES-GCM, ECDSA, key generation
//! and destruction; nothing fails, and afterwards a fresh process finds exactly the keys
//! that were created and not destroyed, each of them still working.
//!
//! `KEYFERRY_STRESS_SECS` sets how long the processes run (default 10; soak with 60),
//! `KEYFERRY_STRESS_SEED` the seed (printed, so a failure can be replayed).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::collections::{BTreeMap, BTreeSet};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use keyferry_tests::{fresh_token, user_session, worker, Module};
use serde_json::Value;

const STRESS: &str = env!("CARGO_BIN_EXE_kf-stress");
/// DER of the P-256 curve's OID, as CKA_EC_PARAMS.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name}={text} is not a number"))
        })
        .unwrap_or(default)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_processes_of_eight_threads_lose_nothing_and_fail_nothing() {
    let secs = env_number("KEYFERRY_STRESS_SECS", 10);
    let seed = env_number("KEYFERRY_STRESS_SEED", 0x9e37_79b9_7f4a_7c15);
    println!("stress: {secs} s, KEYFERRY_STRESS_SEED={seed}");
    let (slot, token) = fresh_token(Module::Keyferry, "stress");
    let session = user_session(Module::Keyferry, slot);
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"shared-aes".to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"shared-ec".to_vec()),
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(b"shared-ec".to_vec()),
                Attribute::Sign(true),
            ],
        )
        .unwrap();
    drop(session);

    keyferry_tests::environment();
    let spawn = |tag: &str, seed: u64| {
        std::process::Command::new(STRESS)
            .args(["stress", &token, tag, &secs.to_string(), &seed.to_string()])
            .env("TEST_KEYFERRY_MODULE", Module::Keyferry.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning kf-stress")
    };
    let processes = [spawn("a", seed), spawn("b", seed.rotate_left(17))];
    let mut created = BTreeSet::new();
    let mut destroyed = BTreeSet::new();
    for process in processes {
        let output = process.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kf-stress failed: {}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["error_count"], 0, "errors: {report:#}");
        let threads = report["threads"].as_array().unwrap();
        assert_eq!(threads.len(), 8);
        const KINDS: [&str; 5] = [
            "finds",
            "gcm_round_trips",
            "signatures",
            "generated",
            "destroyed_count",
        ];
        // Every kind of operation ran in every process and every thread did work: a
        // process that did nothing cannot have proved anything.
        for kind in KINDS {
            let total: u64 = threads.iter().map(|t| t[kind].as_u64().unwrap()).sum();
            assert!(total > 0, "{} did no {kind}: {report:#}", report["process"]);
            println!("process {}: {kind} {total}", report["process"]);
        }
        for thread in threads {
            let work: u64 = KINDS
                .iter()
                .map(|kind| thread[kind].as_u64().unwrap())
                .sum();
            assert!(work > 0, "{} thread idle: {thread:#}", report["process"]);
            let made = strings(&thread["created"]);
            let gone = strings(&thread["destroyed"]);
            assert_eq!(made.len() as u64, thread["generated"].as_u64().unwrap());
            assert_eq!(
                gone.len() as u64,
                thread["destroyed_count"].as_u64().unwrap()
            );
            for label in made {
                assert!(created.insert(label.clone()), "{label} created twice");
            }
            for label in gone {
                assert!(
                    created.contains(&label),
                    "{label} destroyed but never created"
                );
                assert!(destroyed.insert(label.clone()), "{label} destroyed twice");
            }
        }
        println!(
            "process {}: {} threads, created so far {}, destroyed so far {}",
            report["process"],
            threads.len(),
            created.len(),
            destroyed.len()
        );
    }
    let expected: BTreeSet<&String> = created.difference(&destroyed).collect();

    let listing = worker(STRESS, &["check", &token], &[]);
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for line in listing.lines() {
        let key: Value = serde_json::from_str(line).unwrap();
        let label = key["label"].as_str().unwrap().to_string();
        assert_eq!(key.get("error"), None, "{key:#}");
        assert_eq!(key["readable"], 12, "every attribute readable: {key:#}");
        assert_eq!(key["handle_repeated"], false, "{key:#}");
        assert_eq!(key["gcm"], true, "{key:#}");
        let check_value = key["check_value"].as_str().unwrap();
        let ecb_zero = key["ecb_zero"].as_str().unwrap();
        assert_eq!(check_value.len(), 6, "{key:#}");
        assert!(
            ecb_zero.starts_with(check_value),
            "CKA_CHECK_VALUE is AES-ECB of a zero block: {key:#}"
        );
        *found.entry(label).or_default() += 1;
    }
    assert_eq!(found.get("shared-aes"), Some(&1));
    let duplicated: Vec<_> = found.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "duplicated labels: {duplicated:?}");
    let stress_keys: BTreeSet<&String> = found
        .keys()
        .filter(|label| label.starts_with("s-"))
        .collect();
    let lost: Vec<_> = expected.difference(&stress_keys).collect();
    let extra: Vec<_> = stress_keys.difference(&expected).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "lost {lost:?}, extra (destroyed or never created) {extra:?}"
    );
    println!(
        "created {}, destroyed {}, {} keys found and working",
        created.len(),
        destroyed.len(),
        stress_keys.len()
    );
}
