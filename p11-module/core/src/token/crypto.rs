//! Encryption, decryption, digests and MACs on a session (PKCS#11 3.0 §5.8–§5.13):
//! operation state, key checks, and the length-query protocol.

use std::sync::Arc;

use pkcs11_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mech::cipher::{Cipher, Direction};
use crate::mech::params::Parameter;
use crate::mech::{self, Mechanism};
use crate::token::Module;
use crate::token::object::Object;
use crate::token::session::{Active, Session};
use crate::token::slot::{Login, TokenState};

/// What an output-producing call yields, for the C shell to report.
pub enum Output {
    /// A length query (NULL buffer): this many bytes would come; the operation goes on.
    Length(usize),
    /// The caller's buffer is too small: this many bytes are needed; the operation goes on.
    TooSmall(usize),
    /// The bytes.
    Data(Zeroizing<Vec<u8>>),
}

/// A kind of operation a session can have active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// C_Encrypt*.
    Encrypt,
    /// C_Decrypt*.
    Decrypt,
    /// C_Digest*.
    Digest,
    /// C_Sign*.
    Sign,
    /// C_Verify*.
    Verify,
}

/// Which part of a multi-part sequence a call is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// C_Encrypt, C_Decrypt, C_Digest, C_Sign, C_Verify.
    Single,
    /// *Update.
    Update,
    /// *Final.
    Final,
}

impl Part {
    fn finishing(self) -> bool {
        self != Part::Update
    }
}

/// The class of key an operation takes: a secret key, or the half of a key pair the
/// usage belongs to.
pub fn key_class(mechanism: &dyn Mechanism, usage: CK_ATTRIBUTE_TYPE) -> CK_OBJECT_CLASS {
    match (mechanism.asymmetric(), usage) {
        (false, _) => CKO_SECRET_KEY,
        (true, CKA_SIGN | CKA_DECRYPT | CKA_UNWRAP | CKA_DERIVE) => CKO_PRIVATE_KEY,
        (true, _) => CKO_PUBLIC_KEY,
    }
}

/// Key checks shared by every operation that uses a key.
fn check_key(
    key: &Object,
    mechanism: &dyn Mechanism,
    kind: CK_MECHANISM_TYPE,
    usage: CK_ATTRIBUTE_TYPE,
) -> Result<()> {
    let type_ok = key.class() == key_class(mechanism, usage)
        && key
            .key_type()
            .is_some_and(|t| mechanism.key_types().contains(&t));
    if !type_ok {
        return Err(Error::KeyTypeInconsistent);
    }
    if !key.flag(usage) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    allowed(key, kind)?;
    if key.is_locked() {
        return Err(Error::UserNotLoggedIn);
    }
    Ok(())
}

/// CKA_ALLOWED_MECHANISMS: when present and not empty, only those mechanisms.
pub fn allowed(key: &Object, kind: CK_MECHANISM_TYPE) -> Result<()> {
    let Some(list) = key
        .bytes(CKA_ALLOWED_MECHANISMS)
        .filter(|list| !list.is_empty())
    else {
        return Ok(());
    };
    let word = std::mem::size_of::<CK_MECHANISM_TYPE>();
    let permitted = list.chunks_exact(word).any(|chunk| {
        chunk
            .try_into()
            .map(CK_MECHANISM_TYPE::from_ne_bytes)
            .is_ok_and(|allowed| allowed == kind)
    });
    if permitted {
        Ok(())
    } else {
        Err(Error::MechanismInvalid(kind))
    }
}

/// Run one call of a cipher operation with the length-query protocol. The state is
/// touched only when the output fits; a call whose output length is only bounded in
/// advance (CBC_PAD decryption) is tried on a copy when the buffer is under the bound.
fn run_cipher(
    state: &mut Box<dyn Cipher>,
    input: &[u8],
    part: Part,
    capacity: Option<usize>,
) -> Result<Output> {
    let finishing = part.finishing();
    let bound = state.output_len(input.len(), finishing)?;
    let Some(capacity) = capacity else {
        return Ok(Output::Length(bound));
    };
    let step = |cipher: &mut dyn Cipher| -> Result<Zeroizing<Vec<u8>>> {
        let mut out = if part == Part::Final {
            Zeroizing::new(Vec::new())
        } else {
            cipher.update(input)?
        };
        if finishing {
            let last = cipher.finish()?;
            if out.is_empty() {
                // Buffering ciphers (GCM, CBC-PAD) hand everything over at the end.
                return Ok(last);
            }
            mech::extend_secret(&mut out, &last);
        }
        Ok(out)
    };
    if capacity >= bound {
        return step(state.as_mut()).map(Output::Data);
    }
    let mut trial = state.box_clone();
    let out = step(trial.as_mut())?;
    if out.len() <= capacity {
        *state = trial;
        Ok(Output::Data(out))
    } else {
        Ok(Output::TooSmall(out.len()))
    }
}

/// The length protocol for an output whose length is known in advance (digests,
/// signatures): the answer to a length query or a short buffer, or `None` to go ahead.
pub(super) fn fixed_output(len: usize, capacity: Option<usize>) -> Option<Output> {
    match capacity {
        None => Some(Output::Length(len)),
        Some(capacity) if capacity < len => Some(Output::TooSmall(len)),
        Some(_) => None,
    }
}

/// Whether an operation ends after a call that produced `result` (PKCS#11 3.0 §5.2: a
/// length query or a short buffer keeps it; an error or the last part ends it).
fn ends(part: Part, result: &Result<Output>) -> bool {
    match result {
        Ok(Output::Length(_) | Output::TooSmall(_)) => false,
        Ok(Output::Data(_)) => part.finishing(),
        Err(_) => true,
    }
}

/// One object looked up by handle, or why not.
type Lookup = Result<Arc<Object>>;

/// `state.object(handle)`, with `invalid` as the code for a handle that names nothing.
fn object_or(state: &mut TokenState, handle: CK_OBJECT_HANDLE, invalid: Error) -> Lookup {
    state.object(handle).map_err(|err| match err {
        Error::ObjectHandleInvalid => invalid,
        other => other,
    })
}

impl Module {
    /// The object behind a handle, with `invalid` as the code for a bad handle.
    pub(super) fn object_as(
        &self,
        session: &Session,
        handle: CK_OBJECT_HANDLE,
        invalid: Error,
    ) -> Result<Arc<Object>> {
        if let Some(object) = session.kept_key(handle) {
            return Ok(object);
        }
        let mut state = session.token.lock()?;
        state.refresh_for(handle)?;
        let object = object_or(&mut state, handle, invalid)?;
        if let Some(epoch) = state.session_object_epoch(handle) {
            drop(state);
            session.used_key(handle, epoch, &object);
        }
        Ok(object)
    }

    /// `object_as`, and who is logged in, under one lock.
    pub(super) fn object_and_login(
        &self,
        session: &Session,
        handle: CK_OBJECT_HANDLE,
        invalid: Error,
    ) -> Result<(Arc<Object>, Login)> {
        let mut state = session.token.lock()?;
        state.refresh_for(handle)?;
        let object = object_or(&mut state, handle, invalid)?;
        Ok((object, state.login))
    }

    /// Two objects under one lock (a KEK and the key it wraps), each looked up as
    /// `object_as` would; the caller decides which failure counts first.
    pub(super) fn two_objects_as(
        &self,
        session: &Session,
        (first, first_invalid): (CK_OBJECT_HANDLE, Error),
        (second, second_invalid): (CK_OBJECT_HANDLE, Error),
    ) -> Result<(Lookup, Lookup)> {
        let mut state = session.token.lock()?;
        state.refresh_for_all(&[first, second])?;
        let first = object_or(&mut state, first, first_invalid);
        let second = object_or(&mut state, second, second_invalid);
        Ok((first, second))
    }

    /// End an operation after an error the C shell found before the core ran (a NULL
    /// buffer with a length, a NULL length pointer): PKCS#11 3.0 §5.2 ends an operation on
    /// any error but a short buffer. A session that is gone has nothing to end.
    pub fn end_operation(&self, handle: CK_SESSION_HANDLE, kind: OperationKind) {
        let Ok(session) = self.session(handle) else {
            return;
        };
        let Ok(mut operations) = session.operations() else {
            return;
        };
        match kind {
            OperationKind::Encrypt => operations.encrypt = None,
            OperationKind::Decrypt => operations.decrypt = None,
            OperationKind::Digest => operations.digest = None,
            OperationKind::Sign => operations.sign = None,
            OperationKind::Verify => operations.verify = None,
        }
    }

    /// C_EncryptInit / C_DecryptInit.
    pub fn cipher_init(
        &self,
        handle: CK_SESSION_HANDLE,
        direction: Direction,
        kind: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        if operations.cipher(direction).is_some() {
            return Err(Error::OperationActive);
        }
        let (flag, usage) = match direction {
            Direction::Encrypt => (CKF_ENCRYPT, CKA_ENCRYPT),
            Direction::Decrypt => (CKF_DECRYPT, CKA_DECRYPT),
        };
        let mechanism = mech::lookup_for(kind, flag)?;
        let key = self.object_as(&session, key, Error::KeyHandleInvalid)?;
        check_key(&key, mechanism, kind, usage)?;
        let state = mechanism.key_cipher(&key, direction, parameter)?;
        *operations.cipher(direction) = Some(Active::new(state));
        Ok(())
    }

    /// C_Encrypt / C_Decrypt (Single), *Update, *Final; `capacity` is `None` for a
    /// length query.
    pub fn cipher_step(
        &self,
        handle: CK_SESSION_HANDLE,
        direction: Direction,
        part: Part,
        input: &[u8],
        capacity: Option<usize>,
    ) -> Result<Output> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        let slot = operations.cipher(direction);
        let active = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
        if part == Part::Single && active.multipart {
            return Err(Error::OperationActive);
        }
        if part == Part::Update {
            active.multipart = true;
        }
        let result = run_cipher(&mut active.state, input, part, capacity);
        if ends(part, &result) {
            *slot = None;
        }
        result
    }

    /// C_DigestInit.
    pub fn digest_init(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: CK_MECHANISM_TYPE,
        parameter: &Parameter,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        if operations.digest.is_some() {
            return Err(Error::OperationActive);
        }
        let state = mech::lookup_for(kind, CKF_DIGEST)?.digest(parameter)?;
        operations.digest = Some(Active::new(state));
        Ok(())
    }

    /// C_Digest (Single), C_DigestUpdate (no output), C_DigestFinal.
    pub fn digest_step(
        &self,
        handle: CK_SESSION_HANDLE,
        part: Part,
        input: &[u8],
        capacity: Option<usize>,
    ) -> Result<Output> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        let active = operations
            .digest
            .as_mut()
            .ok_or(Error::OperationNotInitialized)?;
        if part == Part::Single && active.multipart {
            return Err(Error::OperationActive);
        }
        if part == Part::Update {
            active.multipart = true;
            active.state.update(input);
            return Ok(Output::Data(Zeroizing::new(Vec::new())));
        }
        let len = active.state.output_len();
        if let Some(answer) = fixed_output(len, capacity) {
            return Ok(answer);
        }
        let mut active = operations
            .digest
            .take()
            .ok_or(Error::OperationNotInitialized)?;
        active.state.update(input);
        Ok(Output::Data(Zeroizing::new(active.state.finish())))
    }

    /// C_DigestKey: a secret key's value joins the digest, if the key may be revealed.
    pub fn digest_key(&self, handle: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        if operations.digest.is_none() {
            return Err(Error::OperationNotInitialized);
        }
        let result = self
            .object_as(&session, key, Error::KeyHandleInvalid)
            .and_then(|key| {
                if key.class() != CKO_SECRET_KEY {
                    return Err(Error::KeyTypeInconsistent);
                }
                // A digest of a hidden key would reveal something of it.
                if key.flag(CKA_SENSITIVE) || !key.flag(CKA_EXTRACTABLE) || key.is_locked() {
                    return Err(Error::KeyIndigestible);
                }
                Ok(Zeroizing::new(
                    key.bytes(CKA_VALUE).unwrap_or_default().to_vec(),
                ))
            });
        match (result, operations.digest.as_mut()) {
            (Ok(value), Some(active)) => {
                active.multipart = true;
                active.state.update(&value);
                Ok(())
            }
            (Err(err), _) => {
                operations.digest = None;
                Err(err)
            }
            (Ok(_), None) => Err(Error::OperationNotInitialized),
        }
    }

    /// C_SignInit / C_VerifyInit: MACs with secret keys, signatures with key pairs.
    pub fn sign_init(
        &self,
        handle: CK_SESSION_HANDLE,
        sign: bool,
        kind: CK_MECHANISM_TYPE,
        parameter: &Parameter,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        if operations.signer(sign).is_some() {
            return Err(Error::OperationActive);
        }
        let (flag, usage) = if sign {
            (CKF_SIGN, CKA_SIGN)
        } else {
            (CKF_VERIFY, CKA_VERIFY)
        };
        let mechanism = mech::lookup_for(kind, flag)?;
        let key = self.object_as(&session, key, Error::KeyHandleInvalid)?;
        check_key(&key, mechanism, kind, usage)?;
        let state = mechanism.signer(&key, parameter, sign)?;
        *operations.signer(sign) = Some(Active::new(state));
        Ok(())
    }

    /// C_SignUpdate / C_VerifyUpdate; an error ends the operation.
    pub fn sign_update(&self, handle: CK_SESSION_HANDLE, sign: bool, input: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        let slot = operations.signer(sign);
        let active = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
        active.multipart = true;
        let result = active.state.update(input);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// C_Sign (Single) / C_SignFinal, with the length-query protocol.
    pub fn sign_step(
        &self,
        handle: CK_SESSION_HANDLE,
        part: Part,
        input: &[u8],
        capacity: Option<usize>,
    ) -> Result<Output> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        let active = operations
            .sign
            .as_mut()
            .ok_or(Error::OperationNotInitialized)?;
        if part == Part::Single && active.multipart {
            return Err(Error::OperationActive);
        }
        let len = active.state.signature_len();
        if let Some(answer) = fixed_output(len, capacity) {
            return Ok(answer);
        }
        let mut active = operations
            .sign
            .take()
            .ok_or(Error::OperationNotInitialized)?;
        active.state.update(input)?;
        Ok(Output::Data(Zeroizing::new(active.state.sign()?)))
    }

    /// C_Verify (Single) / C_VerifyFinal; the operation ends either way.
    pub fn verify_step(
        &self,
        handle: CK_SESSION_HANDLE,
        part: Part,
        input: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut operations = session.operations()?;
        let active = operations
            .verify
            .as_ref()
            .ok_or(Error::OperationNotInitialized)?;
        if part == Part::Single && active.multipart {
            return Err(Error::OperationActive);
        }
        let mut active = operations
            .verify
            .take()
            .ok_or(Error::OperationNotInitialized)?;
        active.state.update(input)?;
        active.state.verify(signature)
    }
}
