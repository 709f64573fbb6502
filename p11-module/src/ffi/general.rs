//! General-purpose functions (PKCS#11 3.0 §5.4): initialisation, info, function lists
//! and interfaces.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Once;

use keyferry_core::token::Module;
use keyferry_core::{Config, Error, Result};
use pkcs11_sys::*;

use crate::ffi::convert::out;
use crate::ffi::entry::{guard, install, uninstall};
use crate::ffi::lists::{INTERFACE_SLOTS, INTERFACES};
use crate::ffi::{FUNCTION_LIST_2_40, export};

/// `C_Initialize`.
///
/// # Safety
/// `pInitArgs` is NULL or points to a CK_C_INITIALIZE_ARGS.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Initialize(pInitArgs: CK_VOID_PTR) -> CK_RV {
    // SAFETY: our caller's promise about pInitArgs is the one `initialize` needs.
    guard("C_Initialize", || unsafe { initialize(pInitArgs) })
}

/// # Safety
/// As `C_Initialize`.
unsafe fn initialize(init_args: CK_VOID_PTR) -> Result<()> {
    // SAFETY: NULL or a valid CK_C_INITIALIZE_ARGS by the caller's promise.
    if let Some(args) = unsafe { (init_args as *const CK_C_INITIALIZE_ARGS).as_ref() } {
        if !args.pReserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        let given = [
            args.CreateMutex.is_some(),
            args.DestroyMutex.is_some(),
            args.LockMutex.is_some(),
            args.UnlockMutex.is_some(),
        ];
        let all = given.iter().all(|given| *given);
        if given.iter().any(|given| *given) && !all {
            return Err(Error::ArgumentsBad("some but not all mutex functions"));
        }
        // We lock with the operating system's primitives; an application that insists
        // on its own mutex functions gets CKR_CANT_LOCK (PKCS#11 3.0 §5.4.1, case 3).
        if all && args.flags & CKF_OS_LOCKING_OK == 0 {
            return Err(Error::CantLock);
        }
    }
    super::fork::install_handlers();
    install(|| {
        let config = Config::load().inspect_err(|err| eprintln!("keyferry: {err}"))?;
        init_logging(&config);
        Module::new(config).inspect_err(|err| eprintln!("keyferry: {err}"))
    })
}

/// Route `tracing` to the configured file or stderr, once per process.
fn init_logging(config: &Config) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(format!(
            "keyferry={0},keyferry_core={0},keyferry_pkcs11={0}",
            config.log_level
        ));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false);
        let installed = match &config.log_file {
            Some(path) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                // Logs carry no secret, but object names and failed calls are nobody
                // else's business either.
                .mode(0o600)
                .open(path)
            {
                Ok(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
                Err(err) => {
                    eprintln!(
                        "keyferry: cannot open log_file {}: {err}; logging to stderr",
                        path.display()
                    );
                    builder.with_writer(std::io::stderr).try_init()
                }
            },
            None => builder.with_writer(std::io::stderr).try_init(),
        };
        // An application that installed its own subscriber keeps it.
        drop(installed);
    });
}

/// `C_Finalize`.
///
/// # Safety
/// Reads only whether `pReserved` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Finalize(pReserved: CK_VOID_PTR) -> CK_RV {
    guard("C_Finalize", || {
        if !pReserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        uninstall()?.finalize()
    })
}

export! {
    fn C_GetInfo(pInfo: CK_INFO_PTR) => get_info;
}

unsafe fn get_info(module: &Module, info: CK_INFO_PTR) -> Result<()> {
    // SAFETY: NULL or valid for one CK_INFO by the caller's promise.
    *unsafe { out(info) }? = module.info();
    Ok(())
}

/// `C_GetFunctionList`: the 2.40 table.
///
/// # Safety
/// `ppFunctionList` is NULL or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(ppFunctionList: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    guard("C_GetFunctionList", || {
        // SAFETY: NULL or valid for one pointer by the caller's promise.
        *unsafe { out(ppFunctionList) }? = std::ptr::addr_of!(FUNCTION_LIST_2_40).cast_mut();
        Ok(())
    })
}

/// `C_GetInterfaceList`: "PKCS 11" 3.0, then "PKCS 11" 2.40.
///
/// # Safety
/// `pulCount` is NULL or valid for one CK_ULONG; `pInterfacesList` is NULL or valid for
/// `*pulCount` CK_INTERFACEs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(
    pInterfacesList: CK_INTERFACE_PTR,
    pulCount: CK_ULONG_PTR,
) -> CK_RV {
    guard("C_GetInterfaceList", || {
        let interfaces: Vec<CK_INTERFACE> =
            INTERFACES.iter().map(|(interface, _)| *interface).collect();
        // SAFETY: the caller's promise covers both pointers.
        unsafe { crate::ffi::convert::out_list(pInterfacesList, pulCount, &interfaces) }
    })
}

/// `C_GetInterface`: by name ("PKCS 11" or NULL), version (NULL: the newest) and flags.
///
/// # Safety
/// `pInterfaceName` is NULL or NUL-terminated; `pVersion` is NULL or valid;
/// `ppInterface` is NULL or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    pInterfaceName: CK_UTF8CHAR_PTR,
    pVersion: CK_VERSION_PTR,
    ppInterface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> CK_RV {
    guard("C_GetInterface", || {
        // SAFETY: NULL or valid for one pointer by the caller's promise.
        let slot = unsafe { out(ppInterface) }?;
        let name_ok = pInterfaceName.is_null()
            // SAFETY: non-NULL names are NUL-terminated by the caller's promise.
            || unsafe { std::ffi::CStr::from_ptr(pInterfaceName as *const std::ffi::c_char) }.to_bytes() == b"PKCS 11";
        // SAFETY: NULL or valid for one CK_VERSION by the caller's promise.
        let version = unsafe { pVersion.as_ref() };
        let found = INTERFACES.iter().position(|(interface, ours)| {
            let wanted_version =
                version.is_none_or(|v| (v.major, v.minor) == (ours.major, ours.minor));
            name_ok && wanted_version && flags & !interface.flags == 0
        });
        let index = found.ok_or(Error::ArgumentsBad("no such interface"))?;
        *slot = INTERFACE_SLOTS.get(index);
        Ok(())
    })
}
