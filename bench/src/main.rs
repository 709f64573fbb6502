//! keyferry-bench: the same PKCS#11 call sequences against several modules in one run, one
//! table with a column per module and its ratio against the first. Speed is judged here, as
//! ratios on one machine, never by timing assertions in tests.
//!
//! Each module runs in a child process of its own (`keyferry-bench worker …`) whose
//! environment comes from the module's init command: a script that makes a fresh token
//! labelled `bench` in a temporary directory and prints `export VAR=VALUE` lines (the
//! `softhsm-config/make-*-tokens` scripts do exactly that).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

/// The bench token's label and PINs (throwaway tokens in a temporary directory).
const LABEL: &str = "bench";
const SO_PIN: &str = "bench-so-pin-1234";
const USER_PIN: &str = "bench-user-pin-1234";

/// Compare PKCS#11 modules on identical call sequences.
#[derive(Parser)]
#[command(name = "keyferry-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Run>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Run {
    /// Runs every scenario against one module (started by the parent, in its environment).
    #[command(hide = true)]
    Worker {
        /// The module file.
        module: PathBuf,
        #[command(flatten)]
        options: Options,
    },
}

#[derive(Args, Clone)]
struct Options {
    /// A module as NAME=PATH (repeatable; the first is the baseline of the ratio column).
    /// Default: keyferry (beside this binary) and SoftHSMv2.
    #[arg(long = "module", value_name = "NAME=PATH")]
    modules: Vec<String>,
    /// The init command for a module, NAME=COMMAND; `{dir}` becomes a fresh temporary
    /// directory. Default for keyferry and softhsm: softhsm-config/make-*-tokens.
    #[arg(long = "init", value_name = "NAME=COMMAND")]
    inits: Vec<String>,
    /// Timed calls per scenario (1 MiB scenarios take a tenth).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Token objects for the find-by-label growth scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    objects: Vec<usize>,
    /// A few iterations of everything: shows the bench works, judges nothing.
    #[arg(long)]
    smoke: bool,
    /// JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// One scenario's figures for one module.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Figure {
    scenario: String,
    /// Median time per call, in microseconds.
    median_us: f64,
    /// 99th percentile, in microseconds.
    p99_us: f64,
    /// Calls timed.
    calls: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Run::Worker { module, options }) => worker(&module, &options),
        None => parent(&cli.options),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// NAME=VALUE.
fn split(text: &str, what: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{what} {text:?} is not NAME=VALUE"))
}

fn default_init(name: &str) -> Option<String> {
    let script = match name {
        "keyferry" => "make-keyferry-tokens",
        "softhsm" => "make-softhsm-tokens",
        _ => return None,
    };
    let path = repo_root().join("softhsm-config").join(script);
    Some(format!(
        "{} {{dir}} {LABEL} {SO_PIN} {USER_PIN}",
        path.display()
    ))
}

fn parent(options: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let modules: Vec<(String, String)> = if options.modules.is_empty() {
        let keyferry = exe
            .parent()
            .map(|dir| dir.join("libkeyferry_pkcs11.so"))
            .unwrap_or_default();
        vec![
            ("keyferry".to_owned(), keyferry.display().to_string()),
            (
                "softhsm".to_owned(),
                "/usr/lib/softhsm/libsofthsm2.so".to_owned(),
            ),
        ]
    } else {
        options
            .modules
            .iter()
            .map(|text| split(text, "--module"))
            .collect::<Result<_, _>>()?
    };
    let inits: BTreeMap<String, String> = options
        .inits
        .iter()
        .map(|text| split(text, "--init"))
        .collect::<Result<_, _>>()?;
    let mut columns: Vec<(String, Vec<Figure>)> = Vec::new();
    for (name, path) in &modules {
        let dir = tempfile::Builder::new()
            .prefix("keyferry-bench-")
            .tempdir()
            .map_err(|err| err.to_string())?;
        let init = inits
            .get(name)
            .cloned()
            .or_else(|| default_init(name))
            .ok_or_else(|| format!("no --init for module {name}"))?
            .replace("{dir}", &dir.path().display().to_string());
        let output = Command::new("sh")
            .args(["-c", &init])
            .output()
            .map_err(|err| format!("{name}: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "{name}: init failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let mut worker = Command::new(&exe);
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((variable, value)) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
            {
                worker.env(variable, value.trim_matches('\''));
            }
        }
        worker
            .arg("worker")
            .arg(path)
            .args(["--iterations", &options.iterations.to_string()]);
        let objects: Vec<String> = options.objects.iter().map(ToString::to_string).collect();
        worker.args(["--objects", &objects.join(",")]);
        if options.smoke {
            worker.arg("--smoke");
        }
        eprintln!("benchmarking {name} ({path})");
        let output = worker.output().map_err(|err| format!("{name}: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let figures: Vec<Figure> =
            serde_json::from_slice(&output.stdout).map_err(|err| format!("{name}: {err}"))?;
        columns.push((name.clone(), figures));
    }
    print(&columns, options.json)
}

fn print(columns: &[(String, Vec<Figure>)], json: bool) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    if json {
        let value: BTreeMap<&str, &Vec<Figure>> = columns
            .iter()
            .map(|(name, figures)| (name.as_str(), figures))
            .collect();
        return writeln!(
            out,
            "{}",
            serde_json::to_string(&value).map_err(|err| err.to_string())?
        )
        .map_err(|err| err.to_string());
    }
    let Some((base_name, base)) = columns.first() else {
        return Ok(());
    };
    let mut header = format!("{:<40}", "scenario (median µs / p99 µs)");
    for (name, _) in columns {
        header.push_str(&format!("{name:>22}"));
    }
    for (name, _) in columns.iter().skip(1) {
        header.push_str(&format!("{:>24}", format!("{name}/{base_name}")));
    }
    writeln!(out, "{header}").map_err(|err| err.to_string())?;
    for (index, figure) in base.iter().enumerate() {
        let mut line = format!("{:<40}", figure.scenario);
        for (_, figures) in columns {
            let cell = figures.get(index).map_or_else(
                || "-".to_owned(),
                |f| format!("{:.1} / {:.1}", f.median_us, f.p99_us),
            );
            line.push_str(&format!("{cell:>22}"));
        }
        for (_, figures) in columns.iter().skip(1) {
            let ratio = figures
                .get(index)
                .filter(|_| figure.median_us > 0.0)
                .map_or_else(
                    || "-".to_owned(),
                    |f| format!("{:.1}×", f.median_us / figure.median_us),
                );
            line.push_str(&format!("{ratio:>24}"));
        }
        writeln!(out, "{line}").map_err(|err| err.to_string())?;
    }
    Ok(())
}

/// Times `calls` runs of `op` (after a tenth as warm-up).
fn time(
    scenario: &str,
    calls: usize,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<Figure, String> {
    for _ in 0..calls.div_ceil(10) {
        op().map_err(|err| format!("{scenario}: {err}"))?;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        op().map_err(|err| format!("{scenario}: {err}"))?;
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let at = |fraction: f64| {
        let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
        samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Ok(Figure {
        scenario: scenario.to_owned(),
        median_us: at(0.5),
        p99_us: at(0.99),
        calls,
    })
}

fn err(err: cryptoki::error::Error) -> String {
    err.to_string()
}

fn aes_key(session: &Session, token: bool, label: &str) -> Result<ObjectHandle, String> {
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

fn worker(module: &Path, options: &Options) -> Result<(), String> {
    let calls = if options.smoke {
        5
    } else {
        options.iterations.max(10)
    };
    let big_calls = (calls / 10).max(3);
    let pkcs11 = Pkcs11::new(module).map_err(err)?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(err)?;
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .map_err(err)?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == LABEL)
        })
        .ok_or("no token labelled bench: the init command must make one")?;
    let pin = AuthPin::new(USER_PIN.into());
    let mut figures = Vec::new();
    figures.push(time("open + close session", calls, || {
        pkcs11.open_rw_session(slot).map(drop).map_err(err)
    })?);
    let session = pkcs11.open_rw_session(slot).map_err(err)?;
    figures.push(time("login + logout (user)", big_calls, || {
        session.login(UserType::User, Some(&pin)).map_err(err)?;
        session.logout().map_err(err)
    })?);
    session.login(UserType::User, Some(&pin)).map_err(err)?;
    figures.push(time("C_GenerateRandom 32 B", calls, || {
        session.generate_random_vec(32).map(drop).map_err(err)
    })?);
    let kib = vec![0x5au8; 1024];
    let mib = vec![0x5au8; 1 << 20];
    figures.push(time("SHA-256 1 KiB", calls, || {
        session
            .digest(&Mechanism::Sha256, &kib)
            .map(drop)
            .map_err(err)
    })?);
    figures.push(time("SHA-256 1 MiB", big_calls, || {
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
        figures.push(time(name, count, || {
            let mut iv = [7u8; 12];
            let params = GcmParams::new(&mut iv, b"", 128.into()).map_err(|e| e.to_string())?;
            session
                .encrypt(&Mechanism::AesGcm(params), key, data)
                .map(drop)
                .map_err(err)
        })?);
    }
    figures.push(time("AES-256 keygen, session object", calls, || {
        let key = aes_key(&session, false, "session")?;
        session.destroy_object(key).map_err(err)
    })?);
    figures.push(time(
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
        Attribute::KeyType(cryptoki::object::KeyType::AES),
        Attribute::Token(false),
        Attribute::Encrypt(true),
    ];
    for (name, mechanism) in [
        ("AES-KW", Mechanism::AesKeyWrap),
        ("RFC 5649 (0x210A)", Mechanism::AesKeyWrapPad),
    ] {
        let blob = session.wrap_key(&mechanism, kek, key).map_err(err)?;
        figures.push(time(&format!("wrap AES-256 with {name}"), calls, || {
            session
                .wrap_key(&mechanism, kek, key)
                .map(drop)
                .map_err(err)
        })?);
        figures.push(time(&format!("unwrap AES-256 with {name}"), calls, || {
            let handle = session
                .unwrap_key(&mechanism, kek, &blob, &unwrap_template)
                .map_err(err)?;
            session.destroy_object(handle).map_err(err)
        })?);
    }
    let mut made = 0;
    for (step, &count) in options.objects.iter().enumerate() {
        let count = if options.smoke {
            count.min(10 * (step + 1))
        } else {
            count
        };
        while made < count {
            aes_key(&session, true, &format!("object-{made}"))?;
            made += 1;
        }
        let wanted = format!("object-{}", made / 2);
        // A linear search over 10 000 objects takes SoftHSMv2 a third of a second a call.
        let find_calls = (calls * 100 / made.max(1)).clamp(calls.min(20), calls);
        figures.push(time(
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
        figures.push(time(
            &format!("AES-GCM 64 B, reused handle, {made} objects"),
            calls,
            || {
                let mut iv = [7u8; 12];
                let params = GcmParams::new(&mut iv, b"", 128.into()).map_err(|e| e.to_string())?;
                session
                    .encrypt(&Mechanism::AesGcm(params), key, &kib[..64])
                    .map(drop)
                    .map_err(err)
            },
        )?);
    }
    let text = serde_json::to_string(&figures).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}
