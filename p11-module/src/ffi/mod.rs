//! The C shell: exported `C_*` functions, the function lists and interfaces, and the one
//! `entry()` every call goes through. The only unsafe code of the module.
#![allow(non_snake_case)]

mod convert;
mod crypto;
mod entry;
mod fork;
mod general;
mod key_mgmt;
mod object;
mod session;
mod slot_token;
#[cfg(test)]
mod tests;

pub use crypto::*;
pub use general::*;
pub use key_mgmt::*;
pub use object::*;
pub use session::*;
pub use slot_token::*;

/// Write an exported `C_*` function that converts its arguments in an `unsafe fn` of this
/// module and runs it through `entry::entry`, which needs the module initialised.
macro_rules! export {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path $(, ends($session:ident, $kind:expr))?;)*) => {$(
        #[doc = concat!("PKCS#11 `", stringify!($name), "`.")]
        ///
        /// # Safety
        /// The caller passes pointers valid as PKCS#11 3.0 requires for this function.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> pkcs11_sys::CK_RV {
            crate::ffi::entry::entry(stringify!($name), |module| {
                // SAFETY: the arguments come straight from our caller, whose promise this
                // function's contract repeats.
                let result = unsafe { $body(module, $($arg),*) };
                $(let result = crate::ffi::entry::ending(module, $session, $kind, result);)?
                result
            })
        }
    )*};
}

/// Write exported `C_*` functions this module does not provide.
macro_rules! not_supported {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {$(
        #[doc = concat!("PKCS#11 `", stringify!($name), "`: not supported yet.")]
        ///
        /// # Safety
        /// Reads none of its arguments.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($(#[allow(unused_variables)] $arg: $ty),*) -> pkcs11_sys::CK_RV {
            crate::ffi::entry::entry(stringify!($name), |_| {
                Err(keyferry_core::Error::FunctionNotSupported)
            })
        }
    )*};
}

pub(crate) use export;
pub(crate) use not_supported;

pub(crate) mod lists;
pub use lists::{FUNCTION_LIST_2_40, FUNCTION_LIST_3_0};
