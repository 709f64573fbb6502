//! Crash safety: a writer process (kf-stress writer) creates, generates, relabels and
//! destroys token objects and is SIGKILLed at a random moment, again and again on one
//! token. After every kill the token file passes SQLite's integrity check, and a fresh
//! process finds every acknowledged object, working and with its value, nothing an
//! acknowledged destroy removed, and no half object: only the call in flight at the kill
//! may have happened or not, atomically.
//!
//! `KEYFERRY_CRASH_ROUNDS` sets the number of kills (default 50), `KEYFERRY_CRASH_SEED` the
//! seed (printed at the start, so a failure can be replayed).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyferry_tests::{fresh_token, keyferry_token_dir, worker, Module};
use serde_json::Value;

const STRESS: &str = env!("CARGO_BIN_EXE_kf-stress");
const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");
const SIGKILL: i32 = 9;

/// xorshift64*: the kill times, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The call a writer had started but not acknowledged when it died.
#[derive(Debug, Clone)]
enum InFlight {
    Create(String),
    Destroy(String),
    Relabel(String, String),
}

/// Every object the writers' acknowledged calls left, by label: the check value a
/// `generate` acknowledged, if any.
type Model = BTreeMap<String, Option<String>>;

/// Applies a writer's complete output lines to the model; returns the unacknowledged call
/// and how many calls were acknowledged.
fn apply(model: &mut Model, lines: &[String]) -> (Option<InFlight>, usize) {
    let mut in_flight = None;
    let mut acknowledged = 0;
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ready"] => {}
            ["intent", "create" | "generate", label] => {
                in_flight = Some(InFlight::Create(label.to_string()));
            }
            ["intent", "destroy", label] => in_flight = Some(InFlight::Destroy(label.to_string())),
            ["intent", "relabel", old, new] => {
                in_flight = Some(InFlight::Relabel(old.to_string(), new.to_string()));
            }
            ["created", label] => {
                assert!(model.insert(label.to_string(), None).is_none(), "{line}");
                in_flight = None;
                acknowledged += 1;
            }
            ["generated", label, check_value] => {
                let previous = model.insert(label.to_string(), Some(check_value.to_string()));
                assert!(previous.is_none(), "{line}");
                in_flight = None;
                acknowledged += 1;
            }
            ["relabelled", old, new] => {
                let entry = model
                    .remove(*old)
                    .unwrap_or_else(|| panic!("{line}: unknown"));
                model.insert(new.to_string(), entry);
                in_flight = None;
                acknowledged += 1;
            }
            ["destroyed", label] => {
                assert!(model.remove(*label).is_some(), "{line}: unknown");
                in_flight = None;
                acknowledged += 1;
            }
            _ => panic!("unexpected writer line {line:?}"),
        }
    }
    (in_flight, acknowledged)
}

/// The token file of the token in `slot`.
fn token_file(slot: cryptoki::slot::Slot) -> PathBuf {
    let info = Module::Keyferry.pkcs11().get_token_info(slot).unwrap();
    keyferry_token_dir().join(format!("{}.kftoken", info.serial_number().trim()))
}

/// SQLite's verdict on a token file ("ok", or its first complaint), from another process:
/// see kf-worker's `query`.
fn integrity_check(file: &Path) -> String {
    worker(
        WORKER,
        &["query", file.to_str().unwrap(), "PRAGMA integrity_check"],
        &[],
    )
    .trim()
    .to_owned()
}

/// One writer run: starts it, SIGKILLs it after a delay drawn from `rng`, returns its
/// complete stdout lines.
fn killed_writer(token: &str, round: u64, seed: u64, rng: &mut Rng) -> Vec<String> {
    let mut child = Command::new(STRESS)
        .args(["writer", token, &round.to_string(), &seed.to_string()])
        .env("TEST_KEYFERRY_MODULE", Module::Keyferry.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kf-stress writer");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut complete = Vec::new();
        loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                // A line without its newline was cut by the kill: not acknowledged.
                Ok(_) if line.last() != Some(&b'\n') => break,
                Ok(_) => {
                    let line = String::from_utf8(line).unwrap().trim_end().to_string();
                    let _ = lines_tx.send(line.clone());
                    complete.push(line);
                }
            }
        }
        complete
    });
    // One kill in five lands during start-up or login, the rest while objects are written.
    let delay = if rng.below(5) == 0 {
        Duration::from_millis(rng.below(60))
    } else {
        let ready = lines_rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(
            ready.as_deref(),
            Ok("ready"),
            "writer {round} never got ready"
        );
        Duration::from_millis(rng.below(300))
    };
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "writer {round} ended by itself ({status}) before the kill: {stderr}"
    );
    reader.join().unwrap()
}

#[test]
fn a_writer_killed_at_random_moments_never_loses_or_half_writes_an_object() {
    let rounds: u64 = std::env::var("KEYFERRY_CRASH_ROUNDS")
        .map(|text| text.parse().expect("KEYFERRY_CRASH_ROUNDS"))
        .unwrap_or(50);
    let seed: u64 = std::env::var("KEYFERRY_CRASH_SEED")
        .map(|text| text.parse().expect("KEYFERRY_CRASH_SEED"))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash: {rounds} rounds, replay with KEYFERRY_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let (slot, token) = fresh_token(Module::Keyferry, "crash");
    let file = token_file(slot);
    assert!(file.is_file(), "{} missing", file.display());
    keyferry_tests::environment();

    let started = Instant::now();
    let mut model = Model::new();
    let mut acknowledged_total = 0;
    // How the unacknowledged call turned out: (kind, landed) → count.
    let mut outcomes: BTreeMap<(&str, bool), u32> = BTreeMap::new();
    for round in 0..rounds {
        let writer_seed = rng.next();
        let lines = killed_writer(&token, round, writer_seed, &mut rng);
        let (in_flight, acknowledged) = apply(&mut model, &lines);
        acknowledged_total += acknowledged;
        let context = format!(
            "round {round} (KEYFERRY_CRASH_SEED={seed}), {acknowledged} calls acknowledged, \
             in flight {in_flight:?}"
        );

        assert_eq!(integrity_check(&file), "ok", "{context}");

        let listing = worker(STRESS, &["check", &token], &[]);
        let mut found: BTreeMap<String, Value> = BTreeMap::new();
        for line in listing.lines() {
            let key: Value = serde_json::from_str(line).unwrap();
            let label = key["label"].as_str().unwrap().to_string();
            assert_eq!(key.get("error"), None, "{context}: {key:#}");
            assert_eq!(
                key["readable"], 12,
                "every attribute readable, {context}: {key:#}"
            );
            assert_eq!(key["handle_repeated"], false, "{context}: {key:#}");
            assert_eq!(key["gcm"], true, "{context}: {key:#}");
            let check_value = key["check_value"].as_str().unwrap();
            assert_eq!(check_value.len(), 6, "{context}: {key:#}");
            assert!(
                key["ecb_zero"].as_str().unwrap().starts_with(check_value),
                "CKA_CHECK_VALUE is AES-ECB of a zero block, {context}: {key:#}"
            );
            if label.contains("-c") {
                assert_eq!(key["known_value"], true, "{context}: {key:#}");
            }
            let previous = found.insert(label.clone(), key);
            assert!(previous.is_none(), "{label} found twice, {context}");
        }

        // The call in flight happened entirely or not at all; the model learns which.
        match &in_flight {
            Some(InFlight::Create(label)) => {
                let landed = found.contains_key(label);
                if landed {
                    model.insert(label.clone(), None);
                }
                *outcomes.entry(("create", landed)).or_default() += 1;
            }
            Some(InFlight::Destroy(label)) => {
                let landed = !found.contains_key(label);
                if landed {
                    model.remove(label);
                }
                *outcomes.entry(("destroy", landed)).or_default() += 1;
            }
            Some(InFlight::Relabel(old, new)) => {
                let landed = found.contains_key(new);
                if landed {
                    let entry = model.remove(old).unwrap();
                    model.insert(new.clone(), entry);
                }
                *outcomes.entry(("relabel", landed)).or_default() += 1;
            }
            None => *outcomes.entry(("none", true)).or_default() += 1,
        }
        let expected: BTreeSet<&String> = model.keys().collect();
        let present: BTreeSet<&String> = found.keys().collect();
        let lost: Vec<_> = expected.difference(&present).collect();
        let extra: Vec<_> = present.difference(&expected).collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "{context}: lost {lost:?}, extra {extra:?}"
        );
        for (label, check_value) in &model {
            if let Some(check_value) = check_value {
                assert_eq!(
                    found[label]["check_value"].as_str(),
                    Some(check_value.as_str()),
                    "{label} changed its value, {context}"
                );
            }
        }
    }
    println!(
        "{rounds} kills in {:.1} s: {acknowledged_total} acknowledged calls, {} objects on \
         the token, calls in flight at the kill (kind, landed): {outcomes:?}",
        started.elapsed().as_secs_f64(),
        model.len()
    );
    assert!(acknowledged_total > 0, "no writer ever got a call done");
}
