//! Storage behind a trait: token records and objects keyed by a stable `ObjectId`.
//! A backend never sees a `CK_RV` nor a clear secret.

pub mod keys;
pub mod sqlite;

use std::fmt;

/// A stored object's stable identity inside one token file.
pub type ObjectId = i64;

/// What a storage backend can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The file is not a keyferry token (or is damaged beyond reading).
    #[error("{path}: not a keyferry token file: {reason}")]
    Corrupt {
        /// The token file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// An I/O error outside SQLite (creating the directory or file).
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's schema is newer than this build understands.
    #[error("{path}: token schema version {found} is newer than this keyferry (knows {known})")]
    SchemaVersion {
        /// The token file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Argon2id cost of one PIN's key derivation, stored with the PIN so it can be raised.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// OWASP's minimum for Argon2id: 19 MiB, two passes, one lane.
    pub const DEFAULT: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Whether the cost is one this machine can pay: at most 1 GiB, 64 passes, 16 lanes.
    /// A token file asking for more is damaged, and allocating it could abort the host.
    pub fn is_bounded(&self) -> bool {
        self.memory_kib <= 1024 * 1024 && self.iterations <= 64 && self.parallelism <= 16
    }

    /// Parse what `Display` wrote; `None` when malformed or unbounded.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("argon2id:m=")?;
        let (memory, rest) = rest.split_once(",t=")?;
        let (iterations, parallelism) = rest.split_once(",p=")?;
        let params = Self {
            memory_kib: memory.parse().ok()?,
            iterations: iterations.parse().ok()?,
            parallelism: parallelism.parse().ok()?,
        };
        params.is_bounded().then_some(params)
    }

    /// Whether `wanted` is a raise of `self`: no parameter of `wanted` is lower and at
    /// least one is higher. Costs that trade one parameter for another (more memory but
    /// fewer passes) are not comparable without a cost model, so they are not a raise:
    /// a raise never lowers any parameter.
    pub fn is_weaker_than(&self, wanted: &Self) -> bool {
        self != wanted
            && self.memory_kib <= wanted.memory_kib
            && self.iterations <= wanted.iterations
            && self.parallelism <= wanted.parallelism
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "argon2id:m={},t={},p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// One PIN's record: its salt, KDF cost and the master key wrapped under its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRecord {
    /// Argon2id salt.
    pub salt: Vec<u8>,
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// The master key, AES-256-GCM under the PIN key.
    pub wrapped_master_key: Vec<u8>,
}

/// Who a PIN belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// The security officer.
    So,
    /// The normal user.
    User,
}

/// The token's own record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// CKA label, up to 32 bytes.
    pub label: String,
    /// Serial number, 16 hex digits.
    pub serial: String,
    /// Slot ID, stable across restarts.
    pub slot_id: u64,
    /// The master key's check value (its domain).
    pub master_key_check: Vec<u8>,
    /// The SO PIN.
    pub so: PinRecord,
    /// The user PIN, once `C_InitPIN` set it.
    pub user: Option<PinRecord>,
    /// Consecutive wrong SO PINs.
    pub so_failures: u32,
    /// Consecutive wrong user PINs.
    pub user_failures: u32,
}

/// An object as stored: clear attributes, and secrets sealed under the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// CKA_UNIQUE_ID.
    pub unique_id: String,
    /// CKA_CLASS, indexed.
    pub class: u64,
    /// CKA_LABEL, indexed.
    pub label: Vec<u8>,
    /// CKA_ID, indexed.
    pub ckid: Vec<u8>,
    /// CKA_PRIVATE, so a search without login skips private objects in the index.
    pub private: bool,
    /// Every non-secret attribute, encoded.
    pub attrs: Vec<u8>,
    /// Secret attributes and the policy's authentication tag, `None` for public objects
    /// with nothing to hide.
    pub sealed: Option<Vec<u8>>,
}

/// What a search can ask of the indexes.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// CKA_CLASS.
    pub class: Option<u64>,
    /// CKA_LABEL.
    pub label: Option<Vec<u8>>,
    /// CKA_ID.
    pub ckid: Option<Vec<u8>>,
    /// CKA_UNIQUE_ID.
    pub unique_id: Option<String>,
    /// Whether private objects may be returned.
    pub include_private: bool,
}

/// A token's persistent store.
pub trait Storage: Send {
    /// The token record.
    fn token(&self) -> Result<TokenRecord, StorageError>;
    /// Replace the token record and delete every object, atomically (`C_InitToken`).
    fn reinitialize(&mut self, record: &TokenRecord) -> Result<(), StorageError>;
    /// Replace one PIN's record and zero its failure counter, touching nothing else, and
    /// only while the token still has the master key whose check value is given; false
    /// when another process re-initialised the token meanwhile.
    fn put_pin(
        &mut self,
        role: Role,
        pin: &PinRecord,
        master_key_check: &[u8],
    ) -> Result<bool, StorageError>;
    /// Replace one PIN's record with `raised`, the same PIN's master-key wrap under a
    /// stronger Argon2id cost, in one transaction and only while the stored record is still
    /// `current`: false, and nothing written, when another process changed the PIN
    /// meanwhile or when `raised` is not a raise of `current` (`KdfParams::is_weaker_than`).
    /// The failure counter is left alone.
    fn raise_pin(
        &mut self,
        role: Role,
        current: &PinRecord,
        raised: &PinRecord,
    ) -> Result<bool, StorageError>;
    /// Add one to a PIN's failure counter, atomically across processes, unless it has
    /// reached `max`: the new count, or `None` when the PIN is locked. Done before a PIN
    /// is checked, so neither a killed process nor a parallel one gets an extra guess.
    fn count_failure(&mut self, role: Role, max: u32) -> Result<Option<u32>, StorageError>;
    /// Set a PIN's failure counter to zero.
    fn reset_failures(&mut self, role: Role) -> Result<(), StorageError>;
    /// Objects the indexes match.
    fn find(&self, query: &Query) -> Result<Vec<ObjectId>, StorageError>;
    /// One object, `None` when it is gone.
    fn get(&self, id: ObjectId) -> Result<Option<StoredObject>, StorageError>;
    /// Store a new object.
    fn insert(&mut self, object: &StoredObject) -> Result<ObjectId, StorageError>;
    /// Replace an object; false when it is gone.
    fn update(&mut self, id: ObjectId, object: &StoredObject) -> Result<bool, StorageError>;
    /// Delete an object; false when it was already gone.
    fn delete(&mut self, id: ObjectId) -> Result<bool, StorageError>;
    /// Changes whenever another process writes; our own writes keep our cache current.
    fn generation(&self) -> Result<u64, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_params_round_trip_through_text() {
        let params = KdfParams {
            memory_kib: 8192,
            iterations: 3,
            parallelism: 2,
        };
        assert_eq!(KdfParams::parse(&params.to_string()), Some(params));
        assert_eq!(KdfParams::parse("argon2id:m=1,t=2"), None);
        assert_eq!(KdfParams::parse("scrypt:m=1,t=2,p=3"), None);
        assert_eq!(KdfParams::parse("argon2id:m=4294967295,t=1,p=1"), None);
    }

    #[test]
    fn only_a_raise_of_no_parameter_lowered_is_weaker() {
        let stored = KdfParams {
            memory_kib: 1024,
            iterations: 2,
            parallelism: 2,
        };
        let with = |memory_kib, iterations, parallelism| KdfParams {
            memory_kib,
            iterations,
            parallelism,
        };
        assert!(stored.is_weaker_than(&with(2048, 2, 2)));
        assert!(stored.is_weaker_than(&with(1024, 3, 2)));
        assert!(stored.is_weaker_than(&with(1024, 2, 4)));
        assert!(stored.is_weaker_than(&with(4096, 8, 4)));
        assert!(!stored.is_weaker_than(&stored), "equal is not weaker");
        assert!(!stored.is_weaker_than(&with(512, 1, 1)), "lower everywhere");
        assert!(
            !stored.is_weaker_than(&with(4096, 1, 2)),
            "more memory, fewer passes"
        );
        assert!(
            !stored.is_weaker_than(&with(512, 8, 2)),
            "fewer KiB, more passes"
        );
        assert!(!stored.is_weaker_than(&with(4096, 8, 1)), "one lane fewer");
        assert!(!KdfParams::DEFAULT.is_weaker_than(&with(64, 1, 1)));
        assert!(with(64, 1, 1).is_weaker_than(&KdfParams::DEFAULT));
    }
}
