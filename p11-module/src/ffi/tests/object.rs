//! Object management (PKCS#11 3.0 §5.7): C_CreateObject template rules,
//! C_GetAttributeValue's per-attribute answers and nested templates,
//! C_SetAttributeValue, C_CopyObject, C_DestroyObject, C_GetObjectSize and searches.

use std::collections::HashSet;
use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

const ZERO_KEY: [u8; 16] = [0; 16];
/// AES-128 of the zero key over the zero block starts 66 e9 4b (FIPS-197 known answer).
const ZERO_KEY_CHECK_VALUE: [u8; 3] = [0x66, 0xe9, 0x4b];
const NO_HANDLES: Vec<CK_OBJECT_HANDLE> = Vec::new();

/// A user session on a fresh token.
fn logged_in() -> CK_SESSION_HANDLE {
    user_session(user_token())
}

fn copy_object(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut copy = UNTOUCHED;
    // SAFETY: the template's pointers are valid for their lengths; `copy` is writable.
    let rv = unsafe {
        (functions().C_CopyObject.unwrap())(
            session,
            object,
            template.ptr(),
            template.count(),
            &mut copy,
        )
    };
    if rv == CKR_OK {
        return Ok(copy);
    }
    assert_eq!(copy, UNTOUCHED, "a failed C_CopyObject wrote a handle");
    Err(rv)
}

fn destroy_object(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { (functions().C_DestroyObject.unwrap())(session, object) }
}

fn object_size(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG, CK_RV> {
    let mut size = UNTOUCHED;
    // SAFETY: `size` is writable.
    let rv = unsafe { (functions().C_GetObjectSize.unwrap())(session, object, &mut size) };
    if rv == CKR_OK {
        return Ok(size);
    }
    assert_eq!(size, UNTOUCHED, "a failed C_GetObjectSize wrote a size");
    Err(rv)
}

/// `C_GetAttributeValue` over a caller-built array.
fn get_attributes(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    attributes: &mut [CK_ATTRIBUTE],
) -> CK_RV {
    // SAFETY: every attribute's pValue is NULL or valid for its ulValueLen bytes.
    unsafe {
        (functions().C_GetAttributeValue.unwrap())(
            session,
            object,
            attributes.as_mut_ptr(),
            attributes.len() as CK_ULONG,
        )
    }
}

/// An attribute to read into `buffer`.
fn into_buffer(kind: CK_ATTRIBUTE_TYPE, buffer: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: buffer.as_mut_ptr().cast(),
        ulValueLen: buffer.len() as CK_ULONG,
    }
}

/// An attribute whose length is asked for (NULL pValue).
fn length_of(kind: CK_ATTRIBUTE_TYPE) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: null_mut(),
        ulValueLen: UNTOUCHED,
    }
}

// C_CreateObject

#[test]
#[serial]
fn creating_a_token_object_in_a_read_only_session_is_session_read_only() {
    let _fixture = Fixture::new();
    let session = open_ro(user_token());
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    let data = data_object("token").bool(CKA_TOKEN, true);
    assert_eq!(create(session, &data), Err(CKR_SESSION_READ_ONLY));
    let key = aes_key(&ZERO_KEY).bool(CKA_TOKEN, true);
    assert_eq!(create(session, &key), Err(CKR_SESSION_READ_ONLY));
    create(session, &data_object("session")).unwrap();
    assert_eq!(
        find(session, &Template::new().bool(CKA_TOKEN, true)),
        NO_HANDLES
    );
}

#[test]
#[serial]
fn creating_a_private_object_without_login_is_user_not_logged_in() {
    let _fixture = Fixture::new();
    let session = open_rw(user_token());
    assert_eq!(
        create(session, &aes_key(&ZERO_KEY)),
        Err(CKR_USER_NOT_LOGGED_IN)
    );
    let private_data = data_object("private").bool(CKA_PRIVATE, true);
    assert_eq!(create(session, &private_data), Err(CKR_USER_NOT_LOGGED_IN));
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(find(session, &Template::new()), NO_HANDLES);
}

#[test]
#[serial]
fn a_template_without_class_or_key_type_is_template_incomplete() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let no_class = Template::new().bytes(CKA_LABEL, b"classless");
    assert_eq!(create(session, &no_class), Err(CKR_TEMPLATE_INCOMPLETE));
    let no_key_type = Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .bytes(CKA_VALUE, &ZERO_KEY);
    assert_eq!(create(session, &no_key_type), Err(CKR_TEMPLATE_INCOMPLETE));
}

#[test]
#[serial]
fn an_aes_key_without_a_value_is_template_incomplete() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let no_value = Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
        .ulong(CKA_VALUE_LEN, 16);
    assert_eq!(create(session, &no_value), Err(CKR_TEMPLATE_INCOMPLETE));
}

#[test]
#[serial]
fn an_aes_key_value_of_a_wrong_length_is_attribute_value_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for len in [0, 1, 15, 17, 20, 31, 33, 64] {
        assert_eq!(
            create(session, &aes_key(&vec![7; len])),
            Err(CKR_ATTRIBUTE_VALUE_INVALID),
            "{len} bytes"
        );
    }
    for len in [16, 24, 32] {
        create(session, &aes_key(&vec![7; len])).unwrap();
    }
}

#[test]
#[serial]
fn token_computed_attributes_in_a_create_template_are_attribute_read_only() {
    let _fixture = Fixture::new();
    let session = logged_in();
    for kind in [CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE] {
        let template = aes_key(&ZERO_KEY).bool(kind, false);
        assert_eq!(
            create(session, &template),
            Err(CKR_ATTRIBUTE_READ_ONLY),
            "0x{kind:x}"
        );
    }
    let mechanism = aes_key(&ZERO_KEY).ulong(CKA_KEY_GEN_MECHANISM, CKM_AES_KEY_GEN);
    assert_eq!(create(session, &mechanism), Err(CKR_ATTRIBUTE_READ_ONLY));
    let unique_id = data_object("id").bytes(CKA_UNIQUE_ID, b"mine");
    assert_eq!(create(session, &unique_id), Err(CKR_ATTRIBUTE_READ_ONLY));
}

#[test]
#[serial]
fn an_attribute_the_object_cannot_have_is_attribute_type_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let modulus = aes_key(&ZERO_KEY).bytes(CKA_MODULUS, &[1, 2, 3]);
    assert_eq!(create(session, &modulus), Err(CKR_ATTRIBUTE_TYPE_INVALID));
    let vendor = data_object("vendor").bytes(CKA_VENDOR_DEFINED | 0x77, b"?");
    assert_eq!(create(session, &vendor), Err(CKR_ATTRIBUTE_TYPE_INVALID));
    let sensitive_data = data_object("data").bool(CKA_SENSITIVE, true);
    assert_eq!(
        create(session, &sensitive_data),
        Err(CKR_ATTRIBUTE_TYPE_INVALID)
    );
}

#[test]
#[serial]
fn values_of_the_wrong_size_are_attribute_value_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let long_bool = data_object("bool").bytes(CKA_TOKEN, &[CK_TRUE, 0]);
    assert_eq!(
        create(session, &long_bool),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let empty_bool = data_object("bool").bytes(CKA_PRIVATE, &[]);
    assert_eq!(
        create(session, &empty_bool),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let short_class = Template::new().bytes(CKA_CLASS, &[0; 4]);
    assert_eq!(
        create(session, &short_class),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let bad_date = aes_key(&ZERO_KEY).bytes(CKA_START_DATE, b"2026-1-1");
    assert_eq!(create(session, &bad_date), Err(CKR_ATTRIBUTE_VALUE_INVALID));
}

#[test]
#[serial]
fn an_unknown_class_or_key_type_is_attribute_value_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let feature = Template::new().ulong(CKA_CLASS, CKO_HW_FEATURE);
    assert_eq!(create(session, &feature), Err(CKR_ATTRIBUTE_VALUE_INVALID));
    let des3 = Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_DES3)
        .bytes(CKA_VALUE, &[1; 24]);
    assert_eq!(create(session, &des3), Err(CKR_ATTRIBUTE_VALUE_INVALID));
}

#[test]
#[serial]
fn one_attribute_given_twice_with_different_values_is_template_inconsistent() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let twice = data_object("first").bytes(CKA_LABEL, b"second");
    assert_eq!(create(session, &twice), Err(CKR_TEMPLATE_INCONSISTENT));
}

#[test]
#[serial]
fn a_null_template_with_a_count_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let mut object = UNTOUCHED;
    // SAFETY: the NULL template with a count is refused before anything is read.
    let rv = unsafe { (functions().C_CreateObject.unwrap())(session, null_mut(), 2, &mut object) };
    assert_eq!((rv, object), (CKR_ARGUMENTS_BAD, UNTOUCHED));
}

#[test]
#[serial]
fn a_null_object_pointer_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let template = data_object("nowhere");
    // SAFETY: the template is valid; the NULL output is refused.
    let rv = unsafe {
        (functions().C_CreateObject.unwrap())(session, template.ptr(), template.count(), null_mut())
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(find(session, &Template::new()), NO_HANDLES);
}

#[test]
#[serial]
fn a_wrong_check_value_is_attribute_value_invalid_and_the_right_one_is_accepted() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let wrong = aes_key(&ZERO_KEY).bytes(CKA_CHECK_VALUE, &[0x66, 0xe9, 0x4c]);
    assert_eq!(create(session, &wrong), Err(CKR_ATTRIBUTE_VALUE_INVALID));
    let right = aes_key(&ZERO_KEY).bytes(CKA_CHECK_VALUE, &ZERO_KEY_CHECK_VALUE);
    let key = create(session, &right).unwrap();
    assert_eq!(
        attribute(session, key, CKA_CHECK_VALUE),
        Ok(ZERO_KEY_CHECK_VALUE.to_vec())
    );
}

#[test]
#[serial]
fn trusted_set_true_by_the_user_is_attribute_read_only() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let trusted = aes_key(&ZERO_KEY).bool(CKA_TRUSTED, true);
    assert_eq!(create(session, &trusted), Err(CKR_ATTRIBUTE_READ_ONLY));
    let untrusted = create(session, &aes_key(&ZERO_KEY).bool(CKA_TRUSTED, false)).unwrap();
    let trust = Template::new().bool(CKA_TRUSTED, true);
    assert_eq!(
        set_attributes(session, untrusted, &trust),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert!(!bool_attribute(session, untrusted, CKA_TRUSTED));
}

#[test]
#[serial]
fn a_created_aes_key_gets_its_defaults_and_computed_attributes() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    for (kind, expected) in [
        (CKA_TOKEN, false),
        (CKA_PRIVATE, true),
        (CKA_MODIFIABLE, true),
        (CKA_COPYABLE, true),
        (CKA_DESTROYABLE, true),
        (CKA_SENSITIVE, true),
        (CKA_EXTRACTABLE, true),
        (CKA_ENCRYPT, true),
        (CKA_WRAP, true),
        (CKA_DERIVE, false),
        (CKA_TRUSTED, false),
        (CKA_WRAP_WITH_TRUSTED, false),
        (CKA_LOCAL, false),
        (CKA_ALWAYS_SENSITIVE, false),
        (CKA_NEVER_EXTRACTABLE, false),
    ] {
        assert_eq!(bool_attribute(session, key, kind), expected, "0x{kind:x}");
    }
    assert_eq!(ulong_attribute(session, key, CKA_CLASS), CKO_SECRET_KEY);
    assert_eq!(ulong_attribute(session, key, CKA_KEY_TYPE), CKK_AES);
    assert_eq!(ulong_attribute(session, key, CKA_VALUE_LEN), 16);
    assert_eq!(
        ulong_attribute(session, key, CKA_KEY_GEN_MECHANISM),
        CK_UNAVAILABLE_INFORMATION
    );
    assert_eq!(attribute(session, key, CKA_LABEL), Ok(vec![]));
    assert_eq!(
        attribute(session, key, CKA_CHECK_VALUE),
        Ok(ZERO_KEY_CHECK_VALUE.to_vec())
    );
    let unique_id = attribute(session, key, CKA_UNIQUE_ID).unwrap();
    assert_eq!(unique_id.len(), 32);
    assert!(unique_id.iter().all(u8::is_ascii_hexdigit));
}

#[test]
#[serial]
fn the_check_value_of_an_aes_key_is_its_encryption_of_a_zero_block() {
    let _fixture = Fixture::new();
    let session = logged_in();
    // Known answers: AES-ECB(key, 16 zero bytes), first three bytes.
    let key_0_to_15: Vec<u8> = (0..16).collect();
    for (value, check_value) in [
        (vec![0; 16], [0x66, 0xe9, 0x4b]),
        (vec![0; 24], [0xaa, 0xe0, 0x69]),
        (vec![0; 32], [0xdc, 0x95, 0xc0]),
        (key_0_to_15, [0xc6, 0xa1, 0x3b]),
    ] {
        let key = create(session, &aes_key(&value)).unwrap();
        assert_eq!(
            attribute(session, key, CKA_CHECK_VALUE),
            Ok(check_value.to_vec())
        );
    }
}

#[test]
#[serial]
fn a_public_data_object_needs_no_login_and_reads_back() {
    let _fixture = Fixture::new();
    let session = open_ro(user_token());
    let template = data_object("note")
        .bytes(CKA_APPLICATION, b"tests")
        .bytes(CKA_VALUE, b"hello");
    let object = create(session, &template).unwrap();
    assert_eq!(ulong_attribute(session, object, CKA_CLASS), CKO_DATA);
    assert!(!bool_attribute(session, object, CKA_PRIVATE));
    assert!(!bool_attribute(session, object, CKA_TOKEN));
    assert_eq!(attribute(session, object, CKA_VALUE), Ok(b"hello".to_vec()));
    assert_eq!(
        attribute(session, object, CKA_APPLICATION),
        Ok(b"tests".to_vec())
    );
    assert_eq!(attribute(session, object, CKA_OBJECT_ID), Ok(vec![]));
}

// C_GetAttributeValue

#[test]
#[serial]
fn get_attribute_value_answers_every_attribute_and_reports_attribute_sensitive_first() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(
        session,
        &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"a long label"),
    )
    .unwrap();
    let mut value = [0xaa_u8; 32];
    let mut modulus = [0xbb_u8; 8];
    let mut label = [0xcc_u8; 4];
    let mut key_type = [0xdd_u8; size_of::<CK_ULONG>()];
    let mut attributes = [
        into_buffer(CKA_VALUE, &mut value),
        into_buffer(CKA_MODULUS, &mut modulus),
        into_buffer(CKA_LABEL, &mut label),
        length_of(CKA_CHECK_VALUE),
        into_buffer(CKA_KEY_TYPE, &mut key_type),
    ];
    assert_eq!(
        get_attributes(session, key, &mut attributes),
        CKR_ATTRIBUTE_SENSITIVE
    );
    let lengths: Vec<_> = attributes.iter().map(|a| a.ulValueLen).collect();
    assert_eq!(
        lengths,
        [
            CK_UNAVAILABLE_INFORMATION,
            CK_UNAVAILABLE_INFORMATION,
            CK_UNAVAILABLE_INFORMATION,
            3,
            size_of::<CK_ULONG>() as CK_ULONG,
        ]
    );
    assert_eq!(value, [0xaa; 32]);
    assert_eq!(modulus, [0xbb; 8]);
    assert_eq!(label, [0xcc; 4]);
    assert_eq!(CK_ULONG::from_ne_bytes(key_type), CKK_AES);
}

#[test]
#[serial]
fn get_attribute_value_of_hidden_key_material_alone_is_attribute_sensitive() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let sensitive = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let unextractable = create(
        session,
        &aes_key(&ZERO_KEY)
            .bool(CKA_SENSITIVE, false)
            .bool(CKA_EXTRACTABLE, false),
    )
    .unwrap();
    for key in [sensitive, unextractable] {
        let mut value = [0u8; 16];
        let mut attributes = [into_buffer(CKA_VALUE, &mut value)];
        assert_eq!(
            get_attributes(session, key, &mut attributes),
            CKR_ATTRIBUTE_SENSITIVE
        );
        assert_eq!(attributes[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(value, [0; 16]);
        let mut attributes = [length_of(CKA_VALUE)];
        assert_eq!(
            get_attributes(session, key, &mut attributes),
            CKR_ATTRIBUTE_SENSITIVE
        );
        assert_eq!(attributes[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    }
}

#[test]
#[serial]
fn a_key_that_is_neither_sensitive_nor_unextractable_reveals_its_value() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let value: Vec<u8> = (100..124).collect();
    let key = create(session, &aes_key(&value).bool(CKA_SENSITIVE, false)).unwrap();
    assert_eq!(attribute(session, key, CKA_VALUE), Ok(value));
}

#[test]
#[serial]
fn get_attribute_value_of_an_attribute_the_object_lacks_alone_is_attribute_type_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let mut modulus = [0xbb_u8; 8];
    let mut attributes = [
        into_buffer(CKA_MODULUS, &mut modulus),
        length_of(CKA_VENDOR_DEFINED | 1),
        length_of(CKA_VALUE_LEN),
    ];
    assert_eq!(
        get_attributes(session, key, &mut attributes),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
    assert_eq!(attributes[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(attributes[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(attributes[2].ulValueLen, size_of::<CK_ULONG>() as CK_ULONG);
    assert_eq!(modulus, [0xbb; 8]);
}

#[test]
#[serial]
fn get_attribute_value_with_a_short_buffer_alone_is_buffer_too_small_and_writes_nothing() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"label")).unwrap();
    let mut label = [0u8; 4];
    let mut check_value = [0u8; 3];
    let mut attributes = [
        into_buffer(CKA_LABEL, &mut label),
        into_buffer(CKA_CHECK_VALUE, &mut check_value),
    ];
    assert_eq!(
        get_attributes(session, key, &mut attributes),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(attributes[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(label, [0; 4]);
    assert_eq!(attributes[1].ulValueLen, 3);
    assert_eq!(check_value, ZERO_KEY_CHECK_VALUE);
}

#[test]
#[serial]
fn get_attribute_value_type_invalid_outranks_buffer_too_small() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"label")).unwrap();
    let mut label = [0u8; 1];
    let mut attributes = [into_buffer(CKA_LABEL, &mut label), length_of(CKA_MODULUS)];
    assert_eq!(
        get_attributes(session, key, &mut attributes),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
    assert_eq!(attributes[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(attributes[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
}

#[test]
#[serial]
fn get_attribute_value_with_a_larger_buffer_sets_the_exact_length() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"label")).unwrap();
    let mut label = [b'#'; 8];
    let mut attributes = [into_buffer(CKA_LABEL, &mut label)];
    assert_eq!(get_attributes(session, key, &mut attributes), CKR_OK);
    assert_eq!(attributes[0].ulValueLen, 5);
    assert_eq!(&label, b"label###");
}

#[test]
#[serial]
fn get_attribute_value_with_a_null_template_and_a_count_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let get = functions().C_GetAttributeValue.unwrap();
    // SAFETY: the NULL template with a count is refused before anything is read.
    let rv = unsafe { get(session, key, null_mut(), 1) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: an empty template: nothing is read or written.
    let rv = unsafe { get(session, key, null_mut(), 0) };
    assert_eq!(rv, CKR_OK);
}

/// An AES key whose CKA_WRAP_TEMPLATE is {CKA_SENSITIVE: true, CKA_KEY_TYPE: CKK_AES}.
fn key_with_wrap_template(session: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let inner = Template::new()
        .bool(CKA_SENSITIVE, true)
        .ulong(CKA_KEY_TYPE, CKK_AES);
    create(
        session,
        &aes_key(&ZERO_KEY).nested(CKA_WRAP_TEMPLATE, inner),
    )
    .unwrap()
}

#[test]
#[serial]
fn a_wrap_template_reads_back_by_the_two_step_protocol() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = key_with_wrap_template(session);
    let entry = size_of::<CK_ATTRIBUTE>() as CK_ULONG;

    let mut outer = [length_of(CKA_WRAP_TEMPLATE)];
    assert_eq!(get_attributes(session, key, &mut outer), CKR_OK);
    assert_eq!(outer[0].ulValueLen, 2 * entry);

    let mut inner = [length_of(0), length_of(0)];
    outer[0].pValue = inner.as_mut_ptr().cast();
    assert_eq!(get_attributes(session, key, &mut outer), CKR_OK);
    assert_eq!(outer[0].ulValueLen, 2 * entry);
    assert_eq!((inner[0].type_, inner[0].ulValueLen), (CKA_SENSITIVE, 1));
    assert_eq!(
        (inner[1].type_, inner[1].ulValueLen),
        (CKA_KEY_TYPE, size_of::<CK_ULONG>() as CK_ULONG)
    );

    let mut sensitive = [0xff_u8; 1];
    let mut key_type = [0xff_u8; size_of::<CK_ULONG>()];
    let mut inner = [
        into_buffer(CKA_SENSITIVE, &mut sensitive),
        into_buffer(CKA_KEY_TYPE, &mut key_type),
    ];
    outer[0].pValue = inner.as_mut_ptr().cast();
    assert_eq!(get_attributes(session, key, &mut outer), CKR_OK);
    assert_eq!(sensitive, [CK_TRUE]);
    assert_eq!(CK_ULONG::from_ne_bytes(key_type), CKK_AES);
}

#[test]
#[serial]
fn a_wrap_template_into_too_few_attributes_is_buffer_too_small() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = key_with_wrap_template(session);
    let mut inner = [length_of(0)];
    let mut outer = [CK_ATTRIBUTE {
        type_: CKA_WRAP_TEMPLATE,
        pValue: inner.as_mut_ptr().cast(),
        ulValueLen: size_of::<CK_ATTRIBUTE>() as CK_ULONG,
    }];
    assert_eq!(
        get_attributes(session, key, &mut outer),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(outer[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!((inner[0].type_, inner[0].ulValueLen), (0, UNTOUCHED));
}

#[test]
#[serial]
fn a_wrap_template_that_is_not_a_whole_number_of_attributes_is_attribute_value_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let inner = Template::new().bool(CKA_SENSITIVE, true);
    let template = aes_key(&ZERO_KEY).raw(CK_ATTRIBUTE {
        type_: CKA_WRAP_TEMPLATE,
        pValue: inner.ptr().cast(),
        ulValueLen: size_of::<CK_ATTRIBUTE>() as CK_ULONG - 1,
    });
    assert_eq!(create(session, &template), Err(CKR_ATTRIBUTE_VALUE_INVALID));
}

// C_SetAttributeValue

#[test]
#[serial]
fn sensitive_cannot_go_back_to_false() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let unsensitive = Template::new().bool(CKA_SENSITIVE, false);
    assert_eq!(
        set_attributes(session, key, &unsensitive),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert!(bool_attribute(session, key, CKA_SENSITIVE));
}

#[test]
#[serial]
fn extractable_cannot_go_back_to_true() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bool(CKA_EXTRACTABLE, false)).unwrap();
    let extractable = Template::new().bool(CKA_EXTRACTABLE, true);
    assert_eq!(
        set_attributes(session, key, &extractable),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert!(!bool_attribute(session, key, CKA_EXTRACTABLE));
}

#[test]
#[serial]
fn sensitive_may_become_true_and_extractable_false() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bool(CKA_SENSITIVE, false)).unwrap();
    let locked_down = Template::new()
        .bool(CKA_SENSITIVE, true)
        .bool(CKA_EXTRACTABLE, false);
    assert_eq!(set_attributes(session, key, &locked_down), CKR_OK);
    assert!(bool_attribute(session, key, CKA_SENSITIVE));
    assert!(!bool_attribute(session, key, CKA_EXTRACTABLE));
    assert_eq!(
        attribute(session, key, CKA_VALUE),
        Err(CKR_ATTRIBUTE_SENSITIVE)
    );
}

#[test]
#[serial]
fn a_label_can_be_changed_on_session_and_token_objects() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let session_key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let token_key = create(session, &aes_key(&ZERO_KEY).bool(CKA_TOKEN, true)).unwrap();
    for key in [session_key, token_key] {
        let relabel = Template::new().bytes(CKA_LABEL, b"renamed");
        assert_eq!(set_attributes(session, key, &relabel), CKR_OK);
        assert_eq!(attribute(session, key, CKA_LABEL), Ok(b"renamed".to_vec()));
    }
    let found = find(session, &Template::new().bytes(CKA_LABEL, b"renamed"));
    assert_eq!(found.len(), 2);
}

#[test]
#[serial]
fn class_and_key_value_cannot_be_changed() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let class = Template::new().ulong(CKA_CLASS, CKO_DATA);
    assert_eq!(
        set_attributes(session, key, &class),
        CKR_ATTRIBUTE_READ_ONLY
    );
    let value = Template::new().bytes(CKA_VALUE, &[1; 16]);
    assert_eq!(
        set_attributes(session, key, &value),
        CKR_ATTRIBUTE_READ_ONLY
    );
    let local = Template::new().bool(CKA_LOCAL, true);
    assert_eq!(
        set_attributes(session, key, &local),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert_eq!(ulong_attribute(session, key, CKA_CLASS), CKO_SECRET_KEY);
    assert_eq!(
        attribute(session, key, CKA_CHECK_VALUE),
        Ok(ZERO_KEY_CHECK_VALUE.to_vec())
    );
}

#[test]
#[serial]
fn a_refused_template_changes_nothing() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"before")).unwrap();
    let half_good = Template::new()
        .bytes(CKA_LABEL, b"after")
        .ulong(CKA_CLASS, CKO_DATA);
    assert_eq!(
        set_attributes(session, key, &half_good),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert_eq!(attribute(session, key, CKA_LABEL), Ok(b"before".to_vec()));
}

#[test]
#[serial]
fn setting_an_attribute_the_object_cannot_have_is_attribute_type_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let modulus = Template::new().bytes(CKA_MODULUS, &[1]);
    assert_eq!(
        set_attributes(session, key, &modulus),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
}

#[test]
#[serial]
fn changing_an_unmodifiable_object_is_action_prohibited() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let template = aes_key(&ZERO_KEY)
        .bytes(CKA_LABEL, b"fixed")
        .bool(CKA_MODIFIABLE, false);
    let key = create(session, &template).unwrap();
    let relabel = Template::new().bytes(CKA_LABEL, b"moved");
    assert_eq!(
        set_attributes(session, key, &relabel),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(attribute(session, key, CKA_LABEL), Ok(b"fixed".to_vec()));
}

#[test]
#[serial]
fn changing_a_token_object_in_a_read_only_session_is_session_read_only() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let rw = user_session(slot);
    let object = create(rw, &data_object("token").bool(CKA_TOKEN, true)).unwrap();
    let ro = open_ro(slot);
    let relabel = Template::new().bytes(CKA_LABEL, b"moved");
    assert_eq!(set_attributes(ro, object, &relabel), CKR_SESSION_READ_ONLY);
    assert_eq!(attribute(ro, object, CKA_LABEL), Ok(b"token".to_vec()));
}

// C_CopyObject

#[test]
#[serial]
fn copying_an_uncopyable_object_is_action_prohibited() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bool(CKA_COPYABLE, false)).unwrap();
    assert_eq!(
        copy_object(session, key, &Template::new()),
        Err(CKR_ACTION_PROHIBITED)
    );
}

#[test]
#[serial]
fn copyable_may_only_go_from_true_to_false() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let uncopyable = Template::new().bool(CKA_COPYABLE, false);
    assert_eq!(set_attributes(session, key, &uncopyable), CKR_OK);
    let copyable = Template::new().bool(CKA_COPYABLE, true);
    assert_eq!(
        set_attributes(session, key, &copyable),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert_eq!(
        copy_object(session, key, &Template::new()),
        Err(CKR_ACTION_PROHIBITED)
    );
}

#[test]
#[serial]
fn a_copy_gets_a_new_handle_and_unique_id_and_the_same_check_value() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"original")).unwrap();
    let relabel = Template::new().bytes(CKA_LABEL, b"copy");
    let copy = copy_object(session, key, &relabel).unwrap();
    assert_ne!(copy, key);
    assert_ne!(
        attribute(session, copy, CKA_UNIQUE_ID).unwrap(),
        attribute(session, key, CKA_UNIQUE_ID).unwrap()
    );
    assert_eq!(
        attribute(session, copy, CKA_CHECK_VALUE),
        Ok(ZERO_KEY_CHECK_VALUE.to_vec())
    );
    assert_eq!(attribute(session, copy, CKA_LABEL), Ok(b"copy".to_vec()));
    assert_eq!(attribute(session, key, CKA_LABEL), Ok(b"original".to_vec()));
    assert!(bool_attribute(session, copy, CKA_SENSITIVE));
}

#[test]
#[serial]
fn a_copy_may_become_a_token_object_but_not_in_a_read_only_session() {
    let fixture = Fixture::new();
    let slot = user_token();
    let ro = open_ro(slot);
    assert_eq!(login(ro, CKU_USER, USER_PIN), CKR_OK);
    let key = create(ro, &aes_key(&ZERO_KEY)).unwrap();
    let to_token = Template::new().bool(CKA_TOKEN, true);
    assert_eq!(copy_object(ro, key, &to_token), Err(CKR_SESSION_READ_ONLY));
    let rw = open_rw(slot);
    let copy = copy_object(rw, key, &to_token).unwrap();
    assert!(bool_attribute(rw, copy, CKA_TOKEN));
    fixture.restart();
    let session = user_session(slot);
    let found = find(session, &Template::new().ulong(CKA_CLASS, CKO_SECRET_KEY));
    assert_eq!(found.len(), 1);
    assert_eq!(
        attribute(session, found[0], CKA_CHECK_VALUE),
        Ok(ZERO_KEY_CHECK_VALUE.to_vec())
    );
}

#[test]
#[serial]
fn a_copy_cannot_change_the_class_or_loosen_sensitive() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let class = Template::new().ulong(CKA_CLASS, CKO_DATA);
    assert_eq!(
        copy_object(session, key, &class),
        Err(CKR_ATTRIBUTE_READ_ONLY)
    );
    let unsensitive = Template::new().bool(CKA_SENSITIVE, false);
    assert_eq!(
        copy_object(session, key, &unsensitive),
        Err(CKR_ATTRIBUTE_READ_ONLY)
    );
}

#[test]
#[serial]
fn copy_object_with_a_null_output_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    // SAFETY: an empty template; the NULL output is refused.
    let rv =
        unsafe { (functions().C_CopyObject.unwrap())(session, key, null_mut(), 0, null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(find(session, &Template::new()), vec![key]);
}

// C_DestroyObject, C_GetObjectSize and stale handles

#[test]
#[serial]
fn destroying_an_undestroyable_object_is_action_prohibited() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY).bool(CKA_DESTROYABLE, false)).unwrap();
    assert_eq!(destroy_object(session, key), CKR_ACTION_PROHIBITED);
    assert_eq!(
        attribute(session, key, CKA_CHECK_VALUE),
        Ok(ZERO_KEY_CHECK_VALUE.to_vec())
    );
}

#[test]
#[serial]
fn destroying_a_token_object_in_a_read_only_session_is_session_read_only() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let object = create(
        user_session(slot),
        &data_object("kept").bool(CKA_TOKEN, true),
    )
    .unwrap();
    let ro = open_ro(slot);
    assert_eq!(destroy_object(ro, object), CKR_SESSION_READ_ONLY);
    assert_eq!(attribute(ro, object, CKA_LABEL), Ok(b"kept".to_vec()));
}

/// Every object function on `object` says CKR_OBJECT_HANDLE_INVALID.
fn assert_object_handle_invalid(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) {
    assert_eq!(
        attribute(session, object, CKA_LABEL),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    let relabel = Template::new().bytes(CKA_LABEL, b"x");
    assert_eq!(
        set_attributes(session, object, &relabel),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(
        copy_object(session, object, &Template::new()),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(object_size(session, object), Err(CKR_OBJECT_HANDLE_INVALID));
    assert_eq!(destroy_object(session, object), CKR_OBJECT_HANDLE_INVALID);
}

#[test]
#[serial]
fn a_destroyed_object_handle_is_object_handle_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let session_key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let token_key = create(session, &aes_key(&ZERO_KEY).bool(CKA_TOKEN, true)).unwrap();
    for key in [session_key, token_key] {
        assert_eq!(destroy_object(session, key), CKR_OK);
        assert_object_handle_invalid(session, key);
    }
    assert_eq!(find(session, &Template::new()), NO_HANDLES);
}

#[test]
#[serial]
fn never_issued_object_handles_are_object_handle_invalid() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    for object in [CK_INVALID_HANDLE, 0xdead_beef, key + 1000] {
        assert_object_handle_invalid(session, object);
    }
}

#[test]
#[serial]
fn get_object_size_gives_a_size_and_null_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    assert!(object_size(session, key).unwrap() > 16);
    // SAFETY: the NULL output is refused before anything is written.
    let rv = unsafe { (functions().C_GetObjectSize.unwrap())(session, key, null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

// C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal

fn find_init(session: CK_SESSION_HANDLE, template: &Template) -> CK_RV {
    // SAFETY: the template's pointers are valid for their lengths.
    unsafe { (functions().C_FindObjectsInit.unwrap())(session, template.ptr(), template.count()) }
}

/// One C_FindObjects call for at most `max` handles.
fn find_next(session: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
    let mut handles = vec![UNTOUCHED; max];
    let mut count = UNTOUCHED;
    // SAFETY: `handles` holds `max` writable handles; `count` is writable.
    let rv = unsafe {
        (functions().C_FindObjects.unwrap())(
            session,
            handles.as_mut_ptr(),
            max as CK_ULONG,
            &mut count,
        )
    };
    if rv != CKR_OK {
        assert_eq!(count, UNTOUCHED, "a failed C_FindObjects wrote a count");
        return Err(rv);
    }
    assert!(handles[count as usize..].iter().all(|h| *h == UNTOUCHED));
    handles.truncate(count as usize);
    Ok(handles)
}

fn find_final(session: CK_SESSION_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { (functions().C_FindObjectsFinal.unwrap())(session) }
}

#[test]
#[serial]
fn private_objects_are_found_only_while_the_user_is_logged_in() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    let public = create(session, &data_object("public").bool(CKA_TOKEN, true)).unwrap();
    let private = data_object("private")
        .bool(CKA_TOKEN, true)
        .bool(CKA_PRIVATE, true);
    let private = create(session, &private).unwrap();
    let mut everything = find(session, &Template::new());
    everything.sort_unstable();
    assert_eq!(everything, [public, private]);

    assert_eq!(logout(session), CKR_OK);
    assert_eq!(find(session, &Template::new()), vec![public]);
    assert_object_handle_invalid(session, private);
    assert_eq!(
        attribute(session, public, CKA_LABEL),
        Ok(b"public".to_vec())
    );

    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    let found = find(session, &Template::new().bool(CKA_PRIVATE, true));
    assert_eq!(found.len(), 1);
    assert_eq!(
        attribute(session, found[0], CKA_LABEL),
        Ok(b"private".to_vec())
    );
    assert_eq!(
        attribute(session, private, CKA_LABEL),
        Err(CKR_OBJECT_HANDLE_INVALID),
        "a handle from before the logout came back to life"
    );
}

#[test]
#[serial]
fn private_session_objects_are_destroyed_at_logout() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let key = create(session, &aes_key(&ZERO_KEY)).unwrap();
    let public = create(session, &data_object("public")).unwrap();
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(find(session, &Template::new()), vec![public]);
    assert_eq!(
        attribute(session, key, CKA_CLASS),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
}

#[test]
#[serial]
fn find_objects_init_during_a_search_is_operation_active_and_the_search_goes_on() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let object = create(session, &data_object("only")).unwrap();
    assert_eq!(find_init(session, &Template::new()), CKR_OK);
    assert_eq!(find_init(session, &Template::new()), CKR_OPERATION_ACTIVE);
    assert_eq!(find_next(session, 4), Ok(vec![object]));
    assert_eq!(find_final(session), CKR_OK);
    assert_eq!(find_init(session, &Template::new()), CKR_OK);
}

#[test]
#[serial]
fn find_objects_and_final_without_a_search_are_operation_not_initialized() {
    let _fixture = Fixture::new();
    let session = logged_in();
    assert_eq!(find_next(session, 1), Err(CKR_OPERATION_NOT_INITIALIZED));
    assert_eq!(find_final(session), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(find_init(session, &Template::new()), CKR_OK);
    assert_eq!(find_final(session), CKR_OK);
    assert_eq!(find_next(session, 1), Err(CKR_OPERATION_NOT_INITIALIZED));
    assert_eq!(find_final(session), CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
#[serial]
fn a_search_is_per_session() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let (first, second) = (user_session(slot), open_ro(slot));
    assert_eq!(find_init(first, &Template::new()), CKR_OK);
    assert_eq!(find_next(second, 1), Err(CKR_OPERATION_NOT_INITIALIZED));
    assert_eq!(find_init(second, &Template::new()), CKR_OK);
}

#[test]
#[serial]
fn find_objects_in_batches_of_one_returns_every_match_once_then_nothing() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let mut created = HashSet::new();
    for index in 0..3 {
        created.insert(create(session, &data_object("batch").bool(CKA_TOKEN, true)).unwrap());
        created.insert(create(session, &data_object("batch")).unwrap());
        create(session, &data_object(&format!("other {index}"))).unwrap();
    }
    create(session, &aes_key(&ZERO_KEY).bytes(CKA_LABEL, b"batch")).unwrap();
    let template = Template::new()
        .ulong(CKA_CLASS, CKO_DATA)
        .bytes(CKA_LABEL, b"batch");
    assert_eq!(find_init(session, &template), CKR_OK);
    let mut found = HashSet::new();
    for _ in 0..created.len() {
        let batch = find_next(session, 1).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(found.insert(batch[0]), "handle {} returned twice", batch[0]);
    }
    assert_eq!(found, created);
    assert_eq!(find_next(session, 1), Ok(vec![]));
    assert_eq!(find_next(session, 5), Ok(vec![]));
    assert_eq!(find_final(session), CKR_OK);
}

#[test]
#[serial]
fn find_objects_with_a_null_count_or_list_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    create(session, &data_object("one")).unwrap();
    assert_eq!(find_init(session, &Template::new()), CKR_OK);
    let find_objects = functions().C_FindObjects.unwrap();
    let mut handles = [UNTOUCHED; 1];
    // SAFETY: `handles` is writable; the NULL count is refused.
    let rv = unsafe { find_objects(session, handles.as_mut_ptr(), 1, null_mut()) };
    assert_eq!((rv, handles), (CKR_ARGUMENTS_BAD, [UNTOUCHED]));
    let mut count = UNTOUCHED;
    // SAFETY: the NULL list is refused; `count` is writable.
    let rv = unsafe { find_objects(session, null_mut(), 1, &mut count) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(find_next(session, 1).map(|found| found.len()), Ok(1));
}

#[test]
#[serial]
fn find_objects_init_with_a_null_template_and_a_count_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = logged_in();
    // SAFETY: the NULL template with a count is refused before anything is read.
    let rv = unsafe { (functions().C_FindObjectsInit.unwrap())(session, null_mut(), 1) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(find_next(session, 1), Err(CKR_OPERATION_NOT_INITIALIZED));
}

#[test]
#[serial]
fn find_matches_every_attribute_of_the_template() {
    let _fixture = Fixture::new();
    let session = logged_in();
    let wanted = create(
        session,
        &aes_key(&ZERO_KEY)
            .bytes(CKA_ID, b"k1")
            .bool(CKA_TOKEN, true),
    )
    .unwrap();
    create(
        session,
        &aes_key(&ZERO_KEY)
            .bytes(CKA_ID, b"k2")
            .bool(CKA_TOKEN, true),
    )
    .unwrap();
    create(session, &data_object("data").bytes(CKA_VALUE, b"k1")).unwrap();
    let template = Template::new()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .bytes(CKA_ID, b"k1");
    assert_eq!(find(session, &template), vec![wanted]);
    let no_match = template.ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET);
    assert_eq!(find(session, &no_match), NO_HANDLES);
}

#[test]
#[serial]
fn find_never_matches_on_hidden_key_material() {
    let _fixture = Fixture::new();
    let session = logged_in();
    create(session, &aes_key(&ZERO_KEY)).unwrap();
    let by_value = Template::new().bytes(CKA_VALUE, &ZERO_KEY);
    assert_eq!(find(session, &by_value), NO_HANDLES);
    let open = create(session, &aes_key(&ZERO_KEY).bool(CKA_SENSITIVE, false)).unwrap();
    assert_eq!(find(session, &by_value), vec![open]);
}

#[test]
#[serial]
fn session_objects_vanish_when_their_session_closes() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let (owner, other) = (user_session(slot), open_ro(slot));
    let object = create(owner, &data_object("short-lived")).unwrap();
    let token_object = create(owner, &data_object("lasting").bool(CKA_TOKEN, true)).unwrap();
    let mut seen = find(other, &Template::new());
    seen.sort_unstable();
    assert_eq!(seen, [object, token_object]);
    assert_eq!(close_session(owner), CKR_OK);
    assert_eq!(find(other, &Template::new()), vec![token_object]);
    assert_eq!(
        attribute(other, object, CKA_LABEL),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
}
