//! The module's state: slots and their tokens, sessions, login, objects.

pub mod attr;
pub mod crypto;
pub mod object;
pub mod rules;
pub mod session;
pub mod slot;
mod wrap;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use pkcs11_sys::*;

use crate::config::{Config, MAX_PIN_LEN};
use crate::error::{Error, Result};
use crate::mech;
use crate::mech::params::Parameter;
use crate::store::keys::Key256;
use crate::store::{PinRecord, Role, TokenRecord};
use attr::{Attribute, Value};
use object::{Object, Origin};
use session::{Find, Session, SessionTable};
use slot::{Login, Token, TokenState};

/// File name suffix of token files in the token directory.
pub const TOKEN_SUFFIX: &str = "kftoken";
const MANUFACTURER: &str = "keyferry";
const MODEL: &str = "keyferry token";

/// The library's version as a CK_VERSION.
pub fn library_version() -> CK_VERSION {
    let number = |text: &str| text.parse::<u8>().unwrap_or(0);
    CK_VERSION {
        major: number(env!("CARGO_PKG_VERSION_MAJOR")),
        minor: number(env!("CARGO_PKG_VERSION_MINOR")),
    }
}

/// Blank-padded fixed-width field, as PKCS#11 info structures want.
pub fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut field = [b' '; N];
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&text.as_bytes()[..end]);
    field
}

/// Everything `C_Initialize` sets up and `C_Finalize` tears down.
pub struct Module {
    /// The settings in force.
    pub config: Config,
    tokens: RwLock<Vec<Arc<Token>>>,
    sessions: SessionTable,
    next_handle: AtomicU64,
    finalized: (Mutex<bool>, Condvar),
}

impl Module {
    /// Load every token file in the configured directory. A file that cannot be opened
    /// is logged and left out; the other tokens work.
    pub fn new(config: Config) -> Result<Self> {
        let mut tokens: Vec<Arc<Token>> = Vec::new();
        for path in token_files(&config.token_dir)? {
            match Token::open(path.clone()) {
                Ok(token) => tokens.push(Arc::new(token)),
                Err(err) => tracing::error!(path = %path.display(), "token left out: {err}"),
            }
        }
        tokens.sort_by_key(|token| token.slot_id);
        tokens.dedup_by(|later, first| {
            let duplicate = later.slot_id == first.slot_id;
            if duplicate {
                tracing::error!(path = %later.path.display(), slot = later.slot_id,
                    "token left out: another token file claims the same slot");
            }
            duplicate
        });
        Ok(Self {
            config,
            tokens: RwLock::new(tokens),
            sessions: SessionTable::default(),
            next_handle: AtomicU64::new(1),
            finalized: (Mutex::new(false), Condvar::new()),
        })
    }

    fn next_handle(&self) -> CK_ULONG {
        self.next_handle.fetch_add(1, Ordering::Relaxed) as CK_ULONG
    }

    fn tokens(&self) -> Result<Vec<Arc<Token>>> {
        Ok(self.tokens.read().map_err(|_| poisoned())?.clone())
    }

    /// The uninitialised slot `C_InitToken` turns into a new token.
    fn spare_slot(tokens: &[Arc<Token>]) -> CK_SLOT_ID {
        tokens
            .iter()
            .map(|token| token.slot_id + 1)
            .max()
            .unwrap_or(0)
    }

    /// The token in a slot; `Ok(None)` for the spare slot.
    fn token(&self, slot: CK_SLOT_ID) -> Result<Option<Arc<Token>>> {
        let tokens = self.tokens()?;
        if let Some(token) = tokens.iter().find(|token| token.slot_id == slot) {
            return Ok(Some(token.clone()));
        }
        if slot == Self::spare_slot(&tokens) {
            Ok(None)
        } else {
            Err(Error::SlotIdInvalid(slot))
        }
    }

    pub(crate) fn session(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.sessions.get(handle)
    }

    /// Whether a session handle is open (for calls that only validate it).
    pub fn check_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle).map(|_| ())
    }

    /// `C_GetInfo`.
    pub fn info(&self) -> CK_INFO {
        CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
            manufacturerID: padded(MANUFACTURER),
            flags: 0,
            libraryDescription: padded("keyferry PKCS#11 software token"),
            libraryVersion: library_version(),
        }
    }

    /// `C_GetSlotList`: every token's slot, then the spare. Every slot holds a token
    /// (the spare's is uninitialised), so `tokenPresent` changes nothing.
    pub fn slot_list(&self) -> Result<Vec<CK_SLOT_ID>> {
        let tokens = self.tokens()?;
        let mut slots: Vec<_> = tokens.iter().map(|token| token.slot_id).collect();
        slots.push(Self::spare_slot(&tokens));
        Ok(slots)
    }

    /// `C_GetSlotInfo`.
    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO> {
        self.token(slot)?;
        Ok(CK_SLOT_INFO {
            slotDescription: padded(&format!("keyferry slot {slot}")),
            manufacturerID: padded(MANUFACTURER),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: CK_VERSION { major: 0, minor: 0 },
            firmwareVersion: library_version(),
        })
    }

    /// `C_GetTokenInfo`, with flags that tell the truth about PINs.
    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO> {
        let mut info = CK_TOKEN_INFO {
            label: [b' '; 32],
            manufacturerID: padded(MANUFACTURER),
            model: padded(MODEL),
            serialNumber: [b' '; 16],
            flags: CKF_RNG | CKF_LOGIN_REQUIRED,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: 0,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: 0,
            ulMaxPinLen: MAX_PIN_LEN as CK_ULONG,
            ulMinPinLen: self.config.min_pin_len as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: CK_VERSION { major: 0, minor: 0 },
            firmwareVersion: library_version(),
            utcTime: [b' '; 16],
        };
        let Some(token) = self.token(slot)? else {
            return Ok(info);
        };
        let mut state = token.lock()?;
        state.refresh()?;
        let record = &state.record;
        info.label = padded(&record.label);
        info.serialNumber = padded(&record.serial);
        info.flags |= CKF_TOKEN_INITIALIZED;
        if record.user.is_some() {
            info.flags |= CKF_USER_PIN_INITIALIZED;
        }
        let max = self.config.max_pin_attempts;
        info.flags |= pin_flags(
            record.user_failures,
            max,
            [
                CKF_USER_PIN_COUNT_LOW,
                CKF_USER_PIN_FINAL_TRY,
                CKF_USER_PIN_LOCKED,
            ],
        );
        info.flags |= pin_flags(
            record.so_failures,
            max,
            [
                CKF_SO_PIN_COUNT_LOW,
                CKF_SO_PIN_FINAL_TRY,
                CKF_SO_PIN_LOCKED,
            ],
        );
        info.ulSessionCount = state.sessions as CK_ULONG;
        info.ulRwSessionCount = state.rw_sessions as CK_ULONG;
        Ok(info)
    }

    /// `C_GetMechanismList`.
    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.token(slot)?;
        Ok(mech::list().collect())
    }

    /// `C_GetMechanismInfo`.
    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        kind: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        self.token(slot)?;
        Ok(mech::lookup(kind)?.info())
    }

    /// `C_InitToken`: on the spare slot, create a token; on a token, check the SO PIN
    /// and start it afresh, every object destroyed.
    pub fn init_token(&self, slot: CK_SLOT_ID, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        let label =
            std::str::from_utf8(label).map_err(|_| Error::ArgumentsBad("label is not UTF-8"))?;
        let label = label.trim_end_matches(' ');
        let Some(token) = self.token(slot)? else {
            return self.create_token(slot, so_pin, label);
        };
        if token.lock()?.sessions > 0 {
            return Err(Error::SessionExists);
        }
        check_pin(&token, Role::So, so_pin, self.config.max_pin_attempts)?;
        // The new record's key derivation runs outside the token's lock.
        let serial = token.lock()?.record.serial.clone();
        let record = self.new_record(label, &serial, slot, so_pin)?;
        let mut state = token.lock()?;
        if state.sessions > 0 {
            return Err(Error::SessionExists);
        }
        state.reinitialize(record)
    }

    fn new_record(
        &self,
        label: &str,
        serial: &str,
        slot: CK_SLOT_ID,
        so_pin: &[u8],
    ) -> Result<TokenRecord> {
        self.new_record_with_master_key(label, serial, slot, so_pin, &Key256::random()?)
    }

    /// A token record for a given master key (random, or combined from key parts).
    #[allow(
        clippy::unnecessary_cast,
        reason = "CK_ULONG is u64 here but u32 on Windows; the cast keeps the code portable"
    )]
    pub fn new_record_with_master_key(
        &self,
        label: &str,
        serial: &str,
        slot: CK_SLOT_ID,
        so_pin: &[u8],
        master: &Key256,
    ) -> Result<TokenRecord> {
        if !(self.config.min_pin_len..=MAX_PIN_LEN).contains(&so_pin.len()) {
            // PKCS#11 3.0 §5.6.1 lists no CKR_PIN_LEN_RANGE for C_InitToken.
            return Err(Error::PinIncorrect);
        }
        Ok(TokenRecord {
            label: label.to_string(),
            serial: serial.to_string(),
            slot_id: slot as u64,
            master_key_check: master.check_value()?,
            so: slot::pin_record(&self.config, serial, Role::So, so_pin, master)?,
            user: None,
            so_failures: 0,
            user_failures: 0,
        })
    }

    fn create_token(&self, slot: CK_SLOT_ID, so_pin: &[u8], label: &str) -> Result<()> {
        self.create_token_with_master_key(slot, so_pin, label, &Key256::random()?)
    }

    /// Create a token on the spare slot with a given master key.
    pub fn create_token_with_master_key(
        &self,
        slot: CK_SLOT_ID,
        so_pin: &[u8],
        label: &str,
        master: &Key256,
    ) -> Result<()> {
        let mut serial_bytes = [0u8; 8];
        mech::random(&mut serial_bytes)?;
        let serial = hex::encode(serial_bytes);
        let record = self.new_record_with_master_key(label, &serial, slot, so_pin, master)?;
        let dir = &self.config.token_dir;
        create_private_dir(dir)?;
        let path = dir.join(format!("{serial}.{TOKEN_SUFFIX}"));
        // The slot list is held while the file is made, so two threads cannot both take
        // the spare slot; a file made for a slot that is gone is removed again.
        let mut tokens = self.tokens.write().map_err(|_| poisoned())?;
        if Self::spare_slot(&tokens) != slot {
            return Err(Error::SlotIdInvalid(slot));
        }
        let token = slot::create_store(&path, &record)
            .and_then(|store| Token::with_store(path.clone(), store));
        let token = match token {
            Ok(token) => Arc::new(token),
            Err(err) => {
                // The creation error is the one to report; a leftover file is logged.
                if let Err(cleanup) = remove_token_files(&path) {
                    tracing::error!("{cleanup}");
                }
                return Err(err);
            }
        };
        tokens.push(token);
        tracing::info!(slot, label, "token created");
        Ok(())
    }

    /// `C_OpenSession`.
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let token = self.token(slot)?.ok_or(Error::TokenNotRecognized)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        // Counted under the token's lock, then published; never both locks at once, so a
        // slow call on one token holds up no other.
        {
            let mut state = token.lock()?;
            if state.login == Login::So && !rw {
                return Err(Error::SessionReadWriteSoExists);
            }
            state.sessions += 1;
            state.rw_sessions += usize::from(rw);
        }
        let handle = self.next_handle();
        let session = Arc::new(Session::new(handle, token, rw));
        self.sessions.insert(session)?;
        Ok(handle)
    }

    /// `C_CloseSession`: its session objects go; the last session logs the token out.
    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self.sessions.remove(handle)?;
        session.operations()?.end_crypto();
        let mut state = session.token.lock()?;
        session
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        state.drop_session_objects(handle);
        state.sessions = state.sessions.saturating_sub(1);
        state.rw_sessions = state.rw_sessions.saturating_sub(usize::from(session.rw));
        if state.sessions == 0 && state.login != Login::Public {
            state.logout()?;
        }
        Ok(())
    }

    /// `C_CloseAllSessions`. The spare slot has no sessions to close: CKR_OK, since
    /// PKCS#11 3.0 §5.6.3 lists no CKR_TOKEN_NOT_RECOGNIZED for this function.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        self.token(slot)?;
        let sessions = self
            .sessions
            .matching(|session| session.token.slot_id == slot)?;
        for session in sessions {
            match self.close_session(session.handle) {
                Ok(()) | Err(Error::SessionHandleInvalid) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// `C_GetSessionInfo`.
    pub fn session_info(&self, handle: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO> {
        let session = self.session(handle)?;
        let login = session.token.lock()?.login;
        let state = match (login, session.rw) {
            (Login::Public, false) => CKS_RO_PUBLIC_SESSION,
            (Login::Public, true) => CKS_RW_PUBLIC_SESSION,
            (Login::User, false) => CKS_RO_USER_FUNCTIONS,
            (Login::User, true) => CKS_RW_USER_FUNCTIONS,
            (Login::So, _) => CKS_RW_SO_FUNCTIONS,
        };
        let rw_flag = if session.rw { CKF_RW_SESSION } else { 0 };
        Ok(CK_SESSION_INFO {
            slotID: session.token.slot_id,
            state,
            flags: CKF_SERIAL_SESSION | rw_flag,
            ulDeviceError: 0,
        })
    }

    /// `C_Login` (and `C_LoginUser`, which has no user names to tell apart here).
    pub fn login(
        &self,
        handle: CK_SESSION_HANDLE,
        user_type: CK_USER_TYPE,
        pin: &[u8],
    ) -> Result<()> {
        let session = self.session(handle)?;
        let token = &session.token;
        let role = match user_type {
            CKU_SO => Role::So,
            CKU_USER => Role::User,
            // No mechanism here needs CKA_ALWAYS_AUTHENTICATE, so no operation awaits it:
            // PKCS#11 3.0 §5.6.4 makes that CKR_OPERATION_NOT_INITIALIZED, logged in or not
            // (CKR_USER_NOT_LOGGED_IN is not among C_Login's codes).
            CKU_CONTEXT_SPECIFIC => return Err(Error::OperationNotInitialized),
            _ => return Err(Error::UserTypeInvalid),
        };
        let wanted = match role {
            Role::So => Login::So,
            Role::User => Login::User,
        };
        let check_state = |state: &TokenState| match state.login {
            Login::Public if role == Role::So && state.sessions > state.rw_sessions => {
                Err(Error::SessionReadOnlyExists)
            }
            Login::Public => Ok(()),
            current if current == wanted => Err(Error::UserAlreadyLoggedIn),
            _ => Err(Error::UserAnotherAlreadyLoggedIn),
        };
        // Concurrent logins take turns; those after the first find it logged in.
        let _turn = token.pin_check()?;
        {
            let mut state = token.lock()?;
            state.refresh()?;
            check_state(&state)?;
        }
        let (master, verified) = verify_pin(token, role, pin, self.config.max_pin_attempts)?;
        if verified.kdf.is_weaker_than(&self.config.kdf) {
            self.raise_kdf(token, role, pin, &master, &verified);
        }
        let mut state = token.lock()?;
        session.require_open()?;
        check_state(&state)?;
        state.set_login(wanted, &master)
    }

    /// After a PIN proved right, rewrap the master key under the configured Argon2id
    /// cost when the PIN's stored cost is weaker (`KdfParams::is_weaker_than`: no
    /// parameter lowered, at least one raised). The new record replaces the old in one
    /// transaction, and only if the PIN was not changed meanwhile. Best effort: when the
    /// write fails the old wrap stays, still works, and the next login tries again.
    fn raise_kdf(
        &self,
        token: &Token,
        role: Role,
        pin: &[u8],
        master: &Key256,
        current: &PinRecord,
    ) {
        let raised = || -> Result<bool> {
            let serial = token.lock()?.record.serial.clone();
            // The key derivation runs outside the token's lock.
            let raised = slot::pin_record(&self.config, &serial, role, pin, master)?;
            let mut state = token.lock()?;
            if !state.store().raise_pin(role, current, &raised)? {
                return Ok(false);
            }
            match role {
                Role::So => state.record.so = raised,
                Role::User => state.record.user = Some(raised),
            }
            Ok(true)
        };
        let (slot, from, to) = (token.slot_id, current.kdf, self.config.kdf);
        match raised() {
            Ok(true) => tracing::info!(slot, ?role, %from, %to, "PIN key derivation raised"),
            Ok(false) => {
                tracing::info!(
                    slot,
                    ?role,
                    "PIN changed meanwhile; key derivation not raised"
                )
            }
            Err(err) => tracing::warn!(
                slot, ?role, %from, %to,
                "raising the PIN key derivation failed; the old one stays: {err}"
            ),
        }
    }

    /// Gives the token its domain key object (`mech::domain`) if it has none; the user
    /// must be logged in. `keyferry-admin` calls it for tokens built from master-key parts:
    /// a token with a random master key is a domain of one and needs none.
    pub fn ensure_domain_key(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self.session(handle)?;
        session.require_rw()?;
        let mut state = session.token.lock()?;
        state.refresh()?;
        if state.login != Login::User {
            return Err(Error::UserNotLoggedIn);
        }
        state.ensure_domain_key(&|| self.next_handle())
    }

    /// `C_Logout`: the keys and secrets go, and with them every cryptographic operation
    /// of the application's sessions on the token.
    pub fn logout(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self.session(handle)?;
        session.token.lock()?.logout()?;
        let sessions = self
            .sessions
            .matching(|other| Arc::ptr_eq(&other.token, &session.token))?;
        for other in sessions {
            other.operations()?.end_crypto();
            other.forget_key();
        }
        Ok(())
    }

    /// `C_InitPIN`: the SO sets the user PIN (and so unlocks it).
    pub fn init_pin(&self, handle: CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        session.require_rw()?;
        if session.token.lock()?.login != Login::So {
            return Err(Error::UserNotLoggedIn);
        }
        self.check_new_pin(pin)?;
        let (master, serial) = {
            let state = session.token.lock()?;
            (
                state.master_key().ok_or(Error::UserNotLoggedIn)?,
                state.record.serial.clone(),
            )
        };
        // The key derivation runs outside the token's lock.
        let record = slot::pin_record(&self.config, &serial, Role::User, pin, &master)?;
        let mut state = session.token.lock()?;
        state.refresh()?;
        state.put_pin(Role::User, &record)
    }

    /// `C_SetPIN`: the SO's PIN when the SO is logged in, the user's otherwise.
    pub fn set_pin(&self, handle: CK_SESSION_HANDLE, old_pin: &[u8], new_pin: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        session.require_rw()?;
        let role = match session.token.lock()?.login {
            Login::So => Role::So,
            Login::User | Login::Public => Role::User,
        };
        self.check_new_pin(new_pin)?;
        let master = check_pin(&session.token, role, old_pin, self.config.max_pin_attempts)?;
        let serial = session.token.lock()?.record.serial.clone();
        // The key derivation runs outside the token's lock.
        let pin = slot::pin_record(&self.config, &serial, role, new_pin, &master)?;
        session.token.lock()?.put_pin(role, &pin)
    }

    fn check_new_pin(&self, pin: &[u8]) -> Result<()> {
        if (self.config.min_pin_len..=MAX_PIN_LEN).contains(&pin.len()) {
            Ok(())
        } else {
            Err(Error::PinLenRange)
        }
    }

    /// `C_CreateObject`.
    pub fn create_object(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let mut state = session.token.lock()?;
        state.refresh()?;
        let mut object =
            Object::from_template(template, &[], Origin::Create, state.login == Login::So)?;
        object.finish(Origin::Create)?;
        self.add(&session, &mut state, object)
    }

    pub(crate) fn add(
        &self,
        session: &Session,
        state: &mut TokenState,
        object: Object,
    ) -> Result<CK_OBJECT_HANDLE> {
        session.require_open()?;
        if object.is_token() {
            session.require_rw()?;
        }
        state.add_object(object, session.handle, &|| self.next_handle())
    }

    /// `C_CopyObject`.
    pub fn copy_object(
        &self,
        handle: CK_SESSION_HANDLE,
        source: CK_OBJECT_HANDLE,
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let mut state = session.token.lock()?;
        state.refresh()?;
        let object = state.object(source)?;
        let copy = object.copy_with(template, state.login == Login::So)?;
        self.add(&session, &mut state, copy)
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(
        &self,
        handle: CK_SESSION_HANDLE,
        target: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut state = session.token.lock()?;
        state.refresh_for(target)?;
        let object = state.object(target)?;
        if object.is_token() {
            session.require_rw()?;
        }
        if !object.flag(CKA_DESTROYABLE) {
            return Err(Error::ActionProhibited);
        }
        let destroyed = state.destroy_object(target);
        // `object` holds the last reference now: its secret is wiped and freed after the
        // lock is let go, not while other threads wait for it.
        drop(state);
        destroyed
    }

    /// The object behind a handle, as this session may see it (`C_GetAttributeValue`,
    /// `C_GetObjectSize`).
    pub fn object(
        &self,
        handle: CK_SESSION_HANDLE,
        target: CK_OBJECT_HANDLE,
    ) -> Result<Arc<Object>> {
        let session = self.session(handle)?;
        let mut state = session.token.lock()?;
        state.refresh_for(target)?;
        state.object(target)
    }

    /// `C_SetAttributeValue`.
    pub fn set_attributes(
        &self,
        handle: CK_SESSION_HANDLE,
        target: CK_OBJECT_HANDLE,
        template: &[Attribute],
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut state = session.token.lock()?;
        state.refresh()?;
        let object = state.object(target)?;
        if object.is_token() {
            session.require_rw()?;
        }
        if object.is_locked() {
            return Err(Error::UserNotLoggedIn);
        }
        let mut changed = (*object).clone();
        changed.set(template, state.login == Login::So)?;
        state.replace_object(target, changed)
    }

    /// `C_FindObjectsInit`: the matches are fixed now, returned by `find_objects`.
    pub fn find_init(&self, handle: CK_SESSION_HANDLE, template: &[Attribute]) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        if operations.find.is_some() {
            return Err(Error::OperationActive);
        }
        let handles = {
            let mut state = session.token.lock()?;
            state.refresh()?;
            state.find(template, &|| self.next_handle())?
        };
        operations.find = Some(Find {
            handles,
            returned: 0,
        });
        Ok(())
    }

    /// `C_FindObjects`: up to `max` more handles.
    pub fn find_next(
        &self,
        handle: CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        let find = operations
            .find
            .as_mut()
            .ok_or(Error::OperationNotInitialized)?;
        let rest = find.handles.get(find.returned..).unwrap_or_default();
        let batch: Vec<_> = rest.iter().take(max).copied().collect();
        find.returned += batch.len();
        Ok(batch)
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        operations
            .find
            .take()
            .map(|_| ())
            .ok_or(Error::OperationNotInitialized)
    }

    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let generator = mech::lookup_for(mechanism, CKF_GENERATE)?;
        let (class, key_type) = generator
            .generates()
            .ok_or(Error::MechanismInvalid(mechanism))?;
        parameter.none()?;
        let implied = [
            Attribute::new(CKA_CLASS, Value::ulong(class)),
            Attribute::new(CKA_KEY_TYPE, Value::ulong(key_type)),
        ];
        let is_so = session.token.so_logged_in();
        let origin = Origin::Generate(mechanism);
        let mut key = Object::from_template(template, &implied, origin, is_so)?;
        let value = generator.generate_key(key.ulong(CKA_VALUE_LEN))?;
        key.put(CKA_VALUE, Value::Bytes(value));
        key.finish(origin)?;
        let mut state = session.token.lock()?;
        state.refresh_before_adding(&key)?;
        self.add(&session, &mut state, key)
    }

    /// `C_GenerateKeyPair`: both halves are checked against their templates before
    /// anything is made, and stored together or not at all.
    pub fn generate_key_pair(
        &self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        public_template: &[Attribute],
        private_template: &[Attribute],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let session = self.session(handle)?;
        let generator = mech::lookup_for(mechanism, CKF_GENERATE_KEY_PAIR)?;
        let key_type = generator
            .generates_pair()
            .ok_or(Error::MechanismInvalid(mechanism))?;
        parameter.none()?;
        let is_so = session.token.so_logged_in();
        let origin = Origin::Generate(mechanism);
        let implied = |class| {
            [
                Attribute::new(CKA_CLASS, Value::ulong(class)),
                Attribute::new(CKA_KEY_TYPE, Value::ulong(key_type)),
            ]
        };
        let mut public =
            Object::from_template(public_template, &implied(CKO_PUBLIC_KEY), origin, is_so)?;
        let mut private =
            Object::from_template(private_template, &implied(CKO_PRIVATE_KEY), origin, is_so)?;
        let pair = generator.generate_key_pair(public_template)?;
        for item in pair.public {
            public.put(item.kind, item.value);
        }
        for item in pair.private {
            private.put(item.kind, item.value);
        }
        public.put(
            CKA_PUBLIC_KEY_INFO,
            Value::bytes(pair.public_key_info.clone()),
        );
        private.put(CKA_PUBLIC_KEY_INFO, Value::bytes(pair.public_key_info));
        public.finish(origin)?;
        private.finish(origin)?;
        let mut state = session.token.lock()?;
        state.refresh()?;
        let public_handle = self.add(&session, &mut state, public)?;
        match self.add(&session, &mut state, private) {
            Ok(private_handle) => Ok((public_handle, private_handle)),
            Err(err) => {
                // The pair is made whole or not at all.
                if let Err(cleanup) = state.destroy_object(public_handle) {
                    tracing::error!("removing the public half of a failed key pair: {cleanup}");
                }
                Err(err)
            }
        }
    }

    pub fn generate_random(&self, handle: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        self.session(handle)?;
        mech::random(out)
    }

    /// `C_SeedRandom`: the operating system's generator takes no seed from applications.
    pub fn seed_random(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle)?;
        Err(Error::RandomSeedNotSupported)
    }

    /// `C_WaitForSlotEvent`. Slots never change on their own, so with `CKF_DONT_BLOCK`
    /// there is never an event, and a blocking wait ends only with `C_Finalize`.
    pub fn wait_for_slot_event(&self, flags: CK_FLAGS) -> Result<CK_SLOT_ID> {
        if flags & CKF_DONT_BLOCK != 0 {
            return Err(Error::NoEvent);
        }
        let (lock, wake) = &self.finalized;
        let mut finalized = lock.lock().map_err(|_| poisoned())?;
        while !*finalized {
            finalized = wake.wait(finalized).map_err(|_| poisoned())?;
        }
        Err(Error::CryptokiNotInitialized)
    }

    /// `C_Finalize`: wake blocked waiters, close every session (which logs out and wipes
    /// secrets).
    pub fn finalize(&self) -> Result<()> {
        let (lock, wake) = &self.finalized;
        *lock.lock().map_err(|_| poisoned())? = true;
        wake.notify_all();
        let slots: Vec<_> = self.tokens()?.iter().map(|token| token.slot_id).collect();
        for slot in slots {
            self.close_all_sessions(slot)?;
        }
        Ok(())
    }

    /// Every token, for the admin tool.
    pub fn token_list(&self) -> Result<Vec<Arc<Token>>> {
        self.tokens()
    }

    /// Delete a token file after checking its SO PIN (admin tool).
    pub fn delete_token(&self, slot: CK_SLOT_ID, so_pin: &[u8]) -> Result<()> {
        let token = self.token(slot)?.ok_or(Error::TokenNotRecognized)?;
        if token.lock()?.sessions > 0 {
            return Err(Error::SessionExists);
        }
        check_pin(&token, Role::So, so_pin, self.config.max_pin_attempts)?;
        self.tokens
            .write()
            .map_err(|_| poisoned())?
            .retain(|t| t.slot_id != slot);
        remove_token_files(&token.path)
    }
}

/// Check a PIN, counting the attempt in the token file before the check so a killed
/// process cannot skip it; the KDF runs outside the token's lock.
fn check_pin(token: &Token, role: Role, pin: &[u8], max_attempts: u32) -> Result<Key256> {
    let _turn = token.pin_check()?;
    verify_pin(token, role, pin, max_attempts).map(|(master, _)| master)
}

/// `check_pin`, also giving the PIN record the PIN opened. The caller holds the token's
/// `pin_check` turn.
fn verify_pin(
    token: &Token,
    role: Role,
    pin: &[u8],
    max_attempts: u32,
) -> Result<(Key256, PinRecord)> {
    let (record, serial) = {
        let mut state = token.lock()?;
        state.refresh()?;
        let (record, failures) = match role {
            Role::So => (state.record.so.clone(), state.record.so_failures),
            Role::User => (
                state
                    .record
                    .user
                    .clone()
                    .ok_or(Error::UserPinNotInitialized)?,
                state.record.user_failures,
            ),
        };
        if failures >= max_attempts {
            return Err(Error::PinLocked);
        }
        let count = state
            .store()
            .count_failure(role, max_attempts)?
            .ok_or(Error::PinLocked)?;
        match role {
            Role::So => state.record.so_failures = count,
            Role::User => state.record.user_failures = count,
        }
        (record, state.record.serial.clone())
    };
    let master = slot::open_master_key(&serial, role, &record, pin)?;
    let mut state = token.lock()?;
    let master = master.ok_or(Error::PinIncorrect)?;
    state.store().reset_failures(role)?;
    match role {
        Role::So => state.record.so_failures = 0,
        Role::User => state.record.user_failures = 0,
    }
    Ok((master, record))
}

fn pin_flags(failures: u32, max: u32, [low, final_try, locked]: [CK_FLAGS; 3]) -> CK_FLAGS {
    match failures {
        0 => 0,
        // COUNT_LOW still holds: a wrong PIN was entered since the last success.
        n if n >= max => low | locked,
        n if n + 1 == max => low | final_try,
        _ => low,
    }
}

fn token_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::Config(format!("token_dir {}: {err}", dir.display()))),
    };
    let mut files: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == TOKEN_SUFFIX))
        .collect();
    files.sort();
    Ok(files)
}

/// Remove a token file with its WAL and shared-memory files.
fn remove_token_files(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Error::General(format!(
                    "removing {}: {err}",
                    Path::new(&file).display()
                )));
            }
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| Error::General(format!("creating token_dir {}: {err}", dir.display())))
}

fn poisoned() -> Error {
    Error::General("module state poisoned by an earlier panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KdfParams, Storage};

    const SO_PIN: &[u8] = b"so-pin-4321";
    const USER_PIN: &[u8] = b"user-pin-1234";
    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    const RAISED: KdfParams = KdfParams {
        memory_kib: 128,
        iterations: 2,
        parallelism: 1,
    };

    fn config(dir: &Path, kdf: KdfParams) -> Config {
        Config {
            token_dir: dir.to_path_buf(),
            min_pin_len: 4,
            max_pin_attempts: 10,
            kdf,
            log_level: "warn".into(),
            log_file: None,
            source: None,
        }
    }

    /// A fresh module (as a new process would have) logs in once and closes its session.
    fn login(dir: &Path, kdf: KdfParams, user_type: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        let module = Module::new(config(dir, kdf))?;
        let session = module.open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)?;
        let result = module.login(session, user_type, pin);
        module.close_session(session)?;
        result
    }

    /// A module with one token whose SO has set the user PIN; no session left open.
    fn token_with_user_pin(dir: &Path, kdf: KdfParams, label: &str) -> Module {
        let module = Module::new(config(dir, kdf)).expect("module");
        module
            .init_token(0, SO_PIN, &padded(label))
            .expect("C_InitToken");
        let session = module
            .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .expect("session");
        module.login(session, CKU_SO, SO_PIN).expect("SO login");
        module.init_pin(session, USER_PIN).expect("C_InitPIN");
        module.close_session(session).expect("closed");
        module
    }

    fn stored(dir: &Path) -> TokenRecord {
        let files = token_files(dir).expect("listed");
        let path = files.first().expect("one token file");
        crate::store::sqlite::SqliteStore::open(path)
            .expect("opened")
            .token()
            .expect("record")
    }

    #[test]
    fn a_login_raises_a_weaker_pin_kdf_and_nothing_ever_lowers_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        token_with_user_pin(dir.path(), CHEAP, "raise");
        let made = stored(dir.path());
        assert_eq!(made.so.kdf, CHEAP);
        let cheap_user = made.user.clone().expect("user PIN");
        assert_eq!(cheap_user.kdf, CHEAP);

        // A wrong PIN raises nothing.
        assert!(matches!(
            login(dir.path(), RAISED, CKU_USER, b"wrong-pin"),
            Err(Error::PinIncorrect)
        ));
        assert_eq!(stored(dir.path()).user, Some(cheap_user.clone()));

        login(dir.path(), RAISED, CKU_USER, USER_PIN).expect("user login");
        let raised = stored(dir.path());
        let raised_user = raised.user.clone().expect("user PIN");
        assert_eq!(raised_user.kdf, RAISED);
        assert_ne!(raised_user.salt, cheap_user.salt, "a fresh salt");
        assert_eq!(raised.so.kdf, CHEAP, "only the PIN that logged in");
        assert_eq!(raised.user_failures, 0);

        // The raised wrap opens under any configuration; none lowers or trades it.
        let mixed = KdfParams {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        };
        for kdf in [CHEAP, RAISED, mixed] {
            login(dir.path(), kdf, CKU_USER, USER_PIN).expect("user login");
            assert_eq!(stored(dir.path()).user, Some(raised_user.clone()), "{kdf}");
        }

        login(dir.path(), RAISED, CKU_SO, SO_PIN).expect("SO login");
        assert_eq!(stored(dir.path()).so.kdf, RAISED);
        login(dir.path(), CHEAP, CKU_SO, SO_PIN).expect("SO login after the raise");
    }

    #[test]
    fn a_raise_in_the_module_that_logged_in_keeps_its_record_current() {
        let dir = tempfile::tempdir().expect("temp dir");
        Module::new(config(dir.path(), CHEAP))
            .expect("module")
            .init_token(0, SO_PIN, &padded("current"))
            .expect("C_InitToken");
        let module = Module::new(config(dir.path(), RAISED)).expect("module");
        let session = module
            .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .expect("session");
        module.login(session, CKU_SO, SO_PIN).expect("SO login");
        module.logout(session).expect("logout");
        let token = module.token(0).expect("slot").expect("a token");
        let in_memory = token.lock().expect("state").record.so.clone();
        assert_eq!(in_memory, stored(dir.path()).so);
        assert_eq!(in_memory.kdf, RAISED);
        module
            .login(session, CKU_SO, SO_PIN)
            .expect("SO login again");
    }

    #[test]
    fn concurrent_logins_with_the_right_pin_never_lock_it() {
        // Each check counts a failure before its KDF and clears it after; without turns,
        // more than max_pin_attempts checks in flight locked the right PIN (cryptoki's
        // login_feast). A costlier KDF widens the window the checks overlap in.
        let slow = KdfParams {
            memory_kib: 4096,
            iterations: 1,
            parallelism: 1,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let module = token_with_user_pin(dir.path(), slow, "feast");

        let threads = 3 * module.config.max_pin_attempts as usize;
        let start = std::sync::Barrier::new(threads);
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let logins: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let session = module
                            .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)
                            .expect("session");
                        start.wait();
                        module.login(session, CKU_USER, USER_PIN)
                    })
                })
                .collect();
            logins
                .into_iter()
                .map(|login| login.join().expect("login thread"))
                .collect()
        });

        let logged_in = results.iter().filter(|result| result.is_ok()).count();
        let already = results
            .iter()
            .filter(|result| matches!(result, Err(Error::UserAlreadyLoggedIn)))
            .count();
        assert_eq!((logged_in, already), (1, threads - 1), "{results:?}");
        assert_eq!(stored(dir.path()).user_failures, 0);
    }
}
