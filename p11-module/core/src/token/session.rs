//! Session handles and the operation each session has in flight.

use std::sync::{Arc, Mutex, MutexGuard};

use pkcs11_sys::*;

use crate::error::{Error, Result};
use crate::token::slot::Token;

/// An object search in progress (`C_FindObjectsInit` … `C_FindObjectsFinal`).
pub struct Find {
    /// Handles found at init, in order.
    pub handles: Vec<CK_OBJECT_HANDLE>,
    /// How many were returned so far.
    pub returned: usize,
}

/// What a session is doing.
#[derive(Default)]
pub struct Operations {
    /// The active search, if any.
    pub find: Option<Find>,
}

/// One session.
pub struct Session {
    /// Its handle.
    pub handle: CK_SESSION_HANDLE,
    /// The token it is open on.
    pub token: Arc<Token>,
    /// Whether it is read/write.
    pub rw: bool,
    operations: Mutex<Operations>,
}

impl Session {
    /// A new session.
    pub fn new(handle: CK_SESSION_HANDLE, token: Arc<Token>, rw: bool) -> Self {
        Self {
            handle,
            token,
            rw,
            operations: Mutex::new(Operations::default()),
        }
    }

    /// The session's operations; taken before the token's state, never after.
    pub fn operations(&self) -> Result<MutexGuard<'_, Operations>> {
        self.operations
            .lock()
            .map_err(|_| Error::General("session state poisoned by an earlier panic".into()))
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
