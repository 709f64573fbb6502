//! The `keyferry` migration CLI end to end, between real tokens: SoftHSMv2 and keyferry in
//! every direction, a thousand keys, SIGKILL at random moments, conflicts and refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup should panic loudly

#[path = "../../migrate-tool/src/samples.rs"]
#[allow(dead_code)] // shared with the CLI, which uses the key material these tests do not
mod samples;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, CertificateType, ObjectClass};
use cryptoki::session::Session;
use keyferry_tests::cli::{self, aes_key, uri};
use keyferry_tests::{fresh_token, user_session, Module};

/// The key set every direction carries: AES-128/192/256, a 20-byte generic secret, RSA-2048
/// and P-256 pairs, a certificate and a data object; ten objects.
fn populate(session: &Session) {
    aes_key(session, "aes-128", &[1], 16);
    aes_key(session, "aes-192", &[2], 24);
    aes_key(session, "aes-256", &[3], 32);
    session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"hmac-20".to_vec()),
                Attribute::Id(vec![4]),
                Attribute::ValueLen(20.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
        .expect("generic secret");
    let pair = |label: &str, id: u8| {
        (
            vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(vec![id]),
                Attribute::Verify(true),
            ],
            vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(vec![id]),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
    };
    let (mut public, private) = pair("rsa-2048", 5);
    public.extend([
        Attribute::ModulusBits(2048.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
    ]);
    session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .expect("RSA pair");
    let (mut public, private) = pair("ec-p256", 6);
    public.push(Attribute::EcParams(vec![
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ]));
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .expect("EC pair");
    session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(b"rsa-cert".to_vec()),
            Attribute::Id(vec![7]),
            Attribute::Value(samples::bytes(samples::RSA_CERTIFICATE)),
            Attribute::Subject(samples::bytes(samples::RSA_CERTIFICATE_SUBJECT)),
            Attribute::Issuer(samples::bytes(samples::RSA_CERTIFICATE_SUBJECT)),
            Attribute::SerialNumber(samples::bytes(samples::RSA_CERTIFICATE_SERIAL)),
        ])
        .expect("certificate");
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(b"app-config".to_vec()),
            Attribute::Application(b"keyferry-tests".to_vec()),
            Attribute::Value(b"endpoint=https://kms.example\n".to_vec()),
        ])
        .expect("data object");
}

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("keyferry-migrate.")
        .tempdir()
        .unwrap()
}

/// Migrates `from` → `to` and checks every object moved and verifies; returns the verify
/// report's check values by label and class.
fn migrate_all(from: &str, to: &str, dir: &Path, expected: usize) -> Vec<(String, String, String)> {
    migrate_with(from, to, dir, expected, &[])
}

fn migrate_with(
    from: &str,
    to: &str,
    dir: &Path,
    expected: usize,
    extra: &[&str],
) -> Vec<(String, String, String)> {
    let mut args = vec!["migrate", "--from", from, "--to", to, "--json"];
    args.extend_from_slice(extra);
    let outcome = cli::run(&args, dir);
    assert_eq!(
        outcome.code, 0,
        "migrate failed:\n{}\n{}",
        outcome.stdout, outcome.stderr
    );
    let statuses = outcome.statuses();
    assert_eq!(statuses.len(), expected, "{statuses:?}");
    for object in outcome.json("object") {
        let preserved: Vec<&str> = object["attributes"]["preserved"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        let mut wanted = vec!["CKA_LABEL", "CKA_PRIVATE"];
        if matches!(object["class"].as_str(), Some("secret" | "private")) {
            wanted.extend([
                "CKA_ID",
                "CKA_SENSITIVE",
                "CKA_EXTRACTABLE",
                "CKA_SIGN",
                "CKA_DECRYPT",
                "CKA_UNWRAP",
            ]);
        }
        for attribute in wanted {
            assert!(
                preserved.contains(&attribute),
                "{attribute} not preserved: {object}"
            );
        }
        // SoftHSMv2 zero-pads a 20-byte key under RFC 5649: it must travel another way.
        if object["label"] == "hmac-20" && outcome.stdout.contains("\"rfc5649_zero_pads\":true") {
            let transport = object["transport"].as_str().unwrap();
            let exact = transport.contains("direct")
                || transport.contains("KWP")
                || transport.contains("rsa-aes");
            assert!(exact, "{object}");
        }
    }
    for (label, class, status) in &statuses {
        let wanted = if matches!(class.as_str(), "secret" | "private") {
            "moved"
        } else {
            "copied"
        };
        assert_eq!(status, wanted, "{label} {class}: {}", outcome.stdout);
    }
    let verified = cli::run(&["verify", "--from", from, "--to", to, "--json"], dir);
    assert_eq!(
        verified.code, 0,
        "verify failed:\n{}\n{}",
        verified.stdout, verified.stderr
    );
    verified
        .json("object")
        .into_iter()
        .map(|object| {
            assert_eq!(object["status"], "verified", "{object}");
            (
                object["label"].as_str().unwrap().to_owned(),
                object["class"].as_str().unwrap().to_owned(),
                object["proof"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn direction(source: Module, destination: Module) {
    let (source_slot, source_label) = fresh_token(source, "src");
    populate(&user_session(source, source_slot));
    let (_, destination_label) = fresh_token(destination, "dst");
    let dir = work_dir();
    let proofs = migrate_all(
        &uri(source, &source_label),
        &uri(destination, &destination_label),
        dir.path(),
        10,
    );
    assert_eq!(proofs.len(), 10);
    // A rerun of a finished migration changes nothing.
    let again = cli::run(
        &[
            "migrate",
            "--from",
            &uri(source, &source_label),
            "--to",
            &uri(destination, &destination_label),
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .statuses()
            .iter()
            .all(|(_, _, status)| status == "present"),
        "{}",
        again.stdout
    );
    let inventory = cli::run(
        &["inventory", &uri(destination, &destination_label), "--json"],
        dir.path(),
    );
    assert_eq!(inventory.json("object").len(), 10, "{}", inventory.stdout);
}

#[test]
fn softhsm_to_keyferry() {
    direction(Module::SoftHsm, Module::Keyferry);
}

#[test]
fn keyferry_to_softhsm() {
    direction(Module::Keyferry, Module::SoftHsm);
}

#[test]
fn softhsm_to_softhsm() {
    direction(Module::SoftHsm, Module::SoftHsm);
}

#[test]
fn keyferry_to_keyferry() {
    direction(Module::Keyferry, Module::Keyferry);
}

#[test]
fn a_round_trip_softhsm_keyferry_softhsm_keeps_every_check_value() {
    let (a_slot, a) = fresh_token(Module::SoftHsm, "trip-a");
    populate(&user_session(Module::SoftHsm, a_slot));
    let (_, b) = fresh_token(Module::Keyferry, "trip-b");
    let (_, c) = fresh_token(Module::SoftHsm, "trip-c");
    let dir = work_dir();
    let there = migrate_all(
        &uri(Module::SoftHsm, &a),
        &uri(Module::Keyferry, &b),
        dir.path(),
        10,
    );
    let back = migrate_all(
        &uri(Module::Keyferry, &b),
        &uri(Module::SoftHsm, &c),
        dir.path(),
        10,
    );
    // Same keys, same proofs where the proof is a check value (signatures are randomised).
    for ((label, class, first), (_, _, second)) in there.iter().zip(&back) {
        if !first.starts_with("sign-verify") {
            assert_eq!(first, second, "{label} {class}");
        }
    }
    let direct = cli::run(
        &[
            "verify",
            "--from",
            &uri(Module::SoftHsm, &a),
            "--to",
            &uri(Module::SoftHsm, &c),
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(direct.code, 0, "{}", direct.stdout);
}

#[test]
fn a_thousand_keys_move_and_verify_in_one_run() {
    let (slot, source) = fresh_token(Module::Keyferry, "thousand-src");
    let session = user_session(Module::Keyferry, slot);
    for index in 0..1000u32 {
        aes_key(
            &session,
            &format!("dek-{index:04}"),
            &index.to_be_bytes(),
            32,
        );
    }
    let (_, destination) = fresh_token(Module::Keyferry, "thousand-dst");
    let dir = work_dir();
    let started = Instant::now();
    migrate_all(
        &uri(Module::Keyferry, &source),
        &uri(Module::Keyferry, &destination),
        dir.path(),
        1000,
    );
    eprintln!(
        "1000 keys migrated and verified twice in {:?}",
        started.elapsed()
    );
}

fn journal_run(journal: &Path) -> Option<String> {
    let text = std::fs::read_to_string(journal).ok()?;
    let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    first["run"].as_str().map(str::to_owned)
}

/// What a journal shows so far; a line cut short by a kill does not parse and is not
/// counted.
#[derive(Clone, Copy)]
struct Progress {
    /// Objects recorded as settled (verified or present), each counted once.
    settled: usize,
    /// Runs past their logins: each writes its transport line after both.
    logged_in: usize,
}

/// Scans the journal as text (it is polled every few milliseconds while a run goes on).
fn progress(journal: &Path) -> Progress {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut settled = HashSet::new();
    let mut logged_in = 0;
    // A line without its newline may be cut short: it does not count yet.
    for line in text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
    {
        if line.starts_with(r#"{"type":"transport""#) {
            logged_in += 1;
        } else if line.contains(r#""state":"verified""#) || line.contains(r#""state":"present""#) {
            let key = line
                .split(r#""key":""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            settled.insert(key.expect("a step line has a key").to_owned());
        }
    }
    Progress {
        settled: settled.len(),
        logged_in,
    }
}

/// xorshift64*, seeded from the clock: random kill moments without an RNG dependency; the
/// seed is printed so a failure can be replayed.
struct Moments(u64);

impl Moments {
    /// A number in `low..high`.
    fn next(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        low + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (high - low)
    }
}

/// Objects kept back from the kill pacing, so that a kill lands before the run can finish:
/// more than the token loop may run ahead of the journal (16 batches of 16 waiting for the
/// bookkeeping thread, one being filled, one being kept: 288), which a loaded machine
/// reaches, and what it carries between the journal's last poll and the kill.
const UNPACED: usize = 400;

/// Where kills may fall.
#[derive(Clone, Copy, PartialEq)]
enum Window {
    /// Anywhere, module load and logins included.
    Anywhere,
    /// Only once this run is past its logins, plan and transport (its transport line is in
    /// the journal).
    /// SoftHSMv2 2.6.1 rewrites `token.object` in place (truncate, then write) on every
    /// C_Login, so a SIGKILL inside its login leaves the file empty and the token, with
    /// the PIN-wrapped key of every object in it, gone; no caller can prevent that.
    AfterLogins,
}

/// Kills `child` at a random moment: a quarter of the time within 150 ms of its start (40 ms
/// of its logins, under `Window::AfterLogins`), otherwise once the journal shows a random
/// number of further objects settled, plus up to 15 ms so the kill falls anywhere in the
/// next key's wrap, unwrap, commit or proof. The number is drawn so that the kills left
/// share what remains beyond `UNPACED`: a faster build or machine cannot finish the run
/// before every kill lands, as a clock-only schedule could. `None` when the child exited
/// on its own first.
fn kill_at_random_moment(
    child: &mut std::process::Child,
    journal: &Path,
    before: Progress,
    moments: &mut Moments,
    window: Window,
    kills_left: usize,
    keys: usize,
) -> Option<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let wait_for = |child: &mut std::process::Child, reached: &dyn Fn(Progress) -> bool| {
        while !reached(progress(journal)) {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "the migration made no progress for 300 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Some(())
    };
    if window == Window::AfterLogins {
        wait_for(child, &|now| now.logged_in > before.logged_in)?;
    }
    let spare = (keys - before.settled).saturating_sub(UNPACED) as u64;
    if spare == 0 || moments.next(0, 4) == 0 {
        let within = match window {
            Window::Anywhere => 150,
            Window::AfterLogins => 40,
        };
        std::thread::sleep(Duration::from_millis(moments.next(0, within)));
    } else {
        let target =
            before.settled as u64 + moments.next(0, 2 * spare / (kills_left as u64 + 1) + 1);
        wait_for(child, &|now| now.settled as u64 >= target)?;
        std::thread::sleep(Duration::from_millis(moments.next(0, 15)));
    }
    if child.try_wait().unwrap().is_some() {
        return None;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Some(())
}

/// Migrates 900 AES keys from a `source` token to a keyferry token, SIGKILLs the run at
/// twenty random moments within `window`, resumes each time, then checks every key moved
/// once and verifies.
fn survives_twenty_kills(source_module: Module, window: Window) {
    const KEYS: usize = 900;
    let (slot, source) = fresh_token(source_module, "crash-src");
    let session = user_session(source_module, slot);
    for index in 0..KEYS {
        aes_key(
            &session,
            &format!("key-{index:03}"),
            &(index as u32).to_be_bytes(),
            16 + 8 * (index as u64 % 3),
        );
    }
    drop(session);
    let (_, destination) = fresh_token(Module::Keyferry, "crash-dst");
    let (from, to) = (
        uri(source_module, &source),
        uri(Module::Keyferry, &destination),
    );
    let dir = work_dir();
    let journal = dir.path().join("crash.journal");
    let journal_arg = journal.to_str().unwrap().to_owned();
    let errors = dir.path().join("run.stderr");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments seed {seed:#x}");
    let mut moments = Moments(seed);
    let mut killed_at = Vec::new();
    while killed_at.len() < 20 {
        let args: Vec<String> = match journal_run(&journal) {
            Some(run) => vec![
                "migrate".into(),
                "--resume".into(),
                run,
                "--journal".into(),
                journal_arg.clone(),
            ],
            None => vec![
                "migrate".into(),
                "--from".into(),
                from.clone(),
                "--to".into(),
                to.clone(),
                "--journal".into(),
                journal_arg.clone(),
            ],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = progress(&journal);
        let mut child = cli::command(&args, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .expect("starting keyferry");
        let killed = kill_at_random_moment(
            &mut child,
            &journal,
            before,
            &mut moments,
            window,
            20 - killed_at.len(),
            KEYS,
        );
        let status = child.wait().unwrap();
        assert!(
            killed.is_some(),
            "run {} was not killed: it ended with {status} ({} objects settled), seed {seed:#x}: {}",
            killed_at.len() + 1,
            progress(&journal).settled,
            std::fs::read_to_string(&errors).unwrap_or_default()
        );
        killed_at.push(progress(&journal).settled);
    }
    let run = journal_run(&journal).expect("a journal after 20 kills");
    let finished = cli::run(
        &[
            "migrate",
            "--resume",
            &run,
            "--journal",
            &journal_arg,
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(finished.code, 0, "{}\n{}", finished.stdout, finished.stderr);
    let statuses = finished.statuses();
    assert_eq!(statuses.len(), KEYS);
    assert!(
        statuses
            .iter()
            .all(|(_, _, status)| matches!(status.as_str(), "moved" | "present" | "done-earlier")),
        "{statuses:?}"
    );
    let inventory = cli::run(&["inventory", &to, "--json"], dir.path());
    let labels: Vec<String> = inventory
        .json("object")
        .iter()
        .map(|object| object["label"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(labels.len(), KEYS, "objects on the destination");
    assert_eq!(
        labels.iter().collect::<HashSet<_>>().len(),
        KEYS,
        "duplicates on the destination"
    );
    assert_eq!(
        progress(&journal).settled,
        KEYS,
        "every object settled in the journal, for retire to find"
    );
    let verified = cli::run(&["verify", "--from", &from, "--to", &to], dir.path());
    assert_eq!(verified.code, 0, "{}", verified.stdout);
    eprintln!("20 kills, with this many objects settled at each: {killed_at:?}");
}

#[test]
fn sigkill_at_twenty_random_moments_loses_nothing_and_duplicates_nothing() {
    survives_twenty_kills(Module::SoftHsm, Window::AfterLogins);
}

#[test]
fn sigkill_anywhere_between_keyferry_tokens_logins_included_loses_nothing() {
    survives_twenty_kills(Module::Keyferry, Window::Anywhere);
}

#[test]
fn a_destination_key_with_another_value_is_a_conflict_and_left_untouched() {
    let (source_slot, source) = fresh_token(Module::Keyferry, "conflict-src");
    let (destination_slot, destination) = fresh_token(Module::SoftHsm, "conflict-dst");
    let source_session = user_session(Module::Keyferry, source_slot);
    aes_key(&source_session, "shared-name", &[9], 32);
    aes_key(&source_session, "moves-fine", &[10], 32);
    let destination_session = user_session(Module::SoftHsm, destination_slot);
    let theirs = aes_key(&destination_session, "shared-name", &[9], 32);
    let before = destination_session
        .encrypt(&Mechanism::AesEcb, theirs, &[0u8; 16])
        .unwrap();
    let dir = work_dir();
    let (from, to) = (
        uri(Module::Keyferry, &source),
        uri(Module::SoftHsm, &destination),
    );
    let plan = cli::run(&["plan", "--from", &from, "--to", &to], dir.path());
    assert_eq!(plan.code, 3, "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("conflict  secret AES \"shared-name\" id 09"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("present on the destination with a different value"),
        "{}",
        plan.stdout
    );
    let outcome = cli::run(
        &["migrate", "--from", &from, "--to", &to, "--json"],
        dir.path(),
    );
    assert_eq!(outcome.code, 3, "{}", outcome.stdout);
    let mut statuses = outcome.statuses();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            (
                "moves-fine".to_owned(),
                "secret".to_owned(),
                "moved".to_owned()
            ),
            (
                "shared-name".to_owned(),
                "secret".to_owned(),
                "conflict".to_owned()
            ),
        ]
    );
    let after = destination_session
        .encrypt(&Mechanism::AesEcb, theirs, &[0u8; 16])
        .unwrap();
    assert_eq!(before, after, "the destination key changed");
}

#[test]
fn keys_that_cannot_move_are_refused_with_the_attribute_and_the_remedy() {
    let (slot, source) = fresh_token(Module::Keyferry, "refuse-src");
    let session = user_session(Module::Keyferry, slot);
    let base = |label: &str, id: u8| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Sensitive(true),
        ]
    };
    let mut bound = base("hsm-bound", 1);
    bound.push(Attribute::Extractable(false));
    session.generate_key(&Mechanism::AesKeyGen, &bound).unwrap();
    let mut trusted_only = base("trusted-only", 2);
    trusted_only.extend([
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
    ]);
    session
        .generate_key(&Mechanism::AesKeyGen, &trusted_only)
        .unwrap();
    let (_, destination) = fresh_token(Module::SoftHsm, "refuse-dst");
    let dir = work_dir();
    let (from, to) = (
        uri(Module::Keyferry, &source),
        uri(Module::SoftHsm, &destination),
    );
    let plan = cli::run(
        &["plan", "--from", &from, "--to", &to, "--json"],
        dir.path(),
    );
    assert_eq!(plan.code, 3, "{}", plan.stderr);
    let objects = plan.json("object");
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["label"], "hsm-bound");
    assert_eq!(objects[0]["status"], "refuse");
    assert_eq!(objects[0]["blame"], "CKA_EXTRACTABLE");
    assert!(objects[0]["remedy"]
        .as_str()
        .unwrap()
        .contains("domain clone"));
    assert!(objects[0]["remedy"]
        .as_str()
        .unwrap()
        .contains("keyferry rekey"));
    assert_eq!(objects[1]["label"], "trusted-only");
    assert_eq!(objects[1]["blame"], "CKA_WRAP_WITH_TRUSTED");
    assert!(objects[1]["reason"]
        .as_str()
        .unwrap()
        .contains("CKA_TRUSTED"));
    let migrate = cli::run(&["migrate", "--from", &from, "--to", &to], dir.path());
    assert_eq!(migrate.code, 3, "{}", migrate.stdout);
    let inventory = cli::run(&["inventory", &to, "--json"], dir.path());
    assert!(inventory.json("object").is_empty(), "{}", inventory.stdout);
}

fn forced(source: Module, destination: Module, transport: &str, detail: &str) {
    let (slot, from) = fresh_token(source, "forced-src");
    populate(&user_session(source, slot));
    let (_, to) = fresh_token(destination, "forced-dst");
    let dir = work_dir();
    let (from, to) = (uri(source, &from), uri(destination, &to));
    let plan = cli::run(
        &[
            "plan",
            "--from",
            &from,
            "--to",
            &to,
            "--transport",
            transport,
            "--json",
        ],
        dir.path(),
    );
    let header = &plan.json("plan")[0];
    assert_eq!(
        header["transport"]["agreement"], transport,
        "{}",
        plan.stdout
    );
    assert_eq!(header["transport"]["detail"], detail, "{}", plan.stdout);
    migrate_with(&from, &to, dir.path(), 10, &["--transport", transport]);
}

#[test]
fn rsa_aes_key_wrap_carries_everything_between_keyferry_tokens() {
    forced(Module::Keyferry, Module::Keyferry, "rsa-aes", "SHA-256");
}

#[test]
fn an_rsa_oaep_transport_key_carries_everything_from_softhsm_to_keyferry() {
    forced(Module::SoftHsm, Module::Keyferry, "rsa-oaep", "SHA-1");
}

#[test]
fn an_rsa_oaep_transport_key_carries_everything_from_keyferry_to_softhsm() {
    forced(Module::Keyferry, Module::SoftHsm, "rsa-oaep", "SHA-1");
}

#[test]
fn rsa_aes_between_tokens_that_lack_it_is_refused_with_the_reason() {
    let (slot, from) = fresh_token(Module::SoftHsm, "no-rsa-aes-src");
    aes_key(&user_session(Module::SoftHsm, slot), "kek", &[1], 32);
    let (_, to) = fresh_token(Module::Keyferry, "no-rsa-aes-dst");
    let dir = work_dir();
    let outcome = cli::run(
        &[
            "plan",
            "--from",
            &uri(Module::SoftHsm, &from),
            "--to",
            &uri(Module::Keyferry, &to),
            "--transport",
            "rsa-aes",
        ],
        dir.path(),
    );
    assert_eq!(outcome.code, 3, "{}", outcome.stdout);
    assert!(
        outcome
            .stdout
            .contains("transport: none — CKM_RSA_AES_KEY_WRAP: not on both tokens"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn select_patterns_and_uri_filters_choose_the_objects() {
    let (slot, from) = fresh_token(Module::Keyferry, "select-src");
    populate(&user_session(Module::Keyferry, slot));
    let (_, to) = fresh_token(Module::Keyferry, "select-dst");
    let dir = work_dir();
    let (from, to) = (uri(Module::Keyferry, &from), uri(Module::Keyferry, &to));
    let labels = |outcome: &cli::Outcome| {
        let mut labels: Vec<String> = outcome
            .statuses()
            .into_iter()
            .map(|(label, class, _)| format!("{label}/{class}"))
            .collect();
        labels.sort();
        labels
    };
    let by_glob = cli::run(
        &[
            "plan",
            "--from",
            &from,
            "--to",
            &to,
            "--select",
            "label=aes-*",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(
        labels(&by_glob),
        ["aes-128/secret", "aes-192/secret", "aes-256/secret"]
    );
    let by_class = cli::run(
        &[
            "plan",
            "--from",
            &from,
            "--to",
            &to,
            "--select",
            "class=private",
            "--select",
            "id=04",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(
        labels(&by_class),
        ["ec-p256/private", "hmac-20/secret", "rsa-2048/private"]
    );
    let by_uri = format!(
        "{};type=cert{}",
        &from[..from.find('?').unwrap()],
        &from[from.find('?').unwrap()..]
    );
    let by_type = cli::run(
        &["plan", "--from", &by_uri, "--to", &to, "--json"],
        dir.path(),
    );
    assert_eq!(labels(&by_type), ["rsa-cert/cert"]);
    let dry = cli::run(
        &[
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--dry-run",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(dry.statuses().len(), 10);
    let inventory = cli::run(&["inventory", &to, "--json"], dir.path());
    assert!(
        inventory.json("object").is_empty(),
        "--dry-run wrote {}",
        inventory.stdout
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "--dry-run wrote a journal"
    );
}

#[test]
fn the_demo_runs_on_keyferry_and_from_softhsm() {
    let dir = work_dir();
    for args in [&["demo"][..], &["demo", "--softhsm"][..]] {
        let outcome = cli::run(args, dir.path());
        assert_eq!(
            outcome.code, 0,
            "{args:?}\n{}\n{}",
            outcome.stdout, outcome.stderr
        );
        assert!(outcome.stdout.contains("11 verified"), "{}", outcome.stdout);
    }
}

#[test]
fn every_change_is_in_the_audit_log_and_an_edited_line_is_caught() {
    let (slot, from) = fresh_token(Module::Keyferry, "audit-src");
    let session = user_session(Module::Keyferry, slot);
    for index in 0..3u8 {
        aes_key(&session, &format!("audited-{index}"), &[index], 16);
    }
    let (_, to) = fresh_token(Module::SoftHsm, "audit-dst");
    let dir = work_dir();
    let (from, to) = (uri(Module::Keyferry, &from), uri(Module::SoftHsm, &to));
    let outcome = cli::run(&["migrate", "--from", &from, "--to", &to], dir.path());
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let log = dir.path().join("keyferry-audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, index) in lines.iter().zip(0..) {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["action"], "migrate.move");
        assert_eq!(entry["seq"], index + 1);
        assert!(entry["objects"][0]
            .as_str()
            .unwrap()
            .contains(&format!("audited-{index}")));
        assert!(entry["result"]
            .as_str()
            .unwrap()
            .starts_with("ok, verified by aes-ecb:"));
    }
    let verified = cli::run(&["audit", "verify", "keyferry-audit.jsonl"], dir.path());
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(
        verified.stdout.contains("3 entries, intact"),
        "{}",
        verified.stdout
    );
    let edited = text
        .replacen("\"result\":\"ok", "\"result\":\"OK", 2)
        .replacen("\"result\":\"OK", "\"result\":\"ok", 1);
    std::fs::write(&log, edited).unwrap();
    let broken = cli::run(&["audit", "verify", "keyferry-audit.jsonl"], dir.path());
    assert_eq!(broken.code, 1, "{}", broken.stdout);
    assert!(
        broken.stdout.contains("BROKEN: audit log line 2: edited"),
        "{}",
        broken.stdout
    );
    // Nothing is appended to a log that does not verify.
    let refused = cli::run(&["migrate", "--from", &from, "--to", &to], dir.path());
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("audit log line 2"),
        "{}",
        refused.stderr
    );
}

/// A run that moved three 16-byte AES keys between two fresh keyferry tokens.
struct Migrated {
    /// A user session on the source.
    source: Session,
    destination_slot: cryptoki::slot::Slot,
    /// The work directory, holding the journal `run.journal`.
    dir: tempfile::TempDir,
    /// The run id.
    run: String,
}

/// Keys `{name}-0`, `-1`, `-2` (CKA_ID 00, 01, 02) on a fresh keyferry token, migrated to
/// another with the journal `run.journal`.
fn three_keys_migrated(name: &str) -> Migrated {
    let (source_slot, from) = fresh_token(Module::Keyferry, &format!("{name}-src"));
    let (destination_slot, to) = fresh_token(Module::Keyferry, &format!("{name}-dst"));
    let source = user_session(Module::Keyferry, source_slot);
    for index in 0..3u8 {
        aes_key(&source, &format!("{name}-{index}"), &[index], 16);
    }
    let dir = work_dir();
    let (from, to) = (uri(Module::Keyferry, &from), uri(Module::Keyferry, &to));
    let migrated = cli::run(
        &[
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--journal",
            "run.journal",
        ],
        dir.path(),
    );
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    let run = journal_run(&dir.path().join("run.journal")).unwrap();
    Migrated {
        source,
        destination_slot,
        dir,
        run,
    }
}

#[test]
fn retire_asks_first_keeps_what_no_longer_verifies_and_deactivates_or_destroys_the_rest() {
    let Migrated {
        source,
        destination_slot,
        dir,
        run,
    } = three_keys_migrated("retiring");
    let retire = |extra: &[&str]| {
        let mut args = vec![
            "retire",
            "--run",
            &run,
            "--journal",
            "run.journal",
            "--json",
        ];
        args.extend_from_slice(extra);
        cli::run(&args, dir.path())
    };
    let find = |session: &Session, label: &str| {
        session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap()
    };

    let unconfirmed = retire(&[]);
    assert_eq!(unconfirmed.code, 2, "{}", unconfirmed.stdout);
    assert!(
        unconfirmed
            .stderr
            .contains("needs a confirmation: pass --yes"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(find(&source, "retiring-0").len(), 1);

    // The destination loses one copy: that source key must stay.
    let destination = user_session(Module::Keyferry, destination_slot);
    destination
        .destroy_object(find(&destination, "retiring-1")[0])
        .unwrap();

    let deactivated = retire(&["--yes", "--deactivate"]);
    assert_eq!(deactivated.code, 1, "{}", deactivated.stdout);
    let statuses = deactivated.statuses();
    assert_eq!(
        statuses,
        [
            (
                "retiring-0".to_owned(),
                "secret".to_owned(),
                "deactivated".to_owned()
            ),
            (
                "retiring-1".to_owned(),
                "secret".to_owned(),
                "refused".to_owned()
            ),
            (
                "retiring-2".to_owned(),
                "secret".to_owned(),
                "deactivated".to_owned()
            ),
        ]
    );
    let key = find(&source, "retiring-0")[0];
    let flags = source
        .get_attributes(
            key,
            &[
                cryptoki::object::AttributeType::Encrypt,
                cryptoki::object::AttributeType::Decrypt,
            ],
        )
        .unwrap();
    assert_eq!(flags, [Attribute::Encrypt(false), Attribute::Decrypt(true)]);

    let destroyed = retire(&["--yes"]);
    assert_eq!(destroyed.code, 1, "{}", destroyed.stdout);
    assert_eq!(
        destroyed.status_column(),
        ["destroyed", "refused", "destroyed"]
    );
    assert!(find(&source, "retiring-0").is_empty());
    assert_eq!(
        find(&source, "retiring-1").len(),
        1,
        "a key whose copy is gone stays"
    );
    assert!(find(&source, "retiring-2").is_empty());
    let audit = cli::run(&["audit", "verify", "keyferry-audit.jsonl"], dir.path());
    assert!(
        audit.stdout.contains("7 entries, intact"),
        "{}",
        audit.stdout
    );
}

#[test]
fn a_key_whose_journal_lines_a_crash_lost_is_recorded_present_and_can_be_retired() {
    let Migrated { dir, run, .. } = three_keys_migrated("lost");
    let journal = dir.path().join("run.journal");
    // Under group commit a crash may lose the journal's last lines while the tokens keep
    // what they committed: cut it back to before the last key's first step.
    let text = std::fs::read_to_string(&journal).unwrap();
    let cut = text.find(r#""object":"secret AES \"lost-2\" id 02","state":"wrapped""#);
    let cut = text[..cut.expect("the last key's wrapped line")]
        .rfind('\n')
        .unwrap()
        + 1;
    std::fs::write(&journal, &text[..cut]).unwrap();
    assert_eq!(progress(&journal).settled, 2);

    let resumed = cli::run(
        &[
            "migrate",
            "--resume",
            &run,
            "--journal",
            "run.journal",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        resumed.status_column(),
        ["done-earlier", "done-earlier", "present"]
    );
    assert_eq!(
        progress(&journal).settled,
        3,
        "the present key is journalled"
    );

    let retired = cli::run(
        &[
            "retire",
            "--run",
            &run,
            "--journal",
            "run.journal",
            "--json",
            "--yes",
            "--deactivate",
        ],
        dir.path(),
    );
    assert_eq!(retired.code, 0, "{}", retired.stdout);
    assert_eq!(
        retired.status_column(),
        ["deactivated", "deactivated", "deactivated"]
    );
}

/// Runs keyferry with `args`, sends it SIGINT once `ready` holds, and returns its exit
/// status with what it printed.
fn interrupted(
    args: &[&str],
    dir: &Path,
    ready: &dyn Fn() -> bool,
) -> (std::process::ExitStatus, cli::Outcome) {
    let (stdout, stderr) = (dir.join("interrupted.out"), dir.join("interrupted.err"));
    let mut child = cli::command(args, dir)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let outcome = cli::Outcome {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&stdout).unwrap(),
        stderr: std::fs::read_to_string(&stderr).unwrap(),
    };
    (status, outcome)
}

fn count(statuses: &[(String, String, String)], status: &str) -> usize {
    statuses.iter().filter(|(_, _, s)| s == status).count()
}

#[test]
fn sigint_stops_migrate_and_retire_between_two_keys_with_journal_and_report_complete() {
    use std::os::unix::process::ExitStatusExt;
    // More than the token loop may run ahead of the journal (16 batches of 16).
    const KEYS: usize = 400;
    let (slot, source) = fresh_token(Module::SoftHsm, "sigint-src");
    let session = user_session(Module::SoftHsm, slot);
    for index in 0..KEYS {
        aes_key(
            &session,
            &format!("int-{index:03}"),
            &(index as u16).to_be_bytes(),
            32,
        );
    }
    drop(session);
    let (_, destination) = fresh_token(Module::Keyferry, "sigint-dst");
    let (from, to) = (
        uri(Module::SoftHsm, &source),
        uri(Module::Keyferry, &destination),
    );
    let dir = work_dir();
    let journal = dir.path().join("int.journal");
    let (status, report) = interrupted(
        &[
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--journal",
            "int.journal",
            "--json",
        ],
        dir.path(),
        &|| progress(&journal).settled >= 10,
    );
    assert_eq!(status.signal(), Some(2), "{status}: {}", report.stderr);
    assert!(
        report.stderr.contains("SIGINT: stopped between two keys")
            && report
                .stderr
                .contains("finish with: keyferry migrate --resume"),
        "{}",
        report.stderr
    );
    let statuses = report.statuses();
    assert_eq!(statuses.len(), KEYS, "a report line for every key");
    let (moved, left) = (count(&statuses, "moved"), count(&statuses, "not-attempted"));
    assert_eq!(moved + left, KEYS, "{statuses:?}");
    assert!(left > 0, "the signal stopped nothing");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.ends_with('\n'), "a torn journal line");
    assert_eq!(
        progress(&journal).settled,
        moved,
        "every moved key journalled, nothing more"
    );

    let run = journal_run(&journal).unwrap();
    let resumed = cli::run(
        &[
            "migrate",
            "--resume",
            &run,
            "--journal",
            "int.journal",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(count(&resumed.statuses(), "done-earlier"), moved);
    assert_eq!(progress(&journal).settled, KEYS);

    let retire = [
        "retire",
        "--run",
        &run,
        "--journal",
        "int.journal",
        "--json",
        "--yes",
        "--deactivate",
    ];
    let deactivated = || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .matches(r#""state":"deactivated""#)
            .count()
    };
    let (status, report) = interrupted(&retire, dir.path(), &|| deactivated() >= 10);
    assert_eq!(status.signal(), Some(2), "{status}: {}", report.stderr);
    assert!(
        report
            .stderr
            .contains("SIGINT: stopped between two objects"),
        "{}",
        report.stderr
    );
    let statuses = report.statuses();
    let (done, left) = (
        count(&statuses, "deactivated"),
        count(&statuses, "not-attempted"),
    );
    assert_eq!((done + left, deactivated()), (KEYS, done), "{statuses:?}");
    assert!(left > 0, "the signal stopped nothing");
    let rest = cli::run(&retire, dir.path());
    assert_eq!(rest.code, 0, "{}", rest.stderr);
    assert_eq!(count(&rest.statuses(), "deactivated"), left);
    assert_eq!(deactivated(), KEYS);
}
