//! One initialised token: its store, its login state (shared by all of the application's
//! sessions, PKCS#11 3.0 §5.6), its object cache and the handles this process gave out.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use pkcs11_sys::*;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mech::domain;
use crate::store::keys::{self, Key256};
use crate::store::sqlite::SqliteStore;
use crate::store::{
    ObjectId, PinRecord, Query, Role, Storage, StorageError, StoredObject, TokenRecord,
};
use crate::token::attr::{self, Attribute, Value};
use crate::token::object::{Object, Origin};

/// Who is logged in to a token, for the whole application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// Nobody: public objects only.
    Public,
    /// The normal user.
    User,
    /// The security officer.
    So,
}

/// The handles this process gave out on a token, session objects apart from token
/// objects: a session key is found in a small table (in handle order, for searches)
/// however many token objects the process has touched, which keeps an operation on it
/// from growing with the token (a 100 000-entry table is a cache miss or two per lookup).
struct Handles {
    session: BTreeMap<CK_OBJECT_HANDLE, Handle>,
    token: HashMap<CK_OBJECT_HANDLE, Handle>,
    /// Moves whenever a handle goes or points at another object, and at every login and
    /// logout; shared with `Token::epoch`: a session's copy of a key it used last stays
    /// good while it holds.
    epoch: Arc<AtomicU64>,
}

impl Handles {
    fn new(epoch: Arc<AtomicU64>) -> Self {
        Self {
            session: BTreeMap::new(),
            token: HashMap::new(),
            epoch,
        }
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    fn get(&self, handle: &CK_OBJECT_HANDLE) -> Option<&Handle> {
        self.session.get(handle).or_else(|| self.token.get(handle))
    }

    fn contains_key(&self, handle: &CK_OBJECT_HANDLE) -> bool {
        self.get(handle).is_some()
    }

    fn insert(&mut self, number: CK_OBJECT_HANDLE, handle: Handle) {
        let replaced = match handle {
            Handle::Session { .. } => self.session.insert(number, handle),
            Handle::Token { .. } => self.token.insert(number, handle),
        };
        // A new handle changes nothing a session kept; a replaced object does.
        if replaced.is_some() {
            self.changed();
        }
    }

    fn remove(&mut self, handle: &CK_OBJECT_HANDLE) -> Option<Handle> {
        self.changed();
        self.session
            .remove(handle)
            .or_else(|| self.token.remove(handle))
    }

    fn retain(&mut self, mut keep: impl FnMut(&CK_OBJECT_HANDLE, &mut Handle) -> bool) {
        self.changed();
        self.session.retain(&mut keep);
        self.token.retain(keep);
    }

    fn clear(&mut self) {
        self.changed();
        self.session.clear();
        self.token.clear();
    }
}

/// An object a handle points at.
#[derive(Clone)]
pub enum Handle {
    /// A token object, by its stored id; whether it is private is noted at issue, so a
    /// logout can drop its handle without reading the store.
    Token {
        /// The stored id.
        id: ObjectId,
        /// CKA_PRIVATE (never modifiable).
        private: bool,
    },
    /// A session object, owned by one session.
    Session {
        /// The session that created it; it dies with that session.
        owner: CK_SESSION_HANDLE,
        /// The object itself.
        object: Arc<Object>,
    },
}

/// Closed (written) by the C shell's fork handler while a process forks: every call into
/// a token's SQLite store holds it open (read), so a fork never happens while a thread of
/// this process is inside SQLite. SQLite's lock bookkeeping is per process memory, and a
/// child that inherited it mid-transaction could never write the token file again. Work
/// on session objects never touches the store, so it never touches the gate either: one
/// lock word every thread writes would cost those calls their scaling across cores.
pub static FORK_GATE: RwLock<()> = RwLock::new(());

fn fork_gate() -> RwLockReadGuard<'static, ()> {
    FORK_GATE.read().unwrap_or_else(PoisonError::into_inner)
}

/// A store whose every call holds `FORK_GATE` open. Each `Storage` call is one complete
/// SQLite transaction, so between two calls a fork is safe.
struct Gated(Box<dyn Storage>);

impl Storage for Gated {
    fn token(&self) -> Result<TokenRecord, StorageError> {
        let _open = fork_gate();
        self.0.token()
    }

    fn reinitialize(&mut self, record: &TokenRecord) -> Result<(), StorageError> {
        let _open = fork_gate();
        self.0.reinitialize(record)
    }

    fn put_pin(
        &mut self,
        role: Role,
        pin: &PinRecord,
        master_key_check: &[u8],
    ) -> Result<bool, StorageError> {
        let _open = fork_gate();
        self.0.put_pin(role, pin, master_key_check)
    }

    fn raise_pin(
        &mut self,
        role: Role,
        current: &PinRecord,
        raised: &PinRecord,
    ) -> Result<bool, StorageError> {
        let _open = fork_gate();
        self.0.raise_pin(role, current, raised)
    }

    fn count_failure(&mut self, role: Role, max: u32) -> Result<Option<u32>, StorageError> {
        let _open = fork_gate();
        self.0.count_failure(role, max)
    }

    fn reset_failures(&mut self, role: Role) -> Result<(), StorageError> {
        let _open = fork_gate();
        self.0.reset_failures(role)
    }

    fn find(&self, query: &Query) -> Result<Vec<ObjectId>, StorageError> {
        let _open = fork_gate();
        self.0.find(query)
    }

    fn get(&self, id: ObjectId) -> Result<Option<StoredObject>, StorageError> {
        let _open = fork_gate();
        self.0.get(id)
    }

    fn insert(&mut self, object: &StoredObject) -> Result<ObjectId, StorageError> {
        let _open = fork_gate();
        self.0.insert(object)
    }

    fn update(&mut self, id: ObjectId, object: &StoredObject) -> Result<bool, StorageError> {
        let _open = fork_gate();
        self.0.update(id, object)
    }

    fn delete(&mut self, id: ObjectId) -> Result<bool, StorageError> {
        let _open = fork_gate();
        self.0.delete(id)
    }

    fn generation(&self) -> Result<u64, StorageError> {
        let _open = fork_gate();
        self.0.generation()
    }
}

/// Make a token file (`SqliteStore::create`) with the fork gate open.
pub(crate) fn create_store(path: &Path, record: &TokenRecord) -> Result<Box<dyn Storage>> {
    let _open = fork_gate();
    Ok(Box::new(SqliteStore::create(path, record)?))
}

/// A token's locked state (see `Token::lock`).
pub struct StateGuard<'a> {
    state: MutexGuard<'a, TokenState>,
}

impl Deref for StateGuard<'_> {
    type Target = TokenState;

    fn deref(&self) -> &TokenState {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut TokenState {
        &mut self.state
    }
}

/// The most decrypted objects a token keeps in memory.
const MAX_CACHED_OBJECTS: usize = 4096;

/// A token's mutable state; one mutex guards it.
pub struct TokenState {
    store: Box<dyn Storage>,
    /// The token record as last read or written.
    pub record: TokenRecord,
    generation: u64,
    /// The application's login.
    pub login: Login,
    master: Option<Key256>,
    object_key: Option<Key256>,
    cache: HashMap<ObjectId, Arc<Object>>,
    handles: Handles,
    unique_ids: UniqueIds,
    /// `login == Login::So`, shared with `Token::so_logged_in`.
    so_logged_in: Arc<AtomicBool>,
    token_handles: HashMap<ObjectId, CK_OBJECT_HANDLE>,
    /// Open sessions of this application on the token.
    pub sessions: usize,
    /// How many of them are read/write.
    pub rw_sessions: usize,
}

/// One initialised token in a slot.
pub struct Token {
    /// The slot it sits in.
    pub slot_id: CK_SLOT_ID,
    /// Its file.
    pub path: PathBuf,
    /// Everything that changes.
    pub state: std::sync::Mutex<TokenState>,
    /// Held through a whole PIN check. A check counts a failure before its KDF runs and
    /// clears it after, so concurrent checks of the right PIN would add up to a lock-out.
    pin_check: std::sync::Mutex<()>,
    so_logged_in: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
}

impl Token {
    /// Open a token file.
    pub fn open(path: PathBuf) -> Result<Self> {
        let store = {
            let _open = fork_gate();
            SqliteStore::open(&path)?
        };
        Self::with_store(path, Box::new(store))
    }

    /// A token over an opened store.
    pub fn with_store(path: PathBuf, store: Box<dyn Storage>) -> Result<Self> {
        let store: Box<dyn Storage> = Box::new(Gated(store));
        let so_logged_in = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU64::new(0));
        let record = store.token()?;
        let generation = store.generation()?;
        Ok(Self {
            slot_id: record.slot_id as CK_SLOT_ID,
            path,
            state: std::sync::Mutex::new(TokenState {
                store,
                record,
                generation,
                login: Login::Public,
                master: None,
                object_key: None,
                cache: HashMap::new(),
                handles: Handles::new(Arc::clone(&epoch)),
                unique_ids: UniqueIds::new()?,
                so_logged_in: Arc::clone(&so_logged_in),
                token_handles: HashMap::new(),
                sessions: 0,
                rw_sessions: 0,
            }),
            pin_check: std::sync::Mutex::new(()),
            so_logged_in,
            epoch,
        })
    }

    /// Lock the token's state; a poisoned lock means a panic mid-change.
    pub fn lock(&self) -> Result<StateGuard<'_>> {
        let state = self
            .state
            .lock()
            .map_err(|_| Error::General("token state poisoned by an earlier panic".into()))?;
        Ok(StateGuard { state })
    }

    /// Whether the SO is logged in, read without the token's lock (set under it): for
    /// calls that only need to know before they build an object, so a key generation
    /// takes the lock once rather than twice. A login or logout racing the call orders
    /// before or after it, as it would with the lock.
    pub fn so_logged_in(&self) -> bool {
        self.so_logged_in.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Where the token's handles and login stand (see `Handles::epoch`); read without the
    /// lock, compared with the value read under it when a session kept a key.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Take the token's PIN-check turn: one PIN check of this process at a time.
    pub fn pin_check(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.pin_check
            .lock()
            .map_err(|_| Error::General("PIN check poisoned by an earlier panic".into()))
    }
}

/// The CKA_UNIQUE_ID values one opened token gives out: 32 hex digits, 64 random bits
/// drawn when the token is opened and then a counter. As unique as 128 random bits for
/// every object the token will make in this process, without drawing random bytes or
/// touching a shared counter per object; a forked child opens its tokens afresh, so it
/// draws its own. (A clash would also be refused by the store's UNIQUE index.)
struct UniqueIds {
    prefix: [u8; 8],
    made: u64,
}

impl UniqueIds {
    fn new() -> Result<Self> {
        let mut prefix = [0u8; 8];
        crate::mech::random(&mut prefix)?;
        Ok(Self { prefix, made: 0 })
    }

    fn next(&mut self) -> String {
        self.made += 1;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.prefix);
        bytes[8..].copy_from_slice(&self.made.to_be_bytes());
        hex::encode(bytes)
    }
}

/// Build a PIN record wrapping `master` under `pin`, with the configured KDF cost.
pub fn pin_record(
    config: &Config,
    serial: &str,
    role: Role,
    pin: &[u8],
    master: &Key256,
) -> Result<PinRecord> {
    let mut salt = vec![0u8; keys::SALT_LEN];
    crate::mech::random(&mut salt)?;
    let pin_key = keys::pin_key(pin, &salt, config.kdf)?;
    let wrapped_master_key = pin_key.seal(
        &keys::master_key_aad(serial, role_name(role)),
        master.expose(),
    )?;
    Ok(PinRecord {
        salt,
        kdf: config.kdf,
        wrapped_master_key,
    })
}

/// Open the master key with a PIN; `None` when the PIN is wrong.
pub fn open_master_key(
    serial: &str,
    role: Role,
    record: &PinRecord,
    pin: &[u8],
) -> Result<Option<Key256>> {
    let pin_key = keys::pin_key(pin, &record.salt, record.kdf)?;
    let opened = pin_key.open(
        &keys::master_key_aad(serial, role_name(role)),
        &record.wrapped_master_key,
    );
    Ok(opened.and_then(|bytes| Key256::from_slice(&bytes)))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::So => "so",
        Role::User => "user",
    }
}

impl TokenState {
    /// Notice writes by other processes: drop the cache, reread the record, and log out
    /// if the token was re-initialised under us (its master key changed).
    pub fn refresh(&mut self) -> Result<()> {
        let generation = self.store.generation()?;
        if generation != self.generation {
            self.generation = generation;
            self.cache.clear();
            let record = self.store.token()?;
            if record.master_key_check != self.record.master_key_check {
                // Re-initialised elsewhere: every token handle is stale and the login too.
                self.forget_login();
                self.handles.retain(|_, handle| match handle {
                    Handle::Session { object, .. } => !object.is_private(),
                    Handle::Token { .. } => false,
                });
                self.token_handles.clear();
            }
            self.record = record;
        }
        Ok(())
    }

    /// The master key while someone is logged in.
    pub fn master_key(&self) -> Option<Key256> {
        self.master.clone()
    }

    /// The store, for PIN bookkeeping.
    pub fn store(&mut self) -> &mut dyn Storage {
        self.store.as_mut()
    }

    /// Record a successful login.
    pub fn set_login(&mut self, login: Login, master: &Key256) -> Result<()> {
        self.object_key = Some(master.object_key()?);
        self.master = Some(master.clone());
        self.login = login;
        self.so_logged_in
            .store(login == Login::So, std::sync::atomic::Ordering::Release);
        self.handles.changed();
        // Cached objects were loaded without secrets; reload them with.
        self.cache.clear();
        Ok(())
    }

    /// The domain key (`mech::domain`), while someone is logged in.
    pub fn domain_key(&self) -> Result<Key256> {
        self.master
            .as_ref()
            .ok_or(Error::UserNotLoggedIn)?
            .domain_key()
    }

    /// Makes the token's domain key object if it has none: read-only, non-extractable,
    /// usable only with `CKM_KEYFERRY_DOMAIN_WRAP`. Its CKA_CHECK_VALUE names the domain
    /// (equal on every token of one domain).
    pub fn ensure_domain_key(&mut self, next_handle: &dyn Fn() -> CK_OBJECT_HANDLE) -> Result<()> {
        let wanted = [
            Attribute::new(CKA_CLASS, Value::ulong(CKO_SECRET_KEY)),
            Attribute::new(CKA_LABEL, Value::bytes(domain::DOMAIN_KEY_LABEL.to_vec())),
        ];
        if !self.find(&wanted, next_handle)?.is_empty() {
            return Ok(());
        }
        let flag = |kind, value| Attribute::new(kind, Value::bool(value));
        let mut template = wanted.to_vec();
        template.extend([
            Attribute::new(CKA_KEY_TYPE, Value::ulong(CKK_AES)),
            Attribute::new(CKA_ID, Value::bytes(b"keyferry-domain".to_vec())),
            Attribute::new(
                CKA_ALLOWED_MECHANISMS,
                Value::bytes(domain::CKM_KEYFERRY_DOMAIN_WRAP.to_ne_bytes().to_vec()),
            ),
            flag(CKA_TOKEN, true),
            flag(CKA_PRIVATE, true),
            flag(CKA_SENSITIVE, true),
            flag(CKA_EXTRACTABLE, false),
            flag(CKA_MODIFIABLE, false),
            flag(CKA_COPYABLE, false),
            flag(CKA_DESTROYABLE, false),
            flag(CKA_ENCRYPT, false),
            flag(CKA_DECRYPT, false),
            flag(CKA_SIGN, false),
            flag(CKA_VERIFY, false),
            flag(CKA_DERIVE, false),
            flag(CKA_WRAP, true),
            flag(CKA_UNWRAP, true),
        ]);
        let origin = Origin::Generate(domain::CKM_KEYFERRY_DOMAIN_WRAP);
        let mut object = Object::from_template(&template, &[], origin, false)?;
        let key = self.domain_key()?;
        object.put(CKA_VALUE, Value::bytes(key.expose().to_vec()));
        object.finish(origin)?;
        self.add_object(object, CK_INVALID_HANDLE, next_handle)
            .map(|_| ())
    }

    /// `C_Logout`: wipe the keys and every decrypted secret, invalidate handles to private
    /// objects and destroy private session objects (PKCS#11 3.0 §5.6.8).
    pub fn logout(&mut self) -> Result<()> {
        if self.login == Login::Public {
            return Err(Error::UserNotLoggedIn);
        }
        // Wipe first: nothing below can fail, and nothing may keep the keys alive.
        self.forget_login();
        self.handles.retain(|_, handle| match handle {
            Handle::Session { object, .. } => !object.is_private(),
            Handle::Token { private, .. } => !*private,
        });
        let handles = &self.handles;
        self.token_handles
            .retain(|_, handle| handles.contains_key(handle));
        Ok(())
    }

    fn forget_login(&mut self) {
        self.login = Login::Public;
        self.so_logged_in
            .store(false, std::sync::atomic::Ordering::Release);
        self.handles.changed();
        self.master = None;
        self.object_key = None;
        self.cache.clear();
    }

    /// Whether an object is visible in the current login state.
    fn visible(&self, object: &Object) -> bool {
        !object.is_private() || self.login == Login::User
    }

    /// Reinitialise: a new record, no objects, nobody logged in, no handles.
    pub fn reinitialize(&mut self, record: TokenRecord) -> Result<()> {
        self.store.reinitialize(&record)?;
        self.record = record;
        self.forget_login();
        self.handles.clear();
        self.token_handles.clear();
        self.generation = self.store.generation()?;
        Ok(())
    }

    /// Replace one PIN's record (and zero its failure count), unless another process
    /// re-initialised the token since this one read it.
    pub fn put_pin(&mut self, role: Role, pin: &PinRecord) -> Result<()> {
        if !self
            .store
            .put_pin(role, pin, &self.record.master_key_check)?
        {
            return Err(Error::General(
                "the token was re-initialised by another process".into(),
            ));
        }
        match role {
            Role::So => (self.record.so, self.record.so_failures) = (pin.clone(), 0),
            Role::User => (self.record.user, self.record.user_failures) = (Some(pin.clone()), 0),
        }
        Ok(())
    }

    /// Caches a decrypted object; past `MAX_CACHED_OBJECTS` another one goes (any: a miss
    /// costs one indexed read and an AES-GCM open), so memory stays bounded however many
    /// objects the token holds and this process touches.
    fn cache_insert(&mut self, id: ObjectId, object: Arc<Object>) {
        if self.cache.len() >= MAX_CACHED_OBJECTS
            && !self.cache.contains_key(&id)
            && let Some(&victim) = self.cache.keys().next()
        {
            self.cache.remove(&victim);
        }
        self.cache.insert(id, object);
    }

    fn load(&mut self, id: ObjectId) -> Result<Option<Arc<Object>>> {
        if let Some(object) = self.cache.get(&id) {
            return Ok(Some(object.clone()));
        }
        let stored = match self.store.get(id) {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(None),
            Err(StorageError::Corrupt { reason, .. }) => {
                tracing::error!(object = id, "object row unreadable: {reason}");
                return Err(Error::ObjectTampered(format!("row {id}")));
            }
            Err(err) => return Err(err.into()),
        };
        let object = Arc::new(self.unseal(&stored)?);
        self.cache_insert(id, object.clone());
        Ok(Some(object))
    }

    fn unseal(&self, stored: &StoredObject) -> Result<Object> {
        let tampered = |why: &str| {
            tracing::error!(unique_id = %stored.unique_id, "object failed authentication: {why}");
            Error::ObjectTampered(stored.unique_id.clone())
        };
        let attrs = attr::decode(&stored.attrs).ok_or_else(|| tampered("attributes unreadable"))?;
        let mut object = Object::from_stored(attrs).map_err(|_| tampered("attributes invalid"))?;
        let indexed_ok = object.class() == stored.class
            && object.is_private() == stored.private
            && object.bytes(CKA_LABEL).unwrap_or_default() == stored.label.as_slice()
            && object.bytes(CKA_ID).unwrap_or_default() == stored.ckid.as_slice()
            && object.bytes(CKA_UNIQUE_ID) == Some(stored.unique_id.as_bytes());
        if !indexed_ok {
            return Err(tampered("index columns disagree with the attributes"));
        }
        match (&stored.sealed, &self.object_key) {
            (None, _) if object.is_private() || object.has_secrets_at_rest_rules() => {
                Err(tampered("its sealed part is missing"))
            }
            // Only the SO sets CKA_TRUSTED, always logged in, so a trusted object is sealed.
            (None, Some(_)) if object.flag(CKA_TRUSTED) => Err(tampered("trusted but not sealed")),
            (None, _) => Ok(object),
            (Some(_), None) => {
                object.lock_secrets();
                Ok(object)
            }
            (Some(sealed), Some(key)) => {
                let opened = key
                    .open(&binding_aad(&object), sealed)
                    .ok_or_else(|| tampered("attributes or secret altered"))?;
                let secrets =
                    attr::decode(&opened).ok_or_else(|| tampered("sealed part unreadable"))?;
                for Attribute { kind, value } in secrets {
                    object.put(kind, value);
                }
                Ok(object)
            }
        }
    }

    #[allow(
        clippy::unnecessary_cast,
        reason = "CK_ULONG is u64 here but u32 on Windows; the cast keeps the code portable"
    )]
    fn seal(&self, object: &Object) -> Result<StoredObject> {
        let unique_id = String::from_utf8(object.bytes(CKA_UNIQUE_ID).unwrap_or_default().to_vec())
            .map_err(|_| Error::General("unique id is not UTF-8".into()))?;
        let mut clear = Vec::new();
        let mut secret = Vec::new();
        for (kind, value) in object.attributes() {
            let item = Attribute::new(kind, value.clone());
            if object.is_secret_at_rest(kind) {
                secret.push(item)
            } else {
                clear.push(item)
            }
        }
        // Every object is sealed when a login makes the key available; without one only a
        // public object with nothing secret can be stored, and it stays unauthenticated
        // until it is next written under a login.
        let needs_seal = object.is_private() || !secret.is_empty();
        let sealed = match &self.object_key {
            Some(key) => {
                let plaintext = zeroize::Zeroizing::new(attr::encode(&secret));
                Some(key.seal(&binding_aad(object), &plaintext)?)
            }
            None if needs_seal => return Err(Error::UserNotLoggedIn),
            None => None,
        };
        Ok(StoredObject {
            unique_id,
            class: object.class() as u64,
            label: object.bytes(CKA_LABEL).unwrap_or_default().to_vec(),
            ckid: object.bytes(CKA_ID).unwrap_or_default().to_vec(),
            private: object.is_private(),
            attrs: attr::encode(&clear),
            sealed,
        })
    }

    /// The handle of a token object, giving it one on first sight.
    fn token_handle(
        &mut self,
        id: ObjectId,
        private: bool,
        next_handle: &dyn Fn() -> CK_OBJECT_HANDLE,
    ) -> CK_OBJECT_HANDLE {
        if let Some(handle) = self.token_handles.get(&id) {
            return *handle;
        }
        let handle = next_handle();
        self.token_handles.insert(id, handle);
        self.handles.insert(handle, Handle::Token { id, private });
        handle
    }

    /// Store a new object (token or session) and return its handle.
    pub fn add_object(
        &mut self,
        mut object: Object,
        owner: CK_SESSION_HANDLE,
        next_handle: &dyn Fn() -> CK_OBJECT_HANDLE,
    ) -> Result<CK_OBJECT_HANDLE> {
        object.put(
            CKA_UNIQUE_ID,
            Value::bytes(self.unique_ids.next().into_bytes()),
        );
        if object.is_private() && self.login != Login::User {
            return Err(Error::UserNotLoggedIn);
        }
        if !object.is_token() {
            let handle = next_handle();
            self.handles.insert(
                handle,
                Handle::Session {
                    owner,
                    object: Arc::new(object),
                },
            );
            return Ok(handle);
        }
        let stored = self.seal(&object)?;
        let id = self.store.insert(&stored)?;
        let private = object.is_private();
        self.cache_insert(id, Arc::new(object));
        Ok(self.token_handle(id, private, next_handle))
    }

    /// `refresh` before using `handle`, unless it names a session object: those live only
    /// in this process, so no other process's write can change them, and the cheapest
    /// store query still costs more than the operation on a small key.
    pub fn refresh_for(&mut self, handle: CK_OBJECT_HANDLE) -> Result<()> {
        self.refresh_for_all(&[handle])
    }

    /// `refresh` once before using all of `handles`, unless every one names a session
    /// object.
    pub fn refresh_for_all(&mut self, handles: &[CK_OBJECT_HANDLE]) -> Result<()> {
        let all_session = handles
            .iter()
            .all(|handle| matches!(self.handles.get(handle), Some(Handle::Session { .. })));
        if all_session {
            return Ok(());
        }
        self.refresh()
    }

    /// `refresh` before adding `object`, unless it is a session object (see `refresh_for`).
    pub fn refresh_before_adding(&mut self, object: &Object) -> Result<()> {
        if object.is_token() {
            self.refresh()?;
        }
        Ok(())
    }

    /// Whether a handle names a session object, and the handles' epoch now.
    pub fn session_object_epoch(&self, handle: CK_OBJECT_HANDLE) -> Option<u64> {
        self.handles
            .session
            .contains_key(&handle)
            .then(|| self.handles.epoch.load(Ordering::Acquire))
    }

    /// The object behind a handle, if this session may see it.
    pub fn object(&mut self, handle: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        let object = match self.handles.get(&handle).cloned() {
            Some(Handle::Session { object, .. }) => object,
            Some(Handle::Token { id, .. }) => match self.load(id)? {
                Some(object) => object,
                None => {
                    self.handles.remove(&handle);
                    self.token_handles.remove(&id);
                    return Err(Error::ObjectHandleInvalid);
                }
            },
            None => return Err(Error::ObjectHandleInvalid),
        };
        if !self.visible(&object) {
            return Err(Error::ObjectHandleInvalid);
        }
        Ok(object)
    }

    /// Replace the object behind a handle (after `C_SetAttributeValue`).
    pub fn replace_object(&mut self, handle: CK_OBJECT_HANDLE, object: Object) -> Result<()> {
        match self.handles.get(&handle).cloned() {
            Some(Handle::Session { owner, .. }) => {
                self.handles.insert(
                    handle,
                    Handle::Session {
                        owner,
                        object: Arc::new(object),
                    },
                );
                Ok(())
            }
            Some(Handle::Token { id, .. }) => {
                let stored = self.seal(&object)?;
                if !self.store.update(id, &stored)? {
                    return Err(Error::ObjectHandleInvalid);
                }
                self.cache_insert(id, Arc::new(object));
                Ok(())
            }
            None => Err(Error::ObjectHandleInvalid),
        }
    }

    /// Destroy the object behind a handle.
    pub fn destroy_object(&mut self, handle: CK_OBJECT_HANDLE) -> Result<()> {
        match self.handles.get(&handle).cloned() {
            Some(Handle::Session { .. }) => {}
            // Deleted first: if the store fails, the object and its handle both remain.
            Some(Handle::Token { id, .. }) => {
                let existed = self.store.delete(id)?;
                self.token_handles.remove(&id);
                self.cache.remove(&id);
                if !existed {
                    self.handles.remove(&handle);
                    return Err(Error::ObjectHandleInvalid);
                }
            }
            None => return Err(Error::ObjectHandleInvalid),
        }
        self.handles.remove(&handle);
        Ok(())
    }

    /// Drop the session objects a closing session owned.
    pub fn drop_session_objects(&mut self, owner: CK_SESSION_HANDLE) {
        self.handles
            .retain(|_, handle| !matches!(handle, Handle::Session { owner: o, .. } if *o == owner));
    }

    /// Every visible object matching a template: token objects through the indexes, then
    /// session objects.
    #[allow(
        clippy::unnecessary_cast,
        reason = "CK_ULONG is u64 here but u32 on Windows; the cast keeps the code portable"
    )]
    pub fn find(
        &mut self,
        template: &[Attribute],
        next_handle: &dyn Fn() -> CK_OBJECT_HANDLE,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let bytes_of = |kind| {
            attr::find(template, kind)
                .and_then(Value::as_bytes)
                .map(<[u8]>::to_vec)
        };
        let wants_token =
            attr::find(template, CKA_TOKEN).map(|value| attr::parse_bool(CKA_TOKEN, value));
        let mut found = Vec::new();
        if !matches!(wants_token, Some(Ok(false))) {
            let query = Query {
                class: attr::find(template, CKA_CLASS)
                    .and_then(|value| attr::parse_ulong(CKA_CLASS, value).ok())
                    .map(|class| class as u64),
                label: bytes_of(CKA_LABEL),
                ckid: bytes_of(CKA_ID),
                unique_id: bytes_of(CKA_UNIQUE_ID).and_then(|id| String::from_utf8(id).ok()),
                include_private: self.login == Login::User,
            };
            for id in self.store.find(&query)? {
                // A tampered object is logged and left out; the rest of the token works.
                let object = match self.load(id) {
                    Ok(Some(object)) => object,
                    Ok(None) | Err(Error::ObjectTampered(_)) => continue,
                    Err(err) => return Err(err),
                };
                if self.visible(&object) && object.matches(template) {
                    found.push(self.token_handle(id, object.is_private(), next_handle));
                }
            }
        }
        found.extend(
            self.handles
                .session
                .iter()
                .filter(|(_, handle)| match handle {
                    Handle::Session { object, .. } => {
                        self.visible(object) && object.matches(template)
                    }
                    Handle::Token { .. } => false,
                })
                .map(|(handle, _)| *handle),
        );
        Ok(found)
    }
}

/// The AAD that binds an object's sealed part to every one of its clear attributes —
/// its unique id, class, key type, policy (usage flags, SENSITIVE, EXTRACTABLE,
/// ALLOWED_MECHANISMS, templates, TRUSTED, …) and the rest — so no edit in the file goes
/// unnoticed.
fn binding_aad(object: &Object) -> Vec<u8> {
    let mut aad = b"keyferry object v1|".to_vec();
    aad.extend(attr::encode_pairs(
        object
            .attributes()
            .filter(|(kind, _)| !object.is_secret_at_rest(*kind)),
    ));
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_never_repeat_within_a_token_or_across_opens() {
        let mut first = UniqueIds::new().expect("drawn");
        let mut second = UniqueIds::new().expect("drawn");
        let ids: Vec<String> = (0..5000)
            .flat_map(|_| [first.next(), second.next()])
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
        );
    }
}
