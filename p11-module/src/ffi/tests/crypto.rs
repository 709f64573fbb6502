//! Encryption, decryption, digests and MACs (PKCS#11 3.0 §5.8–§5.13) through the
//! function table: known answers from the standards, the length-query protocol (§5.2),
//! operation state, exact error codes, multi-part against single-part (proptest), and the
//! mechanism list against what the functions really accept.

use std::ptr::null_mut;

use pkcs11_sys::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serial_test::serial;

use super::*;

/// What an output buffer holds before a call: bytes still equal to it were not written.
const MARK: u8 = 0xa5;

fn h(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

// ---------------------------------------------------------------------------------------
// Mechanisms with their parameters, laid out as a C caller lays them out
// ---------------------------------------------------------------------------------------

enum Param {
    Null,
    Bytes(Vec<u8>),
    /// CK_MAC_GENERAL_PARAMS.
    Ulong(Box<CK_ULONG>),
    Ctr(Box<CK_AES_CTR_PARAMS>),
    /// The structure and the IV and AAD it points into.
    Gcm {
        params: Box<CK_GCM_PARAMS>,
        _iv: Vec<u8>,
        _aad: Vec<u8>,
    },
    /// CK_KEY_DERIVATION_STRING_DATA and the data it points to.
    EcbDerive {
        params: Box<CK_KEY_DERIVATION_STRING_DATA>,
        _data: Vec<u8>,
    },
    /// CK_AES_CBC_ENCRYPT_DATA_PARAMS and the data it points to.
    CbcDerive {
        params: Box<CK_AES_CBC_ENCRYPT_DATA_PARAMS>,
        _data: Vec<u8>,
    },
}

/// A mechanism owning its parameter, so the pointers of `raw()` stay valid while it lives.
struct Mech {
    kind: CK_MECHANISM_TYPE,
    param: Param,
}

impl Mech {
    /// No parameter (NULL, length 0).
    fn new(kind: CK_MECHANISM_TYPE) -> Self {
        Self {
            kind,
            param: Param::Null,
        }
    }

    /// A parameter of plain bytes (an IV).
    fn bytes(kind: CK_MECHANISM_TYPE, bytes: &[u8]) -> Self {
        Self {
            kind,
            param: Param::Bytes(bytes.to_vec()),
        }
    }

    /// A _GENERAL MAC with CK_MAC_GENERAL_PARAMS `len`.
    fn general(kind: CK_MECHANISM_TYPE, len: CK_ULONG) -> Self {
        Self {
            kind,
            param: Param::Ulong(Box::new(len)),
        }
    }

    /// CKM_AES_CTR with CK_AES_CTR_PARAMS.
    fn ctr(counter_bits: CK_ULONG, block: [u8; 16]) -> Self {
        Self {
            kind: CKM_AES_CTR,
            param: Param::Ctr(Box::new(CK_AES_CTR_PARAMS {
                ulCounterBits: counter_bits,
                cb: block,
            })),
        }
    }

    /// CKM_AES_GCM with CK_GCM_PARAMS; an empty IV or AAD is a NULL pointer.
    fn gcm(iv: &[u8], aad: &[u8], tag_bits: CK_ULONG) -> Self {
        let (mut iv, mut aad) = (iv.to_vec(), aad.to_vec());
        let pointer = |bytes: &mut Vec<u8>| {
            if bytes.is_empty() {
                null_mut()
            } else {
                bytes.as_mut_ptr()
            }
        };
        let params = Box::new(CK_GCM_PARAMS {
            pIv: pointer(&mut iv),
            ulIvLen: iv.len() as CK_ULONG,
            ulIvBits: (iv.len() * 8) as CK_ULONG,
            pAAD: pointer(&mut aad),
            ulAADLen: aad.len() as CK_ULONG,
            ulTagBits: tag_bits,
        });
        // Moving the vectors into the Param keeps their heap buffers where they are.
        Self {
            kind: CKM_AES_GCM,
            param: Param::Gcm {
                params,
                _iv: iv,
                _aad: aad,
            },
        }
    }

    /// CKM_AES_ECB_ENCRYPT_DATA with CK_KEY_DERIVATION_STRING_DATA.
    fn ecb_derive(data: &[u8]) -> Self {
        let mut data = data.to_vec();
        let params = Box::new(CK_KEY_DERIVATION_STRING_DATA {
            pData: data.as_mut_ptr(),
            ulLen: data.len() as CK_ULONG,
        });
        Self {
            kind: CKM_AES_ECB_ENCRYPT_DATA,
            param: Param::EcbDerive {
                params,
                _data: data,
            },
        }
    }

    /// CKM_AES_CBC_ENCRYPT_DATA with CK_AES_CBC_ENCRYPT_DATA_PARAMS.
    fn cbc_derive(iv: [u8; 16], data: &[u8]) -> Self {
        let mut data = data.to_vec();
        let params = Box::new(CK_AES_CBC_ENCRYPT_DATA_PARAMS {
            iv,
            pData: data.as_mut_ptr(),
            length: data.len() as CK_ULONG,
        });
        Self {
            kind: CKM_AES_CBC_ENCRYPT_DATA,
            param: Param::CbcDerive {
                params,
                _data: data,
            },
        }
    }

    /// The CK_MECHANISM to pass.
    fn raw(&self) -> CK_MECHANISM {
        fn of<T>(value: &T) -> CK_VOID_PTR {
            std::ptr::from_ref(value).cast_mut().cast()
        }
        let (pointer, len) = match &self.param {
            Param::Null => (null_mut(), 0),
            Param::Bytes(bytes) => (bytes.as_ptr().cast_mut().cast(), bytes.len()),
            Param::Ulong(value) => (of(&**value), size_of::<CK_ULONG>()),
            Param::Ctr(params) => (of(&**params), size_of::<CK_AES_CTR_PARAMS>()),
            Param::Gcm { params, .. } => (of(&**params), size_of::<CK_GCM_PARAMS>()),
            Param::EcbDerive { params, .. } => {
                (of(&**params), size_of::<CK_KEY_DERIVATION_STRING_DATA>())
            }
            Param::CbcDerive { params, .. } => {
                (of(&**params), size_of::<CK_AES_CBC_ENCRYPT_DATA_PARAMS>())
            }
        };
        CK_MECHANISM {
            mechanism: self.kind,
            pParameter: pointer,
            ulParameterLen: len as CK_ULONG,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Calls through the function table
// ---------------------------------------------------------------------------------------

type InitFn = unsafe extern "C" fn(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) -> CK_RV;

fn init_with(
    function: InitFn,
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let mut raw = mech.raw();
    // SAFETY: `raw` and the parameter it points to live until the call returns.
    unsafe { function(session, &mut raw, key) }
}

fn encrypt_init(session: CK_SESSION_HANDLE, mech: &Mech, key: CK_OBJECT_HANDLE) -> CK_RV {
    init_with(functions().C_EncryptInit.unwrap(), session, mech, key)
}

fn decrypt_init(session: CK_SESSION_HANDLE, mech: &Mech, key: CK_OBJECT_HANDLE) -> CK_RV {
    init_with(functions().C_DecryptInit.unwrap(), session, mech, key)
}

fn sign_init(session: CK_SESSION_HANDLE, mech: &Mech, key: CK_OBJECT_HANDLE) -> CK_RV {
    init_with(functions().C_SignInit.unwrap(), session, mech, key)
}

fn verify_init(session: CK_SESSION_HANDLE, mech: &Mech, key: CK_OBJECT_HANDLE) -> CK_RV {
    init_with(functions().C_VerifyInit.unwrap(), session, mech, key)
}

fn digest_init(session: CK_SESSION_HANDLE, mech: &Mech) -> CK_RV {
    let mut raw = mech.raw();
    // SAFETY: `raw` and the parameter it points to live until the call returns.
    unsafe { (functions().C_DigestInit.unwrap())(session, &mut raw) }
}

/// An input buffer as C passes it.
fn input(data: &[u8]) -> (CK_BYTE_PTR, CK_ULONG) {
    (data.as_ptr().cast_mut(), data.len() as CK_ULONG)
}

fn digest_update(session: CK_SESSION_HANDLE, data: &[u8]) -> CK_RV {
    let (p, len) = input(data);
    // SAFETY: `p` is valid for `len` bytes; the module only reads them.
    unsafe { (functions().C_DigestUpdate.unwrap())(session, p, len) }
}

fn digest_key(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { (functions().C_DigestKey.unwrap())(session, key) }
}

fn sign_update(session: CK_SESSION_HANDLE, data: &[u8]) -> CK_RV {
    let (p, len) = input(data);
    // SAFETY: `p` is valid for `len` bytes; the module only reads them.
    unsafe { (functions().C_SignUpdate.unwrap())(session, p, len) }
}

fn verify_update(session: CK_SESSION_HANDLE, data: &[u8]) -> CK_RV {
    let (p, len) = input(data);
    // SAFETY: `p` is valid for `len` bytes; the module only reads them.
    unsafe { (functions().C_VerifyUpdate.unwrap())(session, p, len) }
}

/// `C_Verify`.
fn verify(session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> CK_RV {
    let ((p, len), (s, s_len)) = (input(data), input(signature));
    // SAFETY: both buffers are valid for their lengths; the module only reads them.
    unsafe { (functions().C_Verify.unwrap())(session, p, len, s, s_len) }
}

fn verify_final(session: CK_SESSION_HANDLE, signature: &[u8]) -> CK_RV {
    let (s, len) = input(signature);
    // SAFETY: `s` is valid for `len` bytes; the module only reads them.
    unsafe { (functions().C_VerifyFinal.unwrap())(session, s, len) }
}

/// An output-producing function and its input.
#[derive(Clone, Copy, Debug)]
enum Call<'a> {
    Encrypt(&'a [u8]),
    EncryptUpdate(&'a [u8]),
    EncryptFinal,
    Decrypt(&'a [u8]),
    DecryptUpdate(&'a [u8]),
    DecryptFinal,
    Digest(&'a [u8]),
    DigestFinal,
    Sign(&'a [u8]),
    SignFinal,
}

/// One call with an output buffer of `capacity` bytes filled with MARK (`None`: a NULL
/// buffer, the length word UNTOUCHED): the code, the length word after the call, and the
/// whole buffer.
fn call(
    session: CK_SESSION_HANDLE,
    what: Call,
    capacity: Option<usize>,
) -> (CK_RV, CK_ULONG, Vec<u8>) {
    let f = functions();
    let mut buffer = vec![MARK; capacity.unwrap_or(0)];
    let out = match capacity {
        Some(_) => buffer.as_mut_ptr(),
        None => null_mut(),
    };
    let mut len = capacity.map_or(UNTOUCHED, |capacity| capacity as CK_ULONG);
    let l = &mut len as CK_ULONG_PTR;
    // SAFETY: inputs are valid for their lengths; `out` is NULL or valid for `len`
    // writable bytes; `l` is writable.
    let rv = unsafe {
        match what {
            Call::Encrypt(data) => {
                let (p, n) = input(data);
                (f.C_Encrypt.unwrap())(session, p, n, out, l)
            }
            Call::EncryptUpdate(data) => {
                let (p, n) = input(data);
                (f.C_EncryptUpdate.unwrap())(session, p, n, out, l)
            }
            Call::EncryptFinal => (f.C_EncryptFinal.unwrap())(session, out, l),
            Call::Decrypt(data) => {
                let (p, n) = input(data);
                (f.C_Decrypt.unwrap())(session, p, n, out, l)
            }
            Call::DecryptUpdate(data) => {
                let (p, n) = input(data);
                (f.C_DecryptUpdate.unwrap())(session, p, n, out, l)
            }
            Call::DecryptFinal => (f.C_DecryptFinal.unwrap())(session, out, l),
            Call::Digest(data) => {
                let (p, n) = input(data);
                (f.C_Digest.unwrap())(session, p, n, out, l)
            }
            Call::DigestFinal => (f.C_DigestFinal.unwrap())(session, out, l),
            Call::Sign(data) => {
                let (p, n) = input(data);
                (f.C_Sign.unwrap())(session, p, n, out, l)
            }
            Call::SignFinal => (f.C_SignFinal.unwrap())(session, out, l),
        }
    };
    (rv, len, buffer)
}

/// An output call by the two-step protocol: a length query, then a buffer of that size.
fn run(session: CK_SESSION_HANDLE, what: Call) -> Result<Vec<u8>, CK_RV> {
    let (rv, bound, _) = call(session, what, None);
    if rv != CKR_OK {
        return Err(rv);
    }
    assert_ne!(
        bound, UNTOUCHED,
        "{what:?}: the length query wrote no length"
    );
    let (rv, len, mut buffer) = call(session, what, Some(bound as usize));
    if rv != CKR_OK {
        return Err(rv);
    }
    assert!(
        len <= bound,
        "{what:?}: {len} bytes after a query of {bound}"
    );
    buffer.truncate(len as usize);
    Ok(buffer)
}

fn encrypt(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    match encrypt_init(session, mech, key) {
        CKR_OK => run(session, Call::Encrypt(data)),
        rv => Err(rv),
    }
}

fn decrypt(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    match decrypt_init(session, mech, key) {
        CKR_OK => run(session, Call::Decrypt(data)),
        rv => Err(rv),
    }
}

fn digest(session: CK_SESSION_HANDLE, kind: CK_MECHANISM_TYPE, data: &[u8]) -> Vec<u8> {
    assert_eq!(digest_init(session, &Mech::new(kind)), CKR_OK);
    run(session, Call::Digest(data)).unwrap()
}

fn sign(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    match sign_init(session, mech, key) {
        CKR_OK => run(session, Call::Sign(data)),
        rv => Err(rv),
    }
}

/// C_VerifyInit then C_Verify.
fn verify_mac(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    signature: &[u8],
) -> CK_RV {
    match verify_init(session, mech, key) {
        CKR_OK => verify(session, data, signature),
        rv => rv,
    }
}

/// `C_WrapKey` by the two-step protocol.
fn wrap_key(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    kek: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> Result<Vec<u8>, CK_RV> {
    let wrap = functions().C_WrapKey.unwrap();
    let mut raw = mech.raw();
    let mut len = UNTOUCHED;
    // SAFETY: the mechanism is valid; a NULL buffer asks for the length.
    let rv = unsafe { wrap(session, &mut raw, kek, key, null_mut(), &mut len) };
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut blob = vec![MARK; len as usize];
    // SAFETY: `blob` holds `len` writable bytes.
    let rv = unsafe { wrap(session, &mut raw, kek, key, blob.as_mut_ptr(), &mut len) };
    if rv != CKR_OK {
        return Err(rv);
    }
    blob.truncate(len as usize);
    Ok(blob)
}

/// `C_UnwrapKey`; on failure the handle must be left untouched.
fn unwrap_key(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    kek: CK_OBJECT_HANDLE,
    blob: &[u8],
    template: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut raw = mech.raw();
    let (p, len) = input(blob);
    let mut key = UNTOUCHED;
    // SAFETY: the mechanism, blob and template are valid; `key` is writable.
    let rv = unsafe {
        (functions().C_UnwrapKey.unwrap())(
            session,
            &mut raw,
            kek,
            p,
            len,
            template.ptr(),
            template.count(),
            &mut key,
        )
    };
    if rv == CKR_OK {
        Ok(key)
    } else {
        assert_eq!(key, UNTOUCHED, "a failed C_UnwrapKey wrote a handle");
        Err(rv)
    }
}

/// `C_DeriveKey`; on failure the handle must be left untouched.
fn derive_key(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    base: CK_OBJECT_HANDLE,
    template: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut raw = mech.raw();
    let mut key = UNTOUCHED;
    // SAFETY: the mechanism and template are valid; `key` is writable.
    let rv = unsafe {
        (functions().C_DeriveKey.unwrap())(
            session,
            &mut raw,
            base,
            template.ptr(),
            template.count(),
            &mut key,
        )
    };
    if rv == CKR_OK {
        Ok(key)
    } else {
        assert_eq!(key, UNTOUCHED, "a failed C_DeriveKey wrote a handle");
        Err(rv)
    }
}

// ---------------------------------------------------------------------------------------
// Keys and sessions
// ---------------------------------------------------------------------------------------

fn logged_in() -> CK_SESSION_HANDLE {
    user_session(user_token())
}

/// A session generic secret with this value.
fn generic_key(value: &[u8]) -> Template {
    Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
        .bytes(CKA_VALUE, value)
}

fn aes(session: CK_SESSION_HANDLE, value: &[u8]) -> CK_OBJECT_HANDLE {
    create(session, &aes_key(value)).unwrap()
}

fn generic(session: CK_SESSION_HANDLE, value: &[u8]) -> CK_OBJECT_HANDLE {
    create(session, &generic_key(value)).unwrap()
}

/// A session of its own, closed when dropped: a failed property case cannot leave an
/// operation active for the next one.
struct Scratch(CK_SESSION_HANDLE);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = close_session(self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Known answers
// ---------------------------------------------------------------------------------------

/// NIST SP 800-38A, Appendix F: the plaintext of every example.
const SP800_38A_PLAIN: &str = concat!(
    "6bc1bee22e409f96e93d7e117393172a",
    "ae2d8a571e03ac9c9eb76fac45af8e51",
    "30c81c46a35ce411e5fbc1191a0a52ef",
    "f69f2445df4f9b17ad2b417be66c3710",
);
const SP800_38A_KEY_128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const SP800_38A_KEY_192: &str = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";
const SP800_38A_KEY_256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const SP800_38A_IV: &str = "000102030405060708090a0b0c0d0e0f";
const SP800_38A_COUNTER: [u8; 16] = [
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
];

/// F.1.1, F.1.3, F.1.5.
const SP800_38A_ECB: [(&str, &str); 3] = [
    (
        SP800_38A_KEY_128,
        concat!(
            "3ad77bb40d7a3660a89ecaf32466ef97",
            "f5d3d58503b9699de785895a96fdbaaf",
            "43b1cd7f598ece23881b00e3ed030688",
            "7b0c785e27e8ad3f8223207104725dd4",
        ),
    ),
    (
        SP800_38A_KEY_192,
        concat!(
            "bd334f1d6e45f25ff712a214571fa5cc",
            "974104846d0ad3ad7734ecb3ecee4eef",
            "ef7afd2270e2e60adce0ba2face6444e",
            "9a4b41ba738d6c72fb16691603c18e0e",
        ),
    ),
    (
        SP800_38A_KEY_256,
        concat!(
            "f3eed1bdb5d2a03c064b5a7e3db181f8",
            "591ccb10d410ed26dc5ba74a31362870",
            "b6ed21b99ca6f4f9f153e7b1beafed1d",
            "23304b7a39f9f3ff067d8d8f9e24ecc7",
        ),
    ),
];

/// F.2.1, F.2.3, F.2.5.
const SP800_38A_CBC: [(&str, &str); 3] = [
    (
        SP800_38A_KEY_128,
        concat!(
            "7649abac8119b246cee98e9b12e9197d",
            "5086cb9b507219ee95db113a917678b2",
            "73bed6b8e3c1743b7116e69e22229516",
            "3ff1caa1681fac09120eca307586e1a7",
        ),
    ),
    (
        SP800_38A_KEY_192,
        concat!(
            "4f021db243bc633d7178183a9fa071e8",
            "b4d9ada9ad7dedf4e5e738763f69145a",
            "571b242012fb7ae07fa9baac3df102e0",
            "08b0e27988598881d920a9e64f5615cd",
        ),
    ),
    (
        SP800_38A_KEY_256,
        concat!(
            "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
            "9cfc4e967edb808d679f777bc6702c7d",
            "39f23369a9d9bacfa530e26304231461",
            "b2eb05e2c39be9fcda6c19078c6a9d1b",
        ),
    ),
];

/// F.5.1, F.5.3, F.5.5.
const SP800_38A_CTR: [(&str, &str); 3] = [
    (
        SP800_38A_KEY_128,
        concat!(
            "874d6191b620e3261bef6864990db6ce",
            "9806f66b7970fdff8617187bb9fffdff",
            "5ae4df3edbd5d35e5b4f09020db03eab",
            "1e031dda2fbe03d1792170a0f3009cee",
        ),
    ),
    (
        SP800_38A_KEY_192,
        concat!(
            "1abc932417521ca24f2b0459fe7e6e0b",
            "090339ec0aa6faefd5ccc2c6f4ce8e94",
            "1e36b26bd1ebc670d1bd1d665620abf7",
            "4f78a7f6d29809585a97daec58c6b050",
        ),
    ),
    (
        SP800_38A_KEY_256,
        concat!(
            "601ec313775789a5b7a7f504bbf3d228",
            "f443e3ca4d62b59aca84e990cacaf5c5",
            "2b0930daa23de94ce87017ba2d84988d",
            "dfc9c58db67aada613c2dd08457941a6",
        ),
    ),
];

/// Encrypts `plain` to `expected` and decrypts it back, single-part.
fn assert_known_answer(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    plain: &[u8],
    expected: &[u8],
) {
    assert_eq!(
        encrypt(session, mech, key, plain).map(hex::encode),
        Ok(hex::encode(expected))
    );
    assert_eq!(
        decrypt(session, mech, key, expected).map(hex::encode),
        Ok(hex::encode(plain))
    );
}

#[test]
#[serial]
fn aes_ecb_gives_the_sp800_38a_f1_vectors() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (key, expected) in SP800_38A_ECB {
        let key = aes(session, &h(key));
        let mech = Mech::new(CKM_AES_ECB);
        assert_known_answer(session, &mech, key, &h(SP800_38A_PLAIN), &h(expected));
    }
}

#[test]
#[serial]
fn aes_cbc_gives_the_sp800_38a_f2_vectors() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (key, expected) in SP800_38A_CBC {
        let key = aes(session, &h(key));
        let mech = Mech::bytes(CKM_AES_CBC, &h(SP800_38A_IV));
        assert_known_answer(session, &mech, key, &h(SP800_38A_PLAIN), &h(expected));
    }
}

#[test]
#[serial]
fn aes_ctr_gives_the_sp800_38a_f5_vectors() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (key, expected) in SP800_38A_CTR {
        let key = aes(session, &h(key));
        let mech = Mech::ctr(128, SP800_38A_COUNTER);
        assert_known_answer(session, &mech, key, &h(SP800_38A_PLAIN), &h(expected));
        // A stream mode: any prefix of the plaintext gives that prefix of the ciphertext.
        assert_known_answer(
            session,
            &mech,
            key,
            &h(SP800_38A_PLAIN)[..37],
            &h(expected)[..37],
        );
    }
}

#[test]
#[serial]
fn aes_cbc_pad_is_cbc_plus_a_pkcs7_block_and_round_trips_every_length() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (key_hex, cbc) in SP800_38A_CBC {
        let key = aes(session, &h(key_hex));
        let iv = h(SP800_38A_IV);
        let padded = Mech::bytes(CKM_AES_CBC_PAD, &iv);
        // 64 bytes gain a whole block of 0x10: the CBC ciphertext, then that block
        // chained from the last ciphertext block.
        let sealed = encrypt(session, &padded, key, &h(SP800_38A_PLAIN)).unwrap();
        assert_eq!(sealed.len(), 80);
        assert_eq!(hex::encode(&sealed[..64]), cbc);
        let last = h(cbc)[48..].to_vec();
        let tail = encrypt(session, &Mech::bytes(CKM_AES_CBC, &last), key, &[0x10; 16]).unwrap();
        assert_eq!(sealed[64..], tail[..]);
        for len in 0..=33 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let sealed = encrypt(session, &padded, key, &plain).unwrap();
            assert_eq!(sealed.len(), (len / 16 + 1) * 16, "length {len}");
            assert_eq!(
                decrypt(session, &padded, key, &sealed),
                Ok(plain),
                "length {len}"
            );
        }
    }
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases:
/// (case, key, IV, AAD, plaintext, ciphertext, tag).
const GCM_CASES: [(u32, &str, &str, &str, &str, &str, &str); 7] = [
    (
        2,
        "00000000000000000000000000000000",
        "000000000000000000000000",
        "",
        "00000000000000000000000000000000",
        "0388dace60b6a392f328c2b971b2fe78",
        "ab6e47d42cec13bdf53a67b21257bddf",
    ),
    (
        3,
        "feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "",
        concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        ),
        concat!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
            "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        ),
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (
        4,
        "feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ),
        concat!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
            "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        ),
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (
        13,
        "0000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000",
        "",
        "",
        "",
        "530f8afbc74536b9a963b4f1c4cb738b",
    ),
    (
        14,
        "0000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000",
        "",
        "00000000000000000000000000000000",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    (
        15,
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "",
        concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        ),
        concat!(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        ),
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    (
        16,
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ),
        concat!(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        ),
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
];

#[test]
#[serial]
fn aes_gcm_gives_the_mcgrew_viega_test_cases_with_full_and_truncated_tags() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (case, key, iv, aad, plain, cipher, tag) in GCM_CASES {
        let key = aes(session, &h(key));
        // PKCS#11 3.0 §2.10.8: the tag follows the ciphertext; a shorter tag is the
        // leading ulTagBits of the full one.
        for tag_bits in [128, 120, 104, 96] {
            let mech = Mech::gcm(&h(iv), &h(aad), tag_bits);
            let mut expected = h(cipher);
            expected.extend_from_slice(&h(tag)[..tag_bits as usize / 8]);
            assert_eq!(
                encrypt(session, &mech, key, &h(plain)).map(hex::encode),
                Ok(hex::encode(&expected)),
                "case {case}, {tag_bits}-bit tag"
            );
            assert_eq!(
                decrypt(session, &mech, key, &expected).map(hex::encode),
                Ok(plain.to_string()),
                "case {case}, {tag_bits}-bit tag"
            );
        }
    }
}

/// FIPS 180-4 examples: SHA-x("abc") and SHA-x of the 448-bit message.
const SHA_CASES: [(CK_MECHANISM_TYPE, &str, &str); 5] = [
    (
        CKM_SHA_1,
        "a9993e364706816aba3e25717850c26c9cd0d89d",
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
    ),
    (
        CKM_SHA224,
        "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
        "75388b16512776cc5dba5da1fd890150b0c6455cb4f58b1952522525",
    ),
    (
        CKM_SHA256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        CKM_SHA384,
        concat!(
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed",
            "8086072ba1e7cc2358baeca134c825a7",
        ),
        concat!(
            "3391fdddfc8dc7393707a65b1b4709397cf8b1d162af05abfe8f450de5f36bc6",
            "b0455a8520bc4e6f5fe95b1fe3c8452b",
        ),
    ),
    (
        CKM_SHA512,
        concat!(
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a",
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        concat!(
            "204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c335",
            "96fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445",
        ),
    ),
];

const MESSAGE_448: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

#[test]
#[serial]
fn digests_give_the_fips_180_examples() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (kind, abc, long) in SHA_CASES {
        assert_eq!(
            hex::encode(digest(session, kind, b"abc")),
            abc,
            "0x{kind:x}"
        );
        assert_eq!(
            hex::encode(digest(session, kind, MESSAGE_448)),
            long,
            "0x{kind:x}"
        );
    }
}

/// RFC 4231 test cases 1, 2 and 4: (case, key, data).
fn rfc4231_inputs() -> [(u32, Vec<u8>, Vec<u8>); 3] {
    [
        (1, vec![0x0b; 20], b"Hi There".to_vec()),
        (
            2,
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
        ),
        (4, (1..=25).collect(), vec![0xcd; 50]),
    ]
}

/// RFC 4231: (mechanism, _GENERAL mechanism, MACs of cases 1, 2 and 4, case 5's 128 bits).
const RFC4231: [(CK_MECHANISM_TYPE, CK_MECHANISM_TYPE, [&str; 3], &str); 4] = [
    (
        CKM_SHA224_HMAC,
        CKM_SHA224_HMAC_GENERAL,
        [
            "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
            "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
            "6c11506874013cac6a2abc1bb382627cec6a90d86efc012de7afec5a",
        ],
        "0e2aea68a90c8d37c988bcdb9fca6fa8",
    ),
    (
        CKM_SHA256_HMAC,
        CKM_SHA256_HMAC_GENERAL,
        [
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ],
        "a3b6167473100ee06e0c796c2955552b",
    ),
    (
        CKM_SHA384_HMAC,
        CKM_SHA384_HMAC_GENERAL,
        [
            concat!(
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c",
                "faea9ea9076ede7f4af152e8b2fa9cb6",
            ),
            concat!(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e",
                "8e2240ca5e69e2c78b3239ecfab21649",
            ),
            concat!(
                "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e",
                "6801dd23c4a7d679ccf8a386c674cffb",
            ),
        ],
        "3abf34c3503b2a23a46efc619baef897",
    ),
    (
        CKM_SHA512_HMAC,
        CKM_SHA512_HMAC_GENERAL,
        [
            concat!(
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde",
                "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ),
            concat!(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554",
                "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
            concat!(
                "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db",
                "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
            ),
        ],
        "415fad6271580a531d4179bc891d87a6",
    ),
];

/// Signs `data` to `expected` and verifies it.
fn assert_mac(
    session: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    expected: &str,
    what: &str,
) {
    assert_eq!(
        sign(session, mech, key, data).map(hex::encode),
        Ok(expected.to_string()),
        "{what}"
    );
    assert_eq!(
        verify_mac(session, mech, key, data, &h(expected)),
        CKR_OK,
        "{what}"
    );
}

#[test]
#[serial]
fn hmac_sha2_gives_the_rfc_4231_cases_full_and_truncated_by_general() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for (kind, general, macs, case5) in RFC4231 {
        for ((case, key, data), expected) in rfc4231_inputs().into_iter().zip(macs) {
            let key = generic(session, &key);
            let what = format!("0x{kind:x} case {case}");
            assert_mac(session, &Mech::new(kind), key, &data, expected, &what);
            let full = (expected.len() / 2) as CK_ULONG;
            let what = format!("0x{general:x}({full}) case {case}");
            assert_mac(
                session,
                &Mech::general(general, full),
                key,
                &data,
                expected,
                &what,
            );
        }
        // Case 5: the MAC truncated to 128 bits.
        let key = generic(session, &[0x0c; 20]);
        let what = format!("0x{general:x}(16) case 5");
        assert_mac(
            session,
            &Mech::general(general, 16),
            key,
            b"Test With Truncation",
            case5,
            &what,
        );
    }
}

#[test]
#[serial]
fn hmac_sha1_gives_the_rfc_2202_cases() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let cases: [(Vec<u8>, Vec<u8>, &str); 5] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b617318655057264e28bc0b6fb378c8ef146be00",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
        ),
        (
            vec![0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112",
        ),
    ];
    for (index, (key, data, expected)) in cases.into_iter().enumerate() {
        let key = generic(session, &key);
        let what = format!("RFC 2202 case {index}");
        assert_mac(
            session,
            &Mech::new(CKM_SHA_1_HMAC),
            key,
            &data,
            expected,
            &what,
        );
    }
}

/// RFC 4493 examples 1–4: (message length, AES-CMAC) with the SP 800-38A key and plaintext.
const RFC4493: [(usize, &str); 4] = [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
];

#[test]
#[serial]
fn aes_cmac_gives_the_rfc_4493_examples_full_and_truncated_by_general() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &h(SP800_38A_KEY_128));
    let message = h(SP800_38A_PLAIN);
    for (example, (len, expected)) in RFC4493.into_iter().enumerate() {
        let data = &message[..len];
        let what = format!("example {}", example + 1);
        assert_mac(
            session,
            &Mech::new(CKM_AES_CMAC),
            key,
            data,
            expected,
            &what,
        );
        for truncated in [1, 4, 8, 12, 16] {
            let what = format!("example {} truncated to {truncated}", example + 1);
            let mech = Mech::general(CKM_AES_CMAC_GENERAL, truncated as CK_ULONG);
            assert_mac(session, &mech, key, data, &expected[..2 * truncated], &what);
        }
    }
}

#[test]
#[serial]
fn general_mac_lengths_outside_one_to_the_full_length_are_refused() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let aes_key = aes(session, &[1; 16]);
    let hmac_key = generic(session, &[2; 32]);
    let cases = [
        (CKM_AES_CMAC_GENERAL, aes_key, 16),
        (CKM_SHA_1_HMAC_GENERAL, hmac_key, 20),
        (CKM_SHA256_HMAC_GENERAL, hmac_key, 32),
        (CKM_SHA512_HMAC_GENERAL, hmac_key, 64),
    ];
    for (kind, key, full) in cases {
        for len in [0, full + 1] {
            let mech = Mech::general(kind, len);
            assert_eq!(sign_init(session, &mech, key), CKR_MECHANISM_PARAM_INVALID);
            assert_eq!(
                verify_init(session, &mech, key),
                CKR_MECHANISM_PARAM_INVALID
            );
        }
        // A parameter that is not one CK_ULONG, or none at all.
        for mech in [Mech::bytes(kind, &[16]), Mech::new(kind)] {
            assert_eq!(sign_init(session, &mech, key), CKR_MECHANISM_PARAM_INVALID);
        }
        // Nothing was left active by the refusals.
        let mech = Mech::general(kind, full);
        assert_eq!(
            sign(session, &mech, key, b"x").unwrap().len(),
            full as usize
        );
    }
}

// ---------------------------------------------------------------------------------------
// The length-query protocol (PKCS#11 3.0 §5.2)
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn c_encrypt_answers_length_queries_and_short_buffers_without_ending_the_operation() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &h(SP800_38A_KEY_128));
    let plain = h(SP800_38A_PLAIN);
    let expected = h(SP800_38A_ECB[0].1);
    assert_eq!(encrypt_init(session, &Mech::new(CKM_AES_ECB), key), CKR_OK);

    let (rv, len, _) = call(session, Call::Encrypt(&plain), None);
    assert_eq!((rv, len), (CKR_OK, 64));
    let (rv, len, buffer) = call(session, Call::Encrypt(&plain), Some(63));
    assert_eq!((rv, len), (CKR_BUFFER_TOO_SMALL, 64));
    assert_eq!(buffer, [MARK; 63]);
    let (rv, len, buffer) = call(session, Call::Encrypt(&plain), Some(0));
    assert_eq!((rv, len, buffer), (CKR_BUFFER_TOO_SMALL, 64, vec![]));
    // The operation survived all three: a buffer with room gets the answer.
    let (rv, len, buffer) = call(session, Call::Encrypt(&plain), Some(70));
    assert_eq!((rv, len), (CKR_OK, 64));
    assert_eq!(buffer[..64], expected[..]);
    assert_eq!(buffer[64..], [MARK; 6]);
    // And then it is over.
    let (rv, len, _) = call(session, Call::Encrypt(&plain), Some(70));
    assert_eq!((rv, len), (CKR_OPERATION_NOT_INITIALIZED, 70));
}

#[test]
#[serial]
fn c_decrypt_answers_length_queries_and_short_buffers_without_ending_the_operation() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &h(SP800_38A_KEY_256));
    let plain = h(SP800_38A_PLAIN);
    let mech = Mech::bytes(CKM_AES_CBC, &h(SP800_38A_IV));
    assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
    let sealed = h(SP800_38A_CBC[2].1);
    let (rv, len, _) = call(session, Call::Decrypt(&sealed), None);
    assert_eq!((rv, len), (CKR_OK, 64));
    let (rv, len, buffer) = call(session, Call::Decrypt(&sealed), Some(16));
    assert_eq!(
        (rv, len, buffer),
        (CKR_BUFFER_TOO_SMALL, 64, vec![MARK; 16])
    );
    let (rv, len, buffer) = call(session, Call::Decrypt(&sealed), Some(64));
    assert_eq!((rv, len, buffer), (CKR_OK, 64, plain));
    let (rv, _, _) = call(session, Call::Decrypt(&sealed), None);
    assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
#[serial]
fn cbc_pad_decryption_fits_a_buffer_of_the_plaintext_length_though_the_query_bounds_higher() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[0x11; 16]);
    let mech = Mech::bytes(CKM_AES_CBC_PAD, &[0x22; 16]);
    let plain: Vec<u8> = (0..20).collect();
    let sealed = encrypt(session, &mech, key, &plain).unwrap();
    assert_eq!(sealed.len(), 32);

    assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
    // The query may only bound the length before the padding is seen (§5.2: "somewhat
    // more than the number of bytes actually required").
    let (rv, len, _) = call(session, Call::Decrypt(&sealed), None);
    assert_eq!((rv, len), (CKR_OK, 32));
    // One byte short of the plaintext: too small, and the exact need is reported.
    let (rv, len, buffer) = call(session, Call::Decrypt(&sealed), Some(19));
    assert_eq!(
        (rv, len, buffer),
        (CKR_BUFFER_TOO_SMALL, 20, vec![MARK; 19])
    );
    // Exactly the plaintext's length, under the bound of 32: it fits.
    let (rv, len, buffer) = call(session, Call::Decrypt(&sealed), Some(20));
    assert_eq!((rv, len, buffer), (CKR_OK, 20, plain.clone()));
    let (rv, _, _) = call(session, Call::Decrypt(&sealed), Some(32));
    assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);

    // The same for the last part of a multi-part decryption.
    assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
    let (rv, len, _) = call(session, Call::DecryptUpdate(&sealed), None);
    // Both blocks are held: the second may end in padding.
    assert_eq!((rv, len), (CKR_OK, 16));
    let (rv, len, buffer) = call(session, Call::DecryptUpdate(&sealed), Some(16));
    assert_eq!((rv, len, buffer), (CKR_OK, 16, plain[..16].to_vec()));
    let (rv, len, _) = call(session, Call::DecryptFinal, None);
    assert_eq!((rv, len), (CKR_OK, 16));
    let (rv, len, buffer) = call(session, Call::DecryptFinal, Some(3));
    assert_eq!((rv, len, buffer), (CKR_BUFFER_TOO_SMALL, 4, vec![MARK; 3]));
    let (rv, len, buffer) = call(session, Call::DecryptFinal, Some(4));
    assert_eq!((rv, len, buffer), (CKR_OK, 4, plain[16..].to_vec()));
    let (rv, _, _) = call(session, Call::DecryptFinal, Some(16));
    assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
#[serial]
fn c_encrypt_update_and_final_answer_queries_and_short_buffers_without_losing_input() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[0x33; 24]);
    let mech = Mech::bytes(CKM_AES_CBC_PAD, &[0x44; 16]);
    let plain: Vec<u8> = (0..40).collect();
    let single = encrypt(session, &mech, key, &plain).unwrap();
    assert_eq!(single.len(), 48);

    assert_eq!(encrypt_init(session, &mech, key), CKR_OK);
    let first = &plain[..20];
    let (rv, len, _) = call(session, Call::EncryptUpdate(first), None);
    assert_eq!((rv, len), (CKR_OK, 16));
    let (rv, len, buffer) = call(session, Call::EncryptUpdate(first), Some(15));
    assert_eq!(
        (rv, len, buffer),
        (CKR_BUFFER_TOO_SMALL, 16, vec![MARK; 15])
    );
    // Had the refused calls taken their input, this would chain from the wrong state.
    let (rv, len, buffer) = call(session, Call::EncryptUpdate(first), Some(16));
    assert_eq!((rv, len, buffer), (CKR_OK, 16, single[..16].to_vec()));
    let (rv, len, buffer) = call(session, Call::EncryptUpdate(&plain[20..]), Some(32));
    assert_eq!((rv, len), (CKR_OK, 16));
    assert_eq!(buffer[..16], single[16..32]);

    let (rv, len, _) = call(session, Call::EncryptFinal, None);
    assert_eq!((rv, len), (CKR_OK, 16));
    let (rv, len, buffer) = call(session, Call::EncryptFinal, Some(15));
    assert_eq!(
        (rv, len, buffer),
        (CKR_BUFFER_TOO_SMALL, 16, vec![MARK; 15])
    );
    let (rv, len, buffer) = call(session, Call::EncryptFinal, Some(16));
    assert_eq!((rv, len, buffer), (CKR_OK, 16, single[32..].to_vec()));
    let (rv, _, _) = call(session, Call::EncryptFinal, Some(16));
    assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
#[serial]
fn c_digest_and_digest_final_answer_queries_and_short_buffers() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let expected = h(SHA_CASES[2].1);
    assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
    let (rv, len, _) = call(session, Call::Digest(b"abc"), None);
    assert_eq!((rv, len), (CKR_OK, 32));
    let (rv, len, buffer) = call(session, Call::Digest(b"abc"), Some(31));
    assert_eq!(
        (rv, len, buffer),
        (CKR_BUFFER_TOO_SMALL, 32, vec![MARK; 31])
    );
    let (rv, len, buffer) = call(session, Call::Digest(b"abc"), Some(32));
    assert_eq!((rv, len, buffer), (CKR_OK, 32, expected.clone()));
    let (rv, _, _) = call(session, Call::Digest(b"abc"), Some(32));
    assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);

    assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
    assert_eq!(digest_update(session, b"ab"), CKR_OK);
    let (rv, len, _) = call(session, Call::DigestFinal, None);
    assert_eq!((rv, len), (CKR_OK, 32));
    let (rv, len, _) = call(session, Call::DigestFinal, Some(1));
    assert_eq!((rv, len), (CKR_BUFFER_TOO_SMALL, 32));
    assert_eq!(digest_update(session, b"c"), CKR_OK);
    let (rv, len, buffer) = call(session, Call::DigestFinal, Some(40));
    assert_eq!((rv, len), (CKR_OK, 32));
    assert_eq!(buffer[..32], expected[..]);
    assert_eq!(buffer[32..], [MARK; 8]);
}

#[test]
#[serial]
fn c_sign_and_sign_final_answer_queries_and_short_buffers() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = generic(session, b"Jefe");
    let data = b"what do ya want for nothing?";
    let expected = h(RFC4231[1].2[1]);
    for (mech, len) in [
        (Mech::new(CKM_SHA256_HMAC), 32),
        (Mech::general(CKM_SHA256_HMAC_GENERAL, 16), 16),
    ] {
        assert_eq!(sign_init(session, &mech, key), CKR_OK);
        let (rv, needed, _) = call(session, Call::Sign(data), None);
        assert_eq!((rv, needed), (CKR_OK, len as CK_ULONG));
        let (rv, needed, buffer) = call(session, Call::Sign(data), Some(len - 1));
        assert_eq!(
            (rv, needed, buffer),
            (CKR_BUFFER_TOO_SMALL, len as CK_ULONG, vec![MARK; len - 1])
        );
        let (rv, needed, buffer) = call(session, Call::Sign(data), Some(len));
        assert_eq!(
            (rv, needed, buffer),
            (CKR_OK, len as CK_ULONG, expected[..len].to_vec())
        );
        let (rv, _, _) = call(session, Call::Sign(data), Some(len));
        assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);

        assert_eq!(sign_init(session, &mech, key), CKR_OK);
        assert_eq!(sign_update(session, &data[..10]), CKR_OK);
        let (rv, needed, _) = call(session, Call::SignFinal, None);
        assert_eq!((rv, needed), (CKR_OK, len as CK_ULONG));
        let (rv, needed, _) = call(session, Call::SignFinal, Some(0));
        assert_eq!((rv, needed), (CKR_BUFFER_TOO_SMALL, len as CK_ULONG));
        assert_eq!(sign_update(session, &data[10..]), CKR_OK);
        let (rv, needed, buffer) = call(session, Call::SignFinal, Some(len));
        assert_eq!(
            (rv, needed, buffer),
            (CKR_OK, len as CK_ULONG, expected[..len].to_vec())
        );
    }
}

// ---------------------------------------------------------------------------------------
// Operation state
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn a_second_init_while_an_operation_is_active_is_operation_active_and_keeps_the_first() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &h(SP800_38A_KEY_128));
    let hmac_key = generic(session, b"Jefe");
    let ecb = Mech::new(CKM_AES_ECB);
    let cbc = Mech::bytes(CKM_AES_CBC, &h(SP800_38A_IV));
    let hmac = Mech::new(CKM_SHA256_HMAC);

    assert_eq!(encrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(encrypt_init(session, &cbc, key), CKR_OPERATION_ACTIVE);
    // The first operation (ECB, not CBC) is the one still running.
    let plain = h(SP800_38A_PLAIN);
    assert_eq!(
        run(session, Call::Encrypt(&plain)).map(hex::encode),
        Ok(SP800_38A_ECB[0].1.to_string())
    );

    assert_eq!(decrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(decrypt_init(session, &cbc, key), CKR_OPERATION_ACTIVE);
    assert_eq!(
        run(session, Call::Decrypt(&h(SP800_38A_ECB[0].1))),
        Ok(plain)
    );

    assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
    assert_eq!(
        digest_init(session, &Mech::new(CKM_SHA_1)),
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        run(session, Call::Digest(b"abc")).map(hex::encode),
        Ok(SHA_CASES[2].1.to_string())
    );

    assert_eq!(sign_init(session, &hmac, hmac_key), CKR_OK);
    assert_eq!(sign_init(session, &hmac, hmac_key), CKR_OPERATION_ACTIVE);
    assert_eq!(verify_init(session, &hmac, hmac_key), CKR_OK);
    assert_eq!(verify_init(session, &hmac, hmac_key), CKR_OPERATION_ACTIVE);
    let data = b"what do ya want for nothing?";
    let mac = run(session, Call::Sign(data)).unwrap();
    assert_eq!(hex::encode(&mac), RFC4231[1].2[1]);
    assert_eq!(verify(session, data, &mac), CKR_OK);

    // Encryption and decryption are separate operations of one session.
    assert_eq!(encrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(decrypt_init(session, &ecb, key), CKR_OK);
}

#[test]
#[serial]
fn calls_without_init_are_operation_not_initialized() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let data = [0u8; 16];
    for what in [
        Call::Encrypt(&data),
        Call::EncryptUpdate(&data),
        Call::EncryptFinal,
        Call::Decrypt(&data),
        Call::DecryptUpdate(&data),
        Call::DecryptFinal,
        Call::Digest(&data),
        Call::DigestFinal,
        Call::Sign(&data),
        Call::SignFinal,
    ] {
        let (rv, len, _) = call(session, what, None);
        assert_eq!(
            (rv, len),
            (CKR_OPERATION_NOT_INITIALIZED, UNTOUCHED),
            "{what:?}"
        );
        let (rv, _, buffer) = call(session, what, Some(64));
        assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED, "{what:?}");
        assert_eq!(buffer, [MARK; 64], "{what:?}");
    }
    assert_eq!(digest_update(session, &data), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(sign_update(session, &data), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(verify_update(session, &data), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(verify(session, &data, &data), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(verify_final(session, &data), CKR_OPERATION_NOT_INITIALIZED);
    let key = aes(session, &[1; 16]);
    assert_eq!(digest_key(session, key), CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
#[serial]
fn a_successful_single_part_call_ends_the_operation() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[1; 16]);
    let hmac_key = generic(session, &[2; 32]);
    let ecb = Mech::new(CKM_AES_ECB);
    let data = [0u8; 16];
    assert_eq!(encrypt(session, &ecb, key, &data).map(|c| c.len()), Ok(16));
    assert_eq!(
        run(session, Call::Encrypt(&data)),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(decrypt(session, &ecb, key, &data).map(|c| c.len()), Ok(16));
    assert_eq!(
        run(session, Call::Decrypt(&data)),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(digest(session, CKM_SHA_1, &data).len(), 20);
    assert_eq!(
        run(session, Call::Digest(&data)),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    let hmac = Mech::new(CKM_SHA_1_HMAC);
    let mac = sign(session, &hmac, hmac_key, &data).unwrap();
    assert_eq!(
        run(session, Call::Sign(&data)),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(verify_mac(session, &hmac, hmac_key, &data, &mac), CKR_OK);
    assert_eq!(verify(session, &data, &mac), CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
#[serial]
fn a_single_part_call_after_an_update_is_operation_active() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &h(SP800_38A_KEY_128));
    let hmac_key = generic(session, b"Jefe");
    let plain = h(SP800_38A_PLAIN);
    let ecb = Mech::new(CKM_AES_ECB);

    // §5.8: C_Encrypt "cannot be used to terminate a multi-part operation", and names
    // no code for trying. keyferry refuses it with CKR_OPERATION_ACTIVE and lets the
    // multi-part operation go on (rather than applying "a call to C_Encrypt always
    // terminates the active encryption operation" to a call that was refused).
    assert_eq!(encrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(
        run(session, Call::EncryptUpdate(&plain[..16])).map(hex::encode),
        Ok(SP800_38A_ECB[0].1[..32].to_string())
    );
    assert_eq!(
        call(session, Call::Encrypt(&plain), Some(64)).0,
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        call(session, Call::Encrypt(&plain), None).0,
        CKR_OPERATION_ACTIVE
    );
    let mut rest = run(session, Call::EncryptUpdate(&plain[16..])).unwrap();
    rest.extend(run(session, Call::EncryptFinal).unwrap());
    assert_eq!(hex::encode(rest), SP800_38A_ECB[0].1[32..]);

    assert_eq!(decrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(run(session, Call::DecryptUpdate(&[])), Ok(vec![]));
    assert_eq!(
        call(session, Call::Decrypt(&h(SP800_38A_ECB[0].1)), Some(64)).0,
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(run(session, Call::DecryptFinal), Ok(vec![]));

    assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
    assert_eq!(digest_update(session, b"abc"), CKR_OK);
    assert_eq!(
        call(session, Call::Digest(b"abc"), Some(32)).0,
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        run(session, Call::DigestFinal).map(hex::encode),
        Ok(SHA_CASES[2].1.to_string())
    );

    let hmac = Mech::new(CKM_SHA256_HMAC);
    let data = b"what do ya want for nothing?";
    assert_eq!(sign_init(session, &hmac, hmac_key), CKR_OK);
    assert_eq!(sign_update(session, data), CKR_OK);
    assert_eq!(
        call(session, Call::Sign(data), Some(32)).0,
        CKR_OPERATION_ACTIVE
    );
    let mac = run(session, Call::SignFinal).unwrap();
    assert_eq!(hex::encode(&mac), RFC4231[1].2[1]);

    assert_eq!(verify_init(session, &hmac, hmac_key), CKR_OK);
    assert_eq!(verify_update(session, data), CKR_OK);
    assert_eq!(verify(session, data, &mac), CKR_OPERATION_ACTIVE);
    assert_eq!(verify_final(session, &mac), CKR_OK);
}

#[test]
#[serial]
fn an_error_ends_the_operation() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[1; 16]);
    let ecb = Mech::new(CKM_AES_ECB);

    assert_eq!(encrypt_init(session, &ecb, key), CKR_OK);
    let (rv, len, buffer) = call(session, Call::Encrypt(&[0; 15]), Some(32));
    assert_eq!(rv, CKR_DATA_LEN_RANGE);
    assert_eq!(len, 32, "the length word of a failed call is left alone");
    assert_eq!(buffer, [MARK; 32]);
    assert_eq!(
        run(session, Call::Encrypt(&[0; 16])),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    // A new operation can start at once.
    assert_eq!(encrypt_init(session, &ecb, key), CKR_OK);
    // An error of a length query ends it as well.
    assert_eq!(
        call(session, Call::Encrypt(&[0; 15]), None).0,
        CKR_DATA_LEN_RANGE
    );
    assert_eq!(
        call(session, Call::Encrypt(&[0; 16]), None).0,
        CKR_OPERATION_NOT_INITIALIZED
    );

    // Multi-part: the partial block is only an error at the end, and that ends it.
    assert_eq!(encrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(run(session, Call::EncryptUpdate(&[0; 15])), Ok(vec![]));
    assert_eq!(run(session, Call::EncryptFinal), Err(CKR_DATA_LEN_RANGE));
    assert_eq!(
        run(session, Call::EncryptFinal),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );

    assert_eq!(decrypt_init(session, &ecb, key), CKR_OK);
    assert_eq!(
        run(session, Call::Decrypt(&[0; 17])),
        Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
    );
    assert_eq!(
        run(session, Call::Decrypt(&[0; 16])),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );

    // A failed verification ends the verify operation.
    let hmac_key = generic(session, &[2; 32]);
    let hmac = Mech::new(CKM_SHA256_HMAC);
    assert_eq!(verify_init(session, &hmac, hmac_key), CKR_OK);
    assert_eq!(verify(session, b"x", &[0; 32]), CKR_SIGNATURE_INVALID);
    assert_eq!(
        verify(session, b"x", &[0; 32]),
        CKR_OPERATION_NOT_INITIALIZED
    );
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn ecb_and_cbc_refuse_data_that_is_not_whole_blocks() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[1; 32]);
    for mech in [Mech::new(CKM_AES_ECB), Mech::bytes(CKM_AES_CBC, &[0; 16])] {
        for len in [1, 15, 17, 31, 33] {
            let data = vec![0u8; len];
            assert_eq!(
                encrypt(session, &mech, key, &data),
                Err(CKR_DATA_LEN_RANGE),
                "0x{:x} {len}",
                mech.kind
            );
            assert_eq!(
                decrypt(session, &mech, key, &data),
                Err(CKR_ENCRYPTED_DATA_LEN_RANGE),
                "0x{:x} {len}",
                mech.kind
            );
        }
        // No data at all is zero whole blocks.
        assert_eq!(encrypt(session, &mech, key, &[]), Ok(vec![]));
        assert_eq!(decrypt(session, &mech, key, &[]), Ok(vec![]));
        // Multi-part decryption: the partial block shows at the end.
        assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
        assert_eq!(
            run(session, Call::DecryptUpdate(&[0; 20])).map(|out| out.len()),
            Ok(16)
        );
        assert_eq!(
            run(session, Call::DecryptFinal),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
        );
    }
    // CBC_PAD ciphertext is one or more whole blocks.
    let padded = Mech::bytes(CKM_AES_CBC_PAD, &[0; 16]);
    for len in [0, 15, 17] {
        assert_eq!(
            decrypt(session, &padded, key, &vec![0u8; len]),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE),
            "{len}"
        );
    }
}

#[test]
#[serial]
fn bad_cbc_padding_is_encrypted_data_invalid_and_writes_nothing() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[7; 16]);
    let iv = [9u8; 16];
    let raw = Mech::bytes(CKM_AES_CBC, &iv);
    let padded = Mech::bytes(CKM_AES_CBC_PAD, &iv);
    let mut inconsistent = [3u8; 16];
    inconsistent[13] = 2;
    let mut last_block_bad = [0u8; 32];
    last_block_bad[31] = 17;
    let cases: [&[u8]; 5] = [
        &[0; 16],
        &[17; 16],
        &[0xff; 16],
        &inconsistent,
        &last_block_bad,
    ];
    for plain in cases {
        // Made with plain CBC, so the final block ends in bytes that are not PKCS#7.
        let sealed = encrypt(session, &raw, key, plain).unwrap();
        assert_eq!(decrypt_init(session, &padded, key), CKR_OK);
        let (rv, _, buffer) = call(session, Call::Decrypt(&sealed), Some(sealed.len()));
        assert_eq!(rv, CKR_ENCRYPTED_DATA_INVALID, "{plain:x?}");
        assert!(
            buffer.iter().all(|&b| b == MARK),
            "{plain:x?}: wrote {buffer:x?}"
        );
        // Multi-part: the last block's failure comes at the end.
        assert_eq!(decrypt_init(session, &padded, key), CKR_OK);
        let released = run(session, Call::DecryptUpdate(&sealed)).unwrap();
        assert_eq!(released.len(), sealed.len() - 16, "{plain:x?}");
        assert_eq!(
            run(session, Call::DecryptFinal),
            Err(CKR_ENCRYPTED_DATA_INVALID)
        );
    }
    // A valid full block of padding decrypts to nothing.
    let sealed = encrypt(session, &raw, key, &[16; 16]).unwrap();
    assert_eq!(decrypt(session, &padded, key, &sealed), Ok(vec![]));
}

#[test]
#[serial]
fn gcm_with_a_wrong_tag_is_encrypted_data_invalid_and_releases_nothing() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let (_, key, iv, aad, plain, cipher, tag) = GCM_CASES[2];
    let key = aes(session, &h(key));
    let mech = Mech::gcm(&h(iv), &h(aad), 128);
    let mut sealed = h(cipher);
    sealed.extend(h(tag));
    let plain_len = h(plain).len();
    let mut tampered_ciphertext = sealed.clone();
    tampered_ciphertext[0] ^= 1;
    let mut tampered_tag = sealed.clone();
    *tampered_tag.last_mut().unwrap() ^= 0x80;
    for bad in [tampered_ciphertext, tampered_tag] {
        assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
        let (rv, _, buffer) = call(session, Call::Decrypt(&bad), Some(plain_len));
        assert_eq!(rv, CKR_ENCRYPTED_DATA_INVALID);
        assert_eq!(buffer, vec![MARK; plain_len]);
        assert_eq!(
            call(session, Call::Decrypt(&sealed), Some(plain_len)).0,
            CKR_OPERATION_NOT_INITIALIZED
        );

        // Multi-part: no plaintext before the tag is checked, none after it fails.
        assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
        let (rv, len, buffer) = call(session, Call::DecryptUpdate(&bad), Some(bad.len()));
        assert_eq!((rv, len), (CKR_OK, 0));
        assert_eq!(buffer, vec![MARK; bad.len()]);
        let (rv, _, buffer) = call(session, Call::DecryptFinal, Some(plain_len));
        assert_eq!(rv, CKR_ENCRYPTED_DATA_INVALID);
        assert_eq!(buffer, vec![MARK; plain_len]);
    }
    // AAD is authenticated: the right ciphertext under other AAD fails too.
    let other_aad = Mech::gcm(&h(iv), b"other", 128);
    assert_eq!(
        decrypt(session, &other_aad, key, &sealed),
        Err(CKR_ENCRYPTED_DATA_INVALID)
    );
    // A truncated tag is checked in full: its last byte matters.
    let short = Mech::gcm(&h(iv), &h(aad), 96);
    let mut truncated = h(cipher);
    truncated.extend(&h(tag)[..12]);
    assert_eq!(decrypt(session, &short, key, &truncated), Ok(h(plain)));
    *truncated.last_mut().unwrap() ^= 1;
    assert_eq!(
        decrypt(session, &short, key, &truncated),
        Err(CKR_ENCRYPTED_DATA_INVALID)
    );
}

#[test]
#[serial]
fn gcm_ciphertext_shorter_than_the_tag_is_encrypted_data_len_range() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[5; 16]);
    for (tag_bits, len) in [(128, 15), (128, 0), (96, 11)] {
        let mech = Mech::gcm(&[0; 12], &[], tag_bits);
        assert_eq!(
            decrypt(session, &mech, key, &vec![0; len]),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE),
            "{tag_bits}-bit tag, {len} bytes"
        );
        assert_eq!(decrypt_init(session, &mech, key), CKR_OK);
        assert_eq!(run(session, Call::DecryptUpdate(&vec![0; len])), Ok(vec![]));
        assert_eq!(
            run(session, Call::DecryptFinal),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
        );
    }
    // A ciphertext of exactly the tag is an empty plaintext (McGrew–Viega case 13).
    let (_, key, iv, _, _, _, tag) = GCM_CASES[3];
    let key = aes(session, &h(key));
    let mech = Mech::gcm(&h(iv), &[], 128);
    assert_eq!(decrypt(session, &mech, key, &h(tag)), Ok(vec![]));
}

#[test]
#[serial]
fn ctr_refuses_to_run_its_counter_past_the_counter_bits() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[6; 16]);
    let mut near_end = [0x12; 16];
    near_end[15] = 0xfe;
    // An 8-bit counter at 0xfe has two blocks left before it would wrap into the nonce.
    let short = Mech::ctr(8, near_end);
    assert_eq!(
        encrypt(session, &short, key, &[0; 32]).map(|c| c.len()),
        Ok(32)
    );
    assert_eq!(
        encrypt(session, &short, key, &[0; 33]),
        Err(CKR_DATA_LEN_RANGE)
    );
    assert_eq!(
        decrypt(session, &short, key, &[0; 32]).map(|c| c.len()),
        Ok(32)
    );
    // C_Decrypt's codes have no CKR_DATA_LEN_RANGE (PKCS#11 3.0 §5.9).
    assert_eq!(
        decrypt(session, &short, key, &[0; 33]),
        Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
    );
    // Multi-part: the refusal comes with the part that would pass the end, which ends
    // the operation.
    assert_eq!(encrypt_init(session, &short, key), CKR_OK);
    assert_eq!(
        run(session, Call::EncryptUpdate(&[0; 20])).map(|c| c.len()),
        Ok(20)
    );
    assert_eq!(
        run(session, Call::EncryptUpdate(&[0; 13])),
        Err(CKR_DATA_LEN_RANGE)
    );
    assert_eq!(
        run(session, Call::EncryptFinal),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(encrypt_init(session, &short, key), CKR_OK);
    assert_eq!(
        run(session, Call::EncryptUpdate(&[0; 20])).map(|c| c.len()),
        Ok(20)
    );
    assert_eq!(
        run(session, Call::EncryptUpdate(&[0; 12])).map(|c| c.len()),
        Ok(12)
    );
    assert_eq!(run(session, Call::EncryptFinal), Ok(vec![]));
    // A 128-bit counter at its last value has one block.
    let full = Mech::ctr(128, [0xff; 16]);
    assert_eq!(
        encrypt(session, &full, key, &[0; 16]).map(|c| c.len()),
        Ok(16)
    );
    assert_eq!(
        encrypt(session, &full, key, &[0; 17]),
        Err(CKR_DATA_LEN_RANGE)
    );
    // The counter covers the low bits only: 0x..00ff with 8 bits does not carry into
    // the byte above. With 16 bits it carries (the second block's counter is 0x0100).
    let mut carry = [0u8; 16];
    carry[15] = 0xff;
    assert_eq!(
        encrypt(session, &Mech::ctr(8, carry), key, &[0; 17]),
        Err(CKR_DATA_LEN_RANGE)
    );
    let two = encrypt(session, &Mech::ctr(16, carry), key, &[0; 32]).unwrap();
    let mut next = [0u8; 16];
    next[14] = 1;
    let second = encrypt(session, &Mech::ctr(16, next), key, &[0; 16]).unwrap();
    assert_eq!(two[16..], second[..]);
}

#[test]
#[serial]
fn bad_mechanism_parameters_are_mechanism_param_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[1; 16]);
    let mut ctr_short = (128 as CK_ULONG).to_ne_bytes().to_vec();
    ctr_short.extend([0; 15]);
    let cases = [
        ("CBC without an IV", Mech::new(CKM_AES_CBC)),
        ("CBC_PAD without an IV", Mech::new(CKM_AES_CBC_PAD)),
        ("CBC with a 15-byte IV", Mech::bytes(CKM_AES_CBC, &[0; 15])),
        ("CBC with a 17-byte IV", Mech::bytes(CKM_AES_CBC, &[0; 17])),
        (
            "CBC_PAD with an 8-byte IV",
            Mech::bytes(CKM_AES_CBC_PAD, &[0; 8]),
        ),
        ("ECB with a parameter", Mech::bytes(CKM_AES_ECB, &[0; 16])),
        ("CTR without parameters", Mech::new(CKM_AES_CTR)),
        (
            "CTR with a short block",
            Mech::bytes(CKM_AES_CTR, &ctr_short),
        ),
        ("CTR with 0 counter bits", Mech::ctr(0, [0; 16])),
        ("CTR with 129 counter bits", Mech::ctr(129, [0; 16])),
        ("GCM without parameters", Mech::new(CKM_AES_GCM)),
        ("GCM with an empty IV", Mech::gcm(&[], &[], 128)),
        ("GCM with a 64-bit tag", Mech::gcm(&[0; 12], &[], 64)),
        ("GCM with a 0-bit tag", Mech::gcm(&[0; 12], &[], 0)),
        ("GCM with a 100-bit tag", Mech::gcm(&[0; 12], &[], 100)),
        ("GCM with a 136-bit tag", Mech::gcm(&[0; 12], &[], 136)),
        (
            "GCM with bytes, not CK_GCM_PARAMS",
            Mech::bytes(CKM_AES_GCM, &[0; 12]),
        ),
    ];
    for (what, mech) in &cases {
        assert_eq!(
            encrypt_init(session, mech, key),
            CKR_MECHANISM_PARAM_INVALID,
            "{what}"
        );
        assert_eq!(
            decrypt_init(session, mech, key),
            CKR_MECHANISM_PARAM_INVALID,
            "{what}"
        );
    }
    // No refusal left an operation behind.
    let ecb = Mech::new(CKM_AES_ECB);
    assert_eq!(
        encrypt(session, &ecb, key, &[0; 16]).map(|c| c.len()),
        Ok(16)
    );
    assert_eq!(
        digest_init(session, &Mech::bytes(CKM_SHA256, &[0])),
        CKR_MECHANISM_PARAM_INVALID
    );
    let hmac_key = generic(session, &[1; 16]);
    assert_eq!(
        sign_init(session, &Mech::bytes(CKM_SHA256_HMAC, &[0]), hmac_key),
        CKR_MECHANISM_PARAM_INVALID
    );
}

#[test]
#[serial]
fn keys_without_the_usage_flag_are_key_function_not_permitted() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let ecb = Mech::new(CKM_AES_ECB);
    let no_encrypt = create(session, &aes_key(&[1; 16]).bool(CKA_ENCRYPT, false)).unwrap();
    assert_eq!(
        encrypt_init(session, &ecb, no_encrypt),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    // Only the function whose flag is false is refused.
    assert_eq!(
        decrypt(session, &ecb, no_encrypt, &[0; 16]).map(|p| p.len()),
        Ok(16)
    );
    let no_decrypt = create(session, &aes_key(&[1; 16]).bool(CKA_DECRYPT, false)).unwrap();
    assert_eq!(
        decrypt_init(session, &ecb, no_decrypt),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        encrypt(session, &ecb, no_decrypt, &[0; 16]).map(|c| c.len()),
        Ok(16)
    );
    let hmac = Mech::new(CKM_SHA256_HMAC);
    let no_sign = create(session, &generic_key(&[1; 16]).bool(CKA_SIGN, false)).unwrap();
    assert_eq!(
        sign_init(session, &hmac, no_sign),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    let no_verify = create(session, &generic_key(&[1; 16]).bool(CKA_VERIFY, false)).unwrap();
    assert_eq!(
        verify_init(session, &hmac, no_verify),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    let cmac = Mech::new(CKM_AES_CMAC);
    let no_sign_aes = create(session, &aes_key(&[1; 16]).bool(CKA_SIGN, false)).unwrap();
    assert_eq!(
        sign_init(session, &cmac, no_sign_aes),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(verify_init(session, &cmac, no_sign_aes), CKR_OK);
    // The refusals started nothing.
    assert_eq!(
        run(session, Call::Encrypt(&[0; 16])),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(
        run(session, Call::Sign(&[0; 16])),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
}

#[test]
#[serial]
fn keys_of_the_wrong_type_are_key_type_inconsistent() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let generic_16 = generic(session, &[1; 16]);
    for mech in [
        Mech::new(CKM_AES_ECB),
        Mech::bytes(CKM_AES_CBC, &[0; 16]),
        Mech::bytes(CKM_AES_CBC_PAD, &[0; 16]),
        Mech::ctr(128, [0; 16]),
        Mech::gcm(&[0; 12], &[], 128),
    ] {
        assert_eq!(
            encrypt_init(session, &mech, generic_16),
            CKR_KEY_TYPE_INCONSISTENT,
            "0x{:x}",
            mech.kind
        );
        assert_eq!(
            decrypt_init(session, &mech, generic_16),
            CKR_KEY_TYPE_INCONSISTENT,
            "0x{:x}",
            mech.kind
        );
    }
    assert_eq!(
        sign_init(session, &Mech::new(CKM_AES_CMAC), generic_16),
        CKR_KEY_TYPE_INCONSISTENT
    );
    // Not a key at all. PKCS#11 3.0 §5.1 allows CKR_KEY_HANDLE_INVALID here too ("a
    // valid handle for an object which is not a key"); keyferry reports the type.
    let data = create(session, &data_object("not a key")).unwrap();
    assert_eq!(
        encrypt_init(session, &Mech::new(CKM_AES_ECB), data),
        CKR_KEY_TYPE_INCONSISTENT
    );
}

#[test]
#[serial]
fn unknown_and_destroyed_key_handles_are_key_handle_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[1; 16]);
    // SAFETY: takes no pointers.
    let rv = unsafe { (functions().C_DestroyObject.unwrap())(session, key) };
    assert_eq!(rv, CKR_OK);
    let ecb = Mech::new(CKM_AES_ECB);
    let hmac = Mech::new(CKM_SHA256_HMAC);
    for handle in [key, 0, 0x7fff_fff0] {
        assert_eq!(encrypt_init(session, &ecb, handle), CKR_KEY_HANDLE_INVALID);
        assert_eq!(decrypt_init(session, &ecb, handle), CKR_KEY_HANDLE_INVALID);
        assert_eq!(sign_init(session, &hmac, handle), CKR_KEY_HANDLE_INVALID);
        assert_eq!(verify_init(session, &hmac, handle), CKR_KEY_HANDLE_INVALID);
        assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
        assert_eq!(digest_key(session, handle), CKR_KEY_HANDLE_INVALID);
        // The failed C_DigestKey ended the digest.
        assert_eq!(
            run(session, Call::DigestFinal),
            Err(CKR_OPERATION_NOT_INITIALIZED)
        );
    }
}

#[test]
#[serial]
fn allowed_mechanisms_limit_a_key_to_those_listed() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let template = aes_key(&[1; 16]).bytes(CKA_ALLOWED_MECHANISMS, &CKM_AES_CBC.to_ne_bytes());
    let key = create(session, &template).unwrap();
    assert_eq!(
        encrypt_init(session, &Mech::new(CKM_AES_ECB), key),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        decrypt_init(session, &Mech::new(CKM_AES_ECB), key),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        sign_init(session, &Mech::new(CKM_AES_CMAC), key),
        CKR_MECHANISM_INVALID
    );
    let cbc = Mech::bytes(CKM_AES_CBC, &[0; 16]);
    assert_eq!(
        encrypt(session, &cbc, key, &[0; 16]).map(|c| c.len()),
        Ok(16)
    );

    let mut both = CKM_AES_GCM.to_ne_bytes().to_vec();
    both.extend(CKM_AES_CMAC.to_ne_bytes());
    let key = create(
        session,
        &aes_key(&[1; 16]).bytes(CKA_ALLOWED_MECHANISMS, &both),
    )
    .unwrap();
    assert_eq!(encrypt_init(session, &cbc, key), CKR_MECHANISM_INVALID);
    assert_eq!(
        sign(session, &Mech::new(CKM_AES_CMAC), key, b"").map(|m| m.len()),
        Ok(16)
    );
    let gcm = Mech::gcm(&[0; 12], &[], 128);
    assert_eq!(encrypt(session, &gcm, key, b"").map(|c| c.len()), Ok(16));
}

#[test]
#[serial]
fn mechanisms_used_for_a_function_they_do_not_serve_are_mechanism_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = aes(session, &[1; 16]);
    let hmac_key = generic(session, &[1; 16]);
    for kind in [CKM_SHA256, CKM_SHA_1, CKM_AES_CMAC, CKM_AES_KEY_GEN] {
        let mech = Mech::new(kind);
        assert_eq!(
            encrypt_init(session, &mech, key),
            CKR_MECHANISM_INVALID,
            "0x{kind:x}"
        );
        assert_eq!(
            decrypt_init(session, &mech, key),
            CKR_MECHANISM_INVALID,
            "0x{kind:x}"
        );
    }
    assert_eq!(
        encrypt_init(session, &Mech::new(CKM_SHA256_HMAC), hmac_key),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        digest_init(session, &Mech::new(CKM_AES_ECB)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        digest_init(session, &Mech::new(CKM_SHA256_HMAC)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        sign_init(session, &Mech::new(CKM_AES_ECB), key),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        sign_init(session, &Mech::new(CKM_SHA256), key),
        CKR_MECHANISM_INVALID
    );
    // Not a mechanism of this token at all.
    assert_eq!(
        encrypt_init(session, &Mech::new(CKM_DES3_ECB), key),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        digest_init(session, &Mech::new(CKM_MD5)),
        CKR_MECHANISM_INVALID
    );
}

#[test]
#[serial]
fn verify_tells_a_wrong_mac_from_a_wrong_length() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = generic(session, b"Jefe");
    let data = b"what do ya want for nothing?";
    let good = h(RFC4231[1].2[1]);
    let hmac = Mech::new(CKM_SHA256_HMAC);
    let mut wrong = good.clone();
    wrong[31] ^= 1;
    assert_eq!(
        verify_mac(session, &hmac, key, data, &wrong),
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(
        verify_mac(session, &hmac, key, b"other data", &good),
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(
        verify_mac(session, &hmac, key, data, &good[..31]),
        CKR_SIGNATURE_LEN_RANGE
    );
    assert_eq!(
        verify_mac(session, &hmac, key, data, &[good.clone(), vec![0]].concat()),
        CKR_SIGNATURE_LEN_RANGE
    );
    assert_eq!(
        verify_mac(session, &hmac, key, data, &[]),
        CKR_SIGNATURE_LEN_RANGE
    );
    // The same through C_VerifyFinal.
    assert_eq!(verify_init(session, &hmac, key), CKR_OK);
    assert_eq!(verify_update(session, data), CKR_OK);
    assert_eq!(verify_final(session, &wrong), CKR_SIGNATURE_INVALID);
    assert_eq!(verify_final(session, &good), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(verify_init(session, &hmac, key), CKR_OK);
    assert_eq!(verify_update(session, data), CKR_OK);
    assert_eq!(verify_final(session, &good[..16]), CKR_SIGNATURE_LEN_RANGE);
    // A _GENERAL MAC is verified at its own length: the full one is the wrong length.
    let general = Mech::general(CKM_SHA256_HMAC_GENERAL, 16);
    assert_eq!(
        verify_mac(session, &general, key, data, &good[..16]),
        CKR_OK
    );
    assert_eq!(
        verify_mac(session, &general, key, data, &good),
        CKR_SIGNATURE_LEN_RANGE
    );
    // CMAC.
    let aes_key = aes(session, &h(SP800_38A_KEY_128));
    let cmac = Mech::new(CKM_AES_CMAC);
    let mut tag = h(RFC4493[1].1);
    let message = &h(SP800_38A_PLAIN)[..16];
    assert_eq!(verify_mac(session, &cmac, aes_key, message, &tag), CKR_OK);
    tag[0] ^= 0x40;
    assert_eq!(
        verify_mac(session, &cmac, aes_key, message, &tag),
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(
        verify_mac(session, &cmac, aes_key, message, &tag[..15]),
        CKR_SIGNATURE_LEN_RANGE
    );
}

#[test]
#[serial]
fn digest_key_adds_a_revealable_key_and_refuses_a_hidden_one() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let value: Vec<u8> = (0..32).collect();
    let open = create(session, &aes_key(&value).bool(CKA_SENSITIVE, false)).unwrap();
    let open_generic = create(session, &generic_key(b"Jefe").bool(CKA_SENSITIVE, false)).unwrap();
    let sensitive = create(session, &aes_key(&value).bool(CKA_SENSITIVE, true)).unwrap();
    let unextractable = create(
        session,
        &aes_key(&value)
            .bool(CKA_SENSITIVE, false)
            .bool(CKA_EXTRACTABLE, false),
    )
    .unwrap();

    for (key, key_value) in [(open, value.clone()), (open_generic, b"Jefe".to_vec())] {
        assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
        assert_eq!(digest_key(session, key), CKR_OK);
        assert_eq!(
            run(session, Call::DigestFinal),
            Ok(digest(session, CKM_SHA256, &key_value))
        );
        // Between other data, in order.
        assert_eq!(digest_init(session, &Mech::new(CKM_SHA512)), CKR_OK);
        assert_eq!(digest_update(session, b"before"), CKR_OK);
        assert_eq!(digest_key(session, key), CKR_OK);
        assert_eq!(digest_update(session, b"after"), CKR_OK);
        let whole = [b"before".as_slice(), &key_value, b"after"].concat();
        assert_eq!(
            run(session, Call::DigestFinal),
            Ok(digest(session, CKM_SHA512, &whole))
        );
    }

    // A sensitive key's digest would tell something of its value. keyferry treats an
    // unextractable key alike.
    for key in [sensitive, unextractable] {
        assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
        assert_eq!(digest_update(session, b"x"), CKR_OK);
        assert_eq!(digest_key(session, key), CKR_KEY_INDIGESTIBLE);
        assert_eq!(
            run(session, Call::DigestFinal),
            Err(CKR_OPERATION_NOT_INITIALIZED)
        );
    }
    // After C_DigestKey the operation is multi-part: C_Digest is refused.
    assert_eq!(digest_init(session, &Mech::new(CKM_SHA256)), CKR_OK);
    assert_eq!(digest_key(session, open), CKR_OK);
    assert_eq!(
        call(session, Call::Digest(b""), Some(32)).0,
        CKR_OPERATION_ACTIVE
    );
}

// ---------------------------------------------------------------------------------------
// Multi-part equals single-part (properties)
// ---------------------------------------------------------------------------------------

/// 64 cases per mechanism; failures are not persisted (the runner has no source file).
fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    })
}

/// `data` cut at `cuts` (each taken modulo the length + 1), empty parts included.
fn chunks<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut parts = Vec::new();
    let mut start = 0;
    for point in points {
        parts.push(&data[start..point]);
        start = point;
    }
    parts.push(&data[start..]);
    parts
}

/// Random data of 0..300 bytes and two chunkings of up to 6 cuts.
fn data_and_cuts() -> impl Strategy<Value = (Vec<u8>, Vec<usize>, Vec<usize>)> {
    (
        vec(any::<u8>(), 0..300),
        vec(any::<usize>(), 0..6),
        vec(any::<usize>(), 0..6),
    )
}

fn rv_ok(rv: CK_RV, what: &str) -> Result<(), TestCaseError> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("{what}: 0x{rv:x}")))
    }
}

fn output(result: Result<Vec<u8>, CK_RV>, what: &str) -> Result<Vec<u8>, TestCaseError> {
    result.map_err(|rv| TestCaseError::fail(format!("{what}: 0x{rv:x}")))
}

#[test]
#[serial]
fn multi_part_encryption_and_decryption_equal_single_part() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let owner = user_session(slot);
    let keys = [
        aes(owner, &[0x17; 16]),
        aes(owner, &[0x29; 24]),
        aes(owner, &[0x3b; 32]),
    ];
    let mechanisms = [
        (Mech::new(CKM_AES_ECB), true),
        (Mech::bytes(CKM_AES_CBC, &[0x61; 16]), true),
        (Mech::bytes(CKM_AES_CBC_PAD, &[0x62; 16]), false),
        // The counter's low bytes carry into the next after one block.
        (
            Mech::ctr(
                128,
                [
                    0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
            ),
            false,
        ),
        (Mech::ctr(32, [0x0e; 16]), false),
        (Mech::gcm(&[0x63; 12], b"associated data", 128), false),
        (Mech::gcm(&[0x64; 12], b"", 96), false),
    ];
    for (index, (mech, whole_blocks)) in mechanisms.iter().enumerate() {
        let key = keys[index % keys.len()];
        let result = runner().run(&data_and_cuts(), |(data, cuts, other_cuts)| {
            let session = Scratch(open_rw(slot));
            let s = session.0;
            let len = if *whole_blocks {
                data.len() / 16 * 16
            } else {
                data.len()
            };
            let plain = &data[..len];

            let single = output(encrypt(s, mech, key, plain), "C_Encrypt")?;
            rv_ok(encrypt_init(s, mech, key), "C_EncryptInit")?;
            let mut multi = Vec::new();
            for part in chunks(plain, &cuts) {
                multi.extend(output(
                    run(s, Call::EncryptUpdate(part)),
                    "C_EncryptUpdate",
                )?);
            }
            multi.extend(output(run(s, Call::EncryptFinal), "C_EncryptFinal")?);
            prop_assert_eq!(&multi, &single);

            let opened = output(decrypt(s, mech, key, &single), "C_Decrypt")?;
            prop_assert_eq!(opened.as_slice(), plain);
            rv_ok(decrypt_init(s, mech, key), "C_DecryptInit")?;
            let mut multi = Vec::new();
            for part in chunks(&single, &other_cuts) {
                multi.extend(output(
                    run(s, Call::DecryptUpdate(part)),
                    "C_DecryptUpdate",
                )?);
            }
            multi.extend(output(run(s, Call::DecryptFinal), "C_DecryptFinal")?);
            prop_assert_eq!(multi.as_slice(), plain);
            Ok(())
        });
        if let Err(err) = result {
            panic!("0x{:x}: {err}", mech.kind);
        }
    }
}

#[test]
#[serial]
fn multi_part_digests_equal_single_part() {
    let _fixture = Fixture::new();
    let slot = user_token();
    for (kind, ..) in SHA_CASES {
        let mech = Mech::new(kind);
        let result = runner().run(&data_and_cuts(), |(data, cuts, _)| {
            let session = Scratch(open_rw(slot));
            let s = session.0;
            rv_ok(digest_init(s, &mech), "C_DigestInit")?;
            let single = output(run(s, Call::Digest(&data)), "C_Digest")?;
            rv_ok(digest_init(s, &mech), "C_DigestInit")?;
            for part in chunks(&data, &cuts) {
                rv_ok(digest_update(s, part), "C_DigestUpdate")?;
            }
            let multi = output(run(s, Call::DigestFinal), "C_DigestFinal")?;
            prop_assert_eq!(multi, single);
            Ok(())
        });
        if let Err(err) = result {
            panic!("0x{kind:x}: {err}");
        }
    }
}

#[test]
#[serial]
fn multi_part_macs_equal_single_part() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let owner = user_session(slot);
    let hmac_key = generic(owner, &[0x4d; 100]);
    let cmac_keys = [aes(owner, &[0x5e; 16]), aes(owner, &[0x6f; 32])];
    let mechanisms = [
        (Mech::new(CKM_AES_CMAC), cmac_keys[0]),
        (Mech::new(CKM_AES_CMAC), cmac_keys[1]),
        (Mech::general(CKM_AES_CMAC_GENERAL, 7), cmac_keys[0]),
        (Mech::new(CKM_SHA_1_HMAC), hmac_key),
        (Mech::general(CKM_SHA_1_HMAC_GENERAL, 12), hmac_key),
        (Mech::new(CKM_SHA224_HMAC), hmac_key),
        (Mech::general(CKM_SHA224_HMAC_GENERAL, 1), hmac_key),
        (Mech::new(CKM_SHA256_HMAC), hmac_key),
        (Mech::general(CKM_SHA256_HMAC_GENERAL, 31), hmac_key),
        (Mech::new(CKM_SHA384_HMAC), hmac_key),
        (Mech::general(CKM_SHA384_HMAC_GENERAL, 24), hmac_key),
        (Mech::new(CKM_SHA512_HMAC), hmac_key),
        (Mech::general(CKM_SHA512_HMAC_GENERAL, 64), hmac_key),
    ];
    for (mech, key) in &mechanisms {
        let result = runner().run(&data_and_cuts(), |(data, cuts, other_cuts)| {
            let session = Scratch(open_rw(slot));
            let s = session.0;
            let single = output(sign(s, mech, *key, &data), "C_Sign")?;
            rv_ok(sign_init(s, mech, *key), "C_SignInit")?;
            for part in chunks(&data, &cuts) {
                rv_ok(sign_update(s, part), "C_SignUpdate")?;
            }
            let multi = output(run(s, Call::SignFinal), "C_SignFinal")?;
            prop_assert_eq!(&multi, &single);

            prop_assert_eq!(verify_mac(s, mech, *key, &data, &single), CKR_OK);
            rv_ok(verify_init(s, mech, *key), "C_VerifyInit")?;
            for part in chunks(&data, &other_cuts) {
                rv_ok(verify_update(s, part), "C_VerifyUpdate")?;
            }
            prop_assert_eq!(verify_final(s, &single), CKR_OK);
            Ok(())
        });
        if let Err(err) = result {
            panic!("0x{:x}: {err}", mech.kind);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The mechanism list matches what works
// ---------------------------------------------------------------------------------------

fn mechanism_list(slot: CK_SLOT_ID) -> Vec<CK_MECHANISM_TYPE> {
    let get = functions().C_GetMechanismList.unwrap();
    let mut count: CK_ULONG = 0;
    // SAFETY: NULL list asks for the count; `count` is writable.
    assert_eq!(unsafe { get(slot, null_mut(), &mut count) }, CKR_OK);
    let mut list = vec![UNTOUCHED; count as usize];
    // SAFETY: `list` holds `count` writable entries.
    assert_eq!(unsafe { get(slot, list.as_mut_ptr(), &mut count) }, CKR_OK);
    assert_eq!(count as usize, list.len());
    list
}

fn mechanism_info(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE) -> CK_MECHANISM_INFO {
    let mut info = CK_MECHANISM_INFO::default();
    // SAFETY: `info` is a writable CK_MECHANISM_INFO.
    let rv = unsafe { (functions().C_GetMechanismInfo.unwrap())(slot, kind, &mut info) };
    assert_eq!(rv, CKR_OK, "0x{kind:x}");
    info
}

/// What the walk needs to use one mechanism.
struct Profile {
    /// The mechanism with suitable parameters.
    mech: Mech,
    /// The key type of its keys (for mechanisms without keys: an AES key, to show that
    /// the refusal is the mechanism's).
    key_type: CK_KEY_TYPE,
    /// Whether ulMinKeySize and ulMaxKeySize count bits (they count bytes otherwise).
    sizes_in_bits: bool,
    /// The output length of a digest or MAC.
    out_len: usize,
}

fn profile(kind: CK_MECHANISM_TYPE) -> Profile {
    let iv = [0x42; 16];
    let (mech, key_type, sizes_in_bits, out_len) = match kind {
        CKM_AES_KEY_GEN => (Mech::new(kind), CKK_AES, false, 0),
        CKM_AES_ECB_ENCRYPT_DATA => (Mech::ecb_derive(&DERIVE_DATA), CKK_AES, false, 0),
        CKM_AES_CBC_ENCRYPT_DATA => (Mech::cbc_derive(DERIVE_IV, &DERIVE_DATA), CKK_AES, false, 0),
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP => {
            (Mech::new(kind), CKK_AES, false, 0)
        }
        CKM_GENERIC_SECRET_KEY_GEN => (Mech::new(kind), CKK_GENERIC_SECRET, true, 0),
        CKM_AES_ECB => (Mech::new(kind), CKK_AES, false, 0),
        CKM_AES_CBC | CKM_AES_CBC_PAD => (Mech::bytes(kind, &iv), CKK_AES, false, 0),
        CKM_AES_CTR => (Mech::ctr(128, iv), CKK_AES, false, 0),
        CKM_AES_GCM => (Mech::gcm(&iv[..12], b"aad", 128), CKK_AES, false, 0),
        CKM_AES_CMAC => (Mech::new(kind), CKK_AES, false, 16),
        CKM_AES_CMAC_GENERAL => (Mech::general(kind, 10), CKK_AES, false, 10),
        CKM_SHA_1 => (Mech::new(kind), CKK_AES, false, 20),
        CKM_SHA224 => (Mech::new(kind), CKK_AES, false, 28),
        CKM_SHA256 => (Mech::new(kind), CKK_AES, false, 32),
        CKM_SHA384 => (Mech::new(kind), CKK_AES, false, 48),
        CKM_SHA512 => (Mech::new(kind), CKK_AES, false, 64),
        CKM_SHA_1_HMAC => (Mech::new(kind), CKK_GENERIC_SECRET, true, 20),
        CKM_SHA224_HMAC => (Mech::new(kind), CKK_GENERIC_SECRET, true, 28),
        CKM_SHA256_HMAC => (Mech::new(kind), CKK_GENERIC_SECRET, true, 32),
        CKM_SHA384_HMAC => (Mech::new(kind), CKK_GENERIC_SECRET, true, 48),
        CKM_SHA512_HMAC => (Mech::new(kind), CKK_GENERIC_SECRET, true, 64),
        CKM_SHA_1_HMAC_GENERAL
        | CKM_SHA224_HMAC_GENERAL
        | CKM_SHA256_HMAC_GENERAL
        | CKM_SHA384_HMAC_GENERAL
        | CKM_SHA512_HMAC_GENERAL => (Mech::general(kind, 10), CKK_GENERIC_SECRET, true, 10),
        other => panic!(
            "mechanism 0x{other:x} is advertised but this test cannot exercise it: add it to \
             profile()"
        ),
    };
    Profile {
        mech,
        key_type,
        sizes_in_bits,
        out_len,
    }
}

/// A key of `len` bytes of the profile's type, allowed every function (CKA_DERIVE is
/// false by default), so that a refusal can only be the mechanism's.
fn walk_key(session: CK_SESSION_HANDLE, profile: &Profile, len: usize) -> CK_OBJECT_HANDLE {
    let value: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
    let template = match profile.key_type {
        CKK_AES => aes_key(&value),
        _ => generic_key(&value),
    };
    create(session, &template.bool(CKA_DERIVE, true)).unwrap()
}

/// The mechanisms whose keys are key pairs.
pub(super) const KEY_PAIR_MECHANISMS: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_RSA_PKCS,
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_AES_KEY_WRAP,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA224_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA1_RSA_PKCS_PSS,
    CKM_SHA224_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_EC_KEY_PAIR_GEN,
    CKM_ECDH1_DERIVE,
    CKM_ECDSA,
    CKM_ECDSA_SHA1,
    CKM_ECDSA_SHA224,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_EDDSA,
];

/// The data and IV the walk's derivations encrypt.
const DERIVE_DATA: [u8; 32] = [0x2d; 32];
const DERIVE_IV: [u8; 16] = [0x1e; 16];

const WALKED: [(CK_FLAGS, &str); 9] = [
    (CKF_ENCRYPT, "encrypt"),
    (CKF_DECRYPT, "decrypt"),
    (CKF_DIGEST, "digest"),
    (CKF_SIGN, "sign"),
    (CKF_VERIFY, "verify"),
    (CKF_GENERATE, "generate"),
    (CKF_WRAP, "wrap"),
    (CKF_UNWRAP, "unwrap"),
    (CKF_DERIVE, "derive"),
];

/// Perform the function of `flag` with a key of `len` bytes; panics unless it works.
fn exercise(
    session: CK_SESSION_HANDLE,
    kind: CK_MECHANISM_TYPE,
    flags: CK_FLAGS,
    flag: CK_FLAGS,
    len: usize,
) {
    let p = profile(kind);
    let data = [0x5au8; 32];
    let what = format!("0x{kind:x}, {len}-byte key");
    match flag {
        CKF_ENCRYPT | CKF_DECRYPT => {
            assert_ne!(
                flags & CKF_ENCRYPT,
                0,
                "{what}: decrypt-only mechanisms are not walked"
            );
            let key = walk_key(session, &p, len);
            let sealed = encrypt(session, &p.mech, key, &data)
                .unwrap_or_else(|rv| panic!("{what}: encrypt 0x{rv:x}"));
            assert_ne!(sealed[..], data[..], "{what}");
            if flag == CKF_DECRYPT {
                assert_eq!(
                    decrypt(session, &p.mech, key, &sealed),
                    Ok(data.to_vec()),
                    "{what}"
                );
            }
        }
        CKF_DIGEST => {
            assert_eq!(digest_init(session, &p.mech), CKR_OK, "0x{kind:x}");
            assert_eq!(
                run(session, Call::Digest(&data)).map(|d| d.len()),
                Ok(p.out_len),
                "0x{kind:x}"
            );
        }
        CKF_SIGN | CKF_VERIFY => {
            let key = walk_key(session, &p, len);
            let mac = sign(session, &p.mech, key, &data)
                .unwrap_or_else(|rv| panic!("{what}: sign 0x{rv:x}"));
            assert_eq!(mac.len(), p.out_len, "{what}");
            if flag == CKF_VERIFY {
                assert_eq!(
                    verify_mac(session, &p.mech, key, &data, &mac),
                    CKR_OK,
                    "{what}"
                );
                let mut wrong = mac.clone();
                wrong[0] ^= 1;
                assert_eq!(
                    verify_mac(session, &p.mech, key, &data, &wrong),
                    CKR_SIGNATURE_INVALID,
                    "{what}"
                );
            }
        }
        CKF_GENERATE => {
            let template = Template::new().ulong(CKA_VALUE_LEN, len as CK_ULONG);
            let key = generate_key(session, kind, &template)
                .unwrap_or_else(|rv| panic!("{what}: generate 0x{rv:x}"));
            assert_eq!(
                ulong_attribute(session, key, CKA_VALUE_LEN),
                len as CK_ULONG,
                "{what}"
            );
            assert_eq!(
                ulong_attribute(session, key, CKA_KEY_TYPE),
                p.key_type,
                "{what}"
            );
        }
        CKF_WRAP | CKF_UNWRAP => {
            assert_ne!(
                flags & CKF_WRAP,
                0,
                "{what}: unwrap-only mechanisms are not walked"
            );
            let kek = walk_key(session, &p, len);
            if matches!(p.mech.kind, CKM_AES_CBC_PAD | CKM_AES_GCM) {
                // Wrapping with these is opt-in per key (see token/wrap.rs).
                let plain = walk_key(session, &p, len);
                let target = aes(session, &[0x77; 24]);
                assert_eq!(
                    wrap_key(session, &p.mech, plain, target).err(),
                    Some(CKR_MECHANISM_INVALID),
                    "{what}"
                );
                let value: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
                let template =
                    aes_key(&value).bytes(CKA_ALLOWED_MECHANISMS, &p.mech.kind.to_ne_bytes());
                let kek = create(session, &template).unwrap();
                let target = aes(session, &[0x77; 24]);
                let blob = wrap_key(session, &p.mech, kek, target)
                    .unwrap_or_else(|rv| panic!("{what}: wrap 0x{rv:x}"));
                if flag == CKF_UNWRAP {
                    let template = Template::new()
                        .ulong(CKA_CLASS, CKO_SECRET_KEY)
                        .ulong(CKA_KEY_TYPE, CKK_AES);
                    let key = unwrap_key(session, &p.mech, kek, &blob, &template)
                        .unwrap_or_else(|rv| panic!("{what}: unwrap 0x{rv:x}"));
                    assert_eq!(
                        attribute(session, key, CKA_CHECK_VALUE),
                        attribute(session, target, CKA_CHECK_VALUE),
                        "{what}"
                    );
                }
                return;
            }
            let target = aes(session, &[0x77; 24]);
            let blob = wrap_key(session, &p.mech, kek, target)
                .unwrap_or_else(|rv| panic!("{what}: wrap 0x{rv:x}"));
            assert!(blob.len() >= 24, "{what}: {} bytes", blob.len());
            if flag == CKF_UNWRAP {
                let template = Template::new()
                    .ulong(CKA_CLASS, CKO_SECRET_KEY)
                    .ulong(CKA_KEY_TYPE, CKK_AES);
                let key = unwrap_key(session, &p.mech, kek, &blob, &template)
                    .unwrap_or_else(|rv| panic!("{what}: unwrap 0x{rv:x}"));
                assert_eq!(
                    attribute(session, key, CKA_CHECK_VALUE),
                    attribute(session, target, CKA_CHECK_VALUE),
                    "{what}"
                );
            }
        }
        CKF_DERIVE => {
            let base = walk_key(session, &p, len);
            let template = Template::new().ulong(CKA_KEY_TYPE, CKK_AES);
            let key = derive_key(session, &p.mech, base, &template)
                .unwrap_or_else(|rv| panic!("{what}: derive 0x{rv:x}"));
            // PKCS#11 3.0 §2.10.9: the value is the base key's encryption of the data.
            let cipher = match kind {
                CKM_AES_CBC_ENCRYPT_DATA => Mech::bytes(CKM_AES_CBC, &DERIVE_IV),
                _ => Mech::new(CKM_AES_ECB),
            };
            let value = encrypt(session, &cipher, base, &DERIVE_DATA).unwrap();
            let expected = aes(session, &value);
            assert_eq!(ulong_attribute(session, key, CKA_VALUE_LEN), 32, "{what}");
            assert_eq!(
                attribute(session, key, CKA_CHECK_VALUE),
                attribute(session, expected, CKA_CHECK_VALUE),
                "{what}"
            );
        }
        _ => unreachable!("only WALKED flags"),
    }
}

/// The code of the call that starts the function of `flag`, with suitable parameters.
fn start(session: CK_SESSION_HANDLE, kind: CK_MECHANISM_TYPE, flag: CK_FLAGS) -> CK_RV {
    let p = profile(kind);
    let key = walk_key(session, &p, if p.key_type == CKK_AES { 16 } else { 32 });
    match flag {
        CKF_ENCRYPT => encrypt_init(session, &p.mech, key),
        CKF_DECRYPT => decrypt_init(session, &p.mech, key),
        CKF_DIGEST => digest_init(session, &p.mech),
        CKF_SIGN => sign_init(session, &p.mech, key),
        CKF_VERIFY => verify_init(session, &p.mech, key),
        CKF_GENERATE => {
            let mut raw = p.mech.raw();
            let template = Template::new().ulong(CKA_VALUE_LEN, 16);
            let mut handle = UNTOUCHED;
            // SAFETY: the mechanism and template are valid; `handle` is writable.
            let rv = unsafe {
                (functions().C_GenerateKey.unwrap())(
                    session,
                    &mut raw,
                    template.ptr(),
                    template.count(),
                    &mut handle,
                )
            };
            assert_eq!(handle, UNTOUCHED, "0x{kind:x}");
            rv
        }
        CKF_WRAP => {
            let target = aes(session, &[0x77; 16]);
            wrap_key(session, &p.mech, key, target)
                .err()
                .unwrap_or(CKR_OK)
        }
        CKF_UNWRAP => {
            let template = Template::new()
                .ulong(CKA_CLASS, CKO_SECRET_KEY)
                .ulong(CKA_KEY_TYPE, CKK_AES);
            unwrap_key(session, &p.mech, key, &[0x3c; 40], &template)
                .err()
                .unwrap_or(CKR_OK)
        }
        CKF_DERIVE => {
            let template = Template::new().ulong(CKA_KEY_TYPE, CKK_AES);
            derive_key(session, &p.mech, key, &template)
                .err()
                .unwrap_or(CKR_OK)
        }
        _ => unreachable!("only WALKED flags"),
    }
}

#[test]
#[serial]
fn every_advertised_function_works_at_both_key_size_limits_and_nothing_else_starts() {
    let _fixture = Fixture::new();
    let slot = user_token();
    // Keeps the user logged in while the scratch sessions come and go.
    let _owner = user_session(slot);
    let known = WALKED.iter().fold(0, |all, (flag, _)| all | flag);
    let list = mechanism_list(slot);
    assert!(list.len() >= 20, "{list:x?}");
    // Key-pair mechanisms need key pairs, not secret keys of a size: their walk is in
    // ffi/tests/asymmetric.rs.
    // CKM_KEYFERRY_DOMAIN_WRAP works only with a token's domain key: tests/tests/domain.rs.
    for kind in list.into_iter().filter(|kind| {
        !KEY_PAIR_MECHANISMS.contains(kind)
            && *kind != keyferry_core::mech::domain::CKM_KEYFERRY_DOMAIN_WRAP
    }) {
        let info = mechanism_info(slot, kind);
        assert_eq!(
            info.flags & !known,
            0,
            "0x{kind:x} advertises functions this walk does not know"
        );
        let p = profile(kind);
        let unit = if p.sizes_in_bits { 8 } else { 1 };
        if p.sizes_in_bits {
            assert_eq!(
                (info.ulMinKeySize % 8, info.ulMaxKeySize % 8),
                (0, 0),
                "0x{kind:x}"
            );
        }
        let sizes = [
            info.ulMinKeySize as usize / unit,
            info.ulMaxKeySize as usize / unit,
        ];
        for (flag, name) in WALKED {
            let session = Scratch(open_rw(slot));
            if info.flags & flag != 0 {
                if flag != CKF_DIGEST {
                    assert!(
                        sizes[0] > 0 && sizes[0] <= sizes[1],
                        "0x{kind:x} {name}: sizes {sizes:?}"
                    );
                }
                for len in sizes {
                    exercise(session.0, kind, info.flags, flag, len);
                }
            } else {
                assert_eq!(
                    start(session.0, kind, flag),
                    CKR_MECHANISM_INVALID,
                    "0x{kind:x} {name}"
                );
            }
        }
    }
}

#[test]
#[serial]
fn an_argument_error_ends_the_operation_like_any_other_error() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let key = create(session, &aes_key(&[0x24; 16])).unwrap();
    let f = functions();
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_ECB,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    let data = [0u8; 16];
    let mut out = [0u8; 16];
    let mut out_len: CK_ULONG = 16;
    for refused in ["NULL data with a length", "NULL length word"] {
        // SAFETY: the mechanism is valid for the call.
        let rv = unsafe { (f.C_EncryptInit.unwrap())(session, &mut mechanism, key) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module refuses the NULL pointer before reading or writing through it.
        let rv = unsafe {
            match refused {
                "NULL data with a length" => {
                    (f.C_Encrypt.unwrap())(session, null_mut(), 16, out.as_mut_ptr(), &mut out_len)
                }
                _ => (f.C_Encrypt.unwrap())(
                    session,
                    data.as_ptr().cast_mut(),
                    16,
                    out.as_mut_ptr(),
                    null_mut(),
                ),
            }
        };
        assert_eq!(rv, CKR_ARGUMENTS_BAD, "{refused}");
        // SAFETY: valid buffers of the stated lengths.
        let rv = unsafe {
            (f.C_Encrypt.unwrap())(
                session,
                data.as_ptr().cast_mut(),
                16,
                out.as_mut_ptr(),
                &mut out_len,
            )
        };
        assert_eq!(
            rv, CKR_OPERATION_NOT_INITIALIZED,
            "{refused}: the operation ended"
        );
    }
}
