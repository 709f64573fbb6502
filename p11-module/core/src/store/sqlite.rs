//! The SQLite store: one file per token, WAL, a busy timeout for other processes, a
//! schema version, and indexes so finding one object among 100 000 stays cheap.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::{
    KdfParams, ObjectId, PinRecord, Query, Role, Storage, StorageError, StoredObject, TokenRecord,
};

/// The schema this build writes; `PRAGMA user_version` of every token file.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE token (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    label TEXT NOT NULL,
    serial TEXT NOT NULL,
    slot_id INTEGER NOT NULL,
    master_key_check BLOB NOT NULL,
    so_salt BLOB NOT NULL,
    so_kdf TEXT NOT NULL,
    so_wrapped BLOB NOT NULL,
    user_salt BLOB,
    user_kdf TEXT,
    user_wrapped BLOB,
    so_failures INTEGER NOT NULL DEFAULT 0,
    user_failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unique_id TEXT NOT NULL UNIQUE,
    class INTEGER NOT NULL,
    label BLOB NOT NULL,
    ckid BLOB NOT NULL,
    private INTEGER NOT NULL,
    attrs BLOB NOT NULL,
    sealed BLOB
);
CREATE INDEX objects_class_label ON objects (class, label);
CREATE INDEX objects_class_ckid ON objects (class, ckid);
CREATE INDEX objects_label ON objects (label);
";

/// A token file.
pub struct SqliteStore {
    // Declared, so dropped, before `wal`: SQLite closes its files before the watch does.
    conn: Connection,
    path: PathBuf,
    wal: Option<RefCell<WalWatch>>,
}

/// The WAL-index header at the start of the `-shm` file: two copies of SQLite's 48-byte
/// `WalIndexHdr` (change counter, last frame, page count, salts, checksums), which every
/// commit by any connection rewrites, the second copy first.
const WAL_INDEX_HEADER: usize = 96;

/// Tells, with one `pread` and no transaction, that no connection has committed since
/// the last `PRAGMA data_version`: a token object is checked before every use, and the
/// read transaction that query needs costs four `fcntl` locks.
struct WalWatch {
    /// The `-shm` file, read-only, opened once SQLite has made it. Never closed before
    /// the connection is: closing any descriptor of a file drops every POSIX lock this
    /// process holds on it, SQLite's included.
    shm: Option<File>,
    /// The header last seen, with the `data_version` read after it.
    seen: Option<([u8; WAL_INDEX_HEADER], u64)>,
}

impl WalWatch {
    /// The header, when it can be read whole and its two copies agree (a commit in the
    /// middle of writing it shows as a disagreement).
    fn header(&self) -> Option<[u8; WAL_INDEX_HEADER]> {
        use std::os::unix::fs::FileExt;
        let mut header = [0u8; WAL_INDEX_HEADER];
        self.shm.as_ref()?.read_exact_at(&mut header, 0).ok()?;
        let (first, second) = header.split_at(WAL_INDEX_HEADER / 2);
        // Byte 12 of a WalIndexHdr is isInit.
        (first == second && first[12] != 0).then_some(header)
    }

    /// After this connection's commit: `before` is the header read under its write lock,
    /// `version` the `data_version` read there. The header now is noted as seen only when
    /// it is one commit on from `before` — ours; another process's commit after ours
    /// moves it further, and SQLite is asked at the next `generation`.
    fn note_own_commit(&mut self, before: Option<[u8; WAL_INDEX_HEADER]>, version: u64) {
        if let (Some(before), Some(after)) = (before, self.header())
            && Self::change_counter(&after) == Self::change_counter(&before).wrapping_add(1)
        {
            self.seen = Some((after, version));
        }
    }

    /// A header's change counter (`iChange`, the third native-endian u32 of a
    /// WalIndexHdr): every commit and every restart of the WAL adds one.
    fn change_counter(header: &[u8; WAL_INDEX_HEADER]) -> u32 {
        u32::from_ne_bytes([header[8], header[9], header[10], header[11]])
    }
}

/// `PRAGMA data_version` on a connection: it changes when another connection commits.
fn data_version(conn: &Connection) -> Result<u64, StorageError> {
    let version: i64 = conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))?;
    Ok(version as u64)
}

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuse a file that does not start as an SQLite database before SQLite opens it:
/// SQLite treats an empty file as a new database and `journal_mode=WAL` would write a
/// header into it, and a foreign file would get `-wal`/`-shm` files beside it. A damaged
/// token is left exactly as it was found.
fn check_header(path: &Path) -> Result<(), StorageError> {
    use std::io::Read;
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let mut header = Vec::with_capacity(SQLITE_MAGIC.len());
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(SQLITE_MAGIC.len() as u64)
                .read_to_end(&mut header)
        })
        .map_err(|err| corrupt(err.to_string()))?;
    match header.len() {
        0 => Err(corrupt("empty file".into())),
        _ if header.as_slice() != SQLITE_MAGIC => {
            Err(corrupt("not an SQLite database (bad header)".into()))
        }
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// Create a new token file (mode 0600) holding `record`; fails if it exists.
    ///
    /// The file is built under a hidden name and linked into place complete, so another
    /// process scanning the directory never meets a token without its schema.
    pub fn create(path: &Path, record: &TokenRecord) -> Result<Self, StorageError> {
        let io = |source| StorageError::Io {
            path: path.display().to_string(),
            source,
        };
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = path.with_file_name(format!(".{file_name}.partial"));
        // A partial file is only ever left by a crash during an earlier create.
        let _ = std::fs::remove_file(&partial);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io)?;
        let built = Self::build(&partial, record).and_then(|()| {
            std::fs::File::open(&partial)
                .and_then(|file| file.sync_all())
                .map_err(io)?;
            // hard_link, unlike rename, refuses to replace an existing token.
            std::fs::hard_link(&partial, path).map_err(io)
        });
        let _ = std::fs::remove_file(&partial);
        built?;
        if let Some(dir) = path.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Self::open(path)
    }

    /// Writes the schema, the token record and the user PIN into a fresh file; the
    /// connection closes at the end, which folds the WAL back into the file.
    fn build(path: &Path, record: &TokenRecord) -> Result<(), StorageError> {
        let mut store = Self::connect(path)?;
        let tx = store.conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.execute(
            "INSERT INTO token (id, label, serial, slot_id, master_key_check, so_salt, so_kdf,
             so_wrapped) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                record.label,
                record.serial,
                record.slot_id as i64,
                record.master_key_check,
                record.so.salt,
                record.so.kdf.to_string(),
                record.so.wrapped_master_key,
            ],
        )?;
        tx.commit()?;
        if let Some(user) = &record.user {
            store.put_pin(Role::User, user, &record.master_key_check)?;
        }
        Ok(())
    }

    /// Open an existing token file, checking its schema version.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if !path.is_file() {
            return Err(StorageError::Corrupt {
                path: path.display().to_string(),
                reason: "no such file".into(),
            });
        }
        check_header(path)?;
        let store = Self::connect(path)?;
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        match version {
            SCHEMA_VERSION => {}
            found if found > SCHEMA_VERSION => {
                return Err(StorageError::SchemaVersion {
                    path: path.display().to_string(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            found => return Err(store.corrupt(format!("unknown schema version {found}"))),
        }
        store.token()?;
        Ok(store)
    }

    fn connect(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Room for every statement shape the store prepares (finds by several keys among
        // them), so none is parsed again after its first use.
        conn.set_prepared_statement_cache_capacity(64);
        // A file that is not SQLite fails here, on the first read of its header.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|err| StorageError::Corrupt {
                path: path.display().to_string(),
                reason: err.to_string(),
            })?;
        let wal = mode.eq_ignore_ascii_case("wal");
        if !wal {
            tracing::warn!(path = %path.display(), mode, "WAL unavailable; using the rollback journal");
        }
        // FULL: a call that returned CKR_OK survives power loss, not only a killed process.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Deleted objects and replaced PIN records are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            wal: wal.then(|| {
                RefCell::new(WalWatch {
                    shm: None,
                    seen: None,
                })
            }),
        })
    }

    /// Runs one change in a transaction of its own. When this commit is the only one
    /// between the header read before it and the one read after, the new header is noted
    /// as seen with the `data_version` read inside the transaction (a connection's own
    /// commits leave its `data_version` alone): otherwise the next `generation` would take
    /// this commit for another connection's and pay the query it exists to avoid.
    fn change<T>(
        &mut self,
        body: impl FnOnce(&Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let Self { conn, wal, .. } = self;
        let Some(watch) = wal else {
            return body(conn);
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Under the write lock: no other connection can commit until ours is done.
        let version = data_version(&tx)?;
        let before = watch.get_mut().header();
        let done = body(&tx)?;
        tx.commit()?;
        watch.get_mut().note_own_commit(before, version);
        Ok(done)
    }

    fn data_version(&self) -> Result<u64, StorageError> {
        data_version(&self.conn)
    }

    fn corrupt(&self, reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.display().to_string(),
            reason,
        }
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn pin(
        &self,
        salt: Option<Vec<u8>>,
        kdf: Option<String>,
        wrapped: Option<Vec<u8>>,
    ) -> Result<Option<PinRecord>, StorageError> {
        match (salt, kdf, wrapped) {
            (Some(salt), Some(kdf), Some(wrapped_master_key)) => {
                let kdf = KdfParams::parse(&kdf)
                    .ok_or_else(|| self.corrupt(format!("bad KDF parameters {kdf:?}")))?;
                Ok(Some(PinRecord {
                    salt,
                    kdf,
                    wrapped_master_key,
                }))
            }
            (None, None, None) => Ok(None),
            _ => Err(self.corrupt("half a PIN record".into())),
        }
    }
}

fn pin_prefix(role: Role) -> &'static str {
    match role {
        Role::So => "so",
        Role::User => "user",
    }
}

fn failures_column(role: Role) -> &'static str {
    match role {
        Role::So => "so_failures",
        Role::User => "user_failures",
    }
}

fn write_token(conn: &Connection, record: &TokenRecord) -> Result<(), StorageError> {
    let user = record.user.as_ref();
    conn.execute(
        "UPDATE token SET label = ?1, serial = ?2, slot_id = ?3, master_key_check = ?4,
         so_salt = ?5, so_kdf = ?6, so_wrapped = ?7, user_salt = ?8, user_kdf = ?9,
         user_wrapped = ?10, so_failures = ?11, user_failures = ?12 WHERE id = 1",
        params![
            record.label,
            record.serial,
            record.slot_id as i64,
            record.master_key_check,
            record.so.salt,
            record.so.kdf.to_string(),
            record.so.wrapped_master_key,
            user.map(|pin| &pin.salt),
            user.map(|pin| pin.kdf.to_string()),
            user.map(|pin| &pin.wrapped_master_key),
            record.so_failures,
            record.user_failures,
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Push the WAL into the database and truncate it, so replaced PIN records and
    /// deleted objects do not linger in the log.
    fn checkpoint(&self) -> Result<(), StorageError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

impl Storage for SqliteStore {
    fn token(&self) -> Result<TokenRecord, StorageError> {
        type Row = (String, String, i64, Vec<u8>, Vec<u8>, String, Vec<u8>);
        type UserRow = (Option<Vec<u8>>, Option<String>, Option<Vec<u8>>, u32, u32);
        let row: Option<(Row, UserRow)> = self
            .conn
            .query_row(
                "SELECT label, serial, slot_id, master_key_check, so_salt, so_kdf, so_wrapped,
                 user_salt, user_kdf, user_wrapped, so_failures, user_failures
                 FROM token WHERE id = 1",
                [],
                |row| {
                    Ok((
                        (
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                            row.get(6)?,
                        ),
                        (
                            row.get(7)?,
                            row.get(8)?,
                            row.get(9)?,
                            row.get(10)?,
                            row.get(11)?,
                        ),
                    ))
                },
            )
            .optional()?;
        let ((label, serial, slot_id, master_key_check, so_salt, so_kdf, so_wrapped), user) =
            row.ok_or_else(|| self.corrupt("no token record".into()))?;
        let so = self
            .pin(Some(so_salt), Some(so_kdf), Some(so_wrapped))?
            .ok_or_else(|| self.corrupt("no SO PIN".into()))?;
        let (user_salt, user_kdf, user_wrapped, so_failures, user_failures) = user;
        Ok(TokenRecord {
            label,
            serial,
            slot_id: u64::try_from(slot_id).map_err(|_| self.corrupt("negative slot".into()))?,
            master_key_check,
            so,
            user: self.pin(user_salt, user_kdf, user_wrapped)?,
            so_failures,
            user_failures,
        })
    }

    fn reinitialize(&mut self, record: &TokenRecord) -> Result<(), StorageError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM objects", [])?;
        write_token(&tx, record)?;
        tx.commit()?;
        self.checkpoint()
    }

    fn put_pin(
        &mut self,
        role: Role,
        pin: &PinRecord,
        master_key_check: &[u8],
    ) -> Result<bool, StorageError> {
        let prefix = pin_prefix(role);
        let changed = self.conn.execute(
            &format!(
                "UPDATE token SET {prefix}_salt = ?1, {prefix}_kdf = ?2, {prefix}_wrapped = ?3,
                 {prefix}_failures = 0 WHERE id = 1 AND master_key_check = ?4"
            ),
            params![
                pin.salt,
                pin.kdf.to_string(),
                pin.wrapped_master_key,
                master_key_check
            ],
        )?;
        self.checkpoint()?;
        Ok(changed == 1)
    }

    fn raise_pin(
        &mut self,
        role: Role,
        current: &PinRecord,
        raised: &PinRecord,
    ) -> Result<bool, StorageError> {
        if !current.kdf.is_weaker_than(&raised.kdf) {
            return Ok(false);
        }
        let prefix = pin_prefix(role);
        // One statement in one transaction: a crash leaves either the old wrap or the new
        // one, each complete and each opened by the same PIN.
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            &format!(
                "UPDATE token SET {prefix}_salt = ?1, {prefix}_kdf = ?2, {prefix}_wrapped = ?3
                 WHERE id = 1 AND {prefix}_salt = ?4 AND {prefix}_kdf = ?5
                 AND {prefix}_wrapped = ?6"
            ),
            params![
                raised.salt,
                raised.kdf.to_string(),
                raised.wrapped_master_key,
                current.salt,
                current.kdf.to_string(),
                current.wrapped_master_key,
            ],
        )?;
        tx.commit()?;
        if changed == 1 {
            self.checkpoint()?;
        }
        Ok(changed == 1)
    }

    fn count_failure(&mut self, role: Role, max: u32) -> Result<Option<u32>, StorageError> {
        let column = failures_column(role);
        let count = self
            .conn
            .query_row(
                &format!("UPDATE token SET {column} = {column} + 1 WHERE id = 1 AND {column} < ?1 RETURNING {column}"),
                [max],
                |row| row.get(0),
            )
            .optional()?;
        Ok(count)
    }

    fn reset_failures(&mut self, role: Role) -> Result<(), StorageError> {
        let column = failures_column(role);
        self.conn.execute(
            &format!("UPDATE token SET {column} = 0 WHERE id = 1 AND {column} != 0"),
            [],
        )?;
        Ok(())
    }

    fn find(&self, query: &Query) -> Result<Vec<ObjectId>, StorageError> {
        let mut sql = String::from("SELECT id FROM objects WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(class) = query.class {
            args.push((class as i64).into());
            sql.push_str(&format!(" AND class = ?{}", args.len()));
        }
        if let Some(label) = &query.label {
            args.push(label.clone().into());
            sql.push_str(&format!(" AND label = ?{}", args.len()));
        }
        if let Some(ckid) = &query.ckid {
            args.push(ckid.clone().into());
            sql.push_str(&format!(" AND ckid = ?{}", args.len()));
        }
        if let Some(unique_id) = &query.unique_id {
            args.push(unique_id.clone().into());
            sql.push_str(&format!(" AND unique_id = ?{}", args.len()));
        }
        if !query.include_private {
            sql.push_str(" AND private = 0");
        }
        sql.push_str(" ORDER BY id");
        let mut statement = self.conn.prepare_cached(&sql)?;
        let ids = statement
            .query_map(rusqlite::params_from_iter(args), |row| row.get(0))?
            .collect::<Result<Vec<ObjectId>, _>>()?;
        Ok(ids)
    }

    fn get(&self, id: ObjectId) -> Result<Option<StoredObject>, StorageError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT unique_id, class, label, ckid, private, attrs, sealed FROM objects WHERE id = ?1",
        )?;
        let object = statement
            .query_row([id], |row| {
                Ok(StoredObject {
                    unique_id: row.get(0)?,
                    class: row.get::<_, i64>(1)? as u64,
                    label: row.get(2)?,
                    ckid: row.get(3)?,
                    private: row.get(4)?,
                    attrs: row.get(5)?,
                    sealed: row.get(6)?,
                })
            })
            .optional()
            .map_err(|err| match err {
                rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..) => {
                    self.corrupt(format!("object row {id}: {err}"))
                }
                other => StorageError::Sqlite(other),
            })?;
        Ok(object)
    }

    fn insert(&mut self, object: &StoredObject) -> Result<ObjectId, StorageError> {
        self.change(|conn| {
            let mut statement = conn.prepare_cached(
                "INSERT INTO objects (unique_id, class, label, ckid, private, attrs, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            statement.execute(params![
                object.unique_id,
                object.class as i64,
                object.label,
                object.ckid,
                object.private,
                object.attrs,
                object.sealed,
            ])?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn update(&mut self, id: ObjectId, object: &StoredObject) -> Result<bool, StorageError> {
        self.change(|conn| {
            let mut statement = conn.prepare_cached(
                "UPDATE objects SET unique_id = ?2, class = ?3, label = ?4, ckid = ?5,
                 private = ?6, attrs = ?7, sealed = ?8 WHERE id = ?1",
            )?;
            let changed = statement.execute(params![
                id,
                object.unique_id,
                object.class as i64,
                object.label,
                object.ckid,
                object.private,
                object.attrs,
                object.sealed,
            ])?;
            Ok(changed == 1)
        })
    }

    fn delete(&mut self, id: ObjectId) -> Result<bool, StorageError> {
        self.change(|conn| {
            let mut statement = conn.prepare_cached("DELETE FROM objects WHERE id = ?1")?;
            Ok(statement.execute([id])? == 1)
        })
    }

    fn generation(&self) -> Result<u64, StorageError> {
        let Some(watch) = &self.wal else {
            return self.data_version();
        };
        let mut watch = watch.borrow_mut();
        let header = watch.header();
        if let (Some(header), Some((seen, version))) = (&header, &watch.seen)
            && header == seen
        {
            return Ok(*version);
        }
        // The header is read before the query: a commit between the two moves the
        // header again, and the next call asks SQLite once more.
        let version = self.data_version()?;
        watch.seen = header.map(|header| (header, version));
        if watch.shm.is_none() {
            // The query made SQLite open (or create) the file; without it, always ask.
            let mut shm_path = self.path.as_os_str().to_owned();
            shm_path.push("-shm");
            watch.shm = File::open(&shm_path).ok();
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        TokenRecord {
            label: "t".into(),
            serial: "0011223344556677".into(),
            slot_id: 3,
            master_key_check: vec![1, 2, 3],
            so: PinRecord {
                salt: vec![9; 16],
                kdf: KdfParams::DEFAULT,
                wrapped_master_key: vec![7; 60],
            },
            user: None,
            so_failures: 0,
            user_failures: 0,
        }
    }

    fn object(label: &str) -> StoredObject {
        StoredObject {
            unique_id: format!("uid-{label}"),
            class: 4,
            label: label.as_bytes().to_vec(),
            ckid: vec![],
            private: true,
            attrs: vec![],
            sealed: Some(vec![1]),
        }
    }

    #[test]
    fn token_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.kftoken");
        let mut store = SqliteStore::create(&path, &record()).expect("created");
        assert_eq!(
            std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            store.count_failure(Role::User, 2).expect("counted"),
            Some(1)
        );
        assert_eq!(
            store.count_failure(Role::User, 2).expect("counted"),
            Some(2)
        );
        assert_eq!(
            store.count_failure(Role::User, 2).expect("counted"),
            None,
            "locked at the limit"
        );
        let id = store.insert(&object("a")).expect("inserted");
        drop(store);
        let store = SqliteStore::open(&path).expect("reopened");
        assert_eq!(store.token().expect("record").user_failures, 2);
        let query = Query {
            label: Some(b"a".to_vec()),
            include_private: true,
            ..Query::default()
        };
        assert_eq!(store.find(&query).expect("found"), vec![id]);
        let public_only = Query {
            label: Some(b"a".to_vec()),
            ..Query::default()
        };
        assert!(store.find(&public_only).expect("searched").is_empty());
    }

    #[test]
    fn the_generation_moves_with_every_other_connections_commit_and_only_then() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("g.kftoken");
        let mut ours = SqliteStore::create(&path, &record()).expect("created");
        let mut theirs = SqliteStore::open(&path).expect("opened twice");
        let start = ours.generation().expect("generation");
        assert_eq!(
            ours.generation().expect("generation"),
            start,
            "nobody wrote"
        );
        let mut last = start;
        for round in 0..50 {
            theirs
                .insert(&object(&format!("o{round}")))
                .expect("inserted");
            let seen = ours.generation().expect("generation");
            assert_ne!(
                seen, last,
                "round {round}: another connection's commit was missed"
            );
            last = seen;
            assert_eq!(ours.generation().expect("generation"), seen);
            // Our own commits are no news to us (SQLite's data_version semantics).
            ours.insert(&object(&format!("p{round}")))
                .expect("inserted");
            assert_eq!(ours.generation().expect("generation"), seen);
        }
        // A plain SQLite connection (another program) is seen the same way.
        let seen = ours.generation().expect("generation");
        rusqlite::Connection::open(&path)
            .expect("opened")
            .execute("UPDATE token SET label = 'edited'", [])
            .expect("edited");
        assert_ne!(ours.generation().expect("generation"), seen);
        // And a checkpoint that resets the WAL too.
        let seen = ours.generation().expect("generation");
        theirs
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpointed");
        theirs.insert(&object("after")).expect("inserted");
        assert_ne!(ours.generation().expect("generation"), seen);
    }

    #[test]
    fn our_own_commit_is_noted_as_seen_without_hiding_anothers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("n.kftoken");
        let mut ours = SqliteStore::create(&path, &record()).expect("created");
        let mut theirs = SqliteStore::open(&path).expect("opened twice");
        let noted = |store: &SqliteStore| {
            let watch = store.wal.as_ref().expect("WAL mode").borrow();
            watch.header().is_some() && watch.seen.map(|(header, _)| header) == watch.header()
        };
        let mut last = ours.generation().expect("generation");
        for round in 0..20 {
            ours.insert(&object(&format!("a{round}")))
                .expect("inserted");
            assert!(noted(&ours), "round {round}: our commit was not noted");
            assert_eq!(ours.generation().expect("generation"), last);
            // Theirs before ours: our transaction reads the new data_version.
            theirs
                .insert(&object(&format!("b{round}")))
                .expect("inserted");
            ours.insert(&object(&format!("c{round}")))
                .expect("inserted");
            let seen = ours.generation().expect("generation");
            assert_ne!(seen, last, "round {round}: a commit before ours was missed");
            assert_eq!(seen, ours.data_version().expect("data_version"));
            // Theirs after ours: the change counter moved twice, so SQLite is asked.
            ours.insert(&object(&format!("d{round}")))
                .expect("inserted");
            theirs
                .insert(&object(&format!("e{round}")))
                .expect("inserted");
            last = ours.generation().expect("generation");
            assert_ne!(last, seen, "round {round}: a commit after ours was missed");
        }
    }

    #[test]
    fn a_commit_landing_between_ours_and_the_header_read_is_not_noted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.kftoken");
        let ours = SqliteStore::create(&path, &record()).expect("created");
        let mut theirs = SqliteStore::open(&path).expect("opened twice");
        let version = ours.generation().expect("generation");
        let watch = ours.wal.as_ref().expect("WAL mode");
        let before = watch.borrow().header();
        // Our commit, then theirs before we read the header again: what `change` sees
        // when another process commits in that window.
        ours.conn
            .execute("UPDATE token SET label = 'ours'", [])
            .expect("our commit");
        theirs.insert(&object("theirs")).expect("their commit");
        watch.borrow_mut().note_own_commit(before, version);
        assert_ne!(
            ours.generation().expect("generation"),
            version,
            "their commit was hidden behind ours"
        );
    }

    fn pin(kdf: KdfParams, byte: u8) -> PinRecord {
        PinRecord {
            salt: vec![byte; 16],
            kdf,
            wrapped_master_key: vec![byte; 60],
        }
    }

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn a_raise_replaces_only_the_record_it_was_made_from_and_never_lowers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.kftoken");
        let mut initial = record();
        initial.so = pin(CHEAP, 1);
        initial.user = Some(pin(CHEAP, 2));
        let mut store = SqliteStore::create(&path, &initial).expect("created");
        assert_eq!(
            store.count_failure(Role::User, 10).expect("counted"),
            Some(1)
        );

        let raised = pin(KdfParams::DEFAULT, 3);
        assert!(
            store
                .raise_pin(Role::User, &pin(CHEAP, 2), &raised)
                .expect("raised")
        );
        let after = store.token().expect("record");
        assert_eq!(after.user, Some(raised.clone()));
        assert_eq!(after.so, pin(CHEAP, 1), "the other PIN is untouched");
        assert_eq!(after.user_failures, 1, "the failure counter is untouched");

        // A stale `current` (the PIN changed meanwhile) writes nothing.
        let stronger = KdfParams {
            memory_kib: 64 * 1024,
            ..KdfParams::DEFAULT
        };
        assert!(
            !store
                .raise_pin(Role::User, &pin(CHEAP, 2), &pin(stronger, 4))
                .expect("ran")
        );
        // Lower or equal parameters are never written.
        assert!(
            !store
                .raise_pin(Role::User, &raised, &pin(CHEAP, 5))
                .expect("ran")
        );
        assert!(
            !store
                .raise_pin(Role::User, &raised, &pin(KdfParams::DEFAULT, 6))
                .expect("ran")
        );
        drop(store);
        let reopened = SqliteStore::open(&path).expect("reopened");
        assert_eq!(reopened.token().expect("record").user, Some(raised));
    }

    #[test]
    fn a_raise_that_fails_mid_transaction_leaves_the_old_wrap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.kftoken");
        let mut initial = record();
        initial.so = pin(CHEAP, 1);
        let mut store = SqliteStore::create(&path, &initial).expect("created");
        // The new KDF text is written, then the statement dies before it completes.
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER crash AFTER UPDATE OF so_kdf ON token
                 BEGIN SELECT RAISE(ABORT, 'simulated crash'); END;",
            )
            .expect("trigger");
        assert!(matches!(
            store.raise_pin(Role::So, &pin(CHEAP, 1), &pin(KdfParams::DEFAULT, 2)),
            Err(StorageError::Sqlite(_))
        ));
        drop(store);
        let reopened = SqliteStore::open(&path).expect("reopened");
        assert_eq!(reopened.token().expect("record").so, pin(CHEAP, 1));
    }

    #[test]
    fn garbage_and_future_files_are_refused_clearly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let garbage = dir.path().join("garbage.kftoken");
        std::fs::write(&garbage, vec![0x5a; 4096]).expect("written");
        assert!(matches!(
            SqliteStore::open(&garbage),
            Err(StorageError::Corrupt { .. })
        ));
        assert_eq!(std::fs::read(&garbage).expect("read"), vec![0x5a; 4096]);
        let empty = dir.path().join("empty.kftoken");
        std::fs::write(&empty, b"").expect("written");
        assert!(matches!(
            SqliteStore::open(&empty),
            Err(StorageError::Corrupt { reason, .. }) if reason == "empty file"
        ));
        assert_eq!(std::fs::metadata(&empty).expect("still there").len(), 0);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("listed")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["empty.kftoken", "garbage.kftoken"],
            "no -wal/-shm left"
        );
        let future = dir.path().join("future.kftoken");
        drop(SqliteStore::create(&future, &record()).expect("created"));
        let conn = Connection::open(&future).expect("opened");
        conn.pragma_update(None, "user_version", 99)
            .expect("bumped");
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&future),
            Err(StorageError::SchemaVersion { found: 99, .. })
        ));
    }
}
