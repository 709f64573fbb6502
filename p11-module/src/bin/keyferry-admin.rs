//! keyferry-admin: create, list and delete keyferry tokens without a PKCS#11 client.
//! PINs come from files, environment variables or a terminal prompt, never from argv.
//! The master-key ceremony (key parts for custodians) lives in `parts`.

// Beside this file, not in src/bin/ itself, where cargo would take it for a binary.
#[path = "keyferry_admin/parts.rs"]
mod parts;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyferry_core::store::keys::Key256;
use keyferry_core::token::Module;
use keyferry_core::{Config, Error};
use pkcs11_sys::*;
use zeroize::Zeroizing;

/// Manage keyferry tokens: the files behind libkeyferry_pkcs11.so's slots.
///
/// The token directory comes from the config file named by KEYFERRY_CONF, else
/// $XDG_CONFIG_HOME/keyferry/keyferry.toml, else $XDG_DATA_HOME/keyferry/tokens.
///
/// Exit codes: 0 done, 1 the token refused (wrong PIN, locked, ...), 2 usage or config error.
#[derive(Parser)]
#[command(name = "keyferry-admin", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every slot: its token, serial, each PIN's Argon2id cost, the user PIN's state and
    /// the domain (master-key check value).
    ShowSlots,
    /// Create a token on the free slot, or re-initialise an existing one (destroying its objects).
    ///
    /// A new token gets a random master key; with --split-master-key N that key is also
    /// written as N key parts, one file per custodian, and --master-key-part FILE ... (all N
    /// parts) creates another token with the same master key: the same domain. Tokens of a
    /// domain print the same master-key check value.
    InitToken {
        /// Use the free (uninitialised) slot.
        #[arg(long, conflicts_with = "token")]
        free: bool,
        /// Re-initialise the token with this label instead; needs its SO PIN.
        #[arg(long, required_unless_present = "free")]
        token: Option<String>,
        /// The new token's label (up to 32 bytes).
        #[arg(long)]
        label: String,
        /// File holding the SO PIN [else KEYFERRY_SO_PIN, else a prompt].
        #[arg(long, value_name = "FILE")]
        so_pin_file: Option<PathBuf>,
        /// File holding the user PIN to set [else KEYFERRY_PIN, else a prompt on a terminal;
        /// without any of them the user PIN is left unset].
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// Split the new token's master key into N key parts (2 to 16), written to
        /// --parts-dir as part-1.key ... part-N.key; with --free only.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(parts::PART_COUNTS))]
        split_master_key: Option<u8>,
        /// Directory for the key-part files (created 0700 if missing; existing part files
        /// are never overwritten).
        #[arg(long, value_name = "DIR")]
        parts_dir: Option<PathBuf>,
        /// A key-part file; repeat for every part of the split to create a token with the
        /// master key they make up; with --free only.
        #[arg(long, value_name = "FILE")]
        master_key_part: Vec<PathBuf>,
    },
    /// Delete a token file and everything in it; needs its SO PIN.
    DeleteToken {
        /// The token's label.
        #[arg(long)]
        token: String,
        /// File holding the SO PIN [else KEYFERRY_SO_PIN, else a prompt].
        #[arg(long, value_name = "FILE")]
        so_pin_file: Option<PathBuf>,
    },
}

/// Where a new token's master key comes from.
enum MasterKey {
    /// A random key, as C_InitToken makes.
    Random,
    /// A random key, also written as this many parts to a directory.
    Split { total: u8, dir: PathBuf },
    /// The key these part files make up.
    FromParts(Vec<PathBuf>),
}

impl MasterKey {
    fn choose(
        token: Option<&str>,
        split_master_key: Option<u8>,
        parts_dir: Option<PathBuf>,
        master_key_part: Vec<PathBuf>,
    ) -> Result<Self, Failure> {
        let chosen = match (split_master_key, parts_dir, master_key_part.is_empty()) {
            (Some(_), _, false) => {
                return Err(Failure::usage(
                    "--split-master-key and --master-key-part cannot be used together",
                    "--split-master-key makes a new master key; --master-key-part recreates one from all its parts",
                ));
            }
            (Some(total), Some(dir), true) => Self::Split { total, dir },
            (Some(_), None, true) => {
                return Err(Failure::usage(
                    "--split-master-key needs --parts-dir",
                    "name the directory the part files go to: --parts-dir DIR",
                ));
            }
            (None, Some(_), _) => {
                return Err(Failure::usage(
                    "--parts-dir is only used with --split-master-key",
                    "add --split-master-key N, or drop --parts-dir",
                ));
            }
            (None, None, false) => Self::FromParts(master_key_part),
            (None, None, true) => Self::Random,
        };
        if let (Some(_), Self::Split { .. } | Self::FromParts(_)) = (token, &chosen) {
            let flag = match chosen {
                Self::Split { .. } => "--split-master-key",
                _ => "--master-key-part",
            };
            return Err(Failure::usage(
                format!(
                    "{flag} cannot be used with --token: re-initialising a token keeps a random master key"
                ),
                format!("create a new token on the free slot: --free {flag} ..."),
            ));
        }
        Ok(chosen)
    }
}

/// What went wrong, with a hint and the exit code it earns.
struct Failure {
    message: String,
    hint: Option<String>,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
            code: 2,
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let hint = match err {
            Error::PinIncorrect => {
                Some("check the PIN file or variable; each wrong PIN counts towards the lockout")
            }
            Error::PinLocked => Some(
                "the SO PIN unlocks a user PIN (C_InitPIN); a locked SO PIN cannot be recovered",
            ),
            Error::PinLenRange => Some("PINs are min_pin_len (config) to 255 bytes long"),
            _ => None,
        };
        let code = if matches!(err, Error::Config(_)) {
            2
        } else {
            1
        };
        Self {
            message: err.to_string(),
            hint: hint.map(String::from),
            code,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            if let Some(hint) = failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = Config::load()?;
    let filter = tracing_subscriber::EnvFilter::new(format!("keyferry_core={}", config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let module = Module::new(config)?;
    match cli.command {
        Command::ShowSlots => show_slots(&module),
        Command::InitToken {
            free,
            token,
            label,
            so_pin_file,
            pin_file,
            split_master_key,
            parts_dir,
            master_key_part,
        } => {
            let master_key = MasterKey::choose(
                token.as_deref(),
                split_master_key,
                parts_dir,
                master_key_part,
            )?;
            init_token(
                &module,
                free,
                token.as_deref(),
                &label,
                so_pin_file,
                pin_file,
                master_key,
            )
        }
        Command::DeleteToken { token, so_pin_file } => {
            let slot = slot_of(&module, &token)?;
            let so_pin = read_pin(so_pin_file, "KEYFERRY_SO_PIN", "SO PIN", false)?
                .ok_or_else(no_pin("SO PIN", "--so-pin-file", "KEYFERRY_SO_PIN"))?;
            module.delete_token(slot, &so_pin)?;
            println!("deleted token {token:?} (slot {slot})");
            Ok(())
        }
    }
}

fn show_slots(module: &Module) -> Result<(), Failure> {
    // The domain stays the last column and the user-PIN state the one before it, as
    // scripts that read this table expect.
    println!(
        "{:<6} {:<32} {:<16} {:<14} {:<26} {:<26} {:<22} domain (master-key check value)",
        "slot", "label", "serial", "state", "SO PIN KDF", "user PIN KDF", "user PIN"
    );
    for slot in module.slot_list()? {
        let info = module.token_info(slot)?;
        if info.flags & CKF_TOKEN_INITIALIZED == 0 {
            println!("{slot:<6} {:<32} {:<16} {:<14}", "-", "-", "free");
            continue;
        }
        let user = match info.flags {
            f if f & CKF_USER_PIN_LOCKED != 0 => "locked",
            f if f & CKF_USER_PIN_FINAL_TRY != 0 => "final try",
            f if f & CKF_USER_PIN_COUNT_LOW != 0 => "wrong PIN entered",
            f if f & CKF_USER_PIN_INITIALIZED != 0 => "set",
            _ => "not set",
        };
        let token = module
            .token_list()?
            .into_iter()
            .find(|token| token.slot_id == slot);
        // Each PIN's Argon2id cost as recorded: a login raises it to the configured one.
        let (check, so_kdf, user_kdf) = match token {
            Some(token) => {
                let state = token.lock()?;
                let record = &state.record;
                (
                    hex::encode(&record.master_key_check),
                    record.so.kdf.to_string(),
                    record
                        .user
                        .as_ref()
                        .map_or_else(|| "-".into(), |user| user.kdf.to_string()),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{slot:<6} {:<32} {:<16} {:<14} {so_kdf:<26} {user_kdf:<26} {user:<22} {check}",
            String::from_utf8_lossy(&info.label).trim_end(),
            String::from_utf8_lossy(&info.serialNumber).trim_end(),
            "initialised",
        );
    }
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one argument per init-token flag, as clap parsed them"
)]
fn init_token(
    module: &Module,
    free: bool,
    token: Option<&str>,
    label: &str,
    so_pin_file: Option<PathBuf>,
    pin_file: Option<PathBuf>,
    master_key: MasterKey,
) -> Result<(), Failure> {
    if label.len() > 32 {
        return Err(Failure::usage(
            format!("label {label:?} is longer than 32 bytes"),
            "choose a shorter --label",
        ));
    }
    let slot = match (free, token) {
        (true, _) => *module
            .slot_list()?
            .last()
            .ok_or_else(|| Failure::usage("no free slot", "check token_dir"))?,
        (false, Some(token)) => slot_of(module, token)?,
        (false, None) => {
            return Err(Failure::usage(
                "no slot chosen",
                "pass --free or --token LABEL",
            ));
        }
    };
    // Part files are checked before any PIN is asked for, so a ceremony fails early.
    let combined = match &master_key {
        MasterKey::Random => None,
        MasterKey::Split { total, dir } => {
            parts::check_free(dir, *total)?;
            None
        }
        MasterKey::FromParts(paths) => {
            let mut read = Vec::with_capacity(paths.len());
            for path in paths {
                read.push((path.clone(), parts::read(path)?));
            }
            Some(parts::combine(&read)?)
        }
    };
    let so_pin = read_pin(so_pin_file, "KEYFERRY_SO_PIN", "SO PIN", true)?.ok_or_else(no_pin(
        "SO PIN",
        "--so-pin-file",
        "KEYFERRY_SO_PIN",
    ))?;
    let user_pin = read_pin(pin_file, "KEYFERRY_PIN", "user PIN", true)?;
    // A token of a domain gets its domain key object, which belongs to the user.
    let in_domain = !matches!(master_key, MasterKey::Random);
    if in_domain && user_pin.is_none() {
        return Err(Failure::usage(
            "a token built from master-key parts needs a user PIN: its domain key object is the user's",
            "pass --pin-file, set KEYFERRY_PIN, or run on a terminal",
        ));
    }
    let written = match (master_key, combined) {
        (MasterKey::Split { total, dir }, _) => {
            let (master, split) = parts::split(total)?;
            // The parts are on disk before the token exists: no token ever has a master
            // key that its custodians do not hold.
            let written = parts::write_all(&dir, &split)?;
            if let Err(err) = create_with_master_key(module, slot, &so_pin, label, &master) {
                parts::remove(written.iter().map(|part| part.path.as_path()));
                return Err(err);
            }
            written
        }
        (_, Some(master)) => {
            create_with_master_key(module, slot, &so_pin, label, &master)?;
            Vec::new()
        }
        (_, None) => {
            let mut padded = [b' '; 32];
            padded[..label.len()].copy_from_slice(label.as_bytes());
            module.init_token(slot, &so_pin, &padded)?;
            Vec::new()
        }
    };
    if let Some(user_pin) = user_pin {
        let session = module.open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)?;
        let result = module
            .login(session, CKU_SO, &so_pin)
            .and_then(|()| module.init_pin(session, &user_pin))
            .and_then(|()| module.logout(session))
            .and_then(|()| match in_domain {
                true => module
                    .login(session, CKU_USER, &user_pin)
                    .and_then(|()| module.ensure_domain_key(session)),
                false => Ok(()),
            });
        module.close_session(session)?;
        result?;
    }
    let check = module
        .token_list()?
        .into_iter()
        .find(|token| token.slot_id == slot)
        .map(|token| {
            token
                .lock()
                .map(|state| hex::encode(&state.record.master_key_check))
        })
        .transpose()?
        .unwrap_or_default();
    println!("token {label:?} initialised in slot {slot}; domain (master-key check value) {check}");
    for part in written {
        println!(
            "part {} of {}: {} (part check value {})",
            part.number,
            part.total,
            part.path.display(),
            hex::encode(part.part_check)
        );
    }
    Ok(())
}

/// Create a token on the free slot with a master key from the ceremony.
fn create_with_master_key(
    module: &Module,
    slot: CK_SLOT_ID,
    so_pin: &[u8],
    label: &str,
    master: &Key256,
) -> Result<(), Failure> {
    // C_InitToken's label is blank-padded; the token stores it without the padding.
    module.create_token_with_master_key(slot, so_pin, label.trim_end_matches(' '), master)?;
    Ok(())
}

fn slot_of(module: &Module, label: &str) -> Result<CK_SLOT_ID, Failure> {
    for slot in module.slot_list()? {
        let info = module.token_info(slot)?;
        let initialised = info.flags & CKF_TOKEN_INITIALIZED != 0;
        if initialised && String::from_utf8_lossy(&info.label).trim_end() == label {
            return Ok(slot);
        }
    }
    Err(Failure::usage(
        format!("no token labelled {label:?}"),
        "keyferry-admin show-slots lists the tokens",
    ))
}

fn no_pin(
    what: &'static str,
    flag: &'static str,
    variable: &'static str,
) -> impl FnOnce() -> Failure {
    move || {
        Failure::usage(
            format!("no {what} given"),
            format!("use {flag} FILE, set {variable}, or run on a terminal to be prompted"),
        )
    }
}

/// A PIN from a file (one trailing newline dropped), else the environment, else a prompt
/// on a terminal (asked twice when `confirm`); `None` when none of them is available.
fn read_pin(
    file: Option<PathBuf>,
    variable: &str,
    what: &str,
    confirm: bool,
) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    if let Some(path) = file {
        let mut pin = Zeroizing::new(std::fs::read(&path).map_err(|err| {
            Failure::usage(
                format!("cannot read {}: {err}", path.display()),
                "check the PIN file's path and permissions",
            )
        })?);
        if pin.ends_with(b"\n") {
            pin.pop();
            if pin.ends_with(b"\r") {
                pin.pop();
            }
        }
        return Ok(Some(pin));
    }
    if let Some(value) = std::env::var_os(variable) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Some(Zeroizing::new(value.into_vec())));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text)
            .map(|pin| Zeroizing::new(pin.into_bytes()))
            .map_err(|err| {
                Failure::usage(
                    format!("reading the {what}: {err}"),
                    "run on a terminal or use a PIN file",
                )
            })
    };
    let pin = prompt(&format!("{what}: "))?;
    if confirm && *prompt(&format!("{what} again: "))? != *pin {
        return Err(Failure::usage(
            format!("the two {what}s differ"),
            "type the same PIN twice",
        ));
    }
    Ok(Some(pin))
}
