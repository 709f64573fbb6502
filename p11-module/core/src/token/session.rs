//! Session handles and the operation each session has in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use pkcs11_sys::*;

use crate::error::{Error, Result};
use crate::mech::cipher::{Cipher, Direction};
use crate::mech::digest::Hash;
use crate::mech::sign::Signer;
use crate::token::object::Object;
use crate::token::slot::Token;

/// An object search in progress (`C_FindObjectsInit` … `C_FindObjectsFinal`).
pub struct Find {
    /// Handles found at init, in order.
    pub handles: Vec<CK_OBJECT_HANDLE>,
    /// How many were returned so far.
    pub returned: usize,
}

/// A cryptographic operation in progress and whether a multi-part call has begun, after
/// which the single-part call may no longer end it.
pub struct Active<T: ?Sized> {
    /// The state.
    pub state: Box<T>,
    /// Whether an *Update call has been made.
    pub multipart: bool,
}

impl<T: ?Sized> Active<T> {
    /// A fresh operation.
    pub fn new(state: Box<T>) -> Self {
        Self {
            state,
            multipart: false,
        }
    }
}

/// What a session is doing: at most one operation of each kind (PKCS#11 3.0 §5.2).
#[derive(Default)]
pub struct Operations {
    /// The active search, if any.
    pub find: Option<Find>,
    /// C_EncryptInit … C_EncryptFinal.
    pub encrypt: Option<Active<dyn Cipher>>,
    /// C_DecryptInit … C_DecryptFinal.
    pub decrypt: Option<Active<dyn Cipher>>,
    /// C_DigestInit … C_DigestFinal.
    pub digest: Option<Active<dyn Hash>>,
    /// C_SignInit … C_SignFinal.
    pub sign: Option<Active<dyn Signer>>,
    /// C_VerifyInit … C_VerifyFinal.
    pub verify: Option<Active<dyn Signer>>,
}

impl Operations {
    /// The cipher slot of a direction.
    pub fn cipher(&mut self, direction: Direction) -> &mut Option<Active<dyn Cipher>> {
        match direction {
            Direction::Encrypt => &mut self.encrypt,
            Direction::Decrypt => &mut self.decrypt,
        }
    }

    /// End every cryptographic operation (their key schedules go with them); the search
    /// stays, since it holds only handles.
    pub fn end_crypto(&mut self) {
        self.encrypt = None;
        self.decrypt = None;
        self.digest = None;
        self.sign = None;
        self.verify = None;
    }

    /// The signing slot (true) or the verifying one (false).
    pub fn signer(&mut self, sign: bool) -> &mut Option<Active<dyn Signer>> {
        if sign {
            &mut self.sign
        } else {
            &mut self.verify
        }
    }
}

/// One session.
pub struct Session {
    /// Its handle.
    pub handle: CK_SESSION_HANDLE,
    /// The token it is open on.
    pub token: Arc<Token>,
    /// Whether it is read/write.
    pub rw: bool,
    /// Set under the token's lock when the session closes, so a call that raced the
    /// close cannot log in or add an object on its behalf afterwards.
    pub closed: AtomicBool,
    operations: Mutex<Operations>,
    /// The session key this session used last and, once it was used twice in a row, a
    /// copy of its own with the token's epoch it was taken at: using it again needs
    /// neither the token's lock nor a write to a reference count another thread's session
    /// shares. (Only twice in a row, so alternating keys do not copy on every call.)
    last_key: Mutex<LastKey>,
}

/// What `Session::last_key` holds.
#[derive(Default)]
struct LastKey {
    handle: Option<CK_OBJECT_HANDLE>,
    kept: Option<(u64, Arc<Object>)>,
}

impl Session {
    /// A new session.
    pub fn new(handle: CK_SESSION_HANDLE, token: Arc<Token>, rw: bool) -> Self {
        Self {
            handle,
            token,
            rw,
            closed: AtomicBool::new(false),
            operations: Mutex::new(Operations::default()),
            last_key: Mutex::new(LastKey::default()),
        }
    }

    /// The session's operations; taken before the token's state, never after.
    pub fn operations(&self) -> Result<MutexGuard<'_, Operations>> {
        self.operations
            .lock()
            .map_err(|_| Error::General("session state poisoned by an earlier panic".into()))
    }

    /// The kept copy of `handle`, while nothing changed on the token since it was kept. A
    /// copy found stale is wiped here.
    pub fn kept_key(&self, handle: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        let mut last = self.last_key.lock().ok()?;
        let current = self.token.epoch();
        if last
            .kept
            .as_ref()
            .is_some_and(|(epoch, _)| *epoch != current)
        {
            last.kept = None;
        }
        if last.handle != Some(handle) {
            return None;
        }
        last.kept.as_ref().map(|(_, object)| Arc::clone(object))
    }

    /// Session object `handle` was just read at `epoch`: note it, and keep a copy of it
    /// when it is the key used the time before too.
    pub fn used_key(&self, handle: CK_OBJECT_HANDLE, epoch: u64, object: &Object) {
        if let Ok(mut last) = self.last_key.lock() {
            last.kept = (last.handle == Some(handle)).then(|| (epoch, Arc::new(object.clone())));
            last.handle = Some(handle);
        }
    }

    /// Wipe the kept copy (at logout: no secret outlives the login).
    pub fn forget_key(&self) {
        if let Ok(mut last) = self.last_key.lock() {
            *last = LastKey::default();
        }
    }

    /// Refuse a session that closed meanwhile; call with the token's lock held.
    pub fn require_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::SessionHandleInvalid)
        } else {
            Ok(())
        }
    }

    /// Refuse a write in a read-only session.
    pub fn require_rw(&self) -> Result<()> {
        if self.rw {
            Ok(())
        } else {
            Err(Error::SessionReadOnly)
        }
    }
}

/// How many parts the session table is split into.
const SHARDS: usize = 16;

/// One part of the session table, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>>);

/// The open sessions by handle. Every call looks its session up here, so the table is
/// split by handle: two threads on two sessions take two different locks and do not
/// bounce one lock word between their cores.
#[derive(Default)]
pub struct SessionTable {
    shards: [Shard; SHARDS],
}

fn poisoned() -> Error {
    Error::General("session table poisoned by an earlier panic".into())
}

impl SessionTable {
    fn shard(
        &self,
        handle: CK_SESSION_HANDLE,
    ) -> &RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>> {
        // `as usize` of a 64-bit handle: only the low bits pick the shard.
        &self.shards[handle as usize % SHARDS].0
    }

    /// The session of a handle.
    pub fn get(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.shard(handle)
            .read()
            .map_err(|_| poisoned())?
            .get(&handle)
            .cloned()
            .ok_or(Error::SessionHandleInvalid)
    }

    /// Publish a new session.
    pub fn insert(&self, session: Arc<Session>) -> Result<()> {
        self.shard(session.handle)
            .write()
            .map_err(|_| poisoned())?
            .insert(session.handle, session);
        Ok(())
    }

    /// Take a session out; `CKR_SESSION_HANDLE_INVALID` when it is not open.
    pub fn remove(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.shard(handle)
            .write()
            .map_err(|_| poisoned())?
            .remove(&handle)
            .ok_or(Error::SessionHandleInvalid)
    }

    /// The open sessions that satisfy `keep`, at one moment of each shard.
    pub fn matching(&self, keep: impl Fn(&Session) -> bool) -> Result<Vec<Arc<Session>>> {
        let mut found = Vec::new();
        for shard in &self.shards {
            let shard = shard.0.read().map_err(|_| poisoned())?;
            found.extend(shard.values().filter(|session| keep(session)).cloned());
        }
        Ok(found)
    }
}
