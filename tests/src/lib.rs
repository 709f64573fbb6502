//! Shared helpers for the integration tests: the modules under test (keyferry and
//! SoftHSMv2), their configuration in a private temporary directory, and fresh tokens.
//!
//! Module paths come from `TEST_KEYFERRY_MODULE` and `TEST_SOFTHSM2_MODULE` (as
//! rust-cryptoki's `TEST_PKCS11_MODULE`); keyferry defaults to this workspace's build and
//! SoftHSMv2 to Debian's path. A missing module fails the test, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup should panic loudly

pub mod cli;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// SO PIN of every test token.
pub const SO_PIN: &str = "so-pin-87654321";
/// User PIN of every test token.
pub const USER_PIN: &str = "user-pin-1234";

/// Which module a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    /// libkeyferry_pkcs11.so.
    Keyferry,
    /// libsofthsm2.so.
    SoftHsm,
}

impl Module {
    /// Both, keyferry first.
    pub const ALL: [Module; 2] = [Module::Keyferry, Module::SoftHsm];

    /// The loaded, initialised module (one per process, shared by all tests).
    pub fn pkcs11(self) -> &'static Pkcs11 {
        static KEYFERRY: OnceLock<Pkcs11> = OnceLock::new();
        static SOFTHSM: OnceLock<Pkcs11> = OnceLock::new();
        let cell = match self {
            Module::Keyferry => &KEYFERRY,
            Module::SoftHsm => &SOFTHSM,
        };
        cell.get_or_init(|| {
            environment();
            let path = self.path();
            let pkcs11 = Pkcs11::new(&path)
                .unwrap_or_else(|err| panic!("loading {}: {err}", path.display()));
            pkcs11
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .expect("C_Initialize");
            pkcs11
        })
    }

    /// The module file.
    pub fn path(self) -> PathBuf {
        let (variable, default) = match self {
            Module::Keyferry => (
                "TEST_KEYFERRY_MODULE",
                keyferry_build().join("libkeyferry_pkcs11.so"),
            ),
            Module::SoftHsm => (
                "TEST_SOFTHSM2_MODULE",
                PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            ),
        };
        let path = std::env::var_os(variable)
            .map(PathBuf::from)
            .unwrap_or(default);
        assert!(
            path.is_file(),
            "{} not found: set {variable} or run scripts/test (it builds keyferry and installs softhsm2)",
            path.display()
        );
        path
    }
}

/// The cargo target directory of this test binary (target/debug or target/release).
pub fn keyferry_build() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test binary> or target/<profile>/<bin>
    exe.ancestors()
        .find(|dir| dir.join("deps").is_dir())
        .map(Path::to_path_buf)
        .expect("the cargo target directory")
}

/// The test environment: a private directory with keyferry.toml (cheap KDF: tests log in
/// thousands of times) and a SoftHSMv2 config made by softhsm-config/make-softhsm-tokens.
/// Set once, before either module is loaded. It stays after the run, for a look at a
/// failure's tokens, under the target directory's `tmp` (which `scripts/test` empties
/// before its run), not in the system's temporary directory, where every run's would
/// pile up.
pub fn environment() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = keyferry_build()
            .parent()
            .expect("the target directory")
            .join("tmp");
        std::fs::create_dir_all(&parent).expect("the target directory's tmp");
        let dir = tempfile::Builder::new()
            .prefix("keyferry-tests.")
            .tempdir_in(&parent)
            .expect("temp dir")
            .keep();
        let keyferry_conf = dir.join("keyferry.toml");
        std::fs::write(&keyferry_conf, keyferry_config("tokens")).expect("keyferry.toml");
        let softhsm_dir = dir.join("softhsm");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/make-softhsm-tokens");
        let output = std::process::Command::new(&script)
            .arg(&softhsm_dir)
            .args(["fixture", SO_PIN, USER_PIN])
            .output()
            .unwrap_or_else(|err| panic!("running {}: {err}", script.display()));
        assert!(
            output.status.success(),
            "make-softhsm-tokens failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Edition 2021: see Cargo.toml. Every module load waits for this one-time setup.
        std::env::set_var("KEYFERRY_CONF", &keyferry_conf);
        std::env::set_var("SOFTHSM2_CONF", softhsm_dir.join("softhsm2.conf"));
        dir
    })
}

/// A keyferry.toml for tests: cheap Argon2id, ten PIN attempts.
pub fn keyferry_config(token_dir: &str) -> String {
    format!(
        "token_dir = \"{token_dir}\"\nmax_pin_attempts = 10\nmin_pin_len = 4\n\
         [kdf]\nmemory_kib = 64\niterations = 1\nparallelism = 1\n"
    )
}

/// The keyferry token directory of this test process.
pub fn keyferry_token_dir() -> PathBuf {
    environment().join("tokens")
}

/// A PIN as cryptoki wants it.
pub fn pin(text: &str) -> AuthPin {
    AuthPin::new(text.into())
}

/// A fresh token with SO_PIN and USER_PIN, made on the module's spare slot; its label is
/// unique in the process.
/// The module's uninitialised slot. A slot whose token cannot be read at this instant is
/// not it: SoftHSMv2 rewrites a token's `token.object` in place at every login, and a
/// test's CLI process logging in to its own token then fails this process's
/// `C_GetTokenInfo` on that slot (seen once, in `cli_output`).
pub fn spare_slot(pkcs11: &Pkcs11) -> Slot {
    pkcs11
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| !info.token_initialized())
        })
        .expect("a spare slot")
}

/// keyferry (TEST_KEYFERRY_MODULE) loaded and initialised, for a helper process.
pub fn initialised_keyferry() -> Pkcs11 {
    let path = std::env::var("TEST_KEYFERRY_MODULE").expect("TEST_KEYFERRY_MODULE");
    let pkcs11 = Pkcs11::new(path).expect("loading keyferry");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    pkcs11
}

pub fn fresh_token(module: Module, name: &str) -> (Slot, String) {
    static CREATING: Mutex<u32> = Mutex::new(0);
    let mut serial = CREATING.lock().unwrap_or_else(|poison| poison.into_inner());
    *serial += 1;
    let label = format!("{name}-{}", *serial);
    assert!(label.len() <= 32, "label {label} too long");
    let pkcs11 = module.pkcs11();
    let spare = spare_slot(pkcs11);
    pkcs11
        .init_token(spare, &pin(SO_PIN), &label)
        .expect("C_InitToken");
    let slot = slot_of(module, &label);
    let session = pkcs11.open_rw_session(slot).expect("session");
    session
        .login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO login");
    session.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    session.logout().expect("logout");
    drop(session);
    (slot, label)
}

/// The slot of a token by label (SoftHSMv2 moves a token to a new slot ID once it is
/// initialised).
pub fn slot_of(module: Module, label: &str) -> Slot {
    slot_labelled(module.pkcs11(), label)
}

/// The slot of a token by label, in any loaded module.
pub fn slot_labelled(pkcs11: &Pkcs11, label: &str) -> Slot {
    pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        // Another test's token may be unreadable for a moment (see `spare_slot`).
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label() == label)
        })
        .unwrap_or_else(|| panic!("no token {label}"))
}

/// A read/write session logged in as the user.
pub fn user_session(module: Module, slot: Slot) -> Session {
    let session = module.pkcs11().open_rw_session(slot).expect("session");
    session
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user login");
    session
}

/// The return code of a failed call, for exact assertions.
pub fn rv<T: std::fmt::Debug>(result: cryptoki::error::Result<T>) -> cryptoki::error::RvError {
    match result {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Run the worker binary with the test environment, returning its stdout.
pub fn worker(exe: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    environment();
    let output = std::process::Command::new(exe)
        .args(args)
        .envs(envs.iter().copied())
        .env("TEST_KEYFERRY_MODULE", Module::Keyferry.path())
        .output()
        .expect("running kf-worker");
    assert!(
        output.status.success(),
        "kf-worker {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}
