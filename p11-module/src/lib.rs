//! keyferry-pkcs11: the C shell around keyferry-core. `libkeyferry_pkcs11.so` exports the
//! PKCS#11 3.0 entry points; all pointer handling lives in `ffi`.

pub mod ffi;
