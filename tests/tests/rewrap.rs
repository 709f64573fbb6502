//! `keyferry rewrap`: a hundred thousand data-key blobs moved from an old KEK to a new one
//! on another token, each proved; flat memory; a kill midway and a resume that rewraps
//! nothing twice; corrupt blobs reported and skipped; SoftHSMv2 as the new KEK's token.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup should panic loudly

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use aes_kw::{KeyInit, KwpAes256};
use base64ct::{Base64, Encoding};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyferry_tests::cli::{self, uri};
use keyferry_tests::{fresh_token, user_session, Module};

const OLD_KEK: [u8; 32] = [0x11; 32];
const NEW_KEK: [u8; 32] = [0x22; 32];

fn kek(session: &Session, label: &str, value: &[u8]) {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(value.to_vec()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ])
        .unwrap();
}

/// A KEK's URI: its token's, with object=.
fn kek_uri(module: Module, token: &str, label: &str) -> String {
    let token_uri = uri(module, token);
    let query = token_uri.find('?').unwrap();
    format!(
        "{};object={label}{}",
        &token_uri[..query],
        &token_uri[query..]
    )
}

/// The data key of record `index`: 16 bytes anyone can recompute.
fn dek(index: u32) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&index.to_be_bytes());
    key[4..8].copy_from_slice(&index.wrapping_mul(0x9e37_79b9).to_le_bytes());
    key
}

fn wrap(kek: &[u8; 32], key: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; key.len().div_ceil(8) * 8 + 8];
    let len = KwpAes256::new_from_slice(kek)
        .unwrap()
        .wrap_key(key, &mut out)
        .unwrap()
        .len();
    out.truncate(len);
    out
}

fn unwrap(kek: &[u8; 32], blob: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; blob.len()];
    let len = KwpAes256::new_from_slice(kek)
        .ok()?
        .unwrap_key(blob, &mut out)
        .ok()?
        .len();
    out.truncate(len);
    Some(out)
}

/// `count` records; those in `corrupt` have a flipped byte or are not base64.
fn input(path: &Path, count: u32, corrupt: &[u32]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for index in 0..count {
        let mut blob = wrap(&OLD_KEK, &dek(index));
        let text = match corrupt.iter().position(|&bad| bad == index) {
            Some(0) => "%%% not base64 %%%".to_owned(),
            Some(_) => {
                blob[5] ^= 0x40;
                Base64::encode_string(&blob)
            }
            None => Base64::encode_string(&blob),
        };
        let mechanism = if index % 2 == 0 {
            "CKM_AES_KEY_WRAP_KWP"
        } else {
            "0x210B"
        };
        writeln!(
            file,
            r#"{{"id":"dek-{index}","blob":"{text}","mechanism":"{mechanism}"}}"#
        )
        .unwrap();
    }
    file.flush().unwrap();
}

/// Every output record opens under the new KEK to the data key its id names.
fn check_output(path: &Path, expected: usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut ids = HashSet::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = record["id"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "{id} rewrapped twice");
        assert_eq!(record["mechanism"], "CKM_AES_KEY_WRAP_KWP");
        let index: u32 = id.trim_start_matches("dek-").parse().unwrap();
        let blob = Base64::decode_vec(record["blob"].as_str().unwrap()).unwrap();
        assert_eq!(
            unwrap(&NEW_KEK, &blob).as_deref(),
            Some(&dek(index)[..]),
            "{id}"
        );
    }
    assert_eq!(ids.len(), expected);
}

/// Peak resident memory of a child, in KiB, sampled from /proc while it runs.
fn peak_kib(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("VmHWM:") {
                    let kib: u64 = value
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    peak = peak.max(kib);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[test]
fn a_hundred_thousand_blobs_rewrap_to_another_token_with_flat_memory_and_a_clean_resume() {
    let (old_slot, old) = fresh_token(Module::Keyferry, "rw-old");
    let (new_slot, new) = fresh_token(Module::Keyferry, "rw-new");
    kek(
        &user_session(Module::Keyferry, old_slot),
        "old-kek",
        &OLD_KEK,
    );
    kek(
        &user_session(Module::Keyferry, new_slot),
        "new-kek",
        &NEW_KEK,
    );
    let old_kek = kek_uri(Module::Keyferry, &old, "old-kek");
    let new_kek = kek_uri(Module::Keyferry, &new, "new-kek");
    let dir = tempfile::tempdir().unwrap();
    let rewrap = |input: &str, output: &str, extra: &[&str]| {
        let mut args = vec![
            "rewrap",
            "--old-kek",
            &old_kek,
            "--new-kek",
            &new_kek,
            "--jobs",
            "2",
            input,
            output,
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    // Memory: ten times the blobs must not take ten times the memory.
    input(&dir.path().join("small.jsonl"), 10_000, &[]);
    input(&dir.path().join("large.jsonl"), 100_000, &[]);
    let run_peak = |input: &str, output: &str| {
        let args = rewrap(input, output, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = cli::spawn(&args, dir.path());
        let peak = peak_kib(&mut child);
        assert!(child.wait().unwrap().success(), "rewrap {input} failed");
        peak
    };
    let small = run_peak("small.jsonl", "small.out");
    let large = run_peak("large.jsonl", "large.out");
    eprintln!("peak RSS: 10 000 blobs {small} KiB, 100 000 blobs {large} KiB");
    assert!(
        large < small + 16 * 1024,
        "memory grew with the blobs: {small} KiB → {large} KiB"
    );
    check_output(&dir.path().join("large.out"), 100_000);

    // Killed midway, then resumed: every blob once, none twice.
    let args = rewrap("large.jsonl", "resumed.out", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = cli::spawn(&args, dir.path());
    let partial = dir.path().join("resumed.out.partial");
    while std::fs::metadata(&partial)
        .map(|meta| meta.len())
        .unwrap_or(0)
        < 400_000
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let again = cli::run(&args, dir.path());
    assert_eq!(
        again.code, 2,
        "a leftover partial output needs --resume: {}",
        again.stderr
    );
    assert!(again.stderr.contains("pass --resume"), "{}", again.stderr);
    let resumed = cli::run(
        &rewrap("large.jsonl", "resumed.out", &["--resume", "--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        dir.path(),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let summary = &resumed.json("summary")[0];
    assert!(summary["skipped"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(
        summary["skipped"].as_u64().unwrap() + summary["rewrapped"].as_u64().unwrap(),
        100_000
    );
    check_output(&dir.path().join("resumed.out"), 100_000);
}

#[test]
fn corrupt_blobs_are_reported_and_skipped_and_softhsm_holds_the_new_kek() {
    let (old_slot, old) = fresh_token(Module::Keyferry, "rw2-old");
    let (new_slot, new) = fresh_token(Module::SoftHsm, "rw2-new");
    kek(
        &user_session(Module::Keyferry, old_slot),
        "old-kek",
        &OLD_KEK,
    );
    kek(
        &user_session(Module::SoftHsm, new_slot),
        "new-kek",
        &NEW_KEK,
    );
    let old_kek = kek_uri(Module::Keyferry, &old, "old-kek");
    let new_kek = kek_uri(Module::SoftHsm, &new, "new-kek");
    let dir = tempfile::tempdir().unwrap();
    input(&dir.path().join("in.jsonl"), 1000, &[17, 400, 999]);
    let outcome = cli::run(
        &[
            "rewrap",
            "--old-kek",
            &old_kek,
            "--new-kek",
            &new_kek,
            "in.jsonl",
            "out.jsonl",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(outcome.code, 1, "{}{}", outcome.stdout, outcome.stderr);
    let summary = &outcome.json("summary")[0];
    assert_eq!(summary["processed"], 1000);
    assert_eq!(summary["rewrapped"], 997);
    assert_eq!(summary["failed"], 3);
    check_output(&dir.path().join("out.jsonl"), 997);
    let failures = std::fs::read_to_string(dir.path().join("out.jsonl.failed")).unwrap();
    let mut reasons: Vec<(String, String)> = failures
        .lines()
        .map(|line| {
            let failure: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                failure["id"].as_str().unwrap().to_owned(),
                failure["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons[0],
        ("dek-17".to_owned(), "the blob is not base64".to_owned())
    );
    for (id, reason) in &reasons[1..] {
        assert!(
            reason.starts_with(
                "unwrapping under the old KEK: C_UnwrapKey returned CKR_WRAPPED_KEY_INVALID"
            ),
            "{id}: {reason}"
        );
    }
}

#[test]
fn rekey_makes_a_new_kek_rewraps_to_it_and_leaves_the_old_one_until_retired() {
    let (slot, label) = fresh_token(Module::Keyferry, "rekey");
    let session = user_session(Module::Keyferry, slot);
    kek(&session, "kek-2024", &OLD_KEK);
    let dir = tempfile::tempdir().unwrap();
    input(&dir.path().join("in.jsonl"), 200, &[]);
    let old_kek = kek_uri(Module::Keyferry, &label, "kek-2024");
    let rekeyed = cli::run(
        &[
            "rekey",
            "--kek",
            &old_kek,
            "--new-label",
            "kek-2026",
            "in.jsonl",
            "out.jsonl",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(rekeyed.code, 0, "{}{}", rekeyed.stdout, rekeyed.stderr);
    let summary = &rekeyed.json("summary")[0];
    assert_eq!(summary["rewrapped"], 200);
    let run = rekeyed
        .stdout
        .lines()
        .next()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["run"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();

    // Each new blob opens under the new KEK to the key the old blob held.
    let find = |label: &str| {
        session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap()
    };
    let (old, new) = (find("kek-2024")[0], find("kek-2026")[0]);
    let output = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Encrypt(true),
    ];
    let check = |kek, blob: &[u8]| {
        let key = session
            .unwrap_key(
                &cryptoki::mechanism::Mechanism::AesKeyWrapPad,
                kek,
                blob,
                &template,
            )
            .unwrap();
        session
            .encrypt(&cryptoki::mechanism::Mechanism::AesEcb, key, &[0u8; 16])
            .unwrap()
    };
    for line in output.lines().take(10) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let index: u32 = record["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("dek-")
            .parse()
            .unwrap();
        let new_blob = Base64::decode_vec(record["blob"].as_str().unwrap()).unwrap();
        assert_eq!(
            check(new, &new_blob),
            check(old, &wrap(&OLD_KEK, &dek(index)))
        );
    }

    let journal = format!("keyferry-{run}.journal");
    let deactivated = cli::run(
        &[
            "retire",
            "--run",
            &run,
            "--journal",
            &journal,
            "--yes",
            "--deactivate",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(
        deactivated.code, 0,
        "{}{}",
        deactivated.stdout, deactivated.stderr
    );
    assert_eq!(
        deactivated.statuses(),
        [(
            "kek-2024".to_owned(),
            "secret".to_owned(),
            "deactivated".to_owned()
        )]
    );
    let flags = session
        .get_attributes(
            old,
            &[
                cryptoki::object::AttributeType::Wrap,
                cryptoki::object::AttributeType::Unwrap,
            ],
        )
        .unwrap();
    assert_eq!(
        flags,
        [Attribute::Wrap(false), Attribute::Unwrap(true)],
        "old blobs still open"
    );
    let destroyed = cli::run(
        &[
            "retire",
            "--run",
            &run,
            "--journal",
            &journal,
            "--yes",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(
        destroyed.code, 0,
        "{}{}",
        destroyed.stdout, destroyed.stderr
    );
    assert!(find("kek-2024").is_empty());
    assert_eq!(find("kek-2026").len(), 1);
}
