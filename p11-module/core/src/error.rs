//! The core's typed error and its one mapping to `CK_RV`.

use pkcs11_sys::*;

use crate::store::StorageError;

/// Everything a PKCS#11 call can fail with. Variants name what went wrong; `rv()` picks
/// the return code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plaintext has the wrong length for the mechanism.
    #[error("data length out of range")]
    DataLenRange,
    /// The data is malformed for the mechanism.
    #[error("data invalid")]
    DataInvalid,
    /// The ciphertext failed authentication or its padding is wrong.
    #[error("encrypted data invalid")]
    EncryptedDataInvalid,
    /// The ciphertext has the wrong length for the mechanism.
    #[error("encrypted data length out of range")]
    EncryptedDataLenRange,
    /// The object's CKA_COPYABLE or CKA_DESTROYABLE forbids the action.
    #[error("action prohibited by the object's attributes")]
    ActionProhibited,
    /// A pointer, length or flag combination the spec calls bad.
    #[error("bad arguments: {0}")]
    ArgumentsBad(&'static str),
    /// The attribute may not be set or changed here.
    #[error("attribute 0x{0:x} is read-only")]
    AttributeReadOnly(CK_ATTRIBUTE_TYPE),
    /// The attribute's value may not be revealed.
    #[error("attribute 0x{0:x} is sensitive")]
    AttributeSensitive(CK_ATTRIBUTE_TYPE),
    /// The attribute does not belong to this kind of object.
    #[error("attribute 0x{0:x} is not valid for this object")]
    AttributeTypeInvalid(CK_ATTRIBUTE_TYPE),
    /// The attribute's value has the wrong length or content.
    #[error("attribute 0x{0:x} has an invalid value")]
    AttributeValueInvalid(CK_ATTRIBUTE_TYPE),
    /// An output buffer is too small; the length word says how much is needed.
    #[error("buffer too small")]
    BufferTooSmall,
    /// The application asked for locking we cannot provide.
    #[error("cannot lock as requested")]
    CantLock,
    /// The configuration file is missing a value, malformed or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// `C_Initialize` was called twice.
    #[error("cryptoki already initialised")]
    CryptokiAlreadyInitialized,
    /// A call came before `C_Initialize` (or in a forked child that did not call it).
    #[error("cryptoki not initialised")]
    CryptokiNotInitialized,
    /// A legacy parallel-function call (`C_GetFunctionStatus`, `C_CancelFunction`).
    #[error("function not parallel")]
    FunctionNotParallel,
    /// The function is not provided by this module.
    #[error("function not supported")]
    FunctionNotSupported,
    /// A failure with no closer code; the text names it for the log.
    #[error("{0}")]
    General(String),
    /// The key's attributes forbid this use (CKA_ENCRYPT, CKA_SIGN, …).
    #[error("key function not permitted")]
    KeyFunctionNotPermitted,
    /// The key handle is not a key of this token.
    #[error("key handle invalid")]
    KeyHandleInvalid,
    /// The key's value may not join a digest (it is sensitive or unextractable).
    #[error("key indigestible")]
    KeyIndigestible,
    /// The key is not wrappable: CKA_WRAP_WITH_TRUSTED and an untrusted wrapping key.
    #[error("key not wrappable")]
    KeyNotWrappable,
    /// The key's length does not suit the mechanism.
    #[error("key size out of range")]
    KeySizeRange,
    /// The key's class or type does not suit the mechanism.
    #[error("key type inconsistent")]
    KeyTypeInconsistent,
    /// The key is CKA_EXTRACTABLE false.
    #[error("key unextractable")]
    KeyUnextractable,
    /// The mechanism is unknown or not allowed for this call.
    #[error("mechanism 0x{0:x} invalid")]
    MechanismInvalid(CK_MECHANISM_TYPE),
    /// The mechanism's parameter is wrong.
    #[error("mechanism parameter invalid")]
    MechanismParamInvalid,
    /// The curve CKA_EC_PARAMS names is not offered.
    #[error("curve not supported")]
    CurveNotSupported,
    /// `C_WaitForSlotEvent` with `CKF_DONT_BLOCK` found nothing.
    #[error("no slot event")]
    NoEvent,
    /// The object handle is unknown, destroyed, or not visible to this session.
    #[error("object handle invalid")]
    ObjectHandleInvalid,
    /// An object stored on the token failed authentication: edited behind our back.
    #[error("object {0} failed authentication; the token file was modified outside keyferry")]
    ObjectTampered(String),
    /// Another operation of this kind is already active on the session.
    #[error("operation active")]
    OperationActive,
    /// The operation was never initialised on this session.
    #[error("operation not initialised")]
    OperationNotInitialized,
    /// A MAC or signature does not verify.
    #[error("signature invalid")]
    SignatureInvalid,
    /// A MAC or signature has the wrong length.
    #[error("signature length out of range")]
    SignatureLenRange,
    /// The PIN does not match.
    #[error("PIN incorrect")]
    PinIncorrect,
    /// The new PIN has characters we refuse.
    #[error("PIN invalid")]
    PinInvalid,
    /// The new PIN is too short or too long.
    #[error("PIN length out of range")]
    PinLenRange,
    /// Too many wrong PINs: the PIN is locked.
    #[error("PIN locked")]
    PinLocked,
    /// The token's RNG cannot be seeded.
    #[error("random seed not supported")]
    RandomSeedNotSupported,
    /// The session limit was reached.
    #[error("too many sessions")]
    SessionCount,
    /// A session exists where the call needs none (e.g. `C_InitToken`).
    #[error("a session is open")]
    SessionExists,
    /// The session handle is unknown or closed.
    #[error("session handle invalid")]
    SessionHandleInvalid,
    /// `CKF_SERIAL_SESSION` was not set.
    #[error("parallel sessions not supported")]
    SessionParallelNotSupported,
    /// A write was tried in a read-only session.
    #[error("session is read-only")]
    SessionReadOnly,
    /// An SO login was tried while read-only sessions exist.
    #[error("a read-only session exists")]
    SessionReadOnlyExists,
    /// A read-only session was asked for while the SO is logged in.
    #[error("the SO has a read/write session")]
    SessionReadWriteSoExists,
    /// The slot ID names no slot.
    #[error("slot {0} does not exist")]
    SlotIdInvalid(CK_SLOT_ID),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The template lacks an attribute the object needs.
    #[error("template incomplete: attribute 0x{0:x} missing")]
    TemplateIncomplete(CK_ATTRIBUTE_TYPE),
    /// The template contradicts itself or the mechanism.
    #[error("template inconsistent: attribute 0x{0:x}")]
    TemplateInconsistent(CK_ATTRIBUTE_TYPE),
    /// The slot holds no initialised token.
    #[error("token not initialised")]
    TokenNotRecognized,
    /// The requested login type is already logged in.
    #[error("user already logged in")]
    UserAlreadyLoggedIn,
    /// The other login type is logged in.
    #[error("another user already logged in")]
    UserAnotherAlreadyLoggedIn,
    /// The call needs a login that is not there.
    #[error("user not logged in")]
    UserNotLoggedIn,
    /// The user PIN was never set.
    #[error("user PIN not initialised")]
    UserPinNotInitialized,
    /// The unwrapping key handle is not a key of this token.
    #[error("unwrapping key handle invalid")]
    UnwrappingKeyHandleInvalid,
    /// The unwrapping key's length does not suit the mechanism.
    #[error("unwrapping key size out of range")]
    UnwrappingKeySizeRange,
    /// The unwrapping key's type does not suit the mechanism.
    #[error("unwrapping key type inconsistent")]
    UnwrappingKeyTypeInconsistent,
    /// The user type is not CKU_SO, CKU_USER or CKU_CONTEXT_SPECIFIC.
    #[error("user type invalid")]
    UserTypeInvalid,
    /// A wrapped key failed authentication or is malformed.
    #[error("wrapped key invalid")]
    WrappedKeyInvalid,
    /// A wrapped key has the wrong length.
    #[error("wrapped key length out of range")]
    WrappedKeyLenRange,
    /// The wrapping key handle is not a key of this token.
    #[error("wrapping key handle invalid")]
    WrappingKeyHandleInvalid,
    /// The wrapping key's length does not suit the mechanism.
    #[error("wrapping key size out of range")]
    WrappingKeySizeRange,
    /// The wrapping key's type does not suit the mechanism.
    #[error("wrapping key type inconsistent")]
    WrappingKeyTypeInconsistent,
}

impl Error {
    /// The only mapping to return codes. No `_` arm: a new variant forces a decision.
    pub fn rv(&self) -> CK_RV {
        match self {
            Self::ActionProhibited => CKR_ACTION_PROHIBITED,
            Self::ArgumentsBad(_) => CKR_ARGUMENTS_BAD,
            Self::AttributeReadOnly(_) => CKR_ATTRIBUTE_READ_ONLY,
            Self::AttributeSensitive(_) => CKR_ATTRIBUTE_SENSITIVE,
            Self::AttributeTypeInvalid(_) => CKR_ATTRIBUTE_TYPE_INVALID,
            Self::AttributeValueInvalid(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            Self::BufferTooSmall => CKR_BUFFER_TOO_SMALL,
            Self::CantLock => CKR_CANT_LOCK,
            Self::Config(_) => CKR_GENERAL_ERROR,
            Self::CryptokiAlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Self::CryptokiNotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
            Self::CurveNotSupported => CKR_CURVE_NOT_SUPPORTED,
            Self::DataInvalid => CKR_DATA_INVALID,
            Self::DataLenRange => CKR_DATA_LEN_RANGE,
            Self::EncryptedDataInvalid => CKR_ENCRYPTED_DATA_INVALID,
            Self::EncryptedDataLenRange => CKR_ENCRYPTED_DATA_LEN_RANGE,
            Self::FunctionNotParallel => CKR_FUNCTION_NOT_PARALLEL,
            Self::FunctionNotSupported => CKR_FUNCTION_NOT_SUPPORTED,
            Self::General(_) => CKR_GENERAL_ERROR,
            Self::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
            Self::KeyHandleInvalid => CKR_KEY_HANDLE_INVALID,
            Self::KeyIndigestible => CKR_KEY_INDIGESTIBLE,
            Self::KeyNotWrappable => CKR_KEY_NOT_WRAPPABLE,
            Self::KeySizeRange => CKR_KEY_SIZE_RANGE,
            Self::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
            Self::KeyUnextractable => CKR_KEY_UNEXTRACTABLE,
            Self::MechanismInvalid(_) => CKR_MECHANISM_INVALID,
            Self::MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID,
            Self::NoEvent => CKR_NO_EVENT,
            Self::ObjectHandleInvalid => CKR_OBJECT_HANDLE_INVALID,
            Self::ObjectTampered(_) => CKR_DEVICE_ERROR,
            Self::OperationActive => CKR_OPERATION_ACTIVE,
            Self::OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
            Self::PinIncorrect => CKR_PIN_INCORRECT,
            Self::PinInvalid => CKR_PIN_INVALID,
            Self::PinLenRange => CKR_PIN_LEN_RANGE,
            Self::PinLocked => CKR_PIN_LOCKED,
            Self::RandomSeedNotSupported => CKR_RANDOM_SEED_NOT_SUPPORTED,
            Self::SessionCount => CKR_SESSION_COUNT,
            Self::SignatureInvalid => CKR_SIGNATURE_INVALID,
            Self::SignatureLenRange => CKR_SIGNATURE_LEN_RANGE,
            Self::SessionExists => CKR_SESSION_EXISTS,
            Self::SessionHandleInvalid => CKR_SESSION_HANDLE_INVALID,
            Self::SessionParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Self::SessionReadOnly => CKR_SESSION_READ_ONLY,
            Self::SessionReadOnlyExists => CKR_SESSION_READ_ONLY_EXISTS,
            Self::SessionReadWriteSoExists => CKR_SESSION_READ_WRITE_SO_EXISTS,
            Self::SlotIdInvalid(_) => CKR_SLOT_ID_INVALID,
            Self::Storage(_) => CKR_DEVICE_ERROR,
            Self::TemplateIncomplete(_) => CKR_TEMPLATE_INCOMPLETE,
            Self::TemplateInconsistent(_) => CKR_TEMPLATE_INCONSISTENT,
            Self::TokenNotRecognized => CKR_TOKEN_NOT_RECOGNIZED,
            Self::UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN,
            Self::UserAnotherAlreadyLoggedIn => CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            Self::UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN,
            Self::UserPinNotInitialized => CKR_USER_PIN_NOT_INITIALIZED,
            Self::UnwrappingKeyHandleInvalid => CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            Self::UnwrappingKeySizeRange => CKR_UNWRAPPING_KEY_SIZE_RANGE,
            Self::UnwrappingKeyTypeInconsistent => CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            Self::UserTypeInvalid => CKR_USER_TYPE_INVALID,
            Self::WrappedKeyInvalid => CKR_WRAPPED_KEY_INVALID,
            Self::WrappedKeyLenRange => CKR_WRAPPED_KEY_LEN_RANGE,
            Self::WrappingKeyHandleInvalid => CKR_WRAPPING_KEY_HANDLE_INVALID,
            Self::WrappingKeySizeRange => CKR_WRAPPING_KEY_SIZE_RANGE,
            Self::WrappingKeyTypeInconsistent => CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        }
    }
}

/// Results of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
