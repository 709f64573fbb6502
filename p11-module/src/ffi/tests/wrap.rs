//! C_WrapKey, C_UnwrapKey and C_DeriveKey through the C ABI: both RFC 5649 numbers, the
//! nested wrap/unwrap templates cryptoki cannot express, the length protocol, and the
//! ECB derivation against a FIPS-197 answer.

use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

fn mechanism(kind: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: kind,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// C_WrapKey into a buffer of `capacity` (None: a length query): (rv, length word, bytes).
fn wrap(
    session: CK_SESSION_HANDLE,
    kind: CK_MECHANISM_TYPE,
    kek: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    capacity: Option<usize>,
) -> (CK_RV, CK_ULONG, Vec<u8>) {
    let mut mechanism = mechanism(kind);
    let mut buffer = vec![0xeeu8; capacity.unwrap_or(0)];
    let mut len = capacity.map_or(UNTOUCHED, |c| c as CK_ULONG);
    let out = if capacity.is_some() {
        buffer.as_mut_ptr()
    } else {
        null_mut()
    };
    // SAFETY: the mechanism is valid; `out` is NULL or holds `len` writable bytes.
    let rv = unsafe {
        (functions().C_WrapKey.unwrap())(session, &mut mechanism, kek, key, out, &mut len)
    };
    (rv, len, buffer)
}

fn wrapped(
    session: CK_SESSION_HANDLE,
    kind: CK_MECHANISM_TYPE,
    kek: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> Vec<u8> {
    let (rv, len, _) = wrap(session, kind, kek, key, None);
    assert_eq!(rv, CKR_OK);
    let (rv, written, mut blob) = wrap(session, kind, kek, key, Some(len as usize));
    assert_eq!((rv, written), (CKR_OK, len));
    blob.truncate(written as usize);
    blob
}

fn unwrap(
    session: CK_SESSION_HANDLE,
    kind: CK_MECHANISM_TYPE,
    kek: CK_OBJECT_HANDLE,
    blob: &[u8],
    template: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut mechanism = mechanism(kind);
    let mut key = UNTOUCHED;
    // SAFETY: the mechanism, blob and template are valid; `key` is writable.
    let rv = unsafe {
        (functions().C_UnwrapKey.unwrap())(
            session,
            &mut mechanism,
            kek,
            blob.as_ptr().cast_mut(),
            blob.len() as CK_ULONG,
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

fn kek(session: CK_SESSION_HANDLE, extra: Template) -> CK_OBJECT_HANDLE {
    let template = extra
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
        .bytes(CKA_VALUE, &[0x42; 32])
        .bool(CKA_WRAP, true)
        .bool(CKA_UNWRAP, true);
    create(session, &template).unwrap()
}

fn secret(session: CK_SESSION_HANDLE, value: &[u8], sensitive: bool) -> CK_OBJECT_HANDLE {
    let template = aes_key(value)
        .bool(CKA_SENSITIVE, sensitive)
        .bool(CKA_EXTRACTABLE, true);
    create(session, &template).unwrap()
}

fn aes_template() -> Template {
    Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
}

#[test]
#[serial]
fn both_rfc_5649_numbers_make_the_same_blob_and_open_each_others() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let kek = kek(session, Template::new());
    let key = secret(session, &[0x17; 24], true);
    let pad = wrapped(session, CKM_AES_KEY_WRAP_PAD, kek, key);
    let kwp = wrapped(session, CKM_AES_KEY_WRAP_KWP, kek, key);
    assert_eq!(pad, kwp);
    assert_eq!(pad.len(), 32);
    for (number, blob) in [(CKM_AES_KEY_WRAP_KWP, &pad), (CKM_AES_KEY_WRAP_PAD, &kwp)] {
        let back = unwrap(session, number, kek, blob, &aes_template()).unwrap();
        assert_eq!(
            attribute(session, back, CKA_CHECK_VALUE).unwrap(),
            attribute(session, key, CKA_CHECK_VALUE).unwrap()
        );
    }
}

#[test]
#[serial]
fn wrap_follows_the_length_protocol() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let kek = kek(session, Template::new());
    let key = secret(session, &[1; 32], true);
    let (rv, len, _) = wrap(session, CKM_AES_KEY_WRAP, kek, key, None);
    assert_eq!((rv, len), (CKR_OK, 40));
    let (rv, len, buffer) = wrap(session, CKM_AES_KEY_WRAP, kek, key, Some(39));
    assert_eq!((rv, len), (CKR_BUFFER_TOO_SMALL, 40));
    assert!(
        buffer.iter().all(|byte| *byte == 0xee),
        "nothing written on BUFFER_TOO_SMALL"
    );
    let (rv, len, _) = wrap(session, CKM_AES_KEY_WRAP, kek, key, Some(64));
    assert_eq!((rv, len), (CKR_OK, 40));
}

#[test]
#[serial]
fn the_wrapping_keys_wrap_template_is_compared_byte_for_byte() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let wrap_template = Template::new()
        .bool(CKA_SENSITIVE, true)
        .ulong(CKA_KEY_TYPE, CKK_AES);
    let kek = kek(
        session,
        Template::new().nested(CKA_WRAP_TEMPLATE, wrap_template),
    );
    let plain = secret(session, &[2; 16], false);
    let hidden = secret(session, &[3; 16], true);
    assert_eq!(
        wrap(session, CKM_AES_KEY_WRAP, kek, plain, None).0,
        CKR_KEY_NOT_WRAPPABLE
    );
    assert_eq!(wrap(session, CKM_AES_KEY_WRAP, kek, hidden, None).0, CKR_OK);
    let unextractable = create(session, &aes_key(&[4; 16]).bool(CKA_EXTRACTABLE, false)).unwrap();
    assert_eq!(
        wrap(session, CKM_AES_KEY_WRAP, kek, unextractable, None).0,
        CKR_KEY_UNEXTRACTABLE
    );
}

#[test]
#[serial]
fn the_unwrapping_keys_unwrap_template_completes_and_constrains_the_new_key() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let unwrap_template = Template::new()
        .bool(CKA_EXTRACTABLE, false)
        .bool(CKA_SENSITIVE, true);
    let kek = kek(
        session,
        Template::new().nested(CKA_UNWRAP_TEMPLATE, unwrap_template),
    );
    let key = secret(session, &[5; 32], true);
    let blob = wrapped(session, CKM_AES_KEY_WRAP_KWP, kek, key);
    let before = find(session, &Template::new()).len();
    let contradicting = aes_template().bool(CKA_EXTRACTABLE, true);
    assert_eq!(
        unwrap(session, CKM_AES_KEY_WRAP_KWP, kek, &blob, &contradicting),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(
        find(session, &Template::new()).len(),
        before,
        "no object created"
    );
    let arrived = unwrap(session, CKM_AES_KEY_WRAP_KWP, kek, &blob, &aes_template()).unwrap();
    assert!(!bool_attribute(session, arrived, CKA_EXTRACTABLE));
    assert!(!bool_attribute(session, arrived, CKA_LOCAL));
}

#[test]
#[serial]
fn an_unwrap_template_check_value_must_match_the_unwrapped_key() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let kek = kek(session, Template::new());
    // AES-128 of the zero key: check value 66 e9 4b.
    let key = secret(session, &[0; 16], true);
    let blob = wrapped(session, CKM_AES_KEY_WRAP, kek, key);
    let wrong = aes_template().bytes(CKA_CHECK_VALUE, &[1, 2, 3]);
    assert_eq!(
        unwrap(session, CKM_AES_KEY_WRAP, kek, &blob, &wrong),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let right = aes_template().bytes(CKA_CHECK_VALUE, &[0x66, 0xe9, 0x4b]);
    assert!(unwrap(session, CKM_AES_KEY_WRAP, kek, &blob, &right).is_ok());
    let missing_class = Template::new().ulong(CKA_KEY_TYPE, CKK_AES);
    assert_eq!(
        unwrap(session, CKM_AES_KEY_WRAP, kek, &blob, &missing_class),
        Err(CKR_TEMPLATE_INCOMPLETE)
    );
    let wrong_kek = create(session, &aes_key(&[9; 32]).bool(CKA_UNWRAP, true)).unwrap();
    assert_eq!(
        unwrap(session, CKM_AES_KEY_WRAP, wrong_kek, &blob, &aes_template()),
        Err(CKR_WRAPPED_KEY_INVALID)
    );
}

#[test]
#[serial]
fn ecb_encrypt_data_derives_the_fips_197_answer() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    // FIPS-197 appendix C.1: AES-128 of 00112233…ff under 00010203…0f.
    let base_value: Vec<u8> = (0u8..16).collect();
    let base = create(session, &aes_key(&base_value).bool(CKA_DERIVE, true)).unwrap();
    let data: Vec<u8> = (0u8..16).map(|i| i * 0x11).collect();
    let mut parameter = CK_KEY_DERIVATION_STRING_DATA {
        pData: data.as_ptr().cast_mut(),
        ulLen: 16,
    };
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_ECB_ENCRYPT_DATA,
        pParameter: (&mut parameter as *mut CK_KEY_DERIVATION_STRING_DATA).cast(),
        ulParameterLen: std::mem::size_of::<CK_KEY_DERIVATION_STRING_DATA>() as CK_ULONG,
    };
    let template = Template::new()
        .ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
        .bool(CKA_SENSITIVE, false)
        .bool(CKA_EXTRACTABLE, true);
    let mut derived = UNTOUCHED;
    // SAFETY: the mechanism points at a live parameter; the template is valid; `derived` is writable.
    let rv = unsafe {
        (functions().C_DeriveKey.unwrap())(
            session,
            &mut mechanism,
            base,
            template.ptr(),
            template.count(),
            &mut derived,
        )
    };
    assert_eq!(rv, CKR_OK);
    let expected = [
        0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5,
        0x5a,
    ];
    assert_eq!(attribute(session, derived, CKA_VALUE).unwrap(), expected);
    // Meaningful only with CKA_LOCAL (PKCS#11 3.0 §4.8): a derived key has none.
    assert_eq!(
        ulong_attribute(session, derived, CKA_KEY_GEN_MECHANISM),
        CK_UNAVAILABLE_INFORMATION
    );
    // A parameter of the wrong size is refused before anything is read through it.
    mechanism.ulParameterLen -= 1;
    let mut refused = UNTOUCHED;
    // SAFETY: as above; the module checks the length before reading the parameter.
    let rv = unsafe {
        (functions().C_DeriveKey.unwrap())(
            session,
            &mut mechanism,
            base,
            template.ptr(),
            template.count(),
            &mut refused,
        )
    };
    assert_eq!((rv, refused), (CKR_MECHANISM_PARAM_INVALID, UNTOUCHED));
}

/// C_GenerateKeyPair with a parameterless mechanism: (public, private).
fn key_pair(
    session: CK_SESSION_HANDLE,
    kind: CK_MECHANISM_TYPE,
    public: &Template,
    private: &Template,
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let mut mechanism = mechanism(kind);
    let (mut public_key, mut private_key) = (UNTOUCHED, UNTOUCHED);
    // SAFETY: the mechanism and templates are valid; both handles are writable.
    let rv = unsafe {
        (functions().C_GenerateKeyPair.unwrap())(
            session,
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
}

/// C_WrapKey / C_UnwrapKey with CKM_RSA_AES_KEY_WRAP and OAEP-SHA-256.
fn rsa_aes(
    session: CK_SESSION_HANDLE,
    kek: CK_OBJECT_HANDLE,
    target: Result<CK_OBJECT_HANDLE, (&[u8], &Template)>,
) -> Result<(Vec<u8>, CK_OBJECT_HANDLE), CK_RV> {
    let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: null_mut(),
        ulSourceDataLen: 0,
    };
    let mut parameter = CK_RSA_AES_KEY_WRAP_PARAMS {
        ulAESKeyBits: 256,
        pOAEPParams: &mut oaep,
    };
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_RSA_AES_KEY_WRAP,
        pParameter: (&mut parameter as *mut CK_RSA_AES_KEY_WRAP_PARAMS).cast(),
        ulParameterLen: std::mem::size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>() as CK_ULONG,
    };
    match target {
        Ok(key) => {
            let mut blob = vec![0u8; 4096];
            let mut len = blob.len() as CK_ULONG;
            // SAFETY: the mechanism points at live parameters; `blob` holds `len` bytes.
            let rv = unsafe {
                (functions().C_WrapKey.unwrap())(
                    session,
                    &mut mechanism,
                    kek,
                    key,
                    blob.as_mut_ptr(),
                    &mut len,
                )
            };
            if rv != CKR_OK {
                return Err(rv);
            }
            blob.truncate(len as usize);
            Ok((blob, key))
        }
        Err((blob, template)) => {
            let mut key = UNTOUCHED;
            // SAFETY: as above; the blob and template are valid; `key` is writable.
            let rv = unsafe {
                (functions().C_UnwrapKey.unwrap())(
                    session,
                    &mut mechanism,
                    kek,
                    blob.as_ptr().cast_mut(),
                    blob.len() as CK_ULONG,
                    template.ptr(),
                    template.count(),
                    &mut key,
                )
            };
            if rv == CKR_OK {
                Ok((Vec::new(), key))
            } else {
                Err(rv)
            }
        }
    }
}

#[test]
#[serial]
fn rsa_aes_key_wrap_carries_secret_and_private_keys() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let rsa_public = Template::new()
        .ulong(CKA_MODULUS_BITS, 2048)
        .bool(CKA_WRAP, true);
    let rsa_private = Template::new().bool(CKA_UNWRAP, true);
    let (public, private) = key_pair(
        session,
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        &rsa_public,
        &rsa_private,
    );

    let secret = secret(session, &[0x51; 32], true);
    let (blob, _) = rsa_aes(session, public, Ok(secret)).unwrap();
    // 256 bytes of OAEP, then RFC 5649 of 32 bytes: 40.
    assert_eq!(blob.len(), 256 + 40);
    let (_, back) = rsa_aes(session, private, Err((&blob, &aes_template()))).unwrap();
    assert_eq!(
        attribute(session, back, CKA_CHECK_VALUE).unwrap(),
        attribute(session, secret, CKA_CHECK_VALUE).unwrap()
    );

    let ec_public = Template::new().bytes(
        CKA_EC_PARAMS,
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    );
    let (ec_pub, ec_priv) = key_pair(
        session,
        CKM_EC_KEY_PAIR_GEN,
        &ec_public,
        &Template::new().bool(CKA_EXTRACTABLE, true),
    );
    let (blob, _) = rsa_aes(session, public, Ok(ec_priv)).unwrap();
    let private_template = Template::new()
        .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
        .ulong(CKA_KEY_TYPE, CKK_EC);
    let (_, moved) = rsa_aes(session, private, Err((&blob, &private_template))).unwrap();
    assert_eq!(
        attribute(session, moved, CKA_EC_POINT).unwrap(),
        attribute(session, ec_pub, CKA_EC_POINT).unwrap()
    );
    assert_eq!(
        attribute(session, moved, CKA_PUBLIC_KEY_INFO).unwrap(),
        attribute(session, ec_pub, CKA_PUBLIC_KEY_INFO).unwrap()
    );

    let mut tampered = blob.clone();
    tampered[300] ^= 1;
    assert_eq!(
        rsa_aes(session, private, Err((&tampered, &private_template))).err(),
        Some(CKR_WRAPPED_KEY_INVALID)
    );
    assert_eq!(
        rsa_aes(session, private, Err((&blob[..200], &private_template))).err(),
        Some(CKR_WRAPPED_KEY_LEN_RANGE)
    );
}
