//! Hostile input through the C ABI (issue 9): proptest drives the function table with
//! random templates, mechanisms, parameters, wrapped blobs, handles and call orders — every
//! pointer valid for the length it claims, so any misbehaviour is the module's — and after
//! every call checks that the code is one PKCS#11 3.0 lists for that function, that
//! failures wrote nothing and created nothing, and that the token still encrypts.
//!
//! Cases per property come from PROPTEST_CASES (the soak: `PROPTEST_CASES=200000` runs
//! five properties, 1 000 000 cases); without it each property runs its own default. Each
//! property makes its fixture once and drives a `TestRunner` by hand: proptest's
//! `Config::default()` reads PROPTEST_CASES, but `#![proptest_config(Config { cases: N,
//! .. })]` inside `proptest!` would override it, and `proptest!` would build the fixture
//! (an Argon2 and a token file) once per case.

#![allow(
    clippy::undocumented_unsafe_blocks,
    reason = "each call's pointers come from Template, build_mechanism or with_output, \
              valid for the lengths they claim; the SAFETY notes sit on the sections"
)]

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ptr::null_mut;

use keyferry_core::mech::domain::CKM_KEYFERRY_DOMAIN_WRAP;
use pkcs11_sys::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serial_test::serial;

use super::*;

/// What an output buffer holds before a call: bytes still equal to it were not written.
const MARK: u8 = 0xa5;

/// FIPS-197 Appendix C.1: the health check after every case.
const FIPS_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const FIPS_PLAIN: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
const FIPS_CIPHER: [u8; 16] = [
    0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a,
];

/// Handles at or above this are never handed out (handles count up from 1).
const NEVER_ISSUED: CK_ULONG = 1 << 40;

// ---------------------------------------------------------------------------------------
// What PKCS#11 3.0 allows each function to return
// ---------------------------------------------------------------------------------------

/// The functions driven here, for their return-value lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum F {
    CloseSession,
    CopyObject,
    CreateObject,
    Decrypt,
    DecryptFinal,
    DecryptInit,
    DecryptUpdate,
    DeriveKey,
    DestroyObject,
    Digest,
    DigestFinal,
    DigestInit,
    DigestUpdate,
    Encrypt,
    EncryptFinal,
    EncryptInit,
    EncryptUpdate,
    FindObjects,
    FindObjectsFinal,
    FindObjectsInit,
    GenerateKey,
    GenerateKeyPair,
    GetAttributeValue,
    GetObjectSize,
    GetSessionInfo,
    Login,
    Logout,
    OpenSession,
    SetAttributeValue,
    Sign,
    SignFinal,
    SignInit,
    SignUpdate,
    UnwrapKey,
    Verify,
    VerifyFinal,
    VerifyInit,
    VerifyUpdate,
    WrapKey,
}

/// In every list of §5 that takes a session (CKR_OK, CKR_ARGUMENTS_BAD,
/// CKR_CRYPTOKI_NOT_INITIALIZED, CKR_SESSION_CLOSED, CKR_SESSION_HANDLE_INVALID). The lists
/// also carry CKR_GENERAL_ERROR, CKR_FUNCTION_FAILED, CKR_HOST_MEMORY and the CKR_DEVICE_*
/// codes; they are left out on purpose: keyferry answers a caught panic with
/// CKR_GENERAL_ERROR and a storage failure with CKR_DEVICE_ERROR, and neither may happen
/// on a healthy token, whatever the caller passes.
const COMMON: &[CK_RV] = &[
    CKR_OK,
    CKR_ARGUMENTS_BAD,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_SESSION_CLOSED,
    CKR_SESSION_HANDLE_INVALID,
];

/// The object-making functions' shared codes (§5.7 C_CreateObject, §5.18 C_GenerateKey,
/// C_UnwrapKey, C_DeriveKey).
const MAKES_OBJECTS: &[CK_RV] = &[
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_CURVE_NOT_SUPPORTED,
    CKR_DOMAIN_PARAMS_INVALID,
    CKR_PIN_EXPIRED,
    CKR_SESSION_READ_ONLY,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_TOKEN_WRITE_PROTECTED,
    CKR_USER_NOT_LOGGED_IN,
];

/// C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit (§5.8, §5.9, §5.11, §5.12).
const KEY_INIT: &[CK_RV] = &[
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_MECHANISM_INVALID,
    CKR_MECHANISM_PARAM_INVALID,
    CKR_OPERATION_ACTIVE,
    CKR_PIN_EXPIRED,
    CKR_USER_NOT_LOGGED_IN,
];

/// The codes of `f`'s list beyond COMMON, from the PKCS#11 3.0 base specification §5.
fn specific(f: F) -> &'static [CK_RV] {
    match f {
        F::CloseSession | F::GetSessionInfo => &[],
        F::CopyObject => &[
            CKR_ACTION_PROHIBITED,
            CKR_ATTRIBUTE_READ_ONLY,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_OBJECT_HANDLE_INVALID,
            CKR_PIN_EXPIRED,
            CKR_SESSION_READ_ONLY,
            CKR_TEMPLATE_INCONSISTENT,
            CKR_TOKEN_WRITE_PROTECTED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::CreateObject => MAKES_OBJECTS,
        F::Decrypt | F::DecryptUpdate | F::DecryptFinal => &[
            CKR_BUFFER_TOO_SMALL,
            CKR_ENCRYPTED_DATA_INVALID,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
            CKR_OPERATION_NOT_INITIALIZED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::DecryptInit | F::EncryptInit | F::SignInit | F::VerifyInit => KEY_INIT,
        F::DeriveKey => &[
            CKR_ATTRIBUTE_READ_ONLY,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_CURVE_NOT_SUPPORTED,
            CKR_DOMAIN_PARAMS_INVALID,
            CKR_KEY_HANDLE_INVALID,
            CKR_KEY_SIZE_RANGE,
            CKR_KEY_TYPE_INCONSISTENT,
            CKR_MECHANISM_INVALID,
            CKR_MECHANISM_PARAM_INVALID,
            CKR_OPERATION_ACTIVE,
            CKR_PIN_EXPIRED,
            CKR_SESSION_READ_ONLY,
            CKR_TEMPLATE_INCOMPLETE,
            CKR_TEMPLATE_INCONSISTENT,
            CKR_TOKEN_WRITE_PROTECTED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::DestroyObject => &[
            CKR_ACTION_PROHIBITED,
            CKR_OBJECT_HANDLE_INVALID,
            CKR_PIN_EXPIRED,
            CKR_SESSION_READ_ONLY,
            CKR_TOKEN_WRITE_PROTECTED,
        ],
        F::Digest | F::DigestUpdate | F::DigestFinal => {
            &[CKR_BUFFER_TOO_SMALL, CKR_OPERATION_NOT_INITIALIZED]
        }
        F::DigestInit => &[
            CKR_MECHANISM_INVALID,
            CKR_MECHANISM_PARAM_INVALID,
            CKR_OPERATION_ACTIVE,
            CKR_PIN_EXPIRED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::Encrypt | F::EncryptUpdate | F::EncryptFinal => &[
            CKR_BUFFER_TOO_SMALL,
            CKR_DATA_INVALID,
            CKR_DATA_LEN_RANGE,
            CKR_OPERATION_NOT_INITIALIZED,
        ],
        F::FindObjects | F::FindObjectsFinal => &[CKR_OPERATION_NOT_INITIALIZED],
        F::FindObjectsInit => &[
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_OPERATION_ACTIVE,
            CKR_PIN_EXPIRED,
        ],
        F::GenerateKey | F::GenerateKeyPair => &[
            CKR_ATTRIBUTE_READ_ONLY,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_CURVE_NOT_SUPPORTED,
            CKR_DOMAIN_PARAMS_INVALID,
            CKR_MECHANISM_INVALID,
            CKR_MECHANISM_PARAM_INVALID,
            CKR_OPERATION_ACTIVE,
            CKR_PIN_EXPIRED,
            CKR_SESSION_READ_ONLY,
            CKR_TEMPLATE_INCOMPLETE,
            CKR_TEMPLATE_INCONSISTENT,
            CKR_TOKEN_WRITE_PROTECTED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::GetAttributeValue => &[
            CKR_ATTRIBUTE_SENSITIVE,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_BUFFER_TOO_SMALL,
            CKR_OBJECT_HANDLE_INVALID,
        ],
        F::GetObjectSize => &[CKR_INFORMATION_SENSITIVE, CKR_OBJECT_HANDLE_INVALID],
        F::Login => &[
            CKR_OPERATION_NOT_INITIALIZED,
            CKR_PIN_INCORRECT,
            CKR_PIN_LOCKED,
            CKR_SESSION_READ_ONLY_EXISTS,
            CKR_USER_ALREADY_LOGGED_IN,
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            CKR_USER_PIN_NOT_INITIALIZED,
            CKR_USER_TOO_MANY_TYPES,
            CKR_USER_TYPE_INVALID,
        ],
        F::Logout => &[CKR_USER_NOT_LOGGED_IN],
        F::OpenSession => &[
            CKR_SESSION_COUNT,
            CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            CKR_SESSION_READ_WRITE_SO_EXISTS,
            CKR_SLOT_ID_INVALID,
            CKR_TOKEN_NOT_PRESENT,
            CKR_TOKEN_NOT_RECOGNIZED,
            CKR_TOKEN_WRITE_PROTECTED,
        ],
        F::SetAttributeValue => &[
            CKR_ACTION_PROHIBITED,
            CKR_ATTRIBUTE_READ_ONLY,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_OBJECT_HANDLE_INVALID,
            CKR_SESSION_READ_ONLY,
            CKR_TEMPLATE_INCONSISTENT,
            CKR_TOKEN_WRITE_PROTECTED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::Sign | F::SignFinal => &[
            CKR_BUFFER_TOO_SMALL,
            CKR_DATA_INVALID,
            CKR_DATA_LEN_RANGE,
            CKR_FUNCTION_REJECTED,
            CKR_OPERATION_NOT_INITIALIZED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::SignUpdate => &[
            CKR_DATA_LEN_RANGE,
            CKR_OPERATION_NOT_INITIALIZED,
            CKR_USER_NOT_LOGGED_IN,
        ],
        F::UnwrapKey => &[
            CKR_ATTRIBUTE_READ_ONLY,
            CKR_ATTRIBUTE_TYPE_INVALID,
            CKR_ATTRIBUTE_VALUE_INVALID,
            CKR_BUFFER_TOO_SMALL,
            CKR_CURVE_NOT_SUPPORTED,
            CKR_DOMAIN_PARAMS_INVALID,
            CKR_MECHANISM_INVALID,
            CKR_MECHANISM_PARAM_INVALID,
            CKR_OPERATION_ACTIVE,
            CKR_PIN_EXPIRED,
            CKR_SESSION_READ_ONLY,
            CKR_TEMPLATE_INCOMPLETE,
            CKR_TEMPLATE_INCONSISTENT,
            CKR_TOKEN_WRITE_PROTECTED,
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            CKR_UNWRAPPING_KEY_SIZE_RANGE,
            CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            CKR_USER_NOT_LOGGED_IN,
            CKR_WRAPPED_KEY_INVALID,
            CKR_WRAPPED_KEY_LEN_RANGE,
        ],
        F::Verify | F::VerifyFinal => &[
            CKR_DATA_INVALID,
            CKR_DATA_LEN_RANGE,
            CKR_OPERATION_NOT_INITIALIZED,
            CKR_SIGNATURE_INVALID,
            CKR_SIGNATURE_LEN_RANGE,
        ],
        F::VerifyUpdate => &[CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED],
        F::WrapKey => &[
            CKR_BUFFER_TOO_SMALL,
            CKR_KEY_HANDLE_INVALID,
            CKR_KEY_NOT_WRAPPABLE,
            CKR_KEY_SIZE_RANGE,
            CKR_KEY_UNEXTRACTABLE,
            CKR_MECHANISM_INVALID,
            CKR_MECHANISM_PARAM_INVALID,
            CKR_OPERATION_ACTIVE,
            CKR_PIN_EXPIRED,
            CKR_USER_NOT_LOGGED_IN,
            CKR_WRAPPING_KEY_HANDLE_INVALID,
            CKR_WRAPPING_KEY_SIZE_RANGE,
            CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        ],
    }
}

/// keyferry's one deliberate departure from the lists: a single-part call after an
/// update (§5.8 "cannot be used to terminate a multi-part operation", no code named) is
/// refused with CKR_OPERATION_ACTIVE and the multi-part operation goes on (see crypto.rs,
/// `a_single_part_call_after_an_update_is_operation_active`).
fn one_shot_during_multi_part(f: F, rv: CK_RV) -> bool {
    rv == CKR_OPERATION_ACTIVE
        && matches!(f, F::Encrypt | F::Decrypt | F::Digest | F::Sign | F::Verify)
}

/// Fail the case unless `rv` is in `f`'s list.
fn allowed(f: F, rv: CK_RV) -> Result<(), TestCaseError> {
    if COMMON.contains(&rv) || specific(f).contains(&rv) || one_shot_during_multi_part(f, rv) {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "C_{f:?} returned 0x{rv:x}, which PKCS#11 3.0 does not list for it"
        )))
    }
}

/// Fail the case unless `rv` is exactly `want`.
fn exactly(f: F, rv: CK_RV, want: CK_RV) -> Result<(), TestCaseError> {
    if rv == want {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "C_{f:?} returned 0x{rv:x}, expected 0x{want:x}"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// The fixture, made once per property, and the check after every case
// ---------------------------------------------------------------------------------------

/// A token with a user logged in through `keeper` and token keys that random calls never
/// destroy.
struct World {
    _fixture: Fixture,
    slot: CK_SLOT_ID,
    keeper: CK_SESSION_HANDLE,
    /// AES-128 FIPS-197 key for every use, extractable. The handles are found again
    /// by label after a case logged out (C_Logout invalidates private handles, §5.6.8).
    aes: Cell<CK_OBJECT_HANDLE>,
    /// 32-byte generic secret for HMAC.
    hmac: Cell<CK_OBJECT_HANDLE>,
    /// RSA-2048 halves when the property asked for them.
    rsa: Cell<Option<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)>>,
    /// Undestroyable token objects random templates left behind.
    leftovers: Cell<usize>,
    /// Each fixture key's label and CKA_UNIQUE_ID.
    unique_ids: Vec<(&'static [u8], Vec<u8>)>,
}

impl World {
    /// The fixture object labelled `label`: copies share its label, not its
    /// CKA_UNIQUE_ID.
    fn labelled(&self, label: &[u8]) -> CK_OBJECT_HANDLE {
        let (_, unique_id) = self
            .unique_ids
            .iter()
            .find(|(known, _)| *known == label)
            .unwrap();
        let template = Template::new()
            .bytes(CKA_LABEL, label)
            .bytes(CKA_UNIQUE_ID, unique_id);
        let found = find(self.keeper, &template);
        assert_eq!(found.len(), 1, "{}", String::from_utf8_lossy(label));
        found[0]
    }

    fn refresh_handles(&self) {
        self.aes.set(self.labelled(b"hostile-aes"));
        self.hmac.set(self.labelled(b"hostile-hmac"));
        if self.rsa.get().is_some() {
            let pair = (
                self.labelled(b"hostile-rsa-public"),
                self.labelled(b"hostile-rsa-private"),
            );
            self.rsa.set(Some(pair));
        }
    }
}

fn every_use(template: Template) -> Template {
    template
        .bool(CKA_TOKEN, true)
        .bool(CKA_ENCRYPT, true)
        .bool(CKA_DECRYPT, true)
        .bool(CKA_SIGN, true)
        .bool(CKA_VERIFY, true)
        .bool(CKA_WRAP, true)
        .bool(CKA_UNWRAP, true)
        .bool(CKA_DERIVE, true)
        .bool(CKA_EXTRACTABLE, true)
}

fn world(with_rsa: bool) -> World {
    let fixture = Fixture::new();
    let slot = user_token();
    let keeper = user_session(slot);
    let aes = every_use(aes_key(&FIPS_KEY)).bytes(CKA_LABEL, b"hostile-aes");
    let aes = create(keeper, &aes).unwrap();
    let hmac_template = Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
        .bytes(CKA_VALUE, &[0x5c; 32])
        .bytes(CKA_LABEL, b"hostile-hmac")
        .bool(CKA_TOKEN, true)
        .bool(CKA_SIGN, true)
        .bool(CKA_VERIFY, true)
        .bool(CKA_DERIVE, true);
    let hmac = create(keeper, &hmac_template).unwrap();
    let rsa = with_rsa.then(|| {
        let public = Template::new()
            .ulong(CKA_MODULUS_BITS, 2048)
            .bytes(CKA_LABEL, b"hostile-rsa-public")
            .bool(CKA_TOKEN, true)
            .bool(CKA_ENCRYPT, true)
            .bool(CKA_VERIFY, true)
            .bool(CKA_WRAP, true);
        let private = Template::new()
            .bytes(CKA_LABEL, b"hostile-rsa-private")
            .bool(CKA_TOKEN, true)
            .bool(CKA_DECRYPT, true)
            .bool(CKA_SIGN, true)
            .bool(CKA_UNWRAP, true);
        let mut mechanism = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let (mut public_key, mut private_key) = (UNTOUCHED, UNTOUCHED);
        // SAFETY: the mechanism and templates are valid; both handles are writable.
        let rv = unsafe {
            (functions().C_GenerateKeyPair.unwrap())(
                keeper,
                &mut mechanism,
                public.ptr(),
                public.count(),
                private.ptr(),
                private.count(),
                &mut public_key,
                &mut private_key,
            )
        };
        assert_eq!(rv, CKR_OK);
        (public_key, private_key)
    });
    let mut unique_ids = vec![
        (
            b"hostile-aes".as_slice(),
            attribute(keeper, aes, CKA_UNIQUE_ID).unwrap(),
        ),
        (
            b"hostile-hmac".as_slice(),
            attribute(keeper, hmac, CKA_UNIQUE_ID).unwrap(),
        ),
    ];
    if let Some((public, private)) = rsa {
        unique_ids.push((
            b"hostile-rsa-public".as_slice(),
            attribute(keeper, public, CKA_UNIQUE_ID).unwrap(),
        ));
        unique_ids.push((
            b"hostile-rsa-private".as_slice(),
            attribute(keeper, private, CKA_UNIQUE_ID).unwrap(),
        ));
    }
    let world = World {
        _fixture: fixture,
        slot,
        keeper,
        aes: Cell::new(aes),
        hmac: Cell::new(hmac),
        rsa: Cell::new(rsa),
        leftovers: Cell::new(0),
        unique_ids,
    };
    still_usable(&world).unwrap();
    world
}

/// Every object the keeper sees.
fn object_count(world: &World) -> usize {
    find(world.keeper, &Template::new()).len()
}

/// The end of every case: back to "user logged in" if a case left it, and the FIPS-197
/// key still encrypts in a fresh session.
fn still_usable(world: &World) -> Result<(), TestCaseError> {
    if session_info(world.keeper).state != CKS_RW_USER_FUNCTIONS {
        let rv = logout(world.keeper);
        prop_assert!(
            rv == CKR_OK || rv == CKR_USER_NOT_LOGGED_IN,
            "logout 0x{rv:x}"
        );
        exactly(F::Login, login(world.keeper, CKU_USER, USER_PIN), CKR_OK)?;
    }
    // A case may have logged out and in again: private handles changed either way.
    world.refresh_handles();
    let session = open_ro(world.slot);
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_ECB,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    // SAFETY: the mechanism is valid.
    let rv =
        unsafe { (functions().C_EncryptInit.unwrap())(session, &mut mechanism, world.aes.get()) };
    exactly(F::EncryptInit, rv, CKR_OK)?;
    let mut out = [MARK; 16];
    let mut len: CK_ULONG = 16;
    // SAFETY: the input is 16 readable bytes, `out` 16 writable ones.
    let rv = unsafe {
        (functions().C_Encrypt.unwrap())(
            session,
            FIPS_PLAIN.as_ptr().cast_mut(),
            16,
            out.as_mut_ptr(),
            &mut len,
        )
    };
    exactly(F::Encrypt, rv, CKR_OK)?;
    prop_assert_eq!((len, out), (16, FIPS_CIPHER));
    exactly(F::CloseSession, close_session(session), CKR_OK)
}

/// Run `property` on every case of `strategy` with one `World`, made again once random
/// templates have left 100 undestroyable token objects on it (every case counts objects).
fn drive<S: Strategy>(
    with_rsa: bool,
    default_cases: u32,
    strategy: S,
    property: impl Fn(&World, S::Value) -> Result<(), TestCaseError>,
) {
    let current = RefCell::new(Some(world(with_rsa)));
    runner(default_cases)
        .run(&strategy, |case| {
            let mut slot = current.borrow_mut();
            if slot.as_ref().is_some_and(|w| w.leftovers.get() >= 100) {
                // The old fixture finalises the module before the new one initialises it.
                drop(slot.take());
                *slot = Some(world(with_rsa));
            }
            property(slot.as_ref().unwrap(), case)
        })
        .unwrap();
}

/// Cases per property: PROPTEST_CASES when set, else `default`. Failures are not
/// persisted (the runner has no source file).
fn runner(default: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------------------
// Random templates, described without pointers (proptest clones values while shrinking)
// and built into a `Template` that owns its memory only for the call
// ---------------------------------------------------------------------------------------

/// Attribute types keyferry knows for some class.
const KNOWN_TYPES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_APPLICATION,
    CKA_VALUE,
    CKA_OBJECT_ID,
    CKA_CERTIFICATE_TYPE,
    CKA_KEY_TYPE,
    CKA_SUBJECT,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_DERIVE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIME_1,
    CKA_VALUE_LEN,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_KEY_GEN_MECHANISM,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_TRUSTED,
    CKA_CHECK_VALUE,
    CKA_UNIQUE_ID,
    CKA_ALLOWED_MECHANISMS,
    CKA_WRAP_TEMPLATE,
    CKA_UNWRAP_TEMPLATE,
    CKA_DERIVE_TEMPLATE,
];

/// Attributes whose value is an array of CK_ATTRIBUTE: the module follows their pointers,
/// so they only ever get a real nested array or a NULL pointer.
fn is_template_type(kind: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        kind,
        CKA_WRAP_TEMPLATE | CKA_UNWRAP_TEMPLATE | CKA_DERIVE_TEMPLATE
    )
}

/// Types no specification defines: a gap below the vendor range, and vendor types.
fn unknown_type() -> impl Strategy<Value = CK_ATTRIBUTE_TYPE> {
    prop_oneof![
        0x7000 as CK_ATTRIBUTE_TYPE..0x8000,
        any::<u32>().prop_map(|low| CKA_VENDOR_DEFINED | CK_ATTRIBUTE_TYPE::from(low)),
    ]
}

fn is_unknown(kind: CK_ATTRIBUTE_TYPE) -> bool {
    (0x7000..0x8000).contains(&kind) || kind & CKA_VENDOR_DEFINED != 0
}

fn attribute_type() -> impl Strategy<Value = CK_ATTRIBUTE_TYPE> {
    prop_oneof![9 => select(KNOWN_TYPES), 1 => unknown_type()]
}

#[derive(Clone, Debug)]
enum ValueSpec {
    Bytes(Vec<u8>),
    /// A NULL pValue claiming this length (0 included).
    Null(CK_ULONG),
    /// A real buffer of this many copies of a byte: long claims are always backed.
    Big(u8, usize),
    /// A real nested array of plain attributes.
    Nested(Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>),
}

#[derive(Clone, Debug)]
struct AttrSpec {
    kind: CK_ATTRIBUTE_TYPE,
    value: ValueSpec,
}

/// Values a keyferry attribute is likely to parse: CK_BBOOLs, CK_ULONGs of interesting
/// numbers, short strings.
fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    let ulongs = select(vec![
        0,
        1,
        2,
        3,
        4,
        8,
        16,
        24,
        32,
        64,
        512,
        513,
        2048,
        CKO_SECRET_KEY,
        CKO_PUBLIC_KEY,
        CKO_PRIVATE_KEY,
        CKO_DATA,
        CKK_AES,
        CKK_GENERIC_SECRET,
        CKK_RSA,
        CKK_EC,
        CK_UNAVAILABLE_INFORMATION,
        CKO_VENDOR_DEFINED,
    ]);
    prop_oneof![
        select(vec![0u8, 1, 2, 0xff]).prop_map(|b| vec![b]),
        ulongs.prop_map(|v: CK_ULONG| v.to_ne_bytes().to_vec()),
        any::<CK_ULONG>().prop_map(|v| v.to_ne_bytes().to_vec()),
        vec(any::<u8>(), 0..48),
    ]
}

fn value_for(kind: CK_ATTRIBUTE_TYPE) -> BoxedStrategy<ValueSpec> {
    if is_template_type(kind) {
        let inner = vec(
            (
                prop_oneof![select(KNOWN_TYPES), unknown_type()],
                plausible_bytes(),
            ),
            0..4,
        );
        prop_oneof![
            Just(ValueSpec::Null(0)),
            (1 as CK_ULONG..).prop_map(ValueSpec::Null),
            inner.prop_map(ValueSpec::Nested),
        ]
        .boxed()
    } else {
        prop_oneof![
            12 => plausible_bytes().prop_map(ValueSpec::Bytes),
            1 => Just(ValueSpec::Null(0)),
            1 => (1 as CK_ULONG..).prop_map(ValueSpec::Null),
            1 => (any::<u8>(), 4096usize..(1 << 20)).prop_map(|(b, n)| ValueSpec::Big(b, n)),
        ]
        .boxed()
    }
}

fn random_attribute() -> impl Strategy<Value = AttrSpec> {
    attribute_type()
        .prop_flat_map(|kind| value_for(kind).prop_map(move |value| AttrSpec { kind, value }))
}

/// A template of random attributes, sometimes led by a class and key type so that the
/// module gets past its first checks.
fn template_spec() -> impl Strategy<Value = Vec<AttrSpec>> {
    let lead = select(vec![
        vec![],
        vec![(CKA_CLASS, CKO_DATA)],
        vec![(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES)],
        vec![
            (CKA_CLASS, CKO_SECRET_KEY),
            (CKA_KEY_TYPE, CKK_GENERIC_SECRET),
        ],
    ]);
    (lead, vec(random_attribute(), 0..6)).prop_map(|(lead, rest)| {
        lead.into_iter()
            .map(|(kind, value)| AttrSpec {
                kind,
                value: ValueSpec::Bytes(value.to_ne_bytes().to_vec()),
            })
            .chain(rest)
            .collect()
    })
}

fn build(spec: &[AttrSpec]) -> Template {
    spec.iter().fold(Template::new(), |template, attribute| {
        let kind = attribute.kind;
        match &attribute.value {
            ValueSpec::Bytes(bytes) => template.bytes(kind, bytes),
            ValueSpec::Null(len) => template.raw(CK_ATTRIBUTE {
                type_: kind,
                pValue: null_mut(),
                ulValueLen: *len,
            }),
            ValueSpec::Big(byte, len) => template.bytes(kind, &vec![*byte; *len]),
            ValueSpec::Nested(inner) => template.nested(
                kind,
                inner.iter().fold(Template::new(), |nested, (kind, bytes)| {
                    nested.bytes(*kind, bytes)
                }),
            ),
        }
    })
}

fn has_unknown_type(spec: &[AttrSpec]) -> bool {
    spec.iter().any(|attribute| is_unknown(attribute.kind))
}

// ---------------------------------------------------------------------------------------
// Random mechanisms and parameters
// ---------------------------------------------------------------------------------------

const MECHANISMS: &[CK_MECHANISM_TYPE] = &[
    CKM_AES_ECB,
    CKM_AES_CBC,
    CKM_AES_CBC_PAD,
    CKM_AES_CTR,
    CKM_AES_GCM,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_AES_KEY_WRAP_KWP,
    CKM_KEYFERRY_DOMAIN_WRAP,
    CKM_AES_ECB_ENCRYPT_DATA,
    CKM_AES_CBC_ENCRYPT_DATA,
    CKM_AES_CMAC,
    CKM_AES_CMAC_GENERAL,
    CKM_AES_KEY_GEN,
    CKM_GENERIC_SECRET_KEY_GEN,
    CKM_SHA_1,
    CKM_SHA256,
    CKM_SHA512,
    CKM_SHA_1_HMAC,
    CKM_SHA256_HMAC,
    CKM_SHA256_HMAC_GENERAL,
    CKM_RSA_PKCS,
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_AES_KEY_WRAP,
    CKM_SHA256_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_ECDH1_DERIVE,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_EDDSA,
    CKM_EC_KEY_PAIR_GEN,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    // Not offered: refused cleanly.
    CKM_DES3_CBC,
    CKM_RSA_X_509,
    CKM_SHA3_256,
];

/// A buffer a parameter structure points to: real bytes, or NULL claiming a length.
#[derive(Clone, Debug)]
enum Buf {
    Bytes(Vec<u8>),
    Null(CK_ULONG),
}

fn buf(max: usize) -> impl Strategy<Value = Buf> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..max).prop_map(Buf::Bytes),
        1 => Just(Buf::Null(0)),
        1 => (1 as CK_ULONG..).prop_map(Buf::Null),
    ]
}

#[derive(Clone, Debug)]
struct OaepSpec {
    hash: CK_MECHANISM_TYPE,
    mgf: CK_RSA_PKCS_MGF_TYPE,
    source: CK_RSA_PKCS_OAEP_SOURCE_TYPE,
    label: Buf,
}

fn oaep() -> impl Strategy<Value = OaepSpec> {
    (
        prop_oneof![
            select(vec![CKM_SHA_1, CKM_SHA256, CKM_SHA512, CKM_MD5]),
            any::<CK_ULONG>()
        ],
        prop_oneof![
            select(vec![CKG_MGF1_SHA1, CKG_MGF1_SHA256, CKG_MGF1_SHA512]),
            any::<CK_ULONG>()
        ],
        prop_oneof![select(vec![0, CKZ_DATA_SPECIFIED]), any::<CK_ULONG>()],
        buf(40),
    )
        .prop_map(|(hash, mgf, source, label)| OaepSpec {
            hash,
            mgf,
            source,
            label,
        })
}

/// A mechanism parameter. The structures whose pointers the module follows are only
/// ever real structures (with real or NULL inner buffers) or of a size other than
/// theirs; every other mechanism gets any bytes.
#[derive(Clone, Debug)]
enum ParamSpec {
    Plain(Buf),
    Gcm {
        iv: Buf,
        aad: Buf,
        tag_bits: CK_ULONG,
    },
    Oaep(OaepSpec),
    RsaAes {
        aes_bits: CK_ULONG,
        oaep: Option<OaepSpec>,
    },
    Ecdh {
        kdf: CK_EC_KDF_TYPE,
        shared: Buf,
        public: Buf,
    },
    EcbData(Buf),
    CbcData {
        iv: [u8; 16],
        data: Buf,
    },
}

/// The size of the structure `mechanism`'s parameter must be, if the module reads one.
fn struct_size(mechanism: CK_MECHANISM_TYPE) -> Option<usize> {
    Some(match mechanism {
        CKM_AES_GCM => size_of::<CK_GCM_PARAMS>(),
        CKM_RSA_PKCS_OAEP => size_of::<CK_RSA_PKCS_OAEP_PARAMS>(),
        CKM_RSA_AES_KEY_WRAP => size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>(),
        CKM_ECDH1_DERIVE => size_of::<CK_ECDH1_DERIVE_PARAMS>(),
        CKM_AES_ECB_ENCRYPT_DATA => size_of::<CK_KEY_DERIVATION_STRING_DATA>(),
        CKM_AES_CBC_ENCRYPT_DATA => size_of::<CK_AES_CBC_ENCRYPT_DATA_PARAMS>(),
        _ => return None,
    })
}

fn param_for(mechanism: CK_MECHANISM_TYPE) -> BoxedStrategy<ParamSpec> {
    let plain = match struct_size(mechanism) {
        // Never exactly the structure's size: those bytes would be read as pointers.
        Some(size) => prop_oneof![
            vec(any::<u8>(), 0..96)
                .prop_filter("not the structure's size", move |b| b.len() != size)
                .prop_map(Buf::Bytes),
            Just(Buf::Null(0)),
            (1 as CK_ULONG..).prop_map(Buf::Null),
        ]
        .boxed(),
        None => prop_oneof![
            3 => select(vec![0usize, 8, 12, 16, 24, 32])
                .prop_flat_map(|n| vec(any::<u8>(), n..=n))
                .prop_map(Buf::Bytes),
            2 => buf(80),
        ]
        .boxed(),
    };
    let structured = match mechanism {
        CKM_AES_GCM => (
            buf(40),
            buf(40),
            prop_oneof![select(vec![0, 64, 96, 128]), any::<CK_ULONG>()],
        )
            .prop_map(|(iv, aad, tag_bits)| ParamSpec::Gcm { iv, aad, tag_bits })
            .boxed(),
        CKM_RSA_PKCS_OAEP => oaep().prop_map(ParamSpec::Oaep).boxed(),
        CKM_RSA_AES_KEY_WRAP => (
            prop_oneof![select(vec![0, 128, 192, 256]), any::<CK_ULONG>()],
            proptest::option::of(oaep()),
        )
            .prop_map(|(aes_bits, oaep)| ParamSpec::RsaAes { aes_bits, oaep })
            .boxed(),
        CKM_ECDH1_DERIVE => (
            prop_oneof![select(vec![CKD_NULL, CKD_SHA256_KDF]), any::<CK_ULONG>()],
            buf(40),
            buf(140),
        )
            .prop_map(|(kdf, shared, public)| ParamSpec::Ecdh {
                kdf,
                shared,
                public,
            })
            .boxed(),
        CKM_AES_ECB_ENCRYPT_DATA => buf(64).prop_map(ParamSpec::EcbData).boxed(),
        CKM_AES_CBC_ENCRYPT_DATA => (any::<[u8; 16]>(), buf(64))
            .prop_map(|(iv, data)| ParamSpec::CbcData { iv, data })
            .boxed(),
        _ => return plain.prop_map(ParamSpec::Plain).boxed(),
    };
    prop_oneof![1 => plain.prop_map(ParamSpec::Plain), 3 => structured].boxed()
}

fn mechanism_type() -> impl Strategy<Value = CK_MECHANISM_TYPE> {
    prop_oneof![
        8 => select(MECHANISMS),
        1 => any::<CK_MECHANISM_TYPE>(),
        1 => any::<u32>().prop_map(|low| CKM_VENDOR_DEFINED | CK_MECHANISM_TYPE::from(low)),
    ]
}

fn mechanism() -> impl Strategy<Value = (CK_MECHANISM_TYPE, ParamSpec)> {
    mechanism_type().prop_flat_map(|kind| param_for(kind).prop_map(move |param| (kind, param)))
}

/// A CK_MECHANISM and the memory its pointers lead to, alive as long as it is.
struct Built {
    raw: CK_MECHANISM,
    _keep: Vec<Box<dyn Any>>,
}

impl Built {
    fn ptr(&mut self) -> CK_MECHANISM_PTR {
        &mut self.raw
    }
}

/// A pointer and length for `buf`, its bytes kept in `keep`.
fn place(buf: &Buf, keep: &mut Vec<Box<dyn Any>>) -> (*mut u8, CK_ULONG) {
    match buf {
        Buf::Bytes(bytes) => {
            let owned: Box<[u8]> = bytes.as_slice().into();
            let pointer = owned.as_ptr().cast_mut();
            keep.push(Box::new(owned));
            (pointer, bytes.len() as CK_ULONG)
        }
        Buf::Null(len) => (null_mut(), *len),
    }
}

/// A structure on the heap, kept in `keep`; its address.
fn boxed<T: 'static>(value: T, keep: &mut Vec<Box<dyn Any>>) -> (*mut u8, CK_ULONG) {
    let mut owned = Box::new(value);
    let pointer: *mut T = &mut *owned;
    keep.push(owned);
    (pointer.cast(), size_of::<T>() as CK_ULONG)
}

fn oaep_params(spec: &OaepSpec, keep: &mut Vec<Box<dyn Any>>) -> CK_RSA_PKCS_OAEP_PARAMS {
    let (label, label_len) = place(&spec.label, keep);
    CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: spec.hash,
        mgf: spec.mgf,
        source: spec.source,
        pSourceData: label.cast(),
        ulSourceDataLen: label_len,
    }
}

fn build_mechanism(kind: CK_MECHANISM_TYPE, param: &ParamSpec) -> Built {
    let mut keep: Vec<Box<dyn Any>> = Vec::new();
    let (pointer, len) = match param {
        ParamSpec::Plain(buf) => place(buf, &mut keep),
        ParamSpec::Gcm { iv, aad, tag_bits } => {
            let (iv, iv_len) = place(iv, &mut keep);
            let (aad, aad_len) = place(aad, &mut keep);
            let params = CK_GCM_PARAMS {
                pIv: iv,
                ulIvLen: iv_len,
                ulIvBits: iv_len.wrapping_mul(8),
                pAAD: aad,
                ulAADLen: aad_len,
                ulTagBits: *tag_bits,
            };
            boxed(params, &mut keep)
        }
        ParamSpec::Oaep(spec) => {
            let params = oaep_params(spec, &mut keep);
            boxed(params, &mut keep)
        }
        ParamSpec::RsaAes { aes_bits, oaep } => {
            let inner = match oaep {
                Some(spec) => {
                    let params = oaep_params(spec, &mut keep);
                    boxed(params, &mut keep).0
                }
                None => null_mut(),
            };
            let params = CK_RSA_AES_KEY_WRAP_PARAMS {
                ulAESKeyBits: *aes_bits,
                pOAEPParams: inner.cast(),
            };
            boxed(params, &mut keep)
        }
        ParamSpec::Ecdh {
            kdf,
            shared,
            public,
        } => {
            let (shared, shared_len) = place(shared, &mut keep);
            let (public, public_len) = place(public, &mut keep);
            let params = CK_ECDH1_DERIVE_PARAMS {
                kdf: *kdf,
                ulSharedDataLen: shared_len,
                pSharedData: shared,
                ulPublicDataLen: public_len,
                pPublicData: public,
            };
            boxed(params, &mut keep)
        }
        ParamSpec::EcbData(data) => {
            let (data, data_len) = place(data, &mut keep);
            let params = CK_KEY_DERIVATION_STRING_DATA {
                pData: data,
                ulLen: data_len,
            };
            boxed(params, &mut keep)
        }
        ParamSpec::CbcData { iv, data } => {
            let (data, data_len) = place(data, &mut keep);
            let params = CK_AES_CBC_ENCRYPT_DATA_PARAMS {
                iv: *iv,
                pData: data,
                length: data_len,
            };
            boxed(params, &mut keep)
        }
    };
    Built {
        raw: CK_MECHANISM {
            mechanism: kind,
            pParameter: pointer.cast(),
            ulParameterLen: len,
        },
        _keep: keep,
    }
}

/// A mechanism without parameter.
fn plain_mechanism(kind: CK_MECHANISM_TYPE) -> Built {
    build_mechanism(kind, &ParamSpec::Plain(Buf::Null(0)))
}

// ---------------------------------------------------------------------------------------
// Calls with outputs: a marked buffer, and what may be written
// ---------------------------------------------------------------------------------------

/// Call `call` with an output buffer of `capacity` bytes (None: NULL, a length query) and
/// check the output protocol: on CKR_OK with a buffer the length word is at most the
/// capacity and nothing past it was written; on CKR_BUFFER_TOO_SMALL or any failure, not
/// a byte of the buffer was written.
fn with_output(
    f: F,
    capacity: Option<usize>,
    call: impl FnOnce(CK_BYTE_PTR, CK_ULONG_PTR) -> CK_RV,
) -> Result<(CK_RV, Vec<u8>), TestCaseError> {
    let mut buffer = vec![MARK; capacity.unwrap_or(0)];
    let pointer = if capacity.is_some() {
        buffer.as_mut_ptr()
    } else {
        null_mut()
    };
    let mut len = capacity.map_or(UNTOUCHED, |c| c as CK_ULONG);
    let rv = call(pointer, &mut len);
    allowed(f, rv)?;
    match (rv, capacity) {
        (CKR_OK, Some(capacity)) => {
            prop_assert!(
                len as usize <= capacity,
                "C_{f:?} wrote a length word of {len} for a buffer of {capacity}"
            );
            prop_assert!(
                buffer[len as usize..].iter().all(|&b| b == MARK),
                "C_{f:?} wrote past the length it reported"
            );
            buffer.truncate(len as usize);
        }
        (CKR_OK, None) => {}
        (CKR_BUFFER_TOO_SMALL, Some(capacity)) => {
            prop_assert!(
                len as usize > capacity,
                "C_{f:?}: too small, yet {len} fits"
            );
            prop_assert!(
                buffer.iter().all(|&b| b == MARK),
                "C_{f:?}: wrote into a short buffer"
            );
        }
        _ => prop_assert!(
            buffer.iter().all(|&b| b == MARK),
            "C_{f:?} failed with 0x{rv:x} but wrote into the output"
        ),
    }
    Ok((rv, buffer))
}

fn capacity() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        1 => Just(None),
        4 => select(vec![0usize, 1, 15, 16, 20, 31, 32, 40, 48, 64, 255, 256, 300, 600])
            .prop_map(Some),
    ]
}

/// C_CreateObject, C_CopyObject, C_UnwrapKey, C_DeriveKey, C_GenerateKey: a failure
/// wrote no handle and created nothing; a success is destroyed again so the token stays
/// small. A random template may make an object CKA_DESTROYABLE false: C_DestroyObject must
/// then say CKR_ACTION_PROHIBITED and the object stays — `Some(is_token_object)`.
fn made_object(
    world: &World,
    f: F,
    rv: CK_RV,
    handle: CK_OBJECT_HANDLE,
    count_before: Option<usize>,
) -> Result<Option<bool>, TestCaseError> {
    allowed(f, rv)?;
    if rv == CKR_OK {
        // SAFETY: takes no pointers.
        let destroyed = unsafe { (functions().C_DestroyObject.unwrap())(world.keeper, handle) };
        if destroyed == CKR_ACTION_PROHIBITED {
            prop_assert!(
                !bool_attribute(world.keeper, handle, CKA_DESTROYABLE),
                "C_DestroyObject refused a destroyable object"
            );
            let token = bool_attribute(world.keeper, handle, CKA_TOKEN);
            if token {
                world.leftovers.set(world.leftovers.get() + 1);
            }
            return Ok(Some(token));
        }
        exactly(F::DestroyObject, destroyed, CKR_OK)?;
    } else {
        prop_assert_eq!(handle, UNTOUCHED, "C_{:?} failed and wrote a handle", f);
        if let Some(before) = count_before {
            prop_assert_eq!(
                object_count(world),
                before,
                "C_{:?} failed and made an object",
                f
            );
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Property 1: random templates
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct TemplateCase {
    create: Vec<AttrSpec>,
    find: Vec<AttrSpec>,
    read: Vec<(CK_ATTRIBUTE_TYPE, Option<usize>)>,
    set: Vec<AttrSpec>,
    copy: Vec<AttrSpec>,
    rw: bool,
}

fn template_case() -> impl Strategy<Value = TemplateCase> {
    (
        template_spec(),
        vec(random_attribute(), 0..4),
        vec(
            (
                attribute_type(),
                prop_oneof![Just(None), (0usize..80).prop_map(Some)],
            ),
            0..6,
        ),
        vec(random_attribute(), 0..4),
        vec(random_attribute(), 0..4),
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(create, find, read, set, copy, rw)| TemplateCase {
            create,
            find,
            read,
            set,
            copy,
            rw,
        })
}

fn run_template_case(world: &World, case: &TemplateCase) -> Result<(), TestCaseError> {
    let f = functions();
    let session = open_session(
        world.slot,
        CKF_SERIAL_SESSION | if case.rw { CKF_RW_SESSION } else { 0 },
    );
    let before = object_count(world);

    // C_CreateObject: an unknown type never makes an object.
    let template = build(&case.create);
    let mut object = UNTOUCHED;
    // SAFETY: the template's pointers are valid for the lengths they claim.
    let rv = unsafe {
        (f.C_CreateObject.unwrap())(session, template.ptr(), template.count(), &mut object)
    };
    if has_unknown_type(&case.create) {
        prop_assert_ne!(rv, CKR_OK, "an unknown attribute type made an object");
    }
    let mut expected = before;
    let mut token_left = 0;
    if let Some(token) = made_object(world, F::CreateObject, rv, object, Some(expected))? {
        expected += 1;
        token_left += usize::from(token);
    }

    // C_FindObjectsInit with a random template, then a full search.
    let template = build(&case.find);
    // SAFETY: as above.
    let rv = unsafe { (f.C_FindObjectsInit.unwrap())(session, template.ptr(), template.count()) };
    allowed(F::FindObjectsInit, rv)?;
    if rv == CKR_OK {
        let mut found = [UNTOUCHED; 8];
        let mut count = UNTOUCHED;
        // SAFETY: `found` holds 8 writable handles.
        let rv = unsafe { (f.C_FindObjects.unwrap())(session, found.as_mut_ptr(), 8, &mut count) };
        exactly(F::FindObjects, rv, CKR_OK)?;
        prop_assert!(count <= 8);
        prop_assert!(found[count as usize..].iter().all(|&h| h == UNTOUCHED));
        // SAFETY: takes no pointers.
        exactly(
            F::FindObjectsFinal,
            unsafe { (f.C_FindObjectsFinal.unwrap())(session) },
            CKR_OK,
        )?;
    }

    // C_GetAttributeValue into buffers of random sizes: a length word is never larger
    // than its buffer unless it is CK_UNAVAILABLE_INFORMATION, and nothing past it is
    // written.
    let mut buffers: Vec<Vec<u8>> = case
        .read
        .iter()
        .map(|(_, capacity)| vec![MARK; capacity.unwrap_or(0)])
        .collect();
    let mut attributes: Vec<CK_ATTRIBUTE> = case
        .read
        .iter()
        .zip(buffers.iter_mut())
        .map(|((kind, capacity), buffer)| CK_ATTRIBUTE {
            type_: *kind,
            // Template values are written through their inner pointers: only queried.
            pValue: match capacity {
                Some(_) if !is_template_type(*kind) => buffer.as_mut_ptr().cast(),
                _ => null_mut(),
            },
            ulValueLen: capacity.unwrap_or(0) as CK_ULONG,
        })
        .collect();
    let pointers: Vec<bool> = attributes.iter().map(|a| !a.pValue.is_null()).collect();
    // SAFETY: every pValue is NULL or valid for ulValueLen writable bytes.
    let rv = unsafe {
        (f.C_GetAttributeValue.unwrap())(
            session,
            world.aes.get(),
            attributes.as_mut_ptr(),
            attributes.len() as CK_ULONG,
        )
    };
    allowed(F::GetAttributeValue, rv)?;
    for ((attribute, buffer), has_pointer) in attributes.iter().zip(&buffers).zip(pointers) {
        let len = attribute.ulValueLen;
        if has_pointer && len != CK_UNAVAILABLE_INFORMATION {
            prop_assert!(
                len as usize <= buffer.len(),
                "length word {len} > buffer {}",
                buffer.len()
            );
            prop_assert!(buffer[len as usize..].iter().all(|&b| b == MARK));
        }
        if attribute.type_ == CKA_VALUE && has_pointer && len as usize <= FIPS_KEY.len() {
            prop_assert_eq!(&buffer[..len as usize], &FIPS_KEY[..len as usize]);
        }
    }

    // C_SetAttributeValue on a throwaway object, C_CopyObject of the fixture key.
    let throwaway = create(world.keeper, &data_object("throwaway")).unwrap();
    let template = build(&case.set);
    // SAFETY: as above.
    let rv = unsafe {
        (f.C_SetAttributeValue.unwrap())(session, throwaway, template.ptr(), template.count())
    };
    allowed(F::SetAttributeValue, rv)?;
    if has_unknown_type(&case.set) {
        prop_assert_ne!(rv, CKR_OK, "an unknown attribute type was set");
    }
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_DestroyObject.unwrap())(world.keeper, throwaway) };
    exactly(F::DestroyObject, rv, CKR_OK)?;

    let template = build(&case.copy);
    let mut copy = UNTOUCHED;
    // SAFETY: as above; `copy` is writable.
    let rv = unsafe {
        (f.C_CopyObject.unwrap())(
            session,
            world.aes.get(),
            template.ptr(),
            template.count(),
            &mut copy,
        )
    };
    if has_unknown_type(&case.copy) {
        prop_assert_ne!(rv, CKR_OK, "an unknown attribute type was copied in");
    }
    if let Some(token) = made_object(world, F::CopyObject, rv, copy, Some(expected))? {
        token_left += usize::from(token);
    }

    exactly(F::CloseSession, close_session(session), CKR_OK)?;
    // Session objects went with the session; undestroyable token objects stay.
    prop_assert_eq!(object_count(world), before + token_left);
    still_usable(world)
}

#[test]
#[serial]
fn random_templates_get_listed_codes_and_unknown_types_never_make_objects() {
    drive(false, 600, template_case(), |world, case| {
        run_template_case(world, &case)
    });
}

// ---------------------------------------------------------------------------------------
// Property 2: random mechanisms and parameters at every init call
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum InitCall {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Digest,
    Wrap,
    Unwrap,
    Derive,
    GenerateKey,
    GenerateKeyPair,
}

#[derive(Clone, Copy, Debug)]
enum KeyPick {
    Aes,
    Hmac,
    RsaPublic,
    RsaPrivate,
    NeverIssued(CK_OBJECT_HANDLE),
    Zero,
}

fn key_pick() -> impl Strategy<Value = KeyPick> {
    prop_oneof![
        3 => Just(KeyPick::Aes),
        2 => Just(KeyPick::Hmac),
        2 => Just(KeyPick::RsaPublic),
        2 => Just(KeyPick::RsaPrivate),
        1 => (NEVER_ISSUED..).prop_map(KeyPick::NeverIssued),
        1 => Just(KeyPick::Zero),
    ]
}

fn handle_of(world: &World, pick: KeyPick) -> CK_OBJECT_HANDLE {
    let (public, private) = world.rsa.get().unwrap_or((0, 0));
    match pick {
        KeyPick::Aes => world.aes.get(),
        KeyPick::Hmac => world.hmac.get(),
        KeyPick::RsaPublic => public,
        KeyPick::RsaPrivate => private,
        KeyPick::NeverIssued(handle) => handle,
        KeyPick::Zero => 0,
    }
}

#[derive(Clone, Debug)]
struct MechanismCase {
    call: InitCall,
    mechanism: (CK_MECHANISM_TYPE, ParamSpec),
    key: KeyPick,
    other_key: KeyPick,
    data: Vec<u8>,
    capacity: Option<usize>,
    template: Vec<AttrSpec>,
}

fn mechanism_case() -> impl Strategy<Value = MechanismCase> {
    (
        select(vec![
            InitCall::Encrypt,
            InitCall::Decrypt,
            InitCall::Sign,
            InitCall::Verify,
            InitCall::Digest,
            InitCall::Wrap,
            InitCall::Unwrap,
            InitCall::Derive,
            InitCall::GenerateKey,
            InitCall::GenerateKeyPair,
        ]),
        mechanism(),
        key_pick(),
        key_pick(),
        prop_oneof![
            vec(any::<u8>(), 0..80),
            select(vec![0usize, 16, 32, 256]).prop_map(|n| vec![0x3c; n])
        ],
        capacity(),
        template_spec(),
    )
        .prop_map(
            |(call, mechanism, key, other_key, data, capacity, template)| MechanismCase {
                call,
                mechanism,
                key,
                other_key,
                data,
                capacity,
                template,
            },
        )
}

/// Generating RSA keys from a random template could ask for 4096 bits every case.
fn too_slow(call: InitCall, mechanism: CK_MECHANISM_TYPE) -> bool {
    matches!(call, InitCall::GenerateKeyPair) && mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN
}

fn run_mechanism_case(world: &World, case: &MechanismCase) -> Result<(), TestCaseError> {
    let f = functions();
    let session = open_rw(world.slot);
    let (kind, param) = &case.mechanism;
    let mut built = build_mechanism(*kind, param);
    let key = handle_of(world, case.key);
    let (data_ptr, data_len) = (case.data.as_ptr().cast_mut(), case.data.len() as CK_ULONG);
    // SAFETY (every call below): the mechanism's pointers lead to live memory valid for
    // the lengths they claim, the data is readable for its length, templates are built
    // by `build`, outputs are writable for their capacity.
    match case.call {
        InitCall::Encrypt
        | InitCall::Decrypt
        | InitCall::Sign
        | InitCall::Verify
        | InitCall::Digest => {
            let (init_f, rv) = match case.call {
                InitCall::Encrypt => (F::EncryptInit, unsafe {
                    (f.C_EncryptInit.unwrap())(session, built.ptr(), key)
                }),
                InitCall::Decrypt => (F::DecryptInit, unsafe {
                    (f.C_DecryptInit.unwrap())(session, built.ptr(), key)
                }),
                InitCall::Sign => (F::SignInit, unsafe {
                    (f.C_SignInit.unwrap())(session, built.ptr(), key)
                }),
                InitCall::Verify => (F::VerifyInit, unsafe {
                    (f.C_VerifyInit.unwrap())(session, built.ptr(), key)
                }),
                _ => (F::DigestInit, unsafe {
                    (f.C_DigestInit.unwrap())(session, built.ptr())
                }),
            };
            allowed(init_f, rv)?;
            if matches!(case.key, KeyPick::NeverIssued(_) | KeyPick::Zero)
                && !matches!(case.call, InitCall::Digest)
                && rv != CKR_MECHANISM_INVALID
                && rv != CKR_MECHANISM_PARAM_INVALID
                && rv != CKR_ARGUMENTS_BAD
            {
                exactly(init_f, rv, CKR_KEY_HANDLE_INVALID)?;
            }
            if rv == CKR_OK {
                match case.call {
                    InitCall::Encrypt => {
                        with_output(F::Encrypt, case.capacity, |out, len| unsafe {
                            (f.C_Encrypt.unwrap())(session, data_ptr, data_len, out, len)
                        })
                        .map(drop)?
                    }
                    InitCall::Decrypt => {
                        with_output(F::Decrypt, case.capacity, |out, len| unsafe {
                            (f.C_Decrypt.unwrap())(session, data_ptr, data_len, out, len)
                        })
                        .map(drop)?
                    }
                    InitCall::Sign => with_output(F::Sign, case.capacity, |out, len| unsafe {
                        (f.C_Sign.unwrap())(session, data_ptr, data_len, out, len)
                    })
                    .map(drop)?,
                    InitCall::Digest => with_output(F::Digest, case.capacity, |out, len| unsafe {
                        (f.C_Digest.unwrap())(session, data_ptr, data_len, out, len)
                    })
                    .map(drop)?,
                    _ => {
                        let half = case.data.len() / 2;
                        let rv = unsafe {
                            (f.C_Verify.unwrap())(
                                session,
                                data_ptr,
                                half as CK_ULONG,
                                data_ptr.wrapping_add(half),
                                (case.data.len() - half) as CK_ULONG,
                            )
                        };
                        allowed(F::Verify, rv)?;
                        // Random bytes are not a signature of random data.
                        prop_assert_ne!(rv, CKR_OK, "a random signature verified");
                    }
                }
            }
        }
        InitCall::Wrap => {
            let wrapping = handle_of(world, case.other_key);
            let (rv, _) = with_output(F::WrapKey, case.capacity, |out, len| unsafe {
                (f.C_WrapKey.unwrap())(session, built.ptr(), wrapping, key, out, len)
            })?;
            if matches!(case.other_key, KeyPick::NeverIssued(_) | KeyPick::Zero)
                && !matches!(case.key, KeyPick::NeverIssued(_) | KeyPick::Zero)
                && matches!(rv, CKR_KEY_HANDLE_INVALID)
            {
                return Err(TestCaseError::fail(
                    "a bad wrapping key reported as the wrapped key",
                ));
            }
        }
        InitCall::Unwrap => {
            let before = object_count(world);
            let template = build(&case.template);
            let mut new_key = UNTOUCHED;
            let rv = unsafe {
                (f.C_UnwrapKey.unwrap())(
                    session,
                    built.ptr(),
                    key,
                    data_ptr,
                    data_len,
                    template.ptr(),
                    template.count(),
                    &mut new_key,
                )
            };
            made_object(world, F::UnwrapKey, rv, new_key, Some(before))?;
        }
        InitCall::Derive => {
            let before = object_count(world);
            let template = build(&case.template);
            let mut new_key = UNTOUCHED;
            let rv = unsafe {
                (f.C_DeriveKey.unwrap())(
                    session,
                    built.ptr(),
                    key,
                    template.ptr(),
                    template.count(),
                    &mut new_key,
                )
            };
            made_object(world, F::DeriveKey, rv, new_key, Some(before))?;
        }
        InitCall::GenerateKey => {
            let before = object_count(world);
            let template = build(&case.template);
            let mut new_key = UNTOUCHED;
            let rv = unsafe {
                (f.C_GenerateKey.unwrap())(
                    session,
                    built.ptr(),
                    template.ptr(),
                    template.count(),
                    &mut new_key,
                )
            };
            made_object(world, F::GenerateKey, rv, new_key, Some(before))?;
        }
        InitCall::GenerateKeyPair => {
            if !too_slow(case.call, *kind) {
                let before = object_count(world);
                let public = build(&case.template);
                let private = build(&case.template[case.template.len() / 2..]);
                let (mut public_key, mut private_key) = (UNTOUCHED, UNTOUCHED);
                let rv = unsafe {
                    (f.C_GenerateKeyPair.unwrap())(
                        session,
                        built.ptr(),
                        public.ptr(),
                        public.count(),
                        private.ptr(),
                        private.count(),
                        &mut public_key,
                        &mut private_key,
                    )
                };
                allowed(F::GenerateKeyPair, rv)?;
                if rv == CKR_OK {
                    for key in [public_key, private_key] {
                        made_object(world, F::GenerateKeyPair, rv, key, None)?;
                    }
                } else {
                    prop_assert_eq!((public_key, private_key), (UNTOUCHED, UNTOUCHED));
                    prop_assert_eq!(object_count(world), before);
                }
            }
        }
    }
    exactly(F::CloseSession, close_session(session), CKR_OK)?;
    still_usable(world)
}

#[test]
#[serial]
fn random_mechanisms_and_parameters_get_listed_codes_at_every_init() {
    drive(true, 1000, mechanism_case(), |world, case| {
        run_mechanism_case(world, &case)
    });
}

// ---------------------------------------------------------------------------------------
// Property 3: random blobs to C_UnwrapKey under a real AES KEK and a real RSA key
// ---------------------------------------------------------------------------------------

/// Only mechanisms that authenticate what they open: a random blob passes their check
/// with probability 2^-64 or less. (ECB, CBC and PKCS#1 v1.5 would open random bytes.)
#[derive(Clone, Debug)]
enum Authenticated {
    AesKeyWrap,
    AesKeyWrapPad,
    AesKeyWrapKwp,
    AesGcm(Vec<u8>, Vec<u8>),
    Domain,
    RsaOaep(CK_MECHANISM_TYPE),
    RsaAes(CK_ULONG, CK_MECHANISM_TYPE),
}

fn authenticated() -> impl Strategy<Value = Authenticated> {
    let hash = select(vec![CKM_SHA_1, CKM_SHA256]);
    prop_oneof![
        Just(Authenticated::AesKeyWrap),
        Just(Authenticated::AesKeyWrapPad),
        Just(Authenticated::AesKeyWrapKwp),
        (vec(any::<u8>(), 12..=12), vec(any::<u8>(), 0..20))
            .prop_map(|(iv, aad)| Authenticated::AesGcm(iv, aad)),
        Just(Authenticated::Domain),
        hash.clone().prop_map(Authenticated::RsaOaep),
        (select(vec![128 as CK_ULONG, 192, 256]), hash)
            .prop_map(|(b, h)| Authenticated::RsaAes(b, h)),
    ]
}

fn mgf_of(hash: CK_MECHANISM_TYPE) -> CK_RSA_PKCS_MGF_TYPE {
    if hash == CKM_SHA_1 {
        CKG_MGF1_SHA1
    } else {
        CKG_MGF1_SHA256
    }
}

impl Authenticated {
    /// The mechanism and whether it unwraps with the RSA private key.
    fn build(&self) -> (Built, bool) {
        let oaep = |hash| OaepSpec {
            hash,
            mgf: mgf_of(hash),
            source: CKZ_DATA_SPECIFIED,
            label: Buf::Null(0),
        };
        match self {
            Self::AesKeyWrap => (plain_mechanism(CKM_AES_KEY_WRAP), false),
            Self::AesKeyWrapPad => (plain_mechanism(CKM_AES_KEY_WRAP_PAD), false),
            Self::AesKeyWrapKwp => (plain_mechanism(CKM_AES_KEY_WRAP_KWP), false),
            Self::AesGcm(iv, aad) => (
                build_mechanism(
                    CKM_AES_GCM,
                    &ParamSpec::Gcm {
                        iv: Buf::Bytes(iv.clone()),
                        aad: Buf::Bytes(aad.clone()),
                        tag_bits: 128,
                    },
                ),
                false,
            ),
            Self::Domain => (plain_mechanism(CKM_KEYFERRY_DOMAIN_WRAP), false),
            Self::RsaOaep(hash) => (
                build_mechanism(CKM_RSA_PKCS_OAEP, &ParamSpec::Oaep(oaep(*hash))),
                true,
            ),
            Self::RsaAes(bits, hash) => (
                build_mechanism(
                    CKM_RSA_AES_KEY_WRAP,
                    &ParamSpec::RsaAes {
                        aes_bits: *bits,
                        oaep: Some(oaep(*hash)),
                    },
                ),
                true,
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct BlobCase {
    mechanism: Authenticated,
    blob: Vec<u8>,
    template: Vec<AttrSpec>,
}

fn blob_case() -> impl Strategy<Value = BlobCase> {
    let aes_template = select(vec![0 as CK_ULONG, 16, 24, 32]).prop_map(|len| {
        let mut template = vec![
            AttrSpec {
                kind: CKA_CLASS,
                value: ValueSpec::Bytes(CKO_SECRET_KEY.to_ne_bytes().to_vec()),
            },
            AttrSpec {
                kind: CKA_KEY_TYPE,
                value: ValueSpec::Bytes(CKK_AES.to_ne_bytes().to_vec()),
            },
        ];
        if len != 0 {
            template.push(AttrSpec {
                kind: CKA_VALUE_LEN,
                value: ValueSpec::Bytes(len.to_ne_bytes().to_vec()),
            });
        }
        template
    });
    (
        authenticated(),
        prop_oneof![
            vec(any::<u8>(), 0..600),
            // Lengths real blobs have: 24/32/40 (KW), 256 (RSA-2048), 256 + 40 (RSA-AES).
            select(vec![24usize, 32, 40, 44, 256, 280, 296, 304])
                .prop_flat_map(|n| vec(any::<u8>(), n..=n)),
        ],
        prop_oneof![3 => aes_template, 1 => template_spec()],
    )
        .prop_map(|(mechanism, blob, template)| BlobCase {
            mechanism,
            blob,
            template,
        })
}

fn run_blob_case(world: &World, case: &BlobCase) -> Result<(), TestCaseError> {
    let session = open_rw(world.slot);
    let (mut mechanism, rsa) = case.mechanism.build();
    let unwrapping = if rsa {
        world.rsa.get().unwrap().1
    } else {
        world.aes.get()
    };
    let template = build(&case.template);
    let before = object_count(world);
    let mut key = UNTOUCHED;
    // SAFETY: the mechanism, blob and template are valid for their lengths; `key` is
    // writable.
    let rv = unsafe {
        (functions().C_UnwrapKey.unwrap())(
            session,
            mechanism.ptr(),
            unwrapping,
            case.blob.as_ptr().cast_mut(),
            case.blob.len() as CK_ULONG,
            template.ptr(),
            template.count(),
            &mut key,
        )
    };
    prop_assert_ne!(rv, CKR_OK, "a random blob unwrapped");
    allowed(F::UnwrapKey, rv)?;
    prop_assert_eq!(key, UNTOUCHED);
    prop_assert_eq!(object_count(world), before);
    exactly(F::CloseSession, close_session(session), CKR_OK)?;
    still_usable(world)
}

#[test]
#[serial]
fn random_blobs_never_unwrap_under_a_real_aes_or_rsa_key() {
    drive(true, 600, blob_case(), |world, case| {
        run_blob_case(world, &case)
    });
}

// ---------------------------------------------------------------------------------------
// Property 4: random session and object handles
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum SessionPick {
    Live,
    Closed,
    NeverIssued(CK_SESSION_HANDLE),
    Zero,
}

#[derive(Clone, Copy, Debug)]
enum ObjectPick {
    /// A session AES key made for the case.
    Live,
    Destroyed,
    /// A session key of a session closed in this case.
    OfClosedSession,
    NeverIssued(CK_OBJECT_HANDLE),
    Zero,
}

#[derive(Clone, Copy, Debug)]
enum HandleCall {
    GetSessionInfo,
    GetAttributeValue,
    GetObjectSize,
    SetAttributeValue,
    CopyObject,
    DestroyObject,
    EncryptInit,
    SignInit,
    WrapKeyWith,
    WrapKeyOf,
    UnwrapKeyWith,
    FindObjectsInit,
    Login,
    Logout,
    CloseSession,
}

#[derive(Clone, Debug)]
struct HandleCase {
    session: SessionPick,
    object: ObjectPick,
    call: HandleCall,
}

fn handle_case() -> impl Strategy<Value = HandleCase> {
    (
        prop_oneof![
            2 => Just(SessionPick::Live),
            1 => Just(SessionPick::Closed),
            1 => (NEVER_ISSUED..).prop_map(SessionPick::NeverIssued),
            1 => Just(SessionPick::Zero),
        ],
        prop_oneof![
            1 => Just(ObjectPick::Live),
            1 => Just(ObjectPick::Destroyed),
            1 => Just(ObjectPick::OfClosedSession),
            1 => (NEVER_ISSUED..).prop_map(ObjectPick::NeverIssued),
            1 => Just(ObjectPick::Zero),
        ],
        select(vec![
            HandleCall::GetSessionInfo,
            HandleCall::GetAttributeValue,
            HandleCall::GetObjectSize,
            HandleCall::SetAttributeValue,
            HandleCall::CopyObject,
            HandleCall::DestroyObject,
            HandleCall::EncryptInit,
            HandleCall::SignInit,
            HandleCall::WrapKeyWith,
            HandleCall::WrapKeyOf,
            HandleCall::UnwrapKeyWith,
            HandleCall::FindObjectsInit,
            HandleCall::Login,
            HandleCall::Logout,
            HandleCall::CloseSession,
        ]),
    )
        .prop_map(|(session, object, call)| HandleCase {
            session,
            object,
            call,
        })
}

fn run_handle_case(world: &World, case: &HandleCase) -> Result<(), TestCaseError> {
    let f = functions();
    let live = open_rw(world.slot);
    let closed = open_rw(world.slot);
    let key_template = aes_key(&[7; 16])
        .bool(CKA_ENCRYPT, true)
        .bool(CKA_SIGN, true)
        .bool(CKA_WRAP, true)
        .bool(CKA_UNWRAP, true)
        .bool(CKA_EXTRACTABLE, true);
    let live_key = create(live, &key_template).unwrap();
    let destroyed = create(live, &key_template).unwrap();
    // SAFETY: takes no pointers.
    exactly(
        F::DestroyObject,
        unsafe { (f.C_DestroyObject.unwrap())(live, destroyed) },
        CKR_OK,
    )?;
    let of_closed = create(closed, &key_template).unwrap();
    exactly(F::CloseSession, close_session(closed), CKR_OK)?;

    let session = match case.session {
        SessionPick::Live => live,
        SessionPick::Closed => closed,
        SessionPick::NeverIssued(handle) => handle,
        SessionPick::Zero => 0,
    };
    let object = match case.object {
        ObjectPick::Live => live_key,
        ObjectPick::Destroyed => destroyed,
        ObjectPick::OfClosedSession => of_closed,
        ObjectPick::NeverIssued(handle) => handle,
        ObjectPick::Zero => 0,
    };
    let session_ok = matches!(case.session, SessionPick::Live);
    let object_ok = matches!(case.object, ObjectPick::Live);
    let mut ecb = plain_mechanism(CKM_AES_ECB);
    let mut hmac = plain_mechanism(CKM_AES_CMAC);
    let mut kw = plain_mechanism(CKM_AES_KEY_WRAP);
    let label = Template::new().bytes(CKA_LABEL, b"renamed");
    let aes_template = Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES);
    let blob = [0x24u8; 24];
    // What the spec pins: a bad session handle is CKR_SESSION_HANDLE_INVALID whatever
    // else is wrong; with a good session, a bad object handle gets the code naming its
    // role.
    let (function, rv, object_code) = match case.call {
        HandleCall::GetSessionInfo => {
            let mut info = CK_SESSION_INFO::default();
            // SAFETY: `info` is writable.
            let rv = unsafe { (f.C_GetSessionInfo.unwrap())(session, &mut info) };
            (F::GetSessionInfo, rv, None)
        }
        HandleCall::GetAttributeValue => {
            let mut value = [MARK; 16];
            let mut attribute = CK_ATTRIBUTE {
                type_: CKA_VALUE_LEN,
                pValue: value.as_mut_ptr().cast(),
                ulValueLen: 16,
            };
            // SAFETY: one attribute with a 16-byte writable buffer.
            let rv =
                unsafe { (f.C_GetAttributeValue.unwrap())(session, object, &mut attribute, 1) };
            (F::GetAttributeValue, rv, Some(CKR_OBJECT_HANDLE_INVALID))
        }
        HandleCall::GetObjectSize => {
            let mut size = UNTOUCHED;
            // SAFETY: `size` is writable.
            let rv = unsafe { (f.C_GetObjectSize.unwrap())(session, object, &mut size) };
            (F::GetObjectSize, rv, Some(CKR_OBJECT_HANDLE_INVALID))
        }
        HandleCall::SetAttributeValue => {
            // SAFETY: the template is valid.
            let rv = unsafe {
                (f.C_SetAttributeValue.unwrap())(session, object, label.ptr(), label.count())
            };
            (F::SetAttributeValue, rv, Some(CKR_OBJECT_HANDLE_INVALID))
        }
        HandleCall::CopyObject => {
            let mut copy = UNTOUCHED;
            // SAFETY: the template is valid; `copy` is writable.
            let rv = unsafe {
                (f.C_CopyObject.unwrap())(session, object, label.ptr(), label.count(), &mut copy)
            };
            if rv != CKR_OK {
                prop_assert_eq!(copy, UNTOUCHED);
            }
            (F::CopyObject, rv, Some(CKR_OBJECT_HANDLE_INVALID))
        }
        HandleCall::DestroyObject => {
            // SAFETY: takes no pointers.
            let rv = unsafe { (f.C_DestroyObject.unwrap())(session, object) };
            (F::DestroyObject, rv, Some(CKR_OBJECT_HANDLE_INVALID))
        }
        HandleCall::EncryptInit => {
            // SAFETY: the mechanism is valid.
            let rv = unsafe { (f.C_EncryptInit.unwrap())(session, ecb.ptr(), object) };
            (F::EncryptInit, rv, Some(CKR_KEY_HANDLE_INVALID))
        }
        HandleCall::SignInit => {
            // SAFETY: the mechanism is valid.
            let rv = unsafe { (f.C_SignInit.unwrap())(session, hmac.ptr(), object) };
            (F::SignInit, rv, Some(CKR_KEY_HANDLE_INVALID))
        }
        HandleCall::WrapKeyWith | HandleCall::WrapKeyOf => {
            let (wrapping, wrapped, code) = if matches!(case.call, HandleCall::WrapKeyWith) {
                (object, live_key, CKR_WRAPPING_KEY_HANDLE_INVALID)
            } else {
                (world.aes.get(), object, CKR_KEY_HANDLE_INVALID)
            };
            let (rv, _) = with_output(F::WrapKey, Some(64), |out, len| unsafe {
                // SAFETY: the mechanism is valid; `out` holds 64 writable bytes.
                (f.C_WrapKey.unwrap())(session, kw.ptr(), wrapping, wrapped, out, len)
            })?;
            (F::WrapKey, rv, Some(code))
        }
        HandleCall::UnwrapKeyWith => {
            let mut key = UNTOUCHED;
            // SAFETY: the mechanism, blob and template are valid; `key` is writable.
            let rv = unsafe {
                (f.C_UnwrapKey.unwrap())(
                    session,
                    kw.ptr(),
                    object,
                    blob.as_ptr().cast_mut(),
                    blob.len() as CK_ULONG,
                    aes_template.ptr(),
                    aes_template.count(),
                    &mut key,
                )
            };
            prop_assert_eq!(key, UNTOUCHED);
            (F::UnwrapKey, rv, Some(CKR_UNWRAPPING_KEY_HANDLE_INVALID))
        }
        HandleCall::FindObjectsInit => {
            // SAFETY: the template is valid.
            let rv = unsafe { (f.C_FindObjectsInit.unwrap())(session, label.ptr(), label.count()) };
            (F::FindObjectsInit, rv, None)
        }
        HandleCall::Login => (F::Login, login(session, CKU_USER, USER_PIN), None),
        HandleCall::Logout => (F::Logout, logout(session), None),
        HandleCall::CloseSession => (F::CloseSession, close_session(session), None),
    };
    allowed(function, rv)?;
    if !session_ok {
        exactly(function, rv, CKR_SESSION_HANDLE_INVALID)?;
    } else if let (Some(code), false) = (object_code, object_ok) {
        exactly(function, rv, code)?;
    } else if matches!(case.call, HandleCall::UnwrapKeyWith) {
        // A good KEK and 24 bytes of 0x24: not a real wrap.
        prop_assert_ne!(rv, CKR_OK);
    }
    // Ends whatever the case started; CKR_SESSION_HANDLE_INVALID if it closed `live`.
    let rv = close_session(live);
    prop_assert!(
        rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID,
        "close 0x{rv:x}"
    );
    still_usable(world)
}

#[test]
#[serial]
fn random_session_and_object_handles_get_the_code_naming_them() {
    drive(false, 600, handle_case(), |world, case| {
        run_handle_case(world, &case)
    });
}

// ---------------------------------------------------------------------------------------
// Property 5: random call orders on a real token
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Digest,
}

#[derive(Clone, Debug)]
enum Step {
    Init(Family, usize),
    Update(Family, usize),
    Final(Family, Option<usize>),
    OneShot(Family, usize, Option<usize>),
    FindInit(bool),
    Find(CK_ULONG),
    FindFinal,
    Login(CK_USER_TYPE),
    Logout,
    Open(bool),
    Close,
}

#[derive(Clone, Debug)]
struct Op {
    session: usize,
    step: Step,
}

fn family() -> impl Strategy<Value = Family> {
    select(vec![
        Family::Encrypt,
        Family::Decrypt,
        Family::Sign,
        Family::Verify,
        Family::Digest,
    ])
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![select(vec![0usize, 1, 15, 16, 17, 32, 48]), 0usize..200];
    let step = prop_oneof![
        4 => (family(), 0usize..4).prop_map(|(f, alg)| Step::Init(f, alg)),
        3 => (family(), len.clone()).prop_map(|(f, n)| Step::Update(f, n)),
        2 => (family(), capacity()).prop_map(|(f, c)| Step::Final(f, c)),
        3 => (family(), len, capacity()).prop_map(|(f, n, c)| Step::OneShot(f, n, c)),
        1 => any::<bool>().prop_map(Step::FindInit),
        1 => (0 as CK_ULONG..4).prop_map(Step::Find),
        1 => Just(Step::FindFinal),
        1 => select(vec![CKU_USER, CKU_SO, CKU_CONTEXT_SPECIFIC, 7]).prop_map(Step::Login),
        1 => Just(Step::Logout),
        1 => any::<bool>().prop_map(Step::Open),
        1 => Just(Step::Close),
    ];
    (0usize..4, step).prop_map(|(session, step)| Op { session, step })
}

/// The mechanisms of a family: index `alg` modulo their number, with the fixture key
/// each one uses.
fn family_mechanism(world: &World, family: Family, alg: usize) -> (Built, CK_OBJECT_HANDLE) {
    let gcm = ParamSpec::Gcm {
        iv: Buf::Bytes(vec![9; 12]),
        aad: Buf::Bytes(b"aad".to_vec()),
        tag_bits: 128,
    };
    let cbc_iv = ParamSpec::Plain(Buf::Bytes(vec![1; 16]));
    match family {
        Family::Encrypt | Family::Decrypt => match alg % 4 {
            0 => (plain_mechanism(CKM_AES_ECB), world.aes.get()),
            1 => (build_mechanism(CKM_AES_CBC, &cbc_iv), world.aes.get()),
            2 => (build_mechanism(CKM_AES_CBC_PAD, &cbc_iv), world.aes.get()),
            _ => (build_mechanism(CKM_AES_GCM, &gcm), world.aes.get()),
        },
        Family::Sign | Family::Verify => match alg % 3 {
            0 => (plain_mechanism(CKM_SHA256_HMAC), world.hmac.get()),
            1 => (plain_mechanism(CKM_SHA_1_HMAC), world.hmac.get()),
            _ => (plain_mechanism(CKM_AES_CMAC), world.aes.get()),
        },
        Family::Digest => match alg % 3 {
            0 => (plain_mechanism(CKM_SHA256), 0),
            1 => (plain_mechanism(CKM_SHA_1), 0),
            _ => (plain_mechanism(CKM_SHA512), 0),
        },
    }
}

fn run_order_case(world: &World, ops: &[Op]) -> Result<(), TestCaseError> {
    let f = functions();
    let mut sessions = vec![open_rw(world.slot)];
    let mut closed = vec![false];
    let input = [0x6du8; 200];
    for op in ops {
        let index = op.session % sessions.len();
        let session = sessions[index];
        let was_closed = closed[index];
        let data = |n: usize| (input.as_ptr().cast_mut(), n as CK_ULONG);
        // SAFETY (every call below): mechanisms are built with live parameters, inputs
        // point into `input` for at most its 200 bytes, outputs come from `with_output`.
        let (function, rv) = match &op.step {
            Step::Init(family, alg) => {
                let (mut mechanism, key) = family_mechanism(world, *family, *alg);
                let m = mechanism.ptr();
                match family {
                    Family::Encrypt => (F::EncryptInit, unsafe {
                        (f.C_EncryptInit.unwrap())(session, m, key)
                    }),
                    Family::Decrypt => (F::DecryptInit, unsafe {
                        (f.C_DecryptInit.unwrap())(session, m, key)
                    }),
                    Family::Sign => (F::SignInit, unsafe {
                        (f.C_SignInit.unwrap())(session, m, key)
                    }),
                    Family::Verify => (F::VerifyInit, unsafe {
                        (f.C_VerifyInit.unwrap())(session, m, key)
                    }),
                    Family::Digest => (F::DigestInit, unsafe {
                        (f.C_DigestInit.unwrap())(session, m)
                    }),
                }
            }
            Step::Update(family, n) => {
                let (p, len) = data(*n);
                match family {
                    Family::Encrypt => with_output(F::EncryptUpdate, Some(256), |out, l| unsafe {
                        (f.C_EncryptUpdate.unwrap())(session, p, len, out, l)
                    })
                    .map(|(rv, _)| (F::EncryptUpdate, rv))?,
                    Family::Decrypt => with_output(F::DecryptUpdate, Some(256), |out, l| unsafe {
                        (f.C_DecryptUpdate.unwrap())(session, p, len, out, l)
                    })
                    .map(|(rv, _)| (F::DecryptUpdate, rv))?,
                    Family::Sign => (F::SignUpdate, unsafe {
                        (f.C_SignUpdate.unwrap())(session, p, len)
                    }),
                    Family::Verify => (F::VerifyUpdate, unsafe {
                        (f.C_VerifyUpdate.unwrap())(session, p, len)
                    }),
                    Family::Digest => (F::DigestUpdate, unsafe {
                        (f.C_DigestUpdate.unwrap())(session, p, len)
                    }),
                }
            }
            Step::Final(family, capacity) => match family {
                Family::Encrypt => with_output(F::EncryptFinal, *capacity, |out, l| unsafe {
                    (f.C_EncryptFinal.unwrap())(session, out, l)
                })
                .map(|(rv, _)| (F::EncryptFinal, rv))?,
                Family::Decrypt => with_output(F::DecryptFinal, *capacity, |out, l| unsafe {
                    (f.C_DecryptFinal.unwrap())(session, out, l)
                })
                .map(|(rv, _)| (F::DecryptFinal, rv))?,
                Family::Sign => with_output(F::SignFinal, *capacity, |out, l| unsafe {
                    (f.C_SignFinal.unwrap())(session, out, l)
                })
                .map(|(rv, _)| (F::SignFinal, rv))?,
                Family::Verify => {
                    let (p, len) = data(capacity.unwrap_or(0).min(200));
                    (F::VerifyFinal, unsafe {
                        (f.C_VerifyFinal.unwrap())(session, p, len)
                    })
                }
                Family::Digest => with_output(F::DigestFinal, *capacity, |out, l| unsafe {
                    (f.C_DigestFinal.unwrap())(session, out, l)
                })
                .map(|(rv, _)| (F::DigestFinal, rv))?,
            },
            Step::OneShot(family, n, capacity) => {
                let (p, len) = data(*n);
                match family {
                    Family::Encrypt => with_output(F::Encrypt, *capacity, |out, l| unsafe {
                        (f.C_Encrypt.unwrap())(session, p, len, out, l)
                    })
                    .map(|(rv, _)| (F::Encrypt, rv))?,
                    Family::Decrypt => with_output(F::Decrypt, *capacity, |out, l| unsafe {
                        (f.C_Decrypt.unwrap())(session, p, len, out, l)
                    })
                    .map(|(rv, _)| (F::Decrypt, rv))?,
                    Family::Sign => with_output(F::Sign, *capacity, |out, l| unsafe {
                        (f.C_Sign.unwrap())(session, p, len, out, l)
                    })
                    .map(|(rv, _)| (F::Sign, rv))?,
                    Family::Verify => {
                        let (s, slen) = data(capacity.unwrap_or(0).min(200));
                        (F::Verify, unsafe {
                            (f.C_Verify.unwrap())(session, p, len, s, slen)
                        })
                    }
                    Family::Digest => with_output(F::Digest, *capacity, |out, l| unsafe {
                        (f.C_Digest.unwrap())(session, p, len, out, l)
                    })
                    .map(|(rv, _)| (F::Digest, rv))?,
                }
            }
            Step::FindInit(by_label) => {
                let template = if *by_label {
                    Template::new().bytes(CKA_LABEL, b"nothing has this label")
                } else {
                    Template::new()
                };
                (F::FindObjectsInit, unsafe {
                    (f.C_FindObjectsInit.unwrap())(session, template.ptr(), template.count())
                })
            }
            Step::Find(max) => {
                let mut found = [UNTOUCHED; 4];
                let mut count = UNTOUCHED;
                let rv = unsafe {
                    (f.C_FindObjects.unwrap())(session, found.as_mut_ptr(), *max, &mut count)
                };
                if rv == CKR_OK {
                    prop_assert!(
                        count <= *max,
                        "C_FindObjects returned {count} of at most {max}"
                    );
                    prop_assert!(found[count as usize..].iter().all(|&h| h == UNTOUCHED));
                }
                (F::FindObjects, rv)
            }
            Step::FindFinal => (F::FindObjectsFinal, unsafe {
                (f.C_FindObjectsFinal.unwrap())(session)
            }),
            Step::Login(user) => {
                let pin = if *user == CKU_SO { SO_PIN } else { USER_PIN };
                (F::Login, login(session, *user, pin))
            }
            Step::Logout => (F::Logout, logout(session)),
            Step::Open(rw) => {
                let flags = CKF_SERIAL_SESSION | if *rw { CKF_RW_SESSION } else { 0 };
                let mut opened = UNTOUCHED;
                let rv = unsafe {
                    (f.C_OpenSession.unwrap())(world.slot, flags, null_mut(), None, &mut opened)
                };
                if rv == CKR_OK {
                    sessions.push(opened);
                    closed.push(false);
                } else {
                    prop_assert_eq!(opened, UNTOUCHED);
                }
                (F::OpenSession, rv)
            }
            Step::Close => {
                let rv = close_session(session);
                if rv == CKR_OK {
                    closed[index] = true;
                }
                (F::CloseSession, rv)
            }
        };
        allowed(function, rv)?;
        if was_closed && !matches!(op.step, Step::Open(_)) {
            exactly(function, rv, CKR_SESSION_HANDLE_INVALID)?;
        }
    }
    for (session, closed) in sessions.into_iter().zip(closed) {
        if !closed {
            exactly(F::CloseSession, close_session(session), CKR_OK)?;
        }
    }
    still_usable(world)
}

#[test]
#[serial]
fn random_call_orders_get_listed_codes_and_leave_the_token_usable() {
    drive(false, 400, vec(op(), 1..24), |world, ops| {
        run_order_case(world, &ops)
    });
}
