//! A load and crash helper for the integration tests: `stress` runs 8 threads of seeded
//! random work on one token and prints what each created and destroyed, `writer` writes
//! token objects and acknowledges each call on stdout until it is killed, `check` lists
//! every secret key of a token with proof that it still works. The test passes
//! KEYFERRY_CONF and TEST_KEYFERRY_MODULE in the environment, the PIN in KF_TEST_PIN.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: failures should panic loudly

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use keyferry_tests::{initialised_keyferry, pin, slot_labelled, USER_PIN};
use serde_json::json;

/// Threads per `stress` process.
const THREADS: usize = 8;
/// Label of the shared AES key the `stress` test makes before it starts the processes.
const SHARED_AES: &str = "shared-aes";
/// Label of the shared EC P-256 key pair.
const SHARED_EC: &str = "shared-ec";
/// A `writer` that nobody kills stops after this long (exit 3), so a test cannot hang.
const WRITER_LIMIT: Duration = Duration::from_secs(60);

/// xorshift64*: seeded, reproducible, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The AES-256 value of a `writer` key created with C_CreateObject, from the label it was
/// created with (the part before any `.` a relabel appends): FNV-1a seeds the RNG.
fn known_value(label: &str) -> Vec<u8> {
    let base = label.split('.').next().unwrap_or(label);
    let seed = base.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    Rng::new(seed).bytes(32)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The return code of an error, or its text when it is not a PKCS#11 error.
fn describe(err: &Error) -> String {
    match err {
        Error::Pkcs11(rv, function) => format!("{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pkcs11 = initialised_keyferry();
    let user_pin = std::env::var("KF_TEST_PIN").unwrap_or_else(|_| USER_PIN.into());
    match args.as_slice() {
        ["stress", token, tag, secs, seed] => {
            let slot = slot_labelled(&pkcs11, token);
            let deadline = Instant::now() + Duration::from_secs(secs.parse().unwrap());
            let errors = stress(
                &pkcs11,
                slot,
                &user_pin,
                tag,
                deadline,
                seed.parse().unwrap(),
            );
            std::process::exit(i32::from(errors > 0));
        }
        ["writer", token, round, seed] => {
            let slot = slot_labelled(&pkcs11, token);
            writer(&pkcs11, slot, &user_pin, round, seed.parse().unwrap());
        }
        ["check", token] => {
            let slot = slot_labelled(&pkcs11, token);
            check(&pkcs11, slot, &user_pin);
        }
        _ => {
            eprintln!("usage: kf-stress stress TOKEN TAG SECS SEED | writer TOKEN ROUND SEED | check TOKEN");
            std::process::exit(2);
        }
    }
}

/// What one `stress` thread did.
#[derive(Default)]
struct Tally {
    finds: u64,
    gcm_round_trips: u64,
    signatures: u64,
    generated: u64,
    destroyed_count: u64,
    error_count: u64,
    errors: Vec<String>,
    created: Vec<String>,
    destroyed: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.error_count += 1;
        if self.errors.len() < 20 {
            self.errors.push(what);
        }
    }
}

/// The one handle labelled `label` of `class`, or an error text.
fn find_one(session: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, String> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|err| format!("find {label}: {}", describe(&err)))?;
    match found.as_slice() {
        [handle] => Ok(*handle),
        other => Err(format!("find {label}: {} objects, wanted 1", other.len())),
    }
}

/// Runs `THREADS` threads until `deadline`, prints one JSON document, returns the number of
/// errors.
fn stress(
    pkcs11: &Pkcs11,
    slot: Slot,
    user_pin: &str,
    tag: &str,
    deadline: Instant,
    seed: u64,
) -> u64 {
    // The login belongs to the application (PKCS#11 3.0 §5.6): this session keeps it alive
    // while the threads' sessions come and go.
    let anchor = pkcs11.open_rw_session(slot).unwrap();
    anchor.login(UserType::User, Some(&pin(user_pin))).unwrap();
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    let seed = seed ^ ((thread as u64 + 1) << 32) ^ tag.len() as u64;
                    stress_thread(pkcs11, slot, user_pin, tag, thread, deadline, seed)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a stress thread panicked"))
            .collect()
    });
    drop(anchor);
    let total: u64 = tallies.iter().map(|tally| tally.error_count).sum();
    let threads: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(thread, tally)| {
            json!({
                "thread": thread,
                "finds": tally.finds,
                "gcm_round_trips": tally.gcm_round_trips,
                "signatures": tally.signatures,
                "generated": tally.generated,
                "destroyed_count": tally.destroyed_count,
                "error_count": tally.error_count,
                "errors": tally.errors,
                "created": tally.created,
                "destroyed": tally.destroyed,
            })
        })
        .collect();
    println!(
        "{}",
        json!({ "process": tag, "seed": seed, "error_count": total, "threads": threads })
    );
    total
}

fn stress_thread(
    pkcs11: &Pkcs11,
    slot: Slot,
    user_pin: &str,
    tag: &str,
    thread: usize,
    deadline: Instant,
    seed: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(seed);
    let session = match pkcs11.open_rw_session(slot) {
        Ok(session) => session,
        Err(err) => {
            tally.error(format!("open session: {}", describe(&err)));
            return tally;
        }
    };
    // Another session of this application logged in first: the login is shared.
    match session.login(UserType::User, Some(&pin(user_pin))) {
        Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        other => tally.error(format!(
            "login: {other:?}, wanted CKR_USER_ALREADY_LOGGED_IN"
        )),
    }
    let shared = (
        find_one(&session, ObjectClass::SECRET_KEY, SHARED_AES),
        find_one(&session, ObjectClass::PRIVATE_KEY, SHARED_EC),
        find_one(&session, ObjectClass::PUBLIC_KEY, SHARED_EC),
    );
    let (aes, ec_private, ec_public) = match shared {
        (Ok(aes), Ok(private), Ok(public)) => (aes, private, public),
        (aes, private, public) => {
            for err in [aes.err(), private.err(), public.err()]
                .into_iter()
                .flatten()
            {
                tally.error(err);
            }
            return tally;
        }
    };
    // Own keys still alive: label and handle.
    let mut live: Vec<(String, ObjectHandle)> = Vec::new();
    let mut counter = 0u64;
    while Instant::now() < deadline {
        match rng.below(100) {
            0..=19 => {
                tally.finds += 1;
                let result = match rng.below(3) {
                    1 if !live.is_empty() => {
                        let (label, _) = &live[rng.below(live.len())];
                        find_one(&session, ObjectClass::SECRET_KEY, label).map(|_| ())
                    }
                    2 if !tally.destroyed.is_empty() => {
                        let label = &tally.destroyed[rng.below(tally.destroyed.len())];
                        match session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]) {
                            Ok(found) if found.is_empty() => Ok(()),
                            Ok(found) => {
                                Err(format!("destroyed {label} found {} times", found.len()))
                            }
                            Err(err) => Err(format!("find {label}: {}", describe(&err))),
                        }
                    }
                    _ => find_one(&session, ObjectClass::SECRET_KEY, SHARED_AES).map(|_| ()),
                };
                if let Err(err) = result {
                    tally.error(err);
                }
            }
            20..=49 => {
                let (key, name) = if live.is_empty() || rng.below(5) > 0 {
                    (aes, SHARED_AES.to_string())
                } else {
                    let (label, handle) = &live[rng.below(live.len())];
                    (*handle, label.clone())
                };
                let plain_len = 1 + rng.below(200);
                let plain = rng.bytes(plain_len);
                let aad_len = rng.below(20);
                let aad = rng.bytes(aad_len);
                match gcm_round_trip(&session, key, &plain, &aad, &mut rng) {
                    Ok(()) => tally.gcm_round_trips += 1,
                    Err(err) => tally.error(format!("AES-GCM with {name}: {err}")),
                }
            }
            50..=69 => {
                let message_len = 1 + rng.below(100);
                let message = rng.bytes(message_len);
                let signed = session
                    .sign(&Mechanism::EcdsaSha256, ec_private, &message)
                    .and_then(|signature| {
                        session.verify(&Mechanism::EcdsaSha256, ec_public, &message, &signature)
                    });
                match signed {
                    Ok(()) => tally.signatures += 1,
                    Err(err) => tally.error(format!("ECDSA: {}", describe(&err))),
                }
            }
            70..=89 => {
                let label = format!("s-{tag}-{thread}-{counter}");
                counter += 1;
                let generated = session.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                    ],
                );
                match generated {
                    Ok(handle) => {
                        tally.generated += 1;
                        tally.created.push(label.clone());
                        live.push((label, handle));
                    }
                    Err(err) => tally.error(format!("generate {label}: {}", describe(&err))),
                }
            }
            _ => {
                if live.is_empty() {
                    continue;
                }
                let (label, handle) = live.swap_remove(rng.below(live.len()));
                match session.destroy_object(handle) {
                    Ok(()) => {
                        tally.destroyed_count += 1;
                        tally.destroyed.push(label);
                    }
                    Err(err) => tally.error(format!("destroy {label}: {}", describe(&err))),
                }
            }
        }
    }
    tally
}

/// Encrypt under AES-GCM with a fresh IV, decrypt, compare.
fn gcm_round_trip(
    session: &Session,
    key: ObjectHandle,
    plain: &[u8],
    aad: &[u8],
    rng: &mut Rng,
) -> Result<(), String> {
    let mut iv = rng.bytes(12);
    let sealed = session
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            key,
            plain,
        )
        .map_err(|err| format!("encrypt: {}", describe(&err)))?;
    if sealed.len() != plain.len() + 16 {
        return Err(format!(
            "{} bytes sealed from {}, wanted plaintext + 16",
            sealed.len(),
            plain.len()
        ));
    }
    let opened = session
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            key,
            &sealed,
        )
        .map_err(|err| format!("decrypt: {}", describe(&err)))?;
    if opened != plain {
        return Err("decrypted text differs from the plaintext".into());
    }
    Ok(())
}

/// One acknowledged line on stdout, flushed before the next call starts.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Writes token objects of round `round` until killed. Before each call it prints
/// `intent …`; after the call returned CKR_OK it prints the acknowledgement:
/// `created L`, `generated L CHECKVALUE`, `relabelled OLD NEW`, `destroyed L`. Any failed
/// call ends the process with exit code 1.
fn writer(pkcs11: &Pkcs11, slot: Slot, user_pin: &str, round: &str, seed: u64) {
    let started = Instant::now();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin(user_pin))).unwrap();
    say("ready");
    let fail = |what: String, err: Error| -> ! {
        eprintln!("writer: {what}: {}", describe(&err));
        std::process::exit(1);
    };
    let mut rng = Rng::new(seed);
    let mut live: Vec<(String, ObjectHandle)> = Vec::new();
    let mut counter = 0u64;
    while started.elapsed() < WRITER_LIMIT {
        counter += 1;
        let pick = if live.is_empty() {
            rng.below(55)
        } else {
            rng.below(100)
        };
        match pick {
            0..=29 => {
                let label = format!("r{round}-c{counter}");
                say(&format!("intent create {label}"));
                let template = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Value(known_value(&label)),
                ];
                match session.create_object(&template) {
                    Ok(handle) => {
                        say(&format!("created {label}"));
                        live.push((label, handle));
                    }
                    Err(err) => fail(format!("create {label}"), err),
                }
            }
            30..=54 => {
                let label = format!("r{round}-g{counter}");
                say(&format!("intent generate {label}"));
                let template = [
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::ValueLen(32.into()),
                ];
                let handle = session
                    .generate_key(&Mechanism::AesKeyGen, &template)
                    .unwrap_or_else(|err| fail(format!("generate {label}"), err));
                let check = session
                    .get_attributes(handle, &[AttributeType::CheckValue])
                    .unwrap_or_else(|err| fail(format!("check value of {label}"), err));
                match check.as_slice() {
                    [Attribute::CheckValue(value)] => {
                        say(&format!("generated {label} {}", hex(value)));
                        live.push((label, handle));
                    }
                    other => {
                        eprintln!("writer: check value of {label}: {other:?}");
                        std::process::exit(1);
                    }
                }
            }
            55..=74 => {
                let index = rng.below(live.len());
                let (old, handle) = live[index].clone();
                let base = old.split('.').next().unwrap_or(&old).to_string();
                let new = format!("{base}.{counter}");
                say(&format!("intent relabel {old} {new}"));
                match session
                    .update_attributes(handle, &[Attribute::Label(new.clone().into_bytes())])
                {
                    Ok(()) => {
                        say(&format!("relabelled {old} {new}"));
                        live[index].0 = new;
                    }
                    Err(err) => fail(format!("relabel {old}"), err),
                }
            }
            _ => {
                let (label, handle) = live.swap_remove(rng.below(live.len()));
                say(&format!("intent destroy {label}"));
                match session.destroy_object(handle) {
                    Ok(()) => say(&format!("destroyed {label}")),
                    Err(err) => fail(format!("destroy {label}"), err),
                }
            }
        }
    }
    eprintln!("writer: nobody killed me within {WRITER_LIMIT:?}");
    std::process::exit(3);
}

/// The attributes `check` reads from every secret key; each must be readable.
const CHECKED: [AttributeType; 12] = [
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::UniqueId,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::ValueLen,
    AttributeType::CheckValue,
];

/// One JSON line per secret key of the token: its label, unique id, check value, how many
/// of `CHECKED` were readable, AES-ECB of a zero block, whether an AES-GCM round trip
/// worked, and for a label of a `writer` C_CreateObject key (`r…-c…`) whether the key
/// encrypts exactly as a session key of the known value does. Failures are reported in an
/// `error` field, never fatal: a half-written object must show up, not stop the listing.
fn check(pkcs11: &Pkcs11, slot: Slot, user_pin: &str) {
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin(user_pin))).unwrap();
    let keys = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap();
    let zero = [0u8; 16];
    let mut rng = Rng::new(0x5eed);
    let mut seen = BTreeSet::new();
    for key in keys {
        let mut line = serde_json::Map::new();
        let mut errors = Vec::new();
        let mut label = String::new();
        match session.get_attributes(key, &CHECKED) {
            Ok(attributes) => {
                line.insert("readable".into(), json!(attributes.len()));
                for attribute in attributes {
                    match attribute {
                        Attribute::Label(bytes) => {
                            label = String::from_utf8_lossy(&bytes).into_owned();
                        }
                        Attribute::UniqueId(id) => {
                            line.insert("unique_id".into(), json!(String::from_utf8_lossy(&id)));
                        }
                        Attribute::CheckValue(value) => {
                            line.insert("check_value".into(), json!(hex(&value)));
                        }
                        _ => {}
                    }
                }
            }
            Err(err) => errors.push(format!("attributes: {}", describe(&err))),
        }
        line.insert("label".into(), json!(label));
        line.insert("handle_repeated".into(), json!(!seen.insert(key.handle())));
        match session.encrypt(&Mechanism::AesEcb, key, &zero) {
            Ok(sealed) => {
                line.insert("ecb_zero".into(), json!(hex(&sealed)));
                if label.starts_with('r') && label.contains("-c") {
                    let known = session.create_object(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(false),
                        Attribute::Encrypt(true),
                        Attribute::Value(known_value(&label)),
                    ]);
                    match known.and_then(|known| {
                        let expected = session.encrypt(&Mechanism::AesEcb, known, &zero);
                        session.destroy_object(known)?;
                        expected
                    }) {
                        Ok(expected) => {
                            line.insert("known_value".into(), json!(expected == sealed));
                        }
                        Err(err) => errors.push(format!("known value: {}", describe(&err))),
                    }
                }
            }
            Err(err) => errors.push(format!("AES-ECB: {}", describe(&err))),
        }
        let plain = rng.bytes(33);
        match gcm_round_trip(&session, key, &plain, b"check", &mut rng) {
            Ok(()) => {
                line.insert("gcm".into(), json!(true));
            }
            Err(err) => errors.push(format!("AES-GCM: {err}")),
        }
        if !errors.is_empty() {
            line.insert("error".into(), json!(errors.join("; ")));
        }
        println!("{}", serde_json::Value::Object(line));
    }
}
