//! Key pairs and signatures through the function table (PKCS#11 3.0 §5.13, §5.14): what
//! cryptoki hides or cannot say. C_GenerateKeyPair with NULL handle pointers, a pair
//! refused half-way that must leave no half behind, the length-query protocol of C_Sign
//! and C_SignFinal for RSA, ECDSA and EdDSA, CKM_SHA224_RSA_PKCS_PSS and malformed
//! mechanism parameters, and token pairs that sign after a restart.

use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

/// What an output buffer holds before a call: bytes still equal to it were not written.
const MARK: u8 = 0xa5;

const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

const MESSAGE: &[u8] = b"signed through the C ABI";

/// A mechanism and the bytes of its parameter (none when empty).
struct Mech {
    kind: CK_MECHANISM_TYPE,
    param: Vec<u8>,
}

impl Mech {
    fn new(kind: CK_MECHANISM_TYPE) -> Self {
        Self {
            kind,
            param: Vec::new(),
        }
    }

    /// CK_RSA_PKCS_PSS_PARAMS in the host's layout: three CK_ULONGs.
    fn pss(kind: CK_MECHANISM_TYPE, hash: CK_ULONG, mgf: CK_ULONG, salt: CK_ULONG) -> Self {
        Self {
            kind,
            param: [hash, mgf, salt]
                .iter()
                .flat_map(|word| word.to_ne_bytes())
                .collect(),
        }
    }

    /// The CK_MECHANISM to pass; valid while `self` lives.
    fn raw(&self) -> CK_MECHANISM {
        CK_MECHANISM {
            mechanism: self.kind,
            pParameter: if self.param.is_empty() {
                null_mut()
            } else {
                self.param.as_ptr().cast_mut().cast()
            },
            ulParameterLen: self.param.len() as CK_ULONG,
        }
    }
}

/// The handles C_GenerateKeyPair wrote, or its code (the handles must then be untouched).
fn generate_pair(
    session: CK_SESSION_HANDLE,
    mechanism: &Mech,
    public: &Template,
    private: &Template,
) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), CK_RV> {
    let mut raw = mechanism.raw();
    let (mut public_key, mut private_key) = (UNTOUCHED, UNTOUCHED);
    // SAFETY: the mechanism and templates are valid for their lengths; both handles are
    // writable.
    let rv = unsafe {
        (functions().C_GenerateKeyPair.unwrap())(
            session,
            &mut raw,
            public.ptr(),
            public.count(),
            private.ptr(),
            private.count(),
            &mut public_key,
            &mut private_key,
        )
    };
    if rv == CKR_OK {
        Ok((public_key, private_key))
    } else {
        assert_eq!(
            (public_key, private_key),
            (UNTOUCHED, UNTOUCHED),
            "a failed C_GenerateKeyPair wrote a handle"
        );
        Err(rv)
    }
}

/// Public and private templates of a session P-256 pair.
fn p256_templates() -> (Template, Template) {
    (
        Template::new()
            .bytes(CKA_EC_PARAMS, P256_OID)
            .bool(CKA_VERIFY, true),
        Template::new().bool(CKA_SIGN, true),
    )
}

fn ec_pair(session: CK_SESSION_HANDLE, params: &[u8]) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let public = Template::new().bytes(CKA_EC_PARAMS, params);
    let mechanism = if params == ED25519_OID {
        CKM_EC_EDWARDS_KEY_PAIR_GEN
    } else {
        CKM_EC_KEY_PAIR_GEN
    };
    generate_pair(session, &Mech::new(mechanism), &public, &Template::new()).unwrap()
}

fn rsa_pair(session: CK_SESSION_HANDLE, bits: CK_ULONG) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let public = Template::new().ulong(CKA_MODULUS_BITS, bits);
    let mechanism = Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN);
    generate_pair(session, &mechanism, &public, &Template::new()).unwrap()
}

/// Every object the session can see.
fn all_objects(session: CK_SESSION_HANDLE) -> Vec<CK_OBJECT_HANDLE> {
    find(session, &Template::new())
}

type InitFn = unsafe extern "C" fn(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) -> CK_RV;

fn init_with(
    function: InitFn,
    session: CK_SESSION_HANDLE,
    mechanism: &Mech,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let mut raw = mechanism.raw();
    // SAFETY: `raw` and the parameter it points to live until the call returns.
    unsafe { function(session, &mut raw, key) }
}

fn sign_init(session: CK_SESSION_HANDLE, mechanism: &Mech, key: CK_OBJECT_HANDLE) -> CK_RV {
    init_with(functions().C_SignInit.unwrap(), session, mechanism, key)
}

fn verify_init(session: CK_SESSION_HANDLE, mechanism: &Mech, key: CK_OBJECT_HANDLE) -> CK_RV {
    init_with(functions().C_VerifyInit.unwrap(), session, mechanism, key)
}

fn sign_update(session: CK_SESSION_HANDLE, data: &[u8]) -> CK_RV {
    // SAFETY: `data` is valid for its length; the module only reads it.
    unsafe {
        (functions().C_SignUpdate.unwrap())(
            session,
            data.as_ptr().cast_mut(),
            data.len() as CK_ULONG,
        )
    }
}

/// C_Sign (with `data`) or C_SignFinal (`None`) into a buffer of `capacity` bytes filled
/// with MARK, or a NULL buffer with the length word UNTOUCHED: the code, the length word
/// and the whole buffer.
fn sign_call(
    session: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    capacity: Option<usize>,
) -> (CK_RV, CK_ULONG, Vec<u8>) {
    let f = functions();
    let mut buffer = vec![MARK; capacity.unwrap_or(0)];
    let out = match capacity {
        Some(_) => buffer.as_mut_ptr(),
        None => null_mut(),
    };
    let mut len = capacity.map_or(UNTOUCHED, |capacity| capacity as CK_ULONG);
    // SAFETY: `data` is valid for its length; `out` is NULL or valid for `len` writable
    // bytes; `len` is writable.
    let rv = unsafe {
        match data {
            Some(data) => (f.C_Sign.unwrap())(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out,
                &mut len,
            ),
            None => (f.C_SignFinal.unwrap())(session, out, &mut len),
        }
    };
    (rv, len, buffer)
}

/// C_VerifyInit then C_Verify.
fn verify(
    session: CK_SESSION_HANDLE,
    mechanism: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    signature: &[u8],
) -> CK_RV {
    match verify_init(session, mechanism, key) {
        // SAFETY: both buffers are valid for their lengths; the module only reads them.
        CKR_OK => unsafe {
            (functions().C_Verify.unwrap())(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                signature.as_ptr().cast_mut(),
                signature.len() as CK_ULONG,
            )
        },
        rv => rv,
    }
}

/// C_SignInit and C_Sign by the two-step protocol.
fn sign(
    session: CK_SESSION_HANDLE,
    mechanism: &Mech,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    match sign_init(session, mechanism, key) {
        CKR_OK => {}
        rv => return Err(rv),
    }
    let (rv, len, _) = sign_call(session, Some(data), None);
    if rv != CKR_OK {
        return Err(rv);
    }
    let (rv, len, mut signature) = sign_call(session, Some(data), Some(len as usize));
    if rv != CKR_OK {
        return Err(rv);
    }
    signature.truncate(len as usize);
    Ok(signature)
}

// ---------------------------------------------------------------------------------------
// C_GenerateKeyPair
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn generate_key_pair_with_a_null_pointer_is_arguments_bad_and_makes_no_object() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let (public, private) = p256_templates();
    let mut raw = Mech::new(CKM_EC_KEY_PAIR_GEN).raw();
    let generate = functions().C_GenerateKeyPair.unwrap();
    for (null_public, null_private) in [(true, false), (false, true), (true, true)] {
        let (mut public_key, mut private_key) = (UNTOUCHED, UNTOUCHED);
        let public_out: CK_OBJECT_HANDLE_PTR = if null_public {
            null_mut()
        } else {
            &mut public_key
        };
        let private_out: CK_OBJECT_HANDLE_PTR = if null_private {
            null_mut()
        } else {
            &mut private_key
        };
        // SAFETY: the mechanism and templates are valid; each handle pointer is NULL or
        // writable.
        let rv = unsafe {
            generate(
                session,
                &mut raw,
                public.ptr(),
                public.count(),
                private.ptr(),
                private.count(),
                public_out,
                private_out,
            )
        };
        assert_eq!(
            rv, CKR_ARGUMENTS_BAD,
            "NULL public {null_public}, private {null_private}"
        );
        assert_eq!((public_key, private_key), (UNTOUCHED, UNTOUCHED));
    }
    let (mut public_key, mut private_key) = (UNTOUCHED, UNTOUCHED);
    // SAFETY: a NULL mechanism is what is being tested; the rest is valid.
    let rv = unsafe {
        generate(
            session,
            null_mut(),
            public.ptr(),
            public.count(),
            private.ptr(),
            private.count(),
            &mut public_key,
            &mut private_key,
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD, "NULL mechanism");
    // SAFETY: a NULL public template with a count is what is being tested.
    let rv = unsafe {
        generate(
            session,
            &mut raw,
            null_mut(),
            1,
            private.ptr(),
            private.count(),
            &mut public_key,
            &mut private_key,
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD, "NULL public template with a count");
    assert_eq!((public_key, private_key), (UNTOUCHED, UNTOUCHED));
    assert_eq!(all_objects(session), vec![]);
}

#[test]
#[serial]
fn a_private_template_refused_before_generation_leaves_no_public_half() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let (public, _) = p256_templates();
    let mechanism = Mech::new(CKM_EC_KEY_PAIR_GEN);
    for (what, private, expected) in [
        (
            "CKA_LOCAL",
            Template::new().bool(CKA_LOCAL, true),
            CKR_ATTRIBUTE_READ_ONLY,
        ),
        (
            "CKA_ALWAYS_SENSITIVE",
            Template::new().bool(CKA_ALWAYS_SENSITIVE, true),
            CKR_ATTRIBUTE_READ_ONLY,
        ),
        (
            "CKA_VALUE",
            Template::new().bytes(CKA_VALUE, &[1; 32]),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "CKA_MODULUS_BITS on an EC key",
            Template::new().ulong(CKA_MODULUS_BITS, 2048),
            CKR_ATTRIBUTE_TYPE_INVALID,
        ),
        (
            "the public class",
            Template::new().ulong(CKA_CLASS, CKO_PUBLIC_KEY),
            CKR_TEMPLATE_INCONSISTENT,
        ),
    ] {
        assert_eq!(
            generate_pair(session, &mechanism, &public, &private),
            Err(expected),
            "{what}"
        );
        assert_eq!(all_objects(session), vec![], "{what}");
    }
}

#[test]
#[serial]
fn a_private_half_refused_when_stored_takes_its_public_half_with_it() {
    let fixture = Fixture::new();
    let slot = user_token();
    let mechanism = Mech::new(CKM_EC_KEY_PAIR_GEN);
    let (public, _) = p256_templates();

    // Read-only user session: the public session object is made, the private token
    // object is refused (PKCS#11 3.0 §5.14: CKR_SESSION_READ_ONLY), and the public half
    // goes again.
    let read_only = open_ro(slot);
    assert_eq!(login(read_only, CKU_USER, USER_PIN), CKR_OK);
    let token_private = Template::new().bool(CKA_TOKEN, true);
    assert_eq!(
        generate_pair(read_only, &mechanism, &public, &token_private),
        Err(CKR_SESSION_READ_ONLY)
    );
    assert_eq!(all_objects(read_only), vec![]);
    // Session objects are fine in a read-only session.
    let (public_key, private_key) =
        generate_pair(read_only, &mechanism, &public, &Template::new()).unwrap();
    let mut made = all_objects(read_only);
    made.sort_unstable();
    assert_eq!(
        made,
        [public_key.min(private_key), public_key.max(private_key)]
    );
    assert_eq!(close_session(read_only), CKR_OK);

    // Nobody logged in: the public token object is stored, the private key (private by
    // default) is refused, and the stored public half is deleted, durably.
    let public_session = open_rw(slot);
    let token_public = Template::new()
        .bytes(CKA_EC_PARAMS, P256_OID)
        .bool(CKA_TOKEN, true)
        .bytes(CKA_LABEL, b"half");
    assert_eq!(
        generate_pair(public_session, &mechanism, &token_public, &token_private),
        Err(CKR_USER_NOT_LOGGED_IN)
    );
    assert_eq!(all_objects(public_session), vec![]);
    fixture.restart();
    let session = user_session(slot);
    assert_eq!(all_objects(session), vec![]);
}

#[test]
#[serial]
fn pair_mechanisms_and_their_parameters_are_checked() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let (public, private) = p256_templates();
    for kind in [CKM_AES_KEY_GEN, CKM_ECDSA, CKM_SHA256_RSA_PKCS, CKM_EDDSA] {
        assert_eq!(
            generate_pair(session, &Mech::new(kind), &public, &private),
            Err(CKR_MECHANISM_INVALID),
            "0x{kind:x}"
        );
    }
    let with_parameter = Mech {
        kind: CKM_EC_KEY_PAIR_GEN,
        param: vec![0; 8],
    };
    assert_eq!(
        generate_pair(session, &with_parameter, &public, &private),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    // CKA_MODULUS_BITS of the wrong size.
    let rsa = Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN);
    let short_bits = Template::new().bytes(CKA_MODULUS_BITS, &[0x08, 0x00]);
    assert_eq!(
        generate_pair(session, &rsa, &short_bits, &Template::new()),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    // An even public exponent: no RSA key has one (this used to loop forever).
    let even = Template::new()
        .ulong(CKA_MODULUS_BITS, 2048)
        .bytes(CKA_PUBLIC_EXPONENT, &[0x01, 0x00, 0x00]);
    assert_eq!(
        generate_pair(session, &rsa, &even, &Template::new()),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(all_objects(session), vec![]);
}

// ---------------------------------------------------------------------------------------
// The length-query protocol of C_Sign and C_SignFinal
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn c_sign_and_sign_final_answer_queries_and_short_buffers_for_every_key_type() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let rsa = rsa_pair(session, 2048);
    let p256 = ec_pair(session, P256_OID);
    let p384 = ec_pair(session, P384_OID);
    let ed25519 = ec_pair(session, ED25519_OID);
    let digest_384 = [0x38; 48];
    // (what, mechanism, pair, input, signature length, deterministic)
    let cases = [
        (
            "RSA-2048 SHA256_RSA_PKCS",
            Mech::new(CKM_SHA256_RSA_PKCS),
            rsa,
            MESSAGE,
            256,
            true,
        ),
        (
            "RSA-2048 raw PKCS",
            Mech::new(CKM_RSA_PKCS),
            rsa,
            MESSAGE,
            256,
            true,
        ),
        (
            "P-256 ECDSA_SHA256",
            Mech::new(CKM_ECDSA_SHA256),
            p256,
            MESSAGE,
            64,
            false,
        ),
        (
            "P-384 raw ECDSA",
            Mech::new(CKM_ECDSA),
            p384,
            &digest_384[..],
            96,
            false,
        ),
        (
            "Ed25519 EDDSA",
            Mech::new(CKM_EDDSA),
            ed25519,
            MESSAGE,
            64,
            true,
        ),
    ];
    for (what, mechanism, (public, private), input, len, deterministic) in cases {
        let len_word = len as CK_ULONG;
        // Single part.
        assert_eq!(sign_init(session, &mechanism, private), CKR_OK, "{what}");
        let (rv, needed, _) = sign_call(session, Some(input), None);
        assert_eq!((rv, needed), (CKR_OK, len_word), "{what}: query");
        let (rv, needed, buffer) = sign_call(session, Some(input), Some(len - 1));
        assert_eq!(
            (rv, needed, buffer),
            (CKR_BUFFER_TOO_SMALL, len_word, vec![MARK; len - 1]),
            "{what}: one byte short"
        );
        let (rv, needed, buffer) = sign_call(session, Some(input), Some(len + 8));
        assert_eq!((rv, needed), (CKR_OK, len_word), "{what}: roomy buffer");
        assert_eq!(buffer[len..], [MARK; 8], "{what}: wrote past the signature");
        let single = buffer[..len].to_vec();
        assert_eq!(
            verify(session, &mechanism, public, input, &single),
            CKR_OK,
            "{what}"
        );
        let (rv, _, _) = sign_call(session, Some(input), Some(len));
        assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED, "{what}: spent");

        // Multi-part: the same protocol on C_SignFinal.
        assert_eq!(sign_init(session, &mechanism, private), CKR_OK, "{what}");
        let (head, tail) = input.split_at(input.len() / 2);
        assert_eq!(sign_update(session, head), CKR_OK, "{what}");
        let (rv, needed, _) = sign_call(session, None, None);
        assert_eq!((rv, needed), (CKR_OK, len_word), "{what}: final query");
        let (rv, needed, buffer) = sign_call(session, None, Some(0));
        assert_eq!(
            (rv, needed, buffer),
            (CKR_BUFFER_TOO_SMALL, len_word, vec![]),
            "{what}: final into nothing"
        );
        assert_eq!(sign_update(session, tail), CKR_OK, "{what}: still active");
        let (rv, needed, buffer) = sign_call(session, None, Some(len));
        assert_eq!((rv, needed), (CKR_OK, len_word), "{what}: final");
        assert_eq!(
            verify(session, &mechanism, public, input, &buffer),
            CKR_OK,
            "{what}"
        );
        if deterministic {
            assert_eq!(
                buffer, single,
                "{what}: multi-part differs from single-part"
            );
        }
        let (rv, _, _) = sign_call(session, None, Some(len));
        assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED, "{what}: final spent");
    }
}

#[test]
#[serial]
fn a_failed_c_sign_ends_the_operation_and_a_query_does_not_check_the_input() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let (_, private) = rsa_pair(session, 2048);
    let too_long = [0x11; 256 - 10];
    let raw = Mech::new(CKM_RSA_PKCS);
    assert_eq!(sign_init(session, &raw, private), CKR_OK);
    // The length depends on the key alone (PKCS#11 3.0 §5.2: a query may give more than
    // needed); the input is judged when the signature is made.
    let (rv, needed, _) = sign_call(session, Some(&too_long), None);
    assert_eq!((rv, needed), (CKR_OK, 256));
    let (rv, _, buffer) = sign_call(session, Some(&too_long), Some(256));
    assert_eq!((rv, buffer), (CKR_DATA_LEN_RANGE, vec![MARK; 256]));
    let (rv, _, _) = sign_call(session, Some(&too_long[..245]), Some(256));
    assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);
}

// ---------------------------------------------------------------------------------------
// Parameters cryptoki cannot express
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn sha224_rsa_pkcs_pss_signs_and_verifies_and_malformed_pss_parameters_are_refused() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let (public, private) = rsa_pair(session, 2048);
    let sha224_pss = Mech::pss(CKM_SHA224_RSA_PKCS_PSS, CKM_SHA224, CKG_MGF1_SHA224, 28);
    let signature = sign(session, &sha224_pss, private, MESSAGE).unwrap();
    assert_eq!(signature.len(), 256);
    assert_eq!(
        verify(session, &sha224_pss, public, MESSAGE, &signature),
        CKR_OK
    );
    let mut flipped = signature.clone();
    flipped[100] ^= 1;
    assert_eq!(
        verify(session, &sha224_pss, public, MESSAGE, &flipped),
        CKR_SIGNATURE_INVALID
    );
    // The largest salt RFC 8017 §9.1.1 allows: emLen − hLen − 2 = 256 − 28 − 2.
    let widest = Mech::pss(CKM_SHA224_RSA_PKCS_PSS, CKM_SHA224, CKG_MGF1_SHA224, 226);
    let signature = sign(session, &widest, private, MESSAGE).unwrap();
    assert_eq!(
        verify(session, &widest, public, MESSAGE, &signature),
        CKR_OK
    );

    let mut short = Mech::pss(CKM_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32);
    short.param.truncate(2 * size_of::<CK_ULONG>());
    for (what, mechanism) in [
        ("no parameter", Mech::new(CKM_RSA_PKCS_PSS)),
        ("no parameter, hashing", Mech::new(CKM_SHA224_RSA_PKCS_PSS)),
        ("two words", short),
        (
            "SHA-256 for SHA224_RSA_PKCS_PSS",
            Mech::pss(CKM_SHA224_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32),
        ),
        (
            "MGF1-SHA256 with SHA-224",
            Mech::pss(CKM_SHA224_RSA_PKCS_PSS, CKM_SHA224, CKG_MGF1_SHA256, 28),
        ),
        (
            "an unknown hash",
            Mech::pss(CKM_RSA_PKCS_PSS, CKM_MD5, CKG_MGF1_SHA256, 16),
        ),
        (
            "an unknown MGF",
            Mech::pss(CKM_RSA_PKCS_PSS, CKM_SHA256, 0x77, 32),
        ),
    ] {
        assert_eq!(
            sign_init(session, &mechanism, private),
            CKR_MECHANISM_PARAM_INVALID,
            "{what}: sign"
        );
        assert_eq!(
            verify_init(session, &mechanism, public),
            CKR_MECHANISM_PARAM_INVALID,
            "{what}: verify"
        );
    }
}

#[test]
#[serial]
fn eddsa_takes_no_parameter_and_empty_ecdsa_input_is_signed() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    let (public, private) = ec_pair(session, ED25519_OID);
    // Ed25519ph / Ed25519ctx (CK_EDDSA_PARAMS) are not offered.
    let context = *b"ctx";
    let params = CK_EDDSA_PARAMS {
        phFlag: CK_FALSE,
        ulContextDataLen: context.len() as CK_ULONG,
        pContextData: context.as_ptr().cast_mut(),
    };
    let mut raw = CK_MECHANISM {
        mechanism: CKM_EDDSA,
        pParameter: std::ptr::from_ref(&params).cast_mut().cast(),
        ulParameterLen: size_of::<CK_EDDSA_PARAMS>() as CK_ULONG,
    };
    // SAFETY: `raw` points at `params`, which points at `context`; all outlive the call.
    let rv = unsafe { (functions().C_SignInit.unwrap())(session, &mut raw, private) };
    assert_eq!(rv, CKR_MECHANISM_PARAM_INVALID);
    let signature = sign(session, &Mech::new(CKM_EDDSA), private, MESSAGE).unwrap();
    assert_eq!(
        verify(session, &Mech::new(CKM_EDDSA), public, MESSAGE, &signature),
        CKR_OK
    );

    // Raw ECDSA over an empty input signs the integer 0 (this used to panic in a debug
    // build and leave the session's operations poisoned), and the session goes on.
    let (public, private) = ec_pair(session, P256_OID);
    let ecdsa = Mech::new(CKM_ECDSA);
    let signature = sign(session, &ecdsa, private, &[]).unwrap();
    assert_eq!(verify(session, &ecdsa, public, &[], &signature), CKR_OK);
    assert_eq!(verify(session, &ecdsa, public, &[0], &signature), CKR_OK);
    assert_eq!(
        verify(session, &ecdsa, public, &[1], &signature),
        CKR_SIGNATURE_INVALID
    );
    let signature = sign(session, &ecdsa, private, &[0x42]).unwrap();
    assert_eq!(verify(session, &ecdsa, public, &[0x42], &signature), CKR_OK);
}

// ---------------------------------------------------------------------------------------
// Token pairs across a restart
// ---------------------------------------------------------------------------------------

#[test]
#[serial]
fn token_key_pairs_sign_after_a_restart_and_a_new_login() {
    let fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    // (label, mechanism, public template extras, signature mechanism)
    let cases: [(&[u8], CK_MECHANISM_TYPE, Template, CK_MECHANISM_TYPE); 3] = [
        (
            b"rsa",
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            Template::new().ulong(CKA_MODULUS_BITS, 2048),
            CKM_SHA256_RSA_PKCS,
        ),
        (
            b"p384",
            CKM_EC_KEY_PAIR_GEN,
            Template::new().bytes(CKA_EC_PARAMS, P384_OID),
            CKM_ECDSA_SHA384,
        ),
        (
            b"ed25519",
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            Template::new().bytes(CKA_EC_PARAMS, ED25519_OID),
            CKM_EDDSA,
        ),
    ];
    let mut before = Vec::new();
    for (label, generator, public, signer) in cases {
        let public = public.bool(CKA_TOKEN, true).bytes(CKA_LABEL, label);
        let private = Template::new()
            .bool(CKA_TOKEN, true)
            .bytes(CKA_LABEL, label);
        let (public_key, private_key) =
            generate_pair(session, &Mech::new(generator), &public, &private).unwrap();
        let info = attribute(session, public_key, CKA_PUBLIC_KEY_INFO).unwrap();
        let signature = sign(session, &Mech::new(signer), private_key, MESSAGE).unwrap();
        before.push((label, signer, info, signature));
    }
    fixture.restart();
    let session = user_session(slot);
    assert_eq!(all_objects(session).len(), 6);
    for (label, signer, info, old_signature) in before {
        let what = String::from_utf8_lossy(label);
        let found = |class| {
            let template = Template::new()
                .bytes(CKA_LABEL, label)
                .ulong(CKA_CLASS, class);
            let found = find(session, &template);
            assert_eq!(found.len(), 1, "{what}: 0x{class:x}");
            found[0]
        };
        let (public, private) = (found(CKO_PUBLIC_KEY), found(CKO_PRIVATE_KEY));
        assert_eq!(
            attribute(session, public, CKA_PUBLIC_KEY_INFO),
            Ok(info.clone()),
            "{what}"
        );
        assert_eq!(
            attribute(session, private, CKA_PUBLIC_KEY_INFO),
            Ok(info),
            "{what}"
        );
        assert!(bool_attribute(session, private, CKA_LOCAL), "{what}");
        let mechanism = Mech::new(signer);
        assert_eq!(
            verify(session, &mechanism, public, MESSAGE, &old_signature),
            CKR_OK,
            "{what}: a signature from before the restart"
        );
        let signature = sign(session, &mechanism, private, MESSAGE).unwrap();
        assert_eq!(
            verify(session, &mechanism, public, MESSAGE, &signature),
            CKR_OK,
            "{what}"
        );
    }
    // The private halves hide from a session that is not logged in, the public ones not.
    assert_eq!(logout(session), CKR_OK);
    let public_only = find(session, &Template::new());
    assert_eq!(public_only.len(), 3);
    for object in public_only {
        assert_eq!(ulong_attribute(session, object, CKA_CLASS), CKO_PUBLIC_KEY);
    }
}
