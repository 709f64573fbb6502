//! The `keyferry` tool's throughput: `migrate` of many keys (keyferry → keyferry and
//! SoftHSMv2 → keyferry) against the bare wrap + unwrap calls it is built on, `rewrap` of
//! many blobs with its peak memory, and `openssl speed` as the AES-GCM ceiling.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::figure::{self, Figure, Unit, median};
use crate::scenarios::{aes_key, err, open, user_session};
use crate::{SO_PIN, USER_PIN, exports, repo_root};

/// Where the pieces are.
pub struct Setup {
    /// This binary, started again for the jobs that load a module.
    pub exe: PathBuf,
    pub keyferry_module: PathBuf,
    pub softhsm_module: Option<PathBuf>,
    /// The `keyferry` CLI.
    pub keyferry_cli: PathBuf,
    /// Keys per migration.
    pub keys: usize,
    /// Blobs per rewrap.
    pub blobs: usize,
}

/// Runs `command` with `envs`; its stdout, or its stderr as the error.
fn checked(what: &str, command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Makes tokens with a softhsm-config script; the environment it exports.
fn make_tokens(script: &str, dir: &Path, labels: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut command = Command::new(repo_root().join("softhsm-config").join(script));
    command.arg(dir);
    for label in labels {
        command.args([label, SO_PIN, USER_PIN]);
    }
    Ok(exports(&checked(script, &mut command)?))
}

fn uri(module: &Path, label: &str) -> String {
    format!("pkcs11:token={label}?module-path={}", module.display())
}

/// Rounds of bare calls against `keyferry migrate`: one round's ratio moved between
/// 1.1 and 1.45 on this VM, and the median of three between 1.17 and 1.39 from run to run.
const ROUNDS: usize = 7;

/// The ratios the targets read.
pub const MIGRATE_OVER_BARE_PROCESS: &str =
    "migrate time over a process making the bare calls (median of rounds)";
pub const MIGRATE_OVER_BARE_LOOP: &str =
    "migrate time over the bare calls' loop alone (median of rounds)";
pub const MIGRATE_OVER_VERIFIED_LOOP: &str =
    "migrate time over the loop of bare calls + the proof's calls";

/// One round: the bare calls timed around their loop and as a whole process, then
/// `keyferry migrate` of the same keys, timed as a whole process.
struct Round {
    loop_seconds: f64,
    process_seconds: f64,
    migrate_seconds: f64,
}

pub fn run(setup: &Setup) -> Result<Vec<Figure>, String> {
    let dir = tempfile::Builder::new()
        .prefix("keyferry-bench-tool-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let round_labels: Vec<(String, String)> = (0..ROUNDS)
        .map(|round| (format!("dst{round}"), format!("bare{round}")))
        .collect();
    let mut labels = vec!["src", "verified", "fromhsm", "blobs"];
    for (dst, bare) in &round_labels {
        labels.extend([dst.as_str(), bare.as_str()]);
    }
    let mut envs = make_tokens("make-keyferry-tokens", dir.path(), &labels)?;
    let kf = &setup.keyferry_module;
    let job = |args: &[&str], envs: &[(String, String)]| -> Result<String, String> {
        let mut command = Command::new(&setup.exe);
        command.args(args).envs(envs.iter().cloned());
        checked(&format!("keyferry-bench {}", args.join(" ")), &mut command)
    };
    let keys = setup.keys.to_string();
    let kf_path = kf.display().to_string();
    eprintln!("tool: {keys} keys on keyferry token src");
    job(&["fill", &kf_path, "src", &keys], &envs)?;

    let mut figures = Vec::new();
    let seconds_of = |output: String| -> Result<f64, String> {
        output
            .trim()
            .parse()
            .map_err(|e| format!("bare job output: {e}"))
    };
    let migrate = |from: String, to: String, envs: &[(String, String)]| {
        let journal = dir.path().join(format!(
            "run-{}.journal",
            to.replace(['/', ':', '?', '='], "-")
        ));
        let mut command = Command::new(&setup.keyferry_cli);
        command
            .current_dir(dir.path())
            .args(["migrate", "--json", "--from", &from, "--to", &to])
            .arg("--journal")
            .arg(&journal)
            .arg("--audit-log")
            .arg(dir.path().join("audit.jsonl"))
            .envs(envs.iter().cloned())
            .env("KEYFERRY_FROM_PIN", USER_PIN)
            .env("KEYFERRY_TO_PIN", USER_PIN);
        let start = Instant::now();
        let output = checked("keyferry migrate", &mut command)?;
        let seconds = start.elapsed().as_secs_f64();
        // A key counts once it is on the destination with its proof (migrate verifies
        // every key before it reports it moved).
        let verified = output
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| {
                line["type"] == "object"
                    && line["data"]["status"] == "moved"
                    && !line["data"]["proof"].is_null()
            })
            .count();
        if verified < setup.keys {
            return Err(format!(
                "keyferry migrate verified {verified} of {} keys",
                setup.keys
            ));
        }
        Ok::<f64, String>(seconds)
    };
    // The disk's fsync time, most of both figures, wanders between runs on a shared
    // machine: bare and migrate alternate, and each ratio is taken within its round.
    let mut rounds = Vec::with_capacity(ROUNDS);
    for (round, (dst, bare)) in round_labels.iter().enumerate() {
        eprintln!("tool: round {round}: bare calls, then keyferry migrate keyferry → keyferry");
        let start = Instant::now();
        let loop_seconds = seconds_of(job(&["bare", &kf_path, "src", bare, &keys], &envs)?)?;
        let process_seconds = start.elapsed().as_secs_f64();
        let migrate_seconds = migrate(uri(kf, "src"), uri(kf, dst), &envs)?;
        rounds.push(Round {
            loop_seconds,
            process_seconds,
            migrate_seconds,
        });
    }
    let median_of = |value: fn(&Round) -> f64| median(rounds.iter().map(value).collect());
    let kf_seconds = median_of(|round| round.migrate_seconds);
    figures.push(Figure::value(
        format!("migrate keyferry → keyferry, {keys} keys, verified + journal"),
        Unit::PerSecond,
        setup.keys as f64 / kf_seconds,
        setup.keys,
    ));
    figures.push(Figure::value(
        format!("bare calls (attributes read, wrap, unwrap), {keys} keys, their loop"),
        Unit::PerSecond,
        setup.keys as f64 / median_of(|round| round.loop_seconds),
        setup.keys,
    ));
    figures.push(Figure::value(
        format!("bare calls, {keys} keys, the whole process"),
        Unit::PerSecond,
        setup.keys as f64 / median_of(|round| round.process_seconds),
        setup.keys,
    ));
    figures.push(Figure::value(
        MIGRATE_OVER_BARE_PROCESS,
        Unit::Times,
        median_of(|round| round.migrate_seconds / round.process_seconds),
        setup.keys,
    ));
    figures.push(Figure::value(
        MIGRATE_OVER_BARE_LOOP,
        Unit::Times,
        median_of(|round| round.migrate_seconds / round.loop_seconds),
        setup.keys,
    ));
    let verified_seconds = seconds_of(job(
        &["bare", "--verify", &kf_path, "src", "verified", &keys],
        &envs,
    )?)?;
    figures.push(Figure::value(
        format!("bare calls + check values + read-back, {keys} keys, their loop"),
        Unit::PerSecond,
        setup.keys as f64 / verified_seconds,
        setup.keys,
    ));
    figures.push(Figure::value(
        MIGRATE_OVER_VERIFIED_LOOP,
        Unit::Times,
        kf_seconds / verified_seconds,
        setup.keys,
    ));

    if let Some(softhsm) = &setup.softhsm_module {
        let softhsm_dir = dir.path().join("softhsm");
        std::fs::create_dir(&softhsm_dir).map_err(|e| e.to_string())?;
        envs.extend(make_tokens(
            "make-softhsm-tokens",
            &softhsm_dir,
            &["hsmsrc"],
        )?);
        eprintln!("tool: {keys} keys on SoftHSMv2 token hsmsrc");
        job(
            &["fill", &softhsm.display().to_string(), "hsmsrc", &keys],
            &envs,
        )?;
        eprintln!("tool: keyferry migrate SoftHSMv2 → keyferry");
        let seconds = migrate(uri(softhsm, "hsmsrc"), uri(kf, "fromhsm"), &envs)?;
        figures.push(Figure::value(
            format!("migrate SoftHSMv2 → keyferry, {keys} keys, verified + journal"),
            Unit::PerSecond,
            setup.keys as f64 / seconds,
            setup.keys,
        ));
    }

    let small = (setup.blobs / 10).max(1);
    for count in [small, setup.blobs] {
        let input = dir.path().join(format!("blobs-{count}.jsonl"));
        let output = dir.path().join(format!("rewrapped-{count}.jsonl"));
        eprintln!("tool: {count} blobs under old-kek");
        job(
            &[
                "blobs",
                &kf_path,
                "blobs",
                &count.to_string(),
                &input.display().to_string(),
            ],
            &envs,
        )?;
        eprintln!("tool: keyferry rewrap --jobs 2, {count} blobs");
        let mut child = Command::new(&setup.keyferry_cli)
            .current_dir(dir.path())
            .args(["rewrap", "--jobs", "2", "--old-kek"])
            .arg(format!(
                "pkcs11:token=blobs;object=old-kek-{count}?module-path={}",
                kf.display()
            ))
            .arg("--new-kek")
            .arg(format!(
                "pkcs11:token=blobs;object=new-kek-{count}?module-path={}",
                kf.display()
            ))
            .arg("--audit-log")
            .arg(dir.path().join("audit.jsonl"))
            .arg(&input)
            .arg(&output)
            .envs(envs.iter().cloned())
            .env("KEYFERRY_FROM_PIN", USER_PIN)
            .env("KEYFERRY_TO_PIN", USER_PIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("keyferry rewrap: {e}"))?;
        let start = Instant::now();
        let pid = child.id().to_string();
        let mut peak_kib = 0;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            peak_kib = peak_kib.max(figure::peak_kib_of(&pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        };
        let seconds = start.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!("keyferry rewrap of {count} blobs: {status}"));
        }
        let lines = std::fs::read_to_string(&output)
            .map_err(|e| format!("{}: {e}", output.display()))?
            .lines()
            .count();
        if lines != count {
            return Err(format!("keyferry rewrap wrote {lines} of {count} blobs"));
        }
        figures.push(Figure::value(
            format!("rewrap --jobs 2, {count} blobs"),
            Unit::PerSecond,
            count as f64 / seconds,
            count,
        ));
        figures.push(Figure::value(
            format!("rewrap --jobs 2, {count} blobs: peak RSS"),
            Unit::Kib,
            peak_kib as f64,
            count,
        ));
    }
    Ok(figures)
}

/// `openssl speed -evp aes-256-gcm` on 1 MiB blocks (the ceiling of one core), in MB/s.
pub fn openssl_ceiling(seconds: u32) -> Result<f64, String> {
    let output = checked(
        "openssl speed",
        Command::new("openssl").args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-bytes",
            "1048576",
            "-seconds",
            &seconds.to_string(),
        ]),
    )?;
    // The last line: "AES-256-GCM   1234567.89k" in thousands of bytes per second.
    output
        .lines()
        .rev()
        .find_map(|line| {
            let line = line.to_ascii_lowercase();
            let rest = line.strip_prefix("aes-256-gcm")?;
            let kilo: f64 = rest
                .split_whitespace()
                .last()?
                .strip_suffix('k')?
                .parse()
                .ok()?;
            Some(kilo * 1000.0 / 1e6)
        })
        .ok_or_else(|| format!("no aes-256-gcm figure in openssl speed's output:\n{output}"))
}

/// `fill`: `count` extractable AES-256 token keys labelled `key-N`.
pub fn fill(module: &Path, label: &str, count: usize) -> Result<(), String> {
    let (pkcs11, slot) = open(module, label)?;
    let session = user_session(&pkcs11, slot)?;
    for index in 0..count {
        aes_key(&session, true, &format!("key-{index}"))?;
    }
    drop(session);
    // As an application ends: keyferry closes its token files (see `keyferry migrate`).
    pkcs11.finalize().map_err(err)
}

/// An AES-256 KEK with the given value, as a session object.
fn kek(session: &Session, value: &[u8]) -> Result<ObjectHandle, String> {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ])
        .map_err(err)
}

/// What a migration carries of a secret key besides its value: the attributes
/// `keyferry migrate` copies when they are set (its plan's "preserved" list).
const CARRIED_ATTRIBUTES: [AttributeType; 17] = [
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::Private,
    AttributeType::Modifiable,
    AttributeType::Copyable,
    AttributeType::Destroyable,
    AttributeType::Derive,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::Sign,
    AttributeType::Verify,
    AttributeType::Wrap,
    AttributeType::Unwrap,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::WrapWithTrusted,
];

/// What a verified copy is read back for: the attributes a migration report compares.
const COPIED_ATTRIBUTES: [AttributeType; 12] = [
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::ValueLen,
    AttributeType::UniqueId,
];

/// `bare`: the calls a migration cannot do without — every key of `from` has its
/// attributes read, is wrapped there under a shared KEK and unwrapped on `to` as a token
/// object with those attributes; with `verify`, also the calls its proof needs (a check
/// value on each side, the copy's attributes read back). Prints the loop's seconds.
pub fn bare(
    module: &Path,
    from: &str,
    to: &str,
    count: usize,
    verify: bool,
) -> Result<f64, String> {
    let (pkcs11, source_slot) = open(module, from)?;
    let destination_slot = crate::scenarios::slot_labelled(&pkcs11, to)?;
    let source = user_session(&pkcs11, source_slot)?;
    let destination = user_session(&pkcs11, destination_slot)?;
    let value = source.generate_random_vec(32).map_err(err)?;
    let source_kek = kek(&source, &value)?;
    let destination_kek = kek(&destination, &value)?;
    let keys = source
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .map_err(err)?;
    let start = Instant::now();
    let mut moved = 0;
    for key in keys {
        if key == source_kek {
            continue;
        }
        // A migration keeps what the key is: its attributes go with it.
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
        ];
        template.extend(
            source
                .get_attributes(key, &CARRIED_ATTRIBUTES)
                .map_err(err)?,
        );
        let blob = source
            .wrap_key(&Mechanism::AesKeyWrapPad, source_kek, key)
            .map_err(err)?;
        let copy = destination
            .unwrap_key(&Mechanism::AesKeyWrapPad, destination_kek, &blob, &template)
            .map_err(err)?;
        if verify {
            let zero = [0u8; 16];
            let here = source
                .encrypt(&Mechanism::AesEcb, key, &zero)
                .map_err(err)?;
            let there = destination
                .encrypt(&Mechanism::AesEcb, copy, &zero)
                .map_err(err)?;
            if here != there {
                return Err(format!("key {moved} arrived changed"));
            }
            destination
                .get_attributes(copy, &COPIED_ATTRIBUTES)
                .map_err(err)?;
        }
        moved += 1;
    }
    if moved != count {
        return Err(format!("moved {moved} keys, expected {count}"));
    }
    let seconds = start.elapsed().as_secs_f64();
    // The process ends as `keyferry migrate` does, so that both pay closing the tokens.
    drop((source, destination));
    pkcs11.finalize().map_err(err)?;
    Ok(seconds)
}

/// `blobs`: token keys `old-kek-COUNT` and `new-kek-COUNT`, and `count` data keys wrapped
/// under `old-kek-COUNT` with RFC 5649 (each a fresh key), written as rewrap input (JSON Lines).
pub fn blobs(module: &Path, label: &str, count: usize, out: &Path) -> Result<(), String> {
    use std::io::Write;
    let (pkcs11, slot) = open(module, label)?;
    let session = user_session(&pkcs11, slot)?;
    let old_kek = aes_key(&session, true, &format!("old-kek-{count}"))?;
    aes_key(&session, true, &format!("new-kek-{count}"))?;
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?,
    );
    for index in 0..count {
        let data_key = aes_key(&session, false, "data")?;
        let blob = session
            .wrap_key(&Mechanism::AesKeyWrapPad, old_kek, data_key)
            .map_err(err)?;
        session.destroy_object(data_key).map_err(err)?;
        writeln!(
            writer,
            "{{\"id\":\"dek-{index}\",\"blob\":\"{}\",\"mechanism\":\"0x210A\"}}",
            Base64::encode_string(&blob)
        )
        .map_err(|e| e.to_string())?;
    }
    writer.flush().map_err(|e| e.to_string())
}
