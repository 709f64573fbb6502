//! Reaching tokens: each module loaded once, the slot a URI names, a logged-in session.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::MigrateError;
use crate::names;
use crate::p11raw::RawModule;
use crate::pin;
use crate::uri::TokenUri;

/// The keyferry module file name, looked for beside the `keyferry` executable.
const KEYFERRY_MODULE_FILE: &str = "libkeyferry_pkcs11.so";

/// One loaded, initialised PKCS#11 module.
pub struct Module {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The cryptoki context.
    pub pkcs11: Pkcs11,
    /// The same module's raw function list (p11raw).
    pub raw: RawModule,
}

impl Drop for Module {
    /// `C_Finalize` once no token of the module is left: the module lets go of what it
    /// holds. Without it keyferry never closes its token files, so SQLite neither
    /// checkpoints nor removes their write-ahead logs, and the next process to open them
    /// replays those logs first.
    fn drop(&mut self) {
        // Nothing is left to act on a failure: every session is already closed.
        let _ = self.pkcs11.clone().finalize();
    }
}

/// Modules by path, so that two tokens of one module share one C_Initialize.
#[derive(Default)]
pub struct Modules {
    loaded: HashMap<PathBuf, Arc<Module>>,
}

impl Modules {
    /// Loads and initialises `path` once.
    pub fn open(&mut self, path: &Path) -> Result<Arc<Module>, MigrateError> {
        let module_error = |reason: String| MigrateError::Module {
            path: path.to_owned(),
            reason,
        };
        if !path.exists() {
            return Err(module_error("no such file".to_owned()));
        }
        let key = path
            .canonicalize()
            .map_err(|err| module_error(err.to_string()))?;
        if let Some(module) = self.loaded.get(&key) {
            return Ok(Arc::clone(module));
        }
        let pkcs11 = Pkcs11::new(&key).map_err(|err| module_error(err.to_string()))?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|err| {
                module_error(format!("C_Initialize: {}", names::cryptoki_error(&err)))
            })?;
        let raw = RawModule::load(&key).map_err(module_error)?;
        let module = Arc::new(Module {
            path: key.clone(),
            pkcs11,
            raw,
        });
        self.loaded.insert(key, Arc::clone(&module));
        Ok(module)
    }
}

/// Which implementation a token is, for the quirks the tool works around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// libkeyferry_pkcs11.so.
    Keyferry,
    /// SoftHSMv2.
    SoftHsm,
    /// Anything else: probed, never assumed.
    Other,
}

/// Facts about a token from C_GetTokenInfo.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenFacts {
    /// Slot ID.
    pub slot_id: u64,
    /// Token label.
    pub label: String,
    /// Manufacturer ID.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Implementation, by manufacturer.
    pub peer: Peer,
}

/// An open, logged-in token.
pub struct Token {
    /// A read-write session, logged in as the user when the token needs it. First, so
    /// that it closes before the module below may be finalized.
    pub session: Session,
    /// "--from", "--to", "the token".
    pub who: String,
    /// The URI it was named by (canonical, without PIN).
    pub uri: TokenUri,
    /// The module.
    pub module: Arc<Module>,
    /// The slot.
    pub slot: Slot,
    /// Label, serial and so on.
    pub facts: TokenFacts,
}

/// The module a URI names: module-path, else `KEYFERRY_MODULE`, else keyferry beside the
/// executable.
pub fn module_path(uri: &TokenUri) -> Result<PathBuf, MigrateError> {
    if let Some(path) = &uri.module_path {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("KEYFERRY_MODULE") {
        return Ok(PathBuf::from(path));
    }
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(KEYFERRY_MODULE_FILE)));
    match beside_exe {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(MigrateError::Module {
            path: PathBuf::from(KEYFERRY_MODULE_FILE),
            reason: "the URI has no module-path and none was found beside the keyferry executable"
                .to_owned(),
        }),
    }
}

fn text(bytes: &str) -> String {
    bytes.trim_end().to_owned()
}

/// Facts of the token in `slot`.
pub fn facts(module: &Module, slot: Slot) -> Result<TokenFacts, MigrateError> {
    let info = module
        .pkcs11
        .get_token_info(slot)
        .map_err(|err| MigrateError::pkcs11("C_GetTokenInfo", &err))?;
    let manufacturer = text(info.manufacturer_id());
    let peer = match manufacturer.as_str() {
        "keyferry" => Peer::Keyferry,
        "SoftHSM project" => Peer::SoftHsm,
        _ => Peer::Other,
    };
    Ok(TokenFacts {
        slot_id: slot.id(),
        label: text(info.label()),
        manufacturer,
        model: text(info.model()),
        serial: text(info.serial_number()),
        peer,
    })
}

fn matches(uri: &TokenUri, facts: &TokenFacts) -> bool {
    let equal = |wanted: &Option<String>, have: &str| wanted.as_deref().is_none_or(|w| w == have);
    equal(&uri.token, &facts.label)
        && equal(&uri.manufacturer, &facts.manufacturer)
        && equal(&uri.model, &facts.model)
        && equal(&uri.serial, &facts.serial)
        && uri.slot_id.is_none_or(|id| id == facts.slot_id)
}

/// Finds the one token `uri` names and logs in; `pin_env` names the PIN variable.
pub fn open(
    modules: &mut Modules,
    who: &str,
    uri: &TokenUri,
    pin_env: &str,
) -> Result<Token, MigrateError> {
    find(modules, who, uri, pin_env)?.log_in()
}

/// Opens both tokens of a pair, the two logins side by side: each runs the token's PIN
/// KDF (Argon2id on keyferry, tens of milliseconds at its default cost), and the two
/// tokens need not wait for each other. The PINs are read first, one after the other.
pub fn open_two(
    modules: &mut Modules,
    first: (&str, &TokenUri, &str),
    second: (&str, &TokenUri, &str),
) -> Result<(Token, Token), MigrateError> {
    let first = find(modules, first.0, first.1, first.2)?;
    let second = find(modules, second.0, second.1, second.2)?;
    std::thread::scope(|scope| {
        let first = scope.spawn(move || first.log_in());
        let second = second.log_in();
        let first = first
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((first?, second?))
    })
}

/// A token found, with a session open on it and its PIN read, not yet logged in.
struct Found {
    who: String,
    uri: TokenUri,
    module: Arc<Module>,
    slot: Slot,
    facts: TokenFacts,
    session: Session,
    pin: Option<Zeroizing<String>>,
    pin_env: String,
}

/// Finds the one token `uri` names, opens a session and reads its PIN when it needs one.
fn find(
    modules: &mut Modules,
    who: &str,
    uri: &TokenUri,
    pin_env: &str,
) -> Result<Found, MigrateError> {
    let module = modules.open(&module_path(uri)?)?;
    let slots = module
        .pkcs11
        .get_slots_with_token()
        .map_err(|err| MigrateError::pkcs11("C_GetSlotList", &err))?;
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for slot in slots {
        let token = facts(&module, slot)?;
        let initialized = module
            .pkcs11
            .get_token_info(slot)
            .map(|info| info.token_initialized())
            .unwrap_or(false);
        if !initialized {
            continue;
        }
        if matches(uri, &token) {
            found.push((slot, token));
        } else {
            seen.push(format!("\"{}\" (serial {})", token.label, token.serial));
        }
    }
    let (slot, facts) = match found.len() {
        1 => found.remove(0),
        0 => {
            let listing = if seen.is_empty() {
                "the module has no initialised token".to_owned()
            } else {
                format!("tokens present: {}", seen.join(", "))
            };
            return Err(MigrateError::Token {
                who: who.to_owned(),
                reason: format!("no token matches {uri}; {listing}"),
            });
        }
        count => {
            return Err(MigrateError::Token {
                who: who.to_owned(),
                reason: format!("{count} tokens match {uri}; add serial= or slot-id= to pick one"),
            });
        }
    };
    let session = module
        .pkcs11
        .open_rw_session(slot)
        .map_err(|err| MigrateError::pkcs11(format!("{who}: C_OpenSession"), &err))?;
    let login_required = module
        .pkcs11
        .get_token_info(slot)
        .map(|info| info.login_required() || info.user_pin_initialized())
        .unwrap_or(true);
    let pin = if login_required {
        Some(pin::read_pin(who, uri.pin_source.as_deref(), pin_env)?)
    } else {
        None
    };
    Ok(Found {
        who: who.to_owned(),
        uri: uri.clone(),
        module,
        slot,
        facts,
        session,
        pin,
        pin_env: pin_env.to_owned(),
    })
}

impl Found {
    /// Logs the user in, when the token needs a PIN.
    fn log_in(self) -> Result<Token, MigrateError> {
        if let Some(pin) = &self.pin {
            let auth = AuthPin::new(pin.as_str().into());
            // SoftHSMv2 rewrites its token file in place during C_Login: see `interrupt`.
            let held = crate::interrupt::hold();
            let login = self.session.login(UserType::User, Some(&auth));
            held.release();
            match login {
                Ok(()) => {}
                Err(cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::UserAlreadyLoggedIn,
                    _,
                )) => {}
                Err(err) => {
                    return Err(MigrateError::Login {
                        who: self.who,
                        uri: self.uri.to_string(),
                        rv: names::cryptoki_rv(&err).unwrap_or_else(|| err.to_string()),
                        pin_env: self.pin_env,
                    });
                }
            }
        }
        Ok(Token {
            who: self.who,
            uri: self.uri,
            module: self.module,
            slot: self.slot,
            facts: self.facts,
            session: self.session,
        })
    }
}

impl Token {
    /// The same token with a session of its own, for a worker thread (the login is the
    /// application's, so it carries over).
    pub fn fork(&self) -> Result<Token, MigrateError> {
        let session = self
            .module
            .pkcs11
            .open_rw_session(self.slot)
            .map_err(|err| MigrateError::pkcs11(format!("{}: C_OpenSession", self.who), &err))?;
        Ok(Token {
            who: self.who.clone(),
            uri: self.uri.clone(),
            module: Arc::clone(&self.module),
            slot: self.slot,
            facts: self.facts.clone(),
            session,
        })
    }

    /// `work` over every item, in order: a long list is split in two and its second half
    /// done on a session of its own in a second thread, so reading or checking a whole
    /// token takes the time of half of it on two cores. A token that cannot open a second
    /// session does it all here.
    pub fn map_in_two<I: Sync, T: Send>(
        &self,
        items: &[I],
        work: impl Fn(&Token, &I) -> T + Sync,
    ) -> Vec<T> {
        // Below this, a thread and a session cost about what they save.
        const WORTH_A_THREAD: usize = 128;
        let other = match items.len() {
            len if len < WORTH_A_THREAD => None,
            _ => self.fork().ok(),
        };
        let Some(other) = other else {
            return items.iter().map(|item| work(self, item)).collect();
        };
        let (first, second) = items.split_at(items.len() / 2);
        let work = &work;
        std::thread::scope(|scope| {
            let later = scope.spawn(move || {
                second
                    .iter()
                    .map(|item| work(&other, item))
                    .collect::<Vec<T>>()
            });
            let mut done: Vec<T> = first.iter().map(|item| work(self, item)).collect();
            done.extend(
                later
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
            done
        })
    }

    /// "token \"label\" (SoftHSMv2, serial …)".
    pub fn describe(&self) -> String {
        format!(
            "\"{}\" ({}, serial {}, {})",
            self.facts.label,
            self.facts.manufacturer,
            self.facts.serial,
            self.module.path.display()
        )
    }
}
