//! Key management and random numbers (PKCS#11 3.0 §5.14, §5.15): C_GenerateKey for AES
//! and generic secrets, check values, C_GenerateRandom, C_SeedRandom, and the functions
//! the module does not provide yet.

use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

/// A template for a key of `len` bytes, session object, defaults otherwise.
fn key_of(len: CK_ULONG) -> Template {
    Template::new().ulong(CKA_VALUE_LEN, len)
}

fn logged_in() -> CK_SESSION_HANDLE {
    user_session(user_token())
}

/// C_GenerateKey with any mechanism pointer and parameter.
fn generate_with(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    template: &Template,
) -> (CK_RV, CK_OBJECT_HANDLE) {
    let mut key = UNTOUCHED;
    // SAFETY: the mechanism is NULL or valid with its parameter; the template is valid;
    // `key` is writable.
    let rv = unsafe {
        (functions().C_GenerateKey.unwrap())(
            session,
            mechanism,
            template.ptr(),
            template.count(),
            &mut key,
        )
    };
    (rv, key)
}

#[test]
#[serial]
fn aes_keys_of_16_24_and_32_bytes_are_generated_with_their_computed_attributes() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for len in [16, 24, 32] {
        let key = generate_key(session, CKM_AES_KEY_GEN, &key_of(len)).unwrap();
        assert_eq!(ulong_attribute(session, key, CKA_CLASS), CKO_SECRET_KEY);
        assert_eq!(ulong_attribute(session, key, CKA_KEY_TYPE), CKK_AES);
        assert_eq!(ulong_attribute(session, key, CKA_VALUE_LEN), len);
        assert!(bool_attribute(session, key, CKA_LOCAL));
        assert_eq!(
            ulong_attribute(session, key, CKA_KEY_GEN_MECHANISM),
            CKM_AES_KEY_GEN
        );
        assert!(bool_attribute(session, key, CKA_SENSITIVE));
        assert!(bool_attribute(session, key, CKA_ALWAYS_SENSITIVE));
        assert!(bool_attribute(session, key, CKA_EXTRACTABLE));
        assert!(!bool_attribute(session, key, CKA_NEVER_EXTRACTABLE));
        assert_eq!(attribute(session, key, CKA_CHECK_VALUE).unwrap().len(), 3);
        assert_eq!(
            attribute(session, key, CKA_VALUE),
            Err(CKR_ATTRIBUTE_SENSITIVE)
        );
    }
}

#[test]
#[serial]
fn always_sensitive_and_never_extractable_follow_the_generate_template() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for sensitive in [false, true] {
        for extractable in [false, true] {
            let template = key_of(16)
                .bool(CKA_SENSITIVE, sensitive)
                .bool(CKA_EXTRACTABLE, extractable);
            let key = generate_key(session, CKM_AES_KEY_GEN, &template).unwrap();
            assert_eq!(
                bool_attribute(session, key, CKA_ALWAYS_SENSITIVE),
                sensitive
            );
            assert_eq!(
                bool_attribute(session, key, CKA_NEVER_EXTRACTABLE),
                !extractable
            );
        }
    }
}

#[test]
#[serial]
fn always_sensitive_and_never_extractable_do_not_change_with_later_changes() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let template = key_of(16).bool(CKA_SENSITIVE, false);
    let key = generate_key(session, CKM_AES_KEY_GEN, &template).unwrap();
    let locked_down = Template::new()
        .bool(CKA_SENSITIVE, true)
        .bool(CKA_EXTRACTABLE, false);
    assert_eq!(set_attributes(session, key, &locked_down), CKR_OK);
    assert!(!bool_attribute(session, key, CKA_ALWAYS_SENSITIVE));
    assert!(!bool_attribute(session, key, CKA_NEVER_EXTRACTABLE));
}

#[test]
#[serial]
fn a_generated_value_is_random_and_matches_its_check_value() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let readable = key_of(32).bool(CKA_SENSITIVE, false);
    let first = generate_key(session, CKM_AES_KEY_GEN, &readable).unwrap();
    let second = generate_key(session, CKM_AES_KEY_GEN, &readable).unwrap();
    let value = attribute(session, first, CKA_VALUE).unwrap();
    assert_eq!(value.len(), 32);
    assert_ne!(attribute(session, second, CKA_VALUE).unwrap(), value);
    let recreated = create(session, &aes_key(&value)).unwrap();
    assert_eq!(
        attribute(session, recreated, CKA_CHECK_VALUE),
        attribute(session, first, CKA_CHECK_VALUE)
    );
}

#[test]
#[serial]
fn a_generated_token_key_survives_restart() {
    let fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    let template = key_of(32).bool(CKA_TOKEN, true).bytes(CKA_LABEL, b"kek");
    let key = generate_key(session, CKM_AES_KEY_GEN, &template).unwrap();
    let check_value = attribute(session, key, CKA_CHECK_VALUE).unwrap();
    fixture.restart();
    let session = user_session(slot);
    let found = find(session, &Template::new().bytes(CKA_LABEL, b"kek"));
    assert_eq!(found.len(), 1);
    assert_eq!(
        attribute(session, found[0], CKA_CHECK_VALUE),
        Ok(check_value)
    );
    assert!(bool_attribute(session, found[0], CKA_LOCAL));
}

#[test]
#[serial]
fn an_aes_value_len_other_than_16_24_or_32_is_attribute_value_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for len in [0, 8, 20, 31, 33, 64] {
        assert_eq!(
            generate_key(session, CKM_AES_KEY_GEN, &key_of(len)),
            Err(CKR_ATTRIBUTE_VALUE_INVALID),
            "{len} bytes"
        );
    }
    assert_eq!(
        find(session, &Template::new()),
        Vec::<CK_OBJECT_HANDLE>::new()
    );
}

#[test]
#[serial]
fn keygen_without_value_len_is_template_incomplete() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for mechanism in [CKM_AES_KEY_GEN, CKM_GENERIC_SECRET_KEY_GEN] {
        let template = Template::new().bytes(CKA_LABEL, b"no length");
        assert_eq!(
            generate_key(session, mechanism, &template),
            Err(CKR_TEMPLATE_INCOMPLETE)
        );
    }
}

#[test]
#[serial]
fn a_value_in_a_keygen_template_is_template_inconsistent() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let template = key_of(16).bytes(CKA_VALUE, &[0; 16]);
    assert_eq!(
        generate_key(session, CKM_AES_KEY_GEN, &template),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
}

#[test]
#[serial]
fn a_class_or_key_type_the_mechanism_does_not_make_is_template_inconsistent() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let data = key_of(16).ulong(CKA_CLASS, CKO_DATA);
    assert_eq!(
        generate_key(session, CKM_AES_KEY_GEN, &data),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    let generic = key_of(16).ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET);
    assert_eq!(
        generate_key(session, CKM_AES_KEY_GEN, &generic),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    let consistent = key_of(16)
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES);
    generate_key(session, CKM_AES_KEY_GEN, &consistent).unwrap();
}

#[test]
#[serial]
fn a_token_computed_attribute_in_a_keygen_template_is_attribute_read_only() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let local = key_of(16).bool(CKA_LOCAL, true);
    assert_eq!(
        generate_key(session, CKM_AES_KEY_GEN, &local),
        Err(CKR_ATTRIBUTE_READ_ONLY)
    );
}

#[test]
#[serial]
fn a_keygen_mechanism_parameter_is_mechanism_param_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let mut parameter = [0u8; 16];
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_KEY_GEN,
        pParameter: parameter.as_mut_ptr().cast(),
        ulParameterLen: 16,
    };
    let (rv, key) = generate_with(session, &mut mechanism, &key_of(16));
    assert_eq!((rv, key), (CKR_MECHANISM_PARAM_INVALID, UNTOUCHED));
    let mut null_with_length = CK_MECHANISM {
        mechanism: CKM_AES_KEY_GEN,
        pParameter: null_mut(),
        ulParameterLen: 4,
    };
    let (rv, key) = generate_with(session, &mut null_with_length, &key_of(16));
    assert_eq!((rv, key), (CKR_MECHANISM_PARAM_INVALID, UNTOUCHED));
}

#[test]
#[serial]
fn an_unknown_or_non_keygen_mechanism_is_mechanism_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for mechanism in [CKM_DES_KEY_GEN, CKM_AES_CBC, CKM_SHA256, CKM_VENDOR_DEFINED] {
        assert_eq!(
            generate_key(session, mechanism, &key_of(16)),
            Err(CKR_MECHANISM_INVALID),
            "mechanism 0x{mechanism:x}"
        );
    }
}

#[test]
#[serial]
fn keygen_with_a_null_mechanism_or_output_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let (rv, key) = generate_with(session, null_mut(), &key_of(16));
    assert_eq!((rv, key), (CKR_ARGUMENTS_BAD, UNTOUCHED));
    let template = key_of(16);
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_KEY_GEN,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    // SAFETY: the mechanism and template are valid; the NULL output is refused.
    let rv = unsafe {
        (functions().C_GenerateKey.unwrap())(
            session,
            &mut mechanism,
            template.ptr(),
            template.count(),
            null_mut(),
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(
        find(session, &Template::new()),
        Vec::<CK_OBJECT_HANDLE>::new()
    );
}

#[test]
#[serial]
fn keygen_follows_the_session_and_login_rules() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let ro = open_ro(slot);
    assert_eq!(
        generate_key(ro, CKM_AES_KEY_GEN, &key_of(16)),
        Err(CKR_USER_NOT_LOGGED_IN)
    );
    let public = key_of(16).bool(CKA_PRIVATE, false);
    let key = generate_key(ro, CKM_AES_KEY_GEN, &public).unwrap();
    assert!(!bool_attribute(ro, key, CKA_PRIVATE));
    assert_eq!(login(ro, CKU_USER, USER_PIN), CKR_OK);
    let token_key = key_of(16).bool(CKA_TOKEN, true);
    assert_eq!(
        generate_key(ro, CKM_AES_KEY_GEN, &token_key),
        Err(CKR_SESSION_READ_ONLY)
    );
}

#[test]
#[serial]
fn generic_secrets_are_generated_in_bytes_with_their_computed_attributes() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = generate_key(session, CKM_GENERIC_SECRET_KEY_GEN, &key_of(32)).unwrap();
    assert_eq!(
        ulong_attribute(session, key, CKA_KEY_TYPE),
        CKK_GENERIC_SECRET
    );
    assert_eq!(ulong_attribute(session, key, CKA_VALUE_LEN), 32);
    assert!(bool_attribute(session, key, CKA_LOCAL));
    assert_eq!(
        ulong_attribute(session, key, CKA_KEY_GEN_MECHANISM),
        CKM_GENERIC_SECRET_KEY_GEN
    );
    assert_eq!(attribute(session, key, CKA_CHECK_VALUE).unwrap().len(), 3);
    assert_eq!(
        attribute(session, key, CKA_VALUE),
        Err(CKR_ATTRIBUTE_SENSITIVE)
    );
    for len in [0, 513] {
        assert_eq!(
            generate_key(session, CKM_GENERIC_SECRET_KEY_GEN, &key_of(len)),
            Err(CKR_ATTRIBUTE_VALUE_INVALID),
            "{len} bytes"
        );
    }
}

#[test]
#[serial]
fn the_check_value_of_a_generic_secret_is_the_start_of_its_sha1() {
    let _fixture = Fixture::new();
    let session = logged_in();
    // Known answers: SHA-1 of 32 zero bytes is de8a847b…, of 16 zero bytes e129f27c….
    for (len, check_value) in [(32, [0xde, 0x8a, 0x84]), (16, [0xe1, 0x29, 0xf2])] {
        let template = Template::new()
            .ulong(CKA_CLASS, CKO_SECRET_KEY)
            .ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
            .bytes(CKA_VALUE, &vec![0; len]);
        let key = create(session, &template).unwrap();
        assert_eq!(
            attribute(session, key, CKA_CHECK_VALUE),
            Ok(check_value.to_vec())
        );
        assert_eq!(
            ulong_attribute(session, key, CKA_VALUE_LEN),
            len as CK_ULONG
        );
    }
}

fn generate_random(session: CK_SESSION_HANDLE, buffer: &mut [u8]) -> CK_RV {
    // SAFETY: `buffer` holds its length in writable bytes.
    unsafe {
        (functions().C_GenerateRandom.unwrap())(
            session,
            buffer.as_mut_ptr(),
            buffer.len() as CK_ULONG,
        )
    }
}

#[test]
#[serial]
fn generate_random_fills_the_buffer_with_fresh_bytes_each_call() {
    let _fixture = Fixture::new();
    let session = open_ro(init_token("random"));
    let (mut first, mut second) = ([0u8; 32], [0u8; 32]);
    assert_eq!(generate_random(session, &mut first), CKR_OK);
    assert_eq!(generate_random(session, &mut second), CKR_OK);
    assert_ne!(first, [0; 32]);
    assert_ne!(second, [0; 32]);
    assert_ne!(first, second);
    assert_eq!(generate_random(session, &mut []), CKR_OK);
}

#[test]
#[serial]
fn generate_random_into_null_with_a_length_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = open_ro(init_token("random"));
    // SAFETY: the NULL buffer with a length is refused before anything is written.
    let rv = unsafe { (functions().C_GenerateRandom.unwrap())(session, null_mut(), 16) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: a NULL buffer of length 0 asks for nothing.
    let rv = unsafe { (functions().C_GenerateRandom.unwrap())(session, null_mut(), 0) };
    assert_eq!(rv, CKR_OK);
}

#[test]
#[serial]
fn seed_random_is_random_seed_not_supported() {
    let _fixture = Fixture::new();
    let session = open_ro(init_token("random"));
    let seed = [7u8; 32];
    // SAFETY: `seed` holds 32 readable bytes.
    let rv = unsafe { (functions().C_SeedRandom.unwrap())(session, seed.as_ptr().cast_mut(), 32) };
    assert_eq!(rv, CKR_RANDOM_SEED_NOT_SUPPORTED);
}

/// Call each named function of `$table` with the given arguments and assert
/// CKR_FUNCTION_NOT_SUPPORTED.
macro_rules! assert_not_supported {
    ($table:expr, $($name:ident($($argument:expr),* $(,)?);)*) => {$(
        // SAFETY: a function the module does not provide reads none of its arguments.
        let rv = unsafe { ($table.$name.unwrap())($($argument),*) };
        assert_eq!(rv, CKR_FUNCTION_NOT_SUPPORTED, stringify!($name));
    )*};
}

#[test]
#[serial]
fn functions_not_provided_yet_are_function_not_supported() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = generate_key(session, CKM_AES_KEY_GEN, &key_of(16)).unwrap();
    let f = functions();
    assert_not_supported!(f,
        C_GetOperationState(session, null_mut(), null_mut());
        C_SetOperationState(session, null_mut(), 0, 0, 0);
        C_SignRecoverInit(session, null_mut(), key);
        C_SignRecover(session, null_mut(), 0, null_mut(), null_mut());
        C_VerifyRecoverInit(session, null_mut(), key);
        C_VerifyRecover(session, null_mut(), 0, null_mut(), null_mut());
        C_DigestEncryptUpdate(session, null_mut(), 0, null_mut(), null_mut());
        C_DecryptDigestUpdate(session, null_mut(), 0, null_mut(), null_mut());
        C_SignEncryptUpdate(session, null_mut(), 0, null_mut(), null_mut());
        C_DecryptVerifyUpdate(session, null_mut(), 0, null_mut(), null_mut());
    );
    let f3 = functions_3_0();
    assert_not_supported!(f3,
        C_SessionCancel(session, 0);
        C_MessageEncryptInit(session, null_mut(), key);
        C_EncryptMessage(session, null_mut(), 0, null_mut(), 0, null_mut(), 0, null_mut(), null_mut());
        C_EncryptMessageBegin(session, null_mut(), 0, null_mut(), 0);
        C_EncryptMessageNext(session, null_mut(), 0, null_mut(), 0, null_mut(), null_mut(), 0);
        C_MessageEncryptFinal(session);
        C_MessageDecryptInit(session, null_mut(), key);
        C_DecryptMessage(session, null_mut(), 0, null_mut(), 0, null_mut(), 0, null_mut(), null_mut());
        C_DecryptMessageBegin(session, null_mut(), 0, null_mut(), 0);
        C_DecryptMessageNext(session, null_mut(), 0, null_mut(), 0, null_mut(), null_mut(), 0);
        C_MessageDecryptFinal(session);
        C_MessageSignInit(session, null_mut(), key);
        C_SignMessage(session, null_mut(), 0, null_mut(), 0, null_mut(), null_mut());
        C_SignMessageBegin(session, null_mut(), 0);
        C_SignMessageNext(session, null_mut(), 0, null_mut(), 0, null_mut(), null_mut());
        C_MessageSignFinal(session);
        C_MessageVerifyInit(session, null_mut(), key);
        C_VerifyMessage(session, null_mut(), 0, null_mut(), 0, null_mut(), 0);
        C_VerifyMessageBegin(session, null_mut(), 0);
        C_VerifyMessageNext(session, null_mut(), 0, null_mut(), 0, null_mut(), 0);
        C_MessageVerifyFinal(session);
    );
}
