//! The call sequences every module runs, in a worker process of its own: small operations,
//! bulk ciphers, key management, two threads against one, and growth with the number of
//! token objects (find, encrypt, a new process's start-up, peak memory).

use std::path::Path;
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

use crate::figure::{self, Figure, Unit};
use crate::{LABEL, USER_PIN, WorkerOptions};

pub fn err(err: cryptoki::error::Error) -> String {
    err.to_string()
}

/// Loads and initialises a module, and finds the token labelled `label`.
pub fn open(module: &Path, label: &str) -> Result<(Pkcs11, Slot), String> {
    let pkcs11 = Pkcs11::new(module).map_err(err)?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(err)?;
    let slot = slot_labelled(&pkcs11, label)?;
    Ok((pkcs11, slot))
}

pub fn slot_labelled(pkcs11: &Pkcs11, label: &str) -> Result<Slot, String> {
    pkcs11
        .get_slots_with_initialized_token()
        .map_err(err)?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        })
        .ok_or_else(|| format!("no token labelled {label}: the init command must make one"))
}

/// A logged-in read-write session.
pub fn user_session(pkcs11: &Pkcs11, slot: Slot) -> Result<Session, String> {
    let session = pkcs11.open_rw_session(slot).map_err(err)?;
    session
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .map_err(err)?;
    Ok(session)
}

pub fn aes_key(session: &Session, token: bool, label: &str) -> Result<ObjectHandle, String> {
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(token),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
        .map_err(err)
}

fn gcm_encrypt(session: &Session, key: ObjectHandle, data: &[u8]) -> Result<(), String> {
    let mut iv = [7u8; 12];
    let params = GcmParams::new(&mut iv, b"", 128.into()).map_err(|e| e.to_string())?;
    session
        .encrypt(&Mechanism::AesGcm(params), key, data)
        .map(drop)
        .map_err(err)
}

/// What a fresh process measures: `C_Initialize` + `C_OpenSession`, then its peak memory
/// after logging in, finding one key and encrypting with it.
#[derive(Serialize, Deserialize)]
pub struct Probe {
    pub open_us: f64,
    pub peak_kib: u64,
}

pub fn probe(module: &Path, wanted: &str) -> Result<Probe, String> {
    let start = Instant::now();
    let pkcs11 = Pkcs11::new(module).map_err(err)?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(err)?;
    let slot = slot_labelled(&pkcs11, LABEL)?;
    let session = pkcs11.open_rw_session(slot).map_err(err)?;
    let open_us = start.elapsed().as_secs_f64() * 1e6;
    session
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .map_err(err)?;
    let found = session
        .find_objects(&[Attribute::Label(wanted.as_bytes().to_vec())])
        .map_err(err)?;
    let key = found
        .first()
        .copied()
        .ok_or_else(|| format!("the probe found no key labelled {wanted}"))?;
    gcm_encrypt(&session, key, &[0x5a; 64])?;
    Ok(Probe {
        open_us,
        peak_kib: figure::own_peak_kib().unwrap_or(0),
    })
}

/// Every scenario against one module; the figures in the order the table shows them.
pub fn run(module: &Path, options: &WorkerOptions) -> Result<Vec<Figure>, String> {
    let calls = if options.smoke {
        5
    } else {
        options.iterations.max(10)
    };
    let big_calls = (calls / 10).max(3);
    let (pkcs11, slot) = open(module, LABEL)?;
    let pin = AuthPin::new(USER_PIN.into());
    let mut figures = Vec::new();
    figures.push(figure::time("open + close session", calls, || {
        pkcs11.open_rw_session(slot).map(drop).map_err(err)
    })?);
    let session = pkcs11.open_rw_session(slot).map_err(err)?;
    figures.push(figure::time("login + logout (user)", big_calls, || {
        session.login(UserType::User, Some(&pin)).map_err(err)?;
        session.logout().map_err(err)
    })?);
    session.login(UserType::User, Some(&pin)).map_err(err)?;
    figures.push(figure::time("C_GenerateRandom 32 B", calls, || {
        session.generate_random_vec(32).map(drop).map_err(err)
    })?);
    let kib = vec![0x5au8; 1024];
    let mib = vec![0x5au8; 1 << 20];
    figures.push(figure::time("SHA-256 1 KiB", calls, || {
        session
            .digest(&Mechanism::Sha256, &kib)
            .map(drop)
            .map_err(err)
    })?);
    figures.push(figure::time("SHA-256 1 MiB", big_calls, || {
        session
            .digest(&Mechanism::Sha256, &mib)
            .map(drop)
            .map_err(err)
    })?);
    let key = aes_key(&session, false, "gcm")?;
    for (name, data, count) in [
        ("AES-GCM encrypt 64 B", &kib[..64], calls),
        ("AES-GCM encrypt 1 KiB", &kib[..], calls),
        ("AES-GCM encrypt 1 MiB", &mib[..], big_calls),
    ] {
        figures.push(figure::time(name, count, || {
            gcm_encrypt(&session, key, data)
        })?);
    }
    let gcm_mib = figures
        .last()
        .map_or(0.0, |figure| figure.median)
        .max(f64::MIN_POSITIVE);
    figures.push(Figure::value(
        "AES-GCM 1 MiB throughput",
        Unit::MegabytesPerSecond,
        (1u64 << 20) as f64 / gcm_mib,
        big_calls,
    ));
    figures.push(figure::time(
        "AES-256 keygen, session object",
        calls,
        || {
            let key = aes_key(&session, false, "session")?;
            session.destroy_object(key).map_err(err)
        },
    )?);
    figures.push(figure::time(
        "AES-256 keygen, token object (+ destroy)",
        big_calls,
        || {
            let key = aes_key(&session, true, "token")?;
            session.destroy_object(key).map_err(err)
        },
    )?);
    let kek = aes_key(&session, false, "kek")?;
    let unwrap_template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Encrypt(true),
    ];
    for (name, mechanism) in [
        ("AES-KW", Mechanism::AesKeyWrap),
        ("RFC 5649 (0x210A)", Mechanism::AesKeyWrapPad),
    ] {
        let blob = session.wrap_key(&mechanism, kek, key).map_err(err)?;
        figures.push(figure::time(
            &format!("wrap AES-256 with {name}"),
            calls,
            || {
                session
                    .wrap_key(&mechanism, kek, key)
                    .map(drop)
                    .map_err(err)
            },
        )?);
        figures.push(figure::time(
            &format!("unwrap AES-256 with {name} (+ destroy)"),
            calls,
            || {
                let handle = session
                    .unwrap_key(&mechanism, kek, &blob, &unwrap_template)
                    .map_err(err)?;
                session.destroy_object(handle).map_err(err)
            },
        )?);
    }
    let window = Duration::from_millis(if options.smoke { 20 } else { 300 });
    figures.extend(two_threads(&pkcs11, slot, key, window)?);
    figures.extend(growth(module, &session, key, options, calls)?);
    Ok(figures)
}

/// Rounds of one thread then two, for the median ratio.
const ROUNDS: usize = 5;

/// Small operations on one thread and on two, each with a session of its own, each run
/// for `window` after a warm-up: the throughput of two over that of one, the median of
/// `ROUNDS` rounds (a shared machine's hiccups cost a round or two, not the figure).
fn two_threads(
    pkcs11: &Pkcs11,
    slot: Slot,
    key: ObjectHandle,
    window: Duration,
) -> Result<Vec<Figure>, String> {
    type Op = fn(&Session, ObjectHandle) -> Result<(), String>;
    let ops: [(&str, Op); 4] = [
        ("C_GenerateRandom 32 B", |session, _| {
            session.generate_random_vec(32).map(drop).map_err(err)
        }),
        ("SHA-256 1 KiB", |session, _| {
            session
                .digest(&Mechanism::Sha256, &[0x5a; 1024])
                .map(drop)
                .map_err(err)
        }),
        ("AES-GCM encrypt 64 B", |session, key| {
            gcm_encrypt(session, key, &[0x5a; 64])
        }),
        ("AES-256 keygen, session object", |session, _| {
            let key = aes_key(session, false, "threads")?;
            session.destroy_object(key).map_err(err)
        }),
    ];
    let mut figures = Vec::new();
    for (name, op) in ops {
        // Sessions are not shared between threads: each opens its own (the application is
        // already logged in), and the clock starts when all are ready.
        let rate = |threads: usize| -> Result<(f64, usize), String> {
            let barrier = Barrier::new(threads);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        let barrier = &barrier;
                        scope.spawn(move || -> Result<usize, String> {
                            let session = pkcs11.open_rw_session(slot).map_err(err);
                            barrier.wait();
                            let session = session?;
                            for _ in 0..100 {
                                op(&session, key)?;
                            }
                            let start = Instant::now();
                            let mut done = 0;
                            while start.elapsed() < window {
                                op(&session, key)?;
                                done += 1;
                            }
                            Ok(done)
                        })
                    })
                    .collect();
                let mut done = 0;
                for worker in workers {
                    done += worker
                        .join()
                        .map_err(|_| format!("{name}: a thread panicked"))??;
                }
                Ok((done as f64 / window.as_secs_f64(), done))
            })
        };
        let mut ratios = Vec::with_capacity(ROUNDS);
        let mut ops_done = 0;
        for _ in 0..ROUNDS {
            let (one, _) = rate(1)?;
            let (two, done) = rate(2)?;
            ratios.push(two / one);
            ops_done += done;
        }
        figures.push(Figure::value(
            format!("2 threads over 1: {name}"),
            Unit::Times,
            figure::median(ratios),
            ops_done,
        ));
    }
    Ok(figures)
}

/// Fills the token up to each size in `--objects` and measures what should not grow.
/// Waits until the kernel has written back what a fill left dirty (coreutils `sync`): on
/// this VM writeback runs on the CPUs the timed calls need, so figures taken just after
/// filling 100 000 objects measured the writeback, not the module.
fn settle() -> Result<(), String> {
    let status = Command::new("sync")
        .status()
        .map_err(|e| format!("running sync: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sync: {status}"))
    }
}

fn growth(
    module: &Path,
    session: &Session,
    key: ObjectHandle,
    options: &WorkerOptions,
    calls: usize,
) -> Result<Vec<Figure>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The same encryption with a token key: every use of a token object first asks the
    // store whether another process has written (a session key needs no such question).
    let token_key = aes_key(session, true, "gcm-token")?;
    let mut figures = Vec::new();
    let mut made = 0;
    for (step, &count) in options.objects.iter().enumerate() {
        let count = if options.smoke {
            count.min(10 * (step + 1))
        } else {
            count
        };
        let fill_start = Instant::now();
        while made < count {
            aes_key(session, true, &format!("object-{made}"))?;
            made += 1;
        }
        eprintln!(
            "  {made} token objects (filled in {:.1} s)",
            fill_start.elapsed().as_secs_f64()
        );
        settle()?;
        let wanted = format!("object-{}", made / 2);
        // A linear search over 10 000 objects takes SoftHSMv2 a third of a second a call.
        let find_calls = (calls * 100 / made.max(1)).clamp(calls.min(20), calls);
        figures.push(figure::time(
            &format!("find one key by label among {made}"),
            find_calls,
            || {
                let found = session
                    .find_objects(&[Attribute::Label(wanted.as_bytes().to_vec())])
                    .map_err(err)?;
                if found.len() == 1 {
                    Ok(())
                } else {
                    Err(format!("found {} keys", found.len()))
                }
            },
        )?);
        figures.push(figure::time(
            &format!("AES-GCM 64 B, reused handle, {made} objects"),
            calls,
            || gcm_encrypt(session, key, &[0x5a; 64]),
        )?);
        figures.push(figure::time(
            &format!("AES-GCM 64 B, reused token-key handle, {made} objects"),
            calls,
            || gcm_encrypt(session, token_key, &[0x5a; 64]),
        )?);
        let probes = if options.smoke { 2 } else { 15 };
        let mut opens = Vec::with_capacity(probes);
        let mut peak_kib = 0;
        for _ in 0..probes {
            let output = Command::new(&exe)
                .arg("probe")
                .arg(module)
                .arg(&wanted)
                .output()
                .map_err(|e| format!("starting a probe: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "probe at {made} objects: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let probe: Probe =
                serde_json::from_slice(&output.stdout).map_err(|e| format!("probe output: {e}"))?;
            opens.push(std::time::Duration::from_secs_f64(probe.open_us / 1e6));
            peak_kib = peak_kib.max(probe.peak_kib);
        }
        let (median, p99) = figure::percentiles(opens);
        figures.push(Figure {
            scenario: format!("new process: C_Initialize + C_OpenSession, {made} objects"),
            unit: Unit::Micros,
            median,
            p99: Some(p99),
            calls: probes,
        });
        figures.push(Figure::value(
            format!("new process: peak RSS after login/find/encrypt, {made} objects"),
            Unit::Kib,
            peak_kib as f64,
            probes,
        ));
        figures.push(Figure::value(
            format!("this process: peak RSS after filling {made} objects"),
            Unit::Kib,
            figure::own_peak_kib().unwrap_or(0) as f64,
            1,
        ));
    }
    Ok(figures)
}
