//! 100 000 objects on one token: opening the token and finding one object by label cost
//! about what they cost with 100. Ratios, measured in fresh processes, never absolute times.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::object::Attribute;
use keyferry_tests::{fresh_token, keyferry_token_dir, worker, Module};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

/// Add `count` public data objects to a token file in one transaction, from another
/// process (kf-worker's `bulk-fill`: creating them one call at a time would take minutes).
fn bulk_fill(token: &str, count: usize) {
    let pkcs11 = Module::Keyferry.pkcs11();
    let slot = keyferry_tests::slot_of(Module::Keyferry, token);
    let serial = pkcs11
        .get_token_info(slot)
        .unwrap()
        .serial_number()
        .trim()
        .to_string();
    let file = keyferry_token_dir().join(format!("{serial}.kftoken"));
    let count = count.to_string();
    worker(
        WORKER,
        &["bulk-fill", file.to_str().unwrap(), token, &count],
        &[],
    );
}

/// The fastest of five runs of (C_Initialize + C_OpenSession, find by label), in µs.
fn timing(token: &str, label: &str) -> (u64, u64) {
    let mut best = (u64::MAX, u64::MAX);
    for _ in 0..5 {
        let line = worker(WORKER, &["timing", token, label], &[]);
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect();
        best = (best.0.min(numbers[0]), best.1.min(numbers[1]));
    }
    best
}

#[test]
fn opening_and_finding_do_not_grow_with_the_number_of_objects() {
    let (_, small) = fresh_token(Module::Keyferry, "scale-100");
    let (_, large) = fresh_token(Module::Keyferry, "scale-100k");
    bulk_fill(&small, 100);
    bulk_fill(&large, 100_000);
    // The module in this process sees the bulk rows too.
    let slot = keyferry_tests::slot_of(Module::Keyferry, &large);
    let session = Module::Keyferry.pkcs11().open_ro_session(slot).unwrap();
    assert_eq!(
        session
            .find_objects(&[Attribute::Label(b"obj-99999".to_vec())])
            .unwrap()
            .len(),
        1
    );

    let (small_open, small_find) = timing(&small, "obj-50");
    let (large_open, large_find) = timing(&large, "obj-50000");
    println!("100 objects: init+open {small_open} µs, find {small_find} µs");
    println!("100 000 objects: init+open {large_open} µs, find {large_find} µs");
    // Generous bounds: a shared, noisy machine, and a millisecond of slack for tiny values.
    assert!(
        large_open <= 4 * small_open + 1_000,
        "init+open grew: {small_open} µs -> {large_open} µs"
    );
    assert!(
        large_find <= 4 * small_find + 1_000,
        "find by label grew: {small_find} µs -> {large_find} µs"
    );
}
