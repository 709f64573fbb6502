//! Asymmetric keys on keyferry (PKCS#11 3.0 §2.1 RSA, §2.3 EC and Ed25519): generated
//! pairs carry the attributes the spec gives generated keys, every signature mechanism
//! signs, verifies and refuses what it must, the OpenSSL command line and the RFC 8032
//! vectors confirm the signatures independently, and signatures cross between keyferry and
//! SoftHSMv2 through imported public keys, both ways. Where SoftHSMv2 2.6.1 refuses
//! something, its exact behaviour is asserted in a commented branch.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use keyferry_tests::{fresh_token, rv, user_session, Module};
use pkcs11_sys::CK_ULONG;

fn h(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// DER of the named-curve OIDs (RFC 5480) and of id-Ed25519 (RFC 8410).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// secp256k1: a real named curve keyferry does not offer.
const SECP256K1_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// CKA_EC_PARAMS naming a curve by a DER PrintableString, as PKCS#11 3.0 §2.3.3 allows.
fn printable(name: &str) -> Vec<u8> {
    let mut der = vec![0x13, name.len() as u8];
    der.extend_from_slice(name.as_bytes());
    der
}

/// The message most tests sign: not a multiple of any hash block.
const MESSAGE: &[u8] = b"keyferry signs this message of sixty-three bytes for the tests.";

/// RFC 8032 §7.1 TEST 1 and TEST 2: secret key, public key, message, signature.
const RFC8032: [(&str, &str, &str, &str); 2] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        concat!(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155",
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        concat!(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da",
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ),
];

// ---------------------------------------------------------------------------------------
// Small DER encoders: OCTET STRING for CKA_EC_POINT, SEQUENCE of INTEGERs for OpenSSL's
// ECDSA signatures.
// ---------------------------------------------------------------------------------------

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len @ 0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative big-endian integer: no superfluous leading zeros, one zero byte added
/// when the top bit is set (X.690 §8.3).
fn der_integer(big_endian: &[u8]) -> Vec<u8> {
    let skip = big_endian.iter().take_while(|byte| **byte == 0).count();
    let digits = &big_endian[skip.min(big_endian.len().saturating_sub(1))..];
    let mut content = Vec::new();
    if digits.first().is_none_or(|first| first & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    der(0x02, &content)
}

/// PKCS#11's ECDSA signature r || s as the DER Ecdsa-Sig-Value OpenSSL wants.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    der(0x30, &[der_integer(r), der_integer(s)].concat())
}

#[test]
fn the_der_encoder_of_these_tests_trims_zeros_and_guards_the_sign_bit() {
    assert_eq!(der_integer(&[0x00, 0x00, 0x7f]), [0x02, 0x01, 0x7f]);
    assert_eq!(der_integer(&[0x00, 0x80]), [0x02, 0x02, 0x00, 0x80]);
    assert_eq!(der_integer(&[0xff, 0x01]), [0x02, 0x03, 0x00, 0xff, 0x01]);
    assert_eq!(der_integer(&[0x00, 0x00]), [0x02, 0x01, 0x00]);
    assert_eq!(der(0x04, &[0xaa; 0x80])[..3], [0x04, 0x81, 0x80]);
    assert_eq!(der(0x04, &[0xaa; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
    assert_eq!(
        ecdsa_der(&[0x00, 0x01, 0x80, 0x00]),
        [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x03, 0x00, 0x80, 0x00]
    );
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// The two halves of a key pair.
#[derive(Clone, Copy, Debug)]
struct Pair {
    public: ObjectHandle,
    private: ObjectHandle,
}

/// C_GenerateKeyPair for session objects, CKA_VERIFY / CKA_SIGN true unless `public` /
/// `private` say otherwise.
fn generate(
    session: &Session,
    mechanism: &Mechanism,
    public: &[Attribute],
    private: &[Attribute],
) -> cryptoki::error::Result<Pair> {
    let with = |template: &[Attribute], usage: Attribute| {
        let mut full = vec![Attribute::Token(false)];
        if !template
            .iter()
            .any(|item| item.attribute_type() == usage.attribute_type())
        {
            full.push(usage);
        }
        full.extend_from_slice(template);
        full
    };
    let public_template = with(public, Attribute::Verify(true));
    let private_template = with(private, Attribute::Sign(true));
    session
        .generate_key_pair(mechanism, &public_template, &private_template)
        .map(|(public, private)| Pair { public, private })
}

fn rsa_template(bits: CK_ULONG, exponent: Option<&[u8]>) -> Vec<Attribute> {
    let mut template = vec![Attribute::ModulusBits(bits.into())];
    if let Some(exponent) = exponent {
        template.push(Attribute::PublicExponent(exponent.to_vec()));
    }
    template
}

fn rsa_pair(session: &Session, bits: CK_ULONG, exponent: Option<&[u8]>) -> Pair {
    generate(
        session,
        &Mechanism::RsaPkcsKeyPairGen,
        &rsa_template(bits, exponent),
        &[],
    )
    .unwrap_or_else(|err| panic!("RSA-{bits}: {err}"))
}

fn ec_pair(session: &Session, params: &[u8]) -> Pair {
    generate(
        session,
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(params.to_vec())],
        &[],
    )
    .unwrap_or_else(|err| panic!("EC {}: {err}", hex(params)))
}

fn ed25519_pair(session: &Session, params: &[u8]) -> Pair {
    generate(
        session,
        &Mechanism::EccEdwardsKeyPairGen,
        &[Attribute::EcParams(params.to_vec())],
        &[],
    )
    .unwrap_or_else(|err| panic!("Ed25519 {}: {err}", hex(params)))
}

/// A token of `module` with a user session.
fn token(module: Module, name: &str) -> Session {
    let (slot, _) = fresh_token(module, name);
    user_session(module, slot)
}

// ---------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------

fn one(session: &Session, object: ObjectHandle, kind: AttributeType) -> Attribute {
    let mut found = session
        .get_attributes(object, &[kind])
        .unwrap_or_else(|err| panic!("{kind:?} of {object:?}: {err}"));
    assert_eq!(found.len(), 1, "{kind:?} of {object:?}: {found:?}");
    found.remove(0)
}

/// A byte-string attribute, which must be readable.
fn bytes(session: &Session, object: ObjectHandle, kind: AttributeType) -> Vec<u8> {
    match one(session, object, kind) {
        Attribute::Modulus(value)
        | Attribute::PublicExponent(value)
        | Attribute::PrivateExponent(value)
        | Attribute::EcParams(value)
        | Attribute::EcPoint(value)
        | Attribute::PublicKeyInfo(value)
        | Attribute::Value(value) => value,
        other => panic!("{kind:?}: not a byte string: {other:?}"),
    }
}

/// A CK_BBOOL attribute, which must be readable.
fn flag(session: &Session, object: ObjectHandle, kind: AttributeType) -> bool {
    match one(session, object, kind) {
        Attribute::Local(value)
        | Attribute::Sensitive(value)
        | Attribute::AlwaysSensitive(value)
        | Attribute::Extractable(value)
        | Attribute::NeverExtractable(value)
        | Attribute::Private(value)
        | Attribute::Sign(value)
        | Attribute::Verify(value) => value,
        other => panic!("{kind:?}: not a CK_BBOOL: {other:?}"),
    }
}

/// What C_GetAttributeValue's length query says of one attribute.
fn info(session: &Session, object: ObjectHandle, kind: AttributeType) -> AttributeInfo {
    session.get_attribute_info(object, &[kind]).unwrap()[0]
}

fn is_sensitive(session: &Session, object: ObjectHandle, kind: AttributeType) -> bool {
    matches!(info(session, object, kind), AttributeInfo::Sensitive)
}

fn is_type_invalid(session: &Session, object: ObjectHandle, kind: AttributeType) -> bool {
    matches!(info(session, object, kind), AttributeInfo::TypeInvalid)
}

/// What both halves of any generated pair carry: CKA_LOCAL, CKA_KEY_GEN_MECHANISM, the
/// same non-empty CKA_PUBLIC_KEY_INFO, and a private key that is sensitive by default,
/// always sensitive, and (extractable by default) not never-extractable.
fn assert_generated(session: &Session, pair: Pair, mechanism: MechanismType, what: &str) {
    for half in [pair.public, pair.private] {
        assert!(flag(session, half, AttributeType::Local), "{what}");
        assert_eq!(
            one(session, half, AttributeType::KeyGenMechanism),
            Attribute::KeyGenMechanism(mechanism),
            "{what}"
        );
    }
    let info = bytes(session, pair.public, AttributeType::PublicKeyInfo);
    assert_eq!(info.first(), Some(&0x30), "{what}: SPKI is a SEQUENCE");
    assert_eq!(
        bytes(session, pair.private, AttributeType::PublicKeyInfo),
        info,
        "{what}"
    );
    assert!(
        flag(session, pair.private, AttributeType::Sensitive),
        "{what}"
    );
    assert!(
        flag(session, pair.private, AttributeType::AlwaysSensitive),
        "{what}"
    );
    assert!(
        flag(session, pair.private, AttributeType::Extractable),
        "{what}"
    );
    assert!(
        !flag(session, pair.private, AttributeType::NeverExtractable),
        "{what}"
    );
    assert!(
        flag(session, pair.private, AttributeType::Private),
        "{what}"
    );
    assert!(
        !flag(session, pair.public, AttributeType::Private),
        "{what}"
    );
    // PKCS#11 3.0 §4.8/§4.9: ALWAYS_SENSITIVE and NEVER_EXTRACTABLE are private-key
    // attributes only.
    assert!(
        is_type_invalid(session, pair.public, AttributeType::AlwaysSensitive),
        "{what}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Key pair generation
// ---------------------------------------------------------------------------------------

#[test]
fn rsa_pairs_carry_modulus_exponent_and_the_generated_key_attributes() {
    let session = token(Module::Keyferry, "rsa-attrs");
    // (bits, CKA_PUBLIC_EXPONENT given, CKA_PUBLIC_EXPONENT read back)
    let cases = [
        (2048, None, &[0x01, 0x00, 0x01][..]),
        (3072, Some(&[0x03][..]), &[0x03][..]),
    ];
    for (bits, exponent, expected_exponent) in cases {
        let what = format!("RSA-{bits}");
        let pair = rsa_pair(&session, bits, exponent);
        assert_generated(&session, pair, MechanismType::RSA_PKCS_KEY_PAIR_GEN, &what);
        assert_eq!(
            one(&session, pair.public, AttributeType::ModulusBits),
            Attribute::ModulusBits(bits.into()),
            "{what}"
        );
        // PKCS#11 3.0 §2.1.3: CKA_MODULUS_BITS belongs to the public key only.
        assert!(
            is_type_invalid(&session, pair.private, AttributeType::ModulusBits),
            "{what}"
        );
        let modulus = bytes(&session, pair.public, AttributeType::Modulus);
        assert_eq!(modulus.len() as CK_ULONG, bits / 8, "{what}");
        assert!(modulus[0] & 0x80 != 0, "{what}: full-length modulus");
        assert_eq!(
            bytes(&session, pair.private, AttributeType::Modulus),
            modulus,
            "{what}"
        );
        for half in [pair.public, pair.private] {
            assert_eq!(
                bytes(&session, half, AttributeType::PublicExponent),
                expected_exponent,
                "{what}"
            );
        }
        for secret in [
            AttributeType::PrivateExponent,
            AttributeType::Prime1,
            AttributeType::Prime2,
            AttributeType::Exponent1,
            AttributeType::Exponent2,
            AttributeType::Coefficient,
        ] {
            assert!(
                is_sensitive(&session, pair.private, secret),
                "{what}: {secret:?}"
            );
        }
        // The SPKI carries the modulus.
        let info = bytes(&session, pair.public, AttributeType::PublicKeyInfo);
        assert!(
            info.windows(modulus.len()).any(|window| window == modulus),
            "{what}: SPKI without the modulus"
        );
    }
}

#[test]
fn ec_and_ed25519_pairs_carry_the_same_point_on_both_halves() {
    let session = token(Module::Keyferry, "ec-attrs");
    // (name, mechanism, CKA_EC_PARAMS, key generation mechanism, SEC1/RFC 8032 point length)
    let cases: [(&str, Mechanism, Vec<u8>, MechanismType, usize); 6] = [
        (
            "P-256 by OID",
            Mechanism::EccKeyPairGen,
            P256_OID.to_vec(),
            MechanismType::ECC_KEY_PAIR_GEN,
            65,
        ),
        (
            "P-256 as prime256v1",
            Mechanism::EccKeyPairGen,
            printable("prime256v1"),
            MechanismType::ECC_KEY_PAIR_GEN,
            65,
        ),
        (
            "P-384 by OID",
            Mechanism::EccKeyPairGen,
            P384_OID.to_vec(),
            MechanismType::ECC_KEY_PAIR_GEN,
            97,
        ),
        (
            "P-384 as secp384r1",
            Mechanism::EccKeyPairGen,
            printable("secp384r1"),
            MechanismType::ECC_KEY_PAIR_GEN,
            97,
        ),
        (
            "Ed25519 by OID",
            Mechanism::EccEdwardsKeyPairGen,
            ED25519_OID.to_vec(),
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            32,
        ),
        (
            "Ed25519 as edwards25519",
            Mechanism::EccEdwardsKeyPairGen,
            printable("edwards25519"),
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            32,
        ),
    ];
    for (what, mechanism, params, generated_by, point_len) in cases {
        let pair = generate(
            &session,
            &mechanism,
            &[Attribute::EcParams(params.clone())],
            &[],
        )
        .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_generated(&session, pair, generated_by, what);
        for half in [pair.public, pair.private] {
            assert_eq!(
                bytes(&session, half, AttributeType::EcParams),
                params,
                "{what}"
            );
        }
        let point = bytes(&session, pair.public, AttributeType::EcPoint);
        // A DER OCTET STRING around the point (PKCS#11 3.0 §2.3.3 and §2.3.5).
        assert_eq!(point[..2], [0x04, point_len as u8], "{what}");
        assert_eq!(point.len(), 2 + point_len, "{what}");
        if point_len != 32 {
            assert_eq!(point[2], 0x04, "{what}: an uncompressed SEC1 point");
        }
        assert_eq!(
            bytes(&session, pair.private, AttributeType::EcPoint),
            point,
            "{what}"
        );
        assert!(
            is_sensitive(&session, pair.private, AttributeType::Value),
            "{what}"
        );
        // The SPKI ends with the point as its BIT STRING.
        let info = bytes(&session, pair.public, AttributeType::PublicKeyInfo);
        assert!(
            info.ends_with(&point[2..]),
            "{what}: SPKI without the point"
        );
    }
}

#[test]
fn always_sensitive_and_never_extractable_follow_the_private_template() {
    let session = token(Module::Keyferry, "ec-flags");
    for sensitive in [false, true] {
        for extractable in [false, true] {
            let what = format!("sensitive {sensitive}, extractable {extractable}");
            let pair = generate(
                &session,
                &Mechanism::EccKeyPairGen,
                &[Attribute::EcParams(P256_OID.to_vec())],
                &[
                    Attribute::Sensitive(sensitive),
                    Attribute::Extractable(extractable),
                ],
            )
            .unwrap();
            let private = pair.private;
            assert_eq!(
                flag(&session, private, AttributeType::AlwaysSensitive),
                sensitive,
                "{what}"
            );
            assert_eq!(
                flag(&session, private, AttributeType::NeverExtractable),
                !extractable,
                "{what}"
            );
            // PKCS#11 3.0 §4.9 footnote 7: the value shows only when the key is neither
            // sensitive nor unextractable.
            let readable = !sensitive && extractable;
            match info(&session, private, AttributeType::Value) {
                AttributeInfo::Available(len) => {
                    assert!(readable, "{what}: CKA_VALUE readable");
                    assert!((1..=32).contains(&len), "{what}: {len}-byte scalar");
                }
                AttributeInfo::Sensitive => assert!(!readable, "{what}: CKA_VALUE hidden"),
                other => panic!("{what}: CKA_VALUE {other:?}"),
            }
        }
    }
    // The same on an RSA key: a readable private exponent is as long as the modulus.
    let pair = generate(
        &session,
        &Mechanism::RsaPkcsKeyPairGen,
        &rsa_template(2048, None),
        &[Attribute::Sensitive(false)],
    )
    .unwrap();
    assert!(!flag(
        &session,
        pair.private,
        AttributeType::AlwaysSensitive
    ));
    let private_exponent = bytes(&session, pair.private, AttributeType::PrivateExponent);
    assert!(
        (200..=256).contains(&private_exponent.len()),
        "{} bytes",
        private_exponent.len()
    );
}

/// Run `call` with a time limit, so a module that loops forever fails the test instead
/// of hanging the run.
fn within<T: Send + 'static>(limit: Duration, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(call());
    });
    receiver
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
}

#[test]
fn pair_templates_keyferry_cannot_honour_are_refused_with_the_spec_codes() {
    let session = token(Module::Keyferry, "pair-errors");
    let rsa = Mechanism::RsaPkcsKeyPairGen;
    let refused = |mechanism: &Mechanism, public: &[Attribute], private: &[Attribute]| {
        rv(generate(&session, mechanism, public, private))
    };
    for bits in [1024, 2047, 4097, 8192] {
        assert_eq!(
            refused(&rsa, &rsa_template(bits, None), &[]),
            RvError::KeySizeRange,
            "{bits} bits"
        );
    }
    assert_eq!(
        refused(&rsa, &[Attribute::PublicExponent(vec![1, 0, 1])], &[]),
        RvError::TemplateIncomplete
    );
    // PKCS#11 3.0 §4.8 footnote 3/4: the modulus is the token's to make.
    let with_modulus = [
        rsa_template(2048, None),
        vec![Attribute::Modulus(vec![0xc5; 256])],
    ]
    .concat();
    assert_eq!(
        refused(&rsa, &with_modulus, &[]),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        refused(
            &rsa,
            &rsa_template(2048, None),
            &[Attribute::PrivateExponent(vec![3; 256])]
        ),
        RvError::TemplateInconsistent
    );
    // A key type other than the mechanism's.
    let as_ec = [
        rsa_template(2048, None),
        vec![Attribute::KeyType(KeyType::EC)],
    ]
    .concat();
    assert_eq!(refused(&rsa, &as_ec, &[]), RvError::TemplateInconsistent);

    let ec = Mechanism::EccKeyPairGen;
    let edwards = Mechanism::EccEdwardsKeyPairGen;
    for (mechanism, params) in [
        (&ec, SECP256K1_OID.to_vec()),
        (&ec, ED25519_OID.to_vec()),
        (&ec, printable("secp256k1")),
        (&edwards, P256_OID.to_vec()),
        (&edwards, printable("edwards448")),
    ] {
        assert_eq!(
            refused(mechanism, &[Attribute::EcParams(params.clone())], &[]),
            RvError::CurveNotSupported,
            "{mechanism:?} {}",
            hex(&params)
        );
    }
    for mechanism in [&ec, &edwards] {
        assert_eq!(
            refused(mechanism, &[], &[]),
            RvError::TemplateIncomplete,
            "{mechanism:?} without CKA_EC_PARAMS"
        );
        // CKA_EC_PARAMS of the private half comes from the public template.
        assert_eq!(
            refused(
                mechanism,
                &[Attribute::EcParams(P256_OID.to_vec())],
                &[Attribute::EcParams(P256_OID.to_vec())]
            ),
            RvError::TemplateInconsistent,
            "{mechanism:?} with CKA_EC_PARAMS in the private template"
        );
    }
    assert_eq!(
        refused(
            &ec,
            &[
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::EcPoint(vec![0x04; 67])
            ],
            &[]
        ),
        RvError::TemplateInconsistent
    );
    // Token-computed attributes are read-only in either template.
    assert_eq!(
        refused(
            &ec,
            &[Attribute::EcParams(P256_OID.to_vec())],
            &[Attribute::Local(true)]
        ),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        refused(
            &ec,
            &[
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Local(true)
            ],
            &[]
        ),
        RvError::AttributeReadOnly
    );
    // No object of any refused attempt was left behind.
    assert_eq!(session.find_objects(&[]).unwrap(), vec![]);
}

#[test]
fn an_rsa_public_exponent_no_rsa_key_can_have_is_refused_promptly() {
    // An even exponent (or zero, or one) has no inverse modulo φ(n): no primes fit, so a
    // generator that only retries never returns.
    let (slot, _) = fresh_token(Module::Keyferry, "bad-exponent");
    for exponent in [vec![0x01, 0x00, 0x00], vec![0x04], vec![0x00], vec![0x01]] {
        let code = within(Duration::from_secs(120), move || {
            let session = user_session(Module::Keyferry, slot);
            rv(generate(
                &session,
                &Mechanism::RsaPkcsKeyPairGen,
                &rsa_template(2048, Some(&exponent)),
                &[],
            ))
        });
        assert_eq!(code, RvError::AttributeValueInvalid);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Signatures on keyferry
// ---------------------------------------------------------------------------------------

fn pss(hash: MechanismType, mgf: PkcsMgfType, salt: CK_ULONG) -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: salt.into(),
    }
}

/// The PSS parameters that go with a hash: MGF1 of the same hash, a salt of its length.
fn pss_for(hash: MechanismType) -> PkcsPssParams {
    let (mgf, len) = match hash {
        MechanismType::SHA1 => (PkcsMgfType::MGF1_SHA1, 20),
        MechanismType::SHA224 => (PkcsMgfType::MGF1_SHA224, 28),
        MechanismType::SHA256 => (PkcsMgfType::MGF1_SHA256, 32),
        MechanismType::SHA384 => (PkcsMgfType::MGF1_SHA384, 48),
        MechanismType::SHA512 => (PkcsMgfType::MGF1_SHA512, 64),
        other => panic!("no PSS parameters for {other:?}"),
    };
    pss(hash, mgf, len)
}

fn digest_mechanism(hash: MechanismType) -> Mechanism<'static> {
    match hash {
        MechanismType::SHA1 => Mechanism::Sha1,
        MechanismType::SHA224 => Mechanism::Sha224,
        MechanismType::SHA256 => Mechanism::Sha256,
        MechanismType::SHA384 => Mechanism::Sha384,
        MechanismType::SHA512 => Mechanism::Sha512,
        other => panic!("not a hash: {other:?}"),
    }
}

/// RFC 8017 §9.2 note 1: the DER DigestInfo prefix of each hash.
fn digest_info_prefix(hash: MechanismType) -> Vec<u8> {
    h(match hash {
        MechanismType::SHA1 => "3021300906052b0e03021a05000414",
        MechanismType::SHA224 => "302d300d06096086480165030402040500041c",
        MechanismType::SHA256 => "3031300d060960864801650304020105000420",
        MechanismType::SHA384 => "3041300d060960864801650304020205000430",
        MechanismType::SHA512 => "3051300d060960864801650304020305000440",
        other => panic!("not a hash: {other:?}"),
    })
}

const HASHES: [MechanismType; 5] = [
    MechanismType::SHA1,
    MechanismType::SHA224,
    MechanismType::SHA256,
    MechanismType::SHA384,
    MechanismType::SHA512,
];

/// One signature mechanism and the input it takes for MESSAGE.
struct Case<'a> {
    name: String,
    mechanism: Mechanism<'a>,
    input: Vec<u8>,
}

/// Every RSA signature mechanism cryptoki can name, with its input for MESSAGE: the
/// DigestInfo for raw CKM_RSA_PKCS, the digest for raw PSS, the message otherwise.
/// (CKM_SHA224_RSA_PKCS_PSS has no cryptoki variant: the C ABI tests cover it.)
fn rsa_cases<'a>(session: &Session, pss_params: &'a [PkcsPssParams; 5]) -> Vec<Case<'a>> {
    let mut cases = Vec::new();
    for (index, hash) in HASHES.into_iter().enumerate() {
        let digest = session.digest(&digest_mechanism(hash), MESSAGE).unwrap();
        cases.push(Case {
            name: format!("RSA_PKCS over a {hash} DigestInfo"),
            mechanism: Mechanism::RsaPkcs,
            input: [digest_info_prefix(hash), digest.clone()].concat(),
        });
        cases.push(Case {
            name: format!("RSA_PKCS_PSS over a {hash} digest"),
            mechanism: Mechanism::RsaPkcsPss(pss_params[index]),
            input: digest,
        });
    }
    let hashing = [
        ("SHA1_RSA_PKCS", Mechanism::Sha1RsaPkcs),
        ("SHA224_RSA_PKCS", Mechanism::Sha224RsaPkcs),
        ("SHA256_RSA_PKCS", Mechanism::Sha256RsaPkcs),
        ("SHA384_RSA_PKCS", Mechanism::Sha384RsaPkcs),
        ("SHA512_RSA_PKCS", Mechanism::Sha512RsaPkcs),
        (
            "SHA1_RSA_PKCS_PSS",
            Mechanism::Sha1RsaPkcsPss(pss_params[0]),
        ),
        (
            "SHA256_RSA_PKCS_PSS",
            Mechanism::Sha256RsaPkcsPss(pss_params[2]),
        ),
        (
            "SHA384_RSA_PKCS_PSS",
            Mechanism::Sha384RsaPkcsPss(pss_params[3]),
        ),
        (
            "SHA512_RSA_PKCS_PSS",
            Mechanism::Sha512RsaPkcsPss(pss_params[4]),
        ),
    ];
    for (name, mechanism) in hashing {
        cases.push(Case {
            name: name.into(),
            mechanism,
            input: MESSAGE.to_vec(),
        });
    }
    cases
}

/// Every ECDSA mechanism: raw over each hash's digest (X9.62 truncates the long ones to
/// the order's length and takes the short ones as they are), and the hashing ones.
fn ecdsa_cases(session: &Session) -> Vec<Case<'static>> {
    let mut cases = Vec::new();
    for hash in HASHES {
        cases.push(Case {
            name: format!("ECDSA over a {hash} digest"),
            mechanism: Mechanism::Ecdsa,
            input: session.digest(&digest_mechanism(hash), MESSAGE).unwrap(),
        });
    }
    for (name, mechanism) in [
        ("ECDSA_SHA1", Mechanism::EcdsaSha1),
        ("ECDSA_SHA224", Mechanism::EcdsaSha224),
        ("ECDSA_SHA256", Mechanism::EcdsaSha256),
        ("ECDSA_SHA384", Mechanism::EcdsaSha384),
        ("ECDSA_SHA512", Mechanism::EcdsaSha512),
    ] {
        cases.push(Case {
            name: name.into(),
            mechanism,
            input: MESSAGE.to_vec(),
        });
    }
    cases
}

fn eddsa() -> Mechanism<'static> {
    Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure))
}

/// Sign and verify `case` with `pair`, then check that a flipped bit, other data and
/// signatures a byte short or long are refused with the spec's codes.
fn assert_signs_and_verifies(session: &Session, pair: Pair, case: &Case, signature_len: usize) {
    let Case {
        name,
        mechanism,
        input,
    } = case;
    let signature = session
        .sign(mechanism, pair.private, input)
        .unwrap_or_else(|err| panic!("{name}: sign: {err}"));
    assert_eq!(signature.len(), signature_len, "{name}");
    session
        .verify(mechanism, pair.public, input, &signature)
        .unwrap_or_else(|err| panic!("{name}: verify: {err}"));

    let mut flipped = signature.clone();
    flipped[signature_len / 2] ^= 0x10;
    assert_eq!(
        rv(session.verify(mechanism, pair.public, input, &flipped)),
        RvError::SignatureInvalid,
        "{name}: a flipped bit"
    );
    let mut other_input = input.clone();
    other_input[0] ^= 0x01;
    assert_eq!(
        rv(session.verify(mechanism, pair.public, &other_input, &signature)),
        RvError::SignatureInvalid,
        "{name}: other data"
    );
    for wrong_len in [
        &signature[..signature_len - 1],
        &[&signature[..], &[0]].concat(),
    ] {
        assert_eq!(
            rv(session.verify(mechanism, pair.public, input, wrong_len)),
            RvError::SignatureLenRange,
            "{name}: {} bytes",
            wrong_len.len()
        );
    }
}

#[test]
fn every_rsa_mechanism_signs_and_verifies_and_refuses_altered_signatures() {
    let session = token(Module::Keyferry, "rsa-sign");
    let pair = rsa_pair(&session, 2048, None);
    let pss_params = HASHES.map(pss_for);
    let cases = rsa_cases(&session, &pss_params);
    assert_eq!(cases.len(), 19);
    for case in &cases {
        assert_signs_and_verifies(&session, pair, case, 256);
    }
    // RSA-3072 with exponent 3: a 384-byte signature.
    let pair = rsa_pair(&session, 3072, Some(&[3]));
    for case in cases.iter().filter(|case| case.name.starts_with("SHA256")) {
        assert_signs_and_verifies(&session, pair, case, 384);
    }
}

#[test]
fn every_ecdsa_mechanism_signs_and_verifies_on_p256_and_p384() {
    let session = token(Module::Keyferry, "ecdsa-sign");
    let cases = ecdsa_cases(&session);
    assert_eq!(cases.len(), 10);
    for (params, signature_len) in [(P256_OID, 64), (P384_OID, 96)] {
        let pair = ec_pair(&session, params);
        for case in &cases {
            assert_signs_and_verifies(&session, pair, case, signature_len);
        }
    }
}

#[test]
fn eddsa_signs_and_verifies_messages_of_any_length() {
    let session = token(Module::Keyferry, "eddsa-sign");
    let pair = ed25519_pair(&session, ED25519_OID);
    for len in [1, 63, 64, 1000] {
        let message: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let case = Case {
            name: format!("EDDSA over {len} bytes"),
            mechanism: eddsa(),
            input: message,
        };
        assert_signs_and_verifies(&session, pair, &case, 64);
    }
    let empty = session.sign(&eddsa(), pair.private, &[]).unwrap();
    session.verify(&eddsa(), pair.public, &[], &empty).unwrap();
}

#[test]
fn raw_mechanisms_agree_with_their_hashing_forms() {
    let session = token(Module::Keyferry, "raw-vs-hash");
    let rsa = rsa_pair(&session, 2048, None);
    let digest = session.digest(&Mechanism::Sha256, MESSAGE).unwrap();
    let digest_info = [digest_info_prefix(MechanismType::SHA256), digest.clone()].concat();
    // PKCS#1 v1.5 is deterministic: the raw and the hashing mechanism give the same bytes.
    let hashing = session
        .sign(&Mechanism::Sha256RsaPkcs, rsa.private, MESSAGE)
        .unwrap();
    let raw = session
        .sign(&Mechanism::RsaPkcs, rsa.private, &digest_info)
        .unwrap();
    assert_eq!(hex(&raw), hex(&hashing));
    // PSS is randomised: each verifies the other's signature.
    let params = pss_for(MechanismType::SHA256);
    let hashing = session
        .sign(&Mechanism::Sha256RsaPkcsPss(params), rsa.private, MESSAGE)
        .unwrap();
    let raw = session
        .sign(&Mechanism::RsaPkcsPss(params), rsa.private, &digest)
        .unwrap();
    assert_ne!(raw, hashing, "PSS salts are random");
    session
        .verify(
            &Mechanism::RsaPkcsPss(params),
            rsa.public,
            &digest,
            &hashing,
        )
        .unwrap();
    session
        .verify(
            &Mechanism::Sha256RsaPkcsPss(params),
            rsa.public,
            MESSAGE,
            &raw,
        )
        .unwrap();
    // So does ECDSA.
    for params in [P256_OID, P384_OID] {
        let ec = ec_pair(&session, params);
        let hashing = session
            .sign(&Mechanism::EcdsaSha256, ec.private, MESSAGE)
            .unwrap();
        let raw = session
            .sign(&Mechanism::Ecdsa, ec.private, &digest)
            .unwrap();
        session
            .verify(&Mechanism::Ecdsa, ec.public, &digest, &hashing)
            .unwrap();
        session
            .verify(&Mechanism::EcdsaSha256, ec.public, MESSAGE, &raw)
            .unwrap();
    }
}

#[test]
fn keys_of_the_wrong_class_type_or_usage_are_refused_at_init() {
    let session = token(Module::Keyferry, "wrong-keys");
    let rsa = rsa_pair(&session, 2048, None);
    let p256 = ec_pair(&session, P256_OID);
    let ed25519 = ed25519_pair(&session, ED25519_OID);
    let aes = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![0x42; 32]),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ])
        .unwrap();
    let sha256_rsa = Mechanism::Sha256RsaPkcs;
    let ecdsa = Mechanism::EcdsaSha256;
    let ed = eddsa();
    for (what, mechanism, pair) in [
        ("RSA", &sha256_rsa, rsa),
        ("ECDSA", &ecdsa, p256),
        ("EdDSA", &ed, ed25519),
    ] {
        // PKCS#11 3.0 §5.12/§5.13: a key of the wrong class is the wrong type of key.
        assert_eq!(
            rv(session.sign_init(mechanism, pair.public)),
            RvError::KeyTypeInconsistent,
            "{what}: sign with the public key"
        );
        assert_eq!(
            rv(session.verify_init(mechanism, pair.private)),
            RvError::KeyTypeInconsistent,
            "{what}: verify with the private key"
        );
        assert_eq!(
            rv(session.sign_init(mechanism, aes)),
            RvError::KeyTypeInconsistent,
            "{what}: an AES key"
        );
    }
    for (what, mechanism, key) in [
        ("RSA with an EC key", &sha256_rsa, p256.private),
        ("ECDSA with an RSA key", &ecdsa, rsa.private),
        ("ECDSA with an Ed25519 key", &ecdsa, ed25519.private),
        ("EdDSA with a P-256 key", &ed, p256.private),
        ("EdDSA with an RSA key", &ed, rsa.private),
    ] {
        assert_eq!(
            rv(session.sign_init(mechanism, key)),
            RvError::KeyTypeInconsistent,
            "{what}"
        );
    }
    // CKA_SIGN / CKA_VERIFY false.
    let forbidden = generate(
        &session,
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::Verify(false),
        ],
        &[Attribute::Sign(false)],
    )
    .unwrap();
    assert_eq!(
        rv(session.sign(&ecdsa, forbidden.private, MESSAGE)),
        RvError::KeyFunctionNotPermitted
    );
    let signature = session.sign(&ecdsa, p256.private, MESSAGE).unwrap();
    assert_eq!(
        rv(session.verify(&ecdsa, forbidden.public, MESSAGE, &signature)),
        RvError::KeyFunctionNotPermitted
    );
    let rsa_unsigning = generate(
        &session,
        &Mechanism::RsaPkcsKeyPairGen,
        &rsa_template(2048, None),
        &[Attribute::Sign(false)],
    )
    .unwrap();
    assert_eq!(
        rv(session.sign(&sha256_rsa, rsa_unsigning.private, MESSAGE)),
        RvError::KeyFunctionNotPermitted
    );
    // A refused init leaves no operation behind: the next init works.
    let signature = session.sign(&sha256_rsa, rsa.private, MESSAGE).unwrap();
    session
        .verify(&sha256_rsa, rsa.public, MESSAGE, &signature)
        .unwrap();
}

#[test]
fn inputs_and_parameters_outside_the_mechanisms_are_refused() {
    let session = token(Module::Keyferry, "bad-input");
    let rsa = rsa_pair(&session, 2048, None);
    // RFC 8017 §9.2: the DigestInfo may be at most k − 11 bytes.
    let longest = vec![0x5a; 256 - 11];
    let signature = session
        .sign(&Mechanism::RsaPkcs, rsa.private, &longest)
        .unwrap();
    session
        .verify(&Mechanism::RsaPkcs, rsa.public, &longest, &signature)
        .unwrap();
    assert_eq!(
        rv(session.sign(&Mechanism::RsaPkcs, rsa.private, &[0x5a; 256 - 10])),
        RvError::DataLenRange
    );
    assert_eq!(
        rv(session.verify(
            &Mechanism::RsaPkcs,
            rsa.public,
            &[0x5a; 256 - 10],
            &signature
        )),
        RvError::DataLenRange
    );

    // PSS: the MGF hash must be the hash (keyferry offers no other), and a hashing
    // mechanism's parameter must name its own hash.
    let digest = session.digest(&Mechanism::Sha256, MESSAGE).unwrap();
    let mismatched_mgf = pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA1, 32);
    let sha1_params = pss_for(MechanismType::SHA1);
    for (what, mechanism) in [
        ("raw, MGF1-SHA1", Mechanism::RsaPkcsPss(mismatched_mgf)),
        (
            "SHA256, MGF1-SHA1",
            Mechanism::Sha256RsaPkcsPss(mismatched_mgf),
        ),
        (
            "SHA256, hashAlg SHA-1",
            Mechanism::Sha256RsaPkcsPss(sha1_params),
        ),
    ] {
        assert_eq!(
            rv(session.sign_init(&mechanism, rsa.private)),
            RvError::MechanismParamInvalid,
            "{what}: sign"
        );
        assert_eq!(
            rv(session.verify_init(&mechanism, rsa.public)),
            RvError::MechanismParamInvalid,
            "{what}: verify"
        );
    }
    // Raw PSS takes exactly the digest of its hashAlg.
    let params = pss_for(MechanismType::SHA256);
    for wrong in [&digest[..31], &[&digest[..], &[0]].concat()] {
        assert_eq!(
            rv(session.sign(&Mechanism::RsaPkcsPss(params), rsa.private, wrong)),
            RvError::DataLenRange,
            "{} bytes",
            wrong.len()
        );
    }
    // A parameter where the mechanism takes none.
    let stray = [0u8; 8];
    let with_parameter = Mechanism::VendorDefined(VendorDefinedMechanism::new(
        MechanismType::RSA_PKCS,
        Some(&stray),
    ));
    assert_eq!(
        rv(session.sign_init(&with_parameter, rsa.private)),
        RvError::MechanismParamInvalid
    );
    // After all those refusals the session signs as before.
    let signature = session
        .sign(&Mechanism::RsaPkcsPss(params), rsa.private, &digest)
        .unwrap();
    session
        .verify(
            &Mechanism::RsaPkcsPss(params),
            rsa.public,
            &digest,
            &signature,
        )
        .unwrap();
}

#[test]
fn multi_part_signatures_equal_single_part_ones() {
    let session = token(Module::Keyferry, "multi-part");
    let message: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 5) as u8).collect();
    let parts = [
        &message[..1],
        &message[1..64],
        &message[64..65],
        &message[65..],
    ];
    let multi = |mechanism: &Mechanism, key: ObjectHandle| {
        session.sign_init(mechanism, key).unwrap();
        for part in parts {
            session.sign_update(part).unwrap();
        }
        session.sign_final().unwrap()
    };
    let verify_multi = |mechanism: &Mechanism, key: ObjectHandle, signature: &[u8]| {
        session.verify_init(mechanism, key).unwrap();
        for part in parts {
            session.verify_update(part).unwrap();
        }
        session.verify_final(signature)
    };

    let rsa = rsa_pair(&session, 2048, None);
    let mechanism = Mechanism::Sha256RsaPkcs;
    let single = session.sign(&mechanism, rsa.private, &message).unwrap();
    let multi_part = multi(&mechanism, rsa.private);
    assert_eq!(hex(&multi_part), hex(&single));
    verify_multi(&mechanism, rsa.public, &single).unwrap();

    let p256 = ec_pair(&session, P256_OID);
    let mechanism = Mechanism::EcdsaSha256;
    let single = session.sign(&mechanism, p256.private, &message).unwrap();
    let multi_part = multi(&mechanism, p256.private);
    assert_eq!(multi_part.len(), 64);
    session
        .verify(&mechanism, p256.public, &message, &multi_part)
        .unwrap();
    verify_multi(&mechanism, p256.public, &single).unwrap();
    let mut flipped = single.clone();
    flipped[5] ^= 1;
    assert_eq!(
        rv(verify_multi(&mechanism, p256.public, &flipped)),
        RvError::SignatureInvalid
    );
    assert_eq!(
        rv(verify_multi(&mechanism, p256.public, &single[..63])),
        RvError::SignatureLenRange
    );

    // Pure Ed25519 is deterministic (RFC 8032 §5.1.6).
    let ed25519 = ed25519_pair(&session, ED25519_OID);
    let single = session.sign(&eddsa(), ed25519.private, &message).unwrap();
    assert_eq!(hex(&multi(&eddsa(), ed25519.private)), hex(&single));
    verify_multi(&eddsa(), ed25519.public, &single).unwrap();
}

// ---------------------------------------------------------------------------------------
// 3. Independent verification: the OpenSSL command line and RFC 8032
// ---------------------------------------------------------------------------------------

const OPENSSL: &str = "/usr/bin/openssl";

/// Run OpenSSL in a fresh directory holding `files`; whether it succeeded, and what it
/// said.
fn openssl(args: &[&str], files: &[(&str, &[u8])]) -> (bool, String) {
    assert!(
        Path::new(OPENSSL).is_file(),
        "{OPENSSL} not found: the independent checks need the OpenSSL command line \
         (apt-get install openssl)"
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let output = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|err| panic!("running {OPENSSL}: {err}"));
    let said = format!(
        "openssl {}: {}{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// `openssl dgst -<hash> -verify` of a DER SPKI, with `sigopts`.
fn openssl_dgst_verifies(
    hash: &str,
    spki: &[u8],
    data: &[u8],
    signature: &[u8],
    sigopts: &[&str],
) -> (bool, String) {
    let mut args = vec![
        "dgst",
        hash,
        "-verify",
        "pub.der",
        "-keyform",
        "DER",
        "-signature",
        "sig.bin",
    ];
    for option in sigopts {
        args.extend(["-sigopt", option]);
    }
    args.push("data.bin");
    openssl(
        &args,
        &[
            ("pub.der", spki),
            ("data.bin", data),
            ("sig.bin", signature),
        ],
    )
}

/// `openssl pkeyutl -verify -rawin` for Ed25519.
fn openssl_ed25519_verifies(spki: &[u8], data: &[u8], signature: &[u8]) -> (bool, String) {
    openssl(
        &[
            "pkeyutl", "-verify", "-pubin", "-inkey", "pub.der", "-keyform", "DER", "-rawin",
            "-in", "data.bin", "-sigfile", "sig.bin",
        ],
        &[
            ("pub.der", spki),
            ("data.bin", data),
            ("sig.bin", signature),
        ],
    )
}

/// OpenSSL accepts `signature` and refuses it with one bit flipped.
fn assert_openssl_agrees(what: &str, signature: &[u8], check: impl Fn(&[u8]) -> (bool, String)) {
    let (ok, said) = check(signature);
    assert!(ok, "{what}: OpenSSL refused keyferry's signature: {said}");
    let mut flipped = signature.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x04;
    let (ok, said) = check(&flipped);
    assert!(!ok, "{what}: OpenSSL accepted a flipped signature: {said}");
}

#[test]
fn openssl_verifies_keyferry_rsa_signatures_from_the_public_key_info() {
    let session = token(Module::Keyferry, "openssl-rsa");
    for (bits, exponent) in [(2048, None), (3072, Some(&[0x03][..]))] {
        let pair = rsa_pair(&session, bits, exponent);
        let spki = bytes(&session, pair.public, AttributeType::PublicKeyInfo);
        let what = format!("RSA-{bits} SHA256_RSA_PKCS");
        let signature = session
            .sign(&Mechanism::Sha256RsaPkcs, pair.private, MESSAGE)
            .unwrap();
        assert_openssl_agrees(&what, &signature, |signature| {
            openssl_dgst_verifies("-sha256", &spki, MESSAGE, signature, &[])
        });
        let params = pss_for(MechanismType::SHA256);
        let what = format!("RSA-{bits} SHA256_RSA_PKCS_PSS");
        let signature = session
            .sign(&Mechanism::Sha256RsaPkcsPss(params), pair.private, MESSAGE)
            .unwrap();
        let pss_options = ["rsa_padding_mode:pss", "rsa_pss_saltlen:32"];
        assert_openssl_agrees(&what, &signature, |signature| {
            openssl_dgst_verifies("-sha256", &spki, MESSAGE, signature, &pss_options)
        });
        // Raw PSS over a SHA-512 digest is SHA-512 PSS to OpenSSL.
        let digest = session.digest(&Mechanism::Sha512, MESSAGE).unwrap();
        let params = pss_for(MechanismType::SHA512);
        let signature = session
            .sign(&Mechanism::RsaPkcsPss(params), pair.private, &digest)
            .unwrap();
        let pss_options = ["rsa_padding_mode:pss", "rsa_pss_saltlen:64"];
        assert_openssl_agrees(&format!("RSA-{bits} raw PSS"), &signature, |signature| {
            openssl_dgst_verifies("-sha512", &spki, MESSAGE, signature, &pss_options)
        });
    }
}

#[test]
fn openssl_verifies_keyferry_ecdsa_signatures_converted_to_der() {
    let session = token(Module::Keyferry, "openssl-ec");
    for (params, mechanism, hash) in [
        (P256_OID, Mechanism::EcdsaSha256, "-sha256"),
        (P384_OID, Mechanism::EcdsaSha384, "-sha384"),
        (P256_OID, Mechanism::EcdsaSha512, "-sha512"),
    ] {
        let pair = ec_pair(&session, params);
        let spki = bytes(&session, pair.public, AttributeType::PublicKeyInfo);
        // Several messages, so that r and s with the top bit set (and so a DER zero
        // byte) come up.
        for round in 0u8..8 {
            let message = [MESSAGE, &[round]].concat();
            let signature = session.sign(&mechanism, pair.private, &message).unwrap();
            let what = format!("{mechanism:?} round {round}");
            assert_openssl_agrees(&what, &signature, |signature| {
                openssl_dgst_verifies(hash, &spki, &message, &ecdsa_der(signature), &[])
            });
        }
    }
}

#[test]
fn openssl_verifies_keyferry_ed25519_signatures() {
    let session = token(Module::Keyferry, "openssl-ed");
    for params in [ED25519_OID.to_vec(), printable("edwards25519")] {
        let pair = ed25519_pair(&session, &params);
        let spki = bytes(&session, pair.public, AttributeType::PublicKeyInfo);
        // RFC 8410 §4: SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING (32 bytes) }.
        assert_eq!(spki.len(), 44);
        assert_eq!(spki[..12], h("302a300506032b6570032100")[..]);
        // (OpenSSL 3.0's pkeyutl -rawin cannot read an empty file, so no empty message.)
        for message in [&b"x"[..], MESSAGE] {
            let signature = session.sign(&eddsa(), pair.private, message).unwrap();
            assert_openssl_agrees("Ed25519", &signature, |signature| {
                openssl_ed25519_verifies(&spki, message, signature)
            });
        }
    }
}

#[test]
fn ed25519_keys_made_from_rfc_8032_secrets_give_the_rfc_signatures() {
    let session = token(Module::Keyferry, "rfc8032");
    for (number, (secret, public, message, expected)) in RFC8032.iter().enumerate() {
        let what = format!("RFC 8032 §7.1 TEST {}", number + 1);
        let point = der(0x04, &h(public));
        let private = session
            .create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::EcParams(printable("edwards25519")),
                Attribute::Value(h(secret)),
                Attribute::EcPoint(point.clone()),
            ])
            .unwrap_or_else(|err| panic!("{what}: importing the private key: {err}"));
        assert!(!flag(&session, private, AttributeType::Local), "{what}");
        let signature = session.sign(&eddsa(), private, &h(message)).unwrap();
        assert_eq!(hex(&signature), *expected, "{what}");

        let public = session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Token(false),
                Attribute::Verify(true),
                Attribute::EcParams(ED25519_OID.to_vec()),
                Attribute::EcPoint(point),
            ])
            .unwrap_or_else(|err| panic!("{what}: importing the public key: {err}"));
        session
            .verify(&eddsa(), public, &h(message), &h(expected))
            .unwrap_or_else(|err| panic!("{what}: verify: {err}"));
        let mut flipped = h(expected);
        flipped[40] ^= 0x01;
        assert_eq!(
            rv(session.verify(&eddsa(), public, &h(message), &flipped)),
            RvError::SignatureInvalid,
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Across tokens: keyferry and SoftHSMv2
// ---------------------------------------------------------------------------------------

/// Import an RSA public key (modulus, exponent) for verifying.
fn import_rsa_public(session: &Session, modulus: &[u8], exponent: &[u8]) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::Modulus(modulus.to_vec()),
            Attribute::PublicExponent(exponent.to_vec()),
        ])
        .unwrap()
}

/// Import an EC public key (curve, DER point) for verifying.
fn import_ec_public(session: &Session, params: &[u8], point: &[u8]) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::EcPoint(point.to_vec()),
        ])
        .unwrap()
}

/// One signature that crosses: what the signing token does and what the verifying token
/// does with the same signature.
struct Crossing<'a> {
    name: &'static str,
    rsa: bool,
    sign: (Mechanism<'a>, Vec<u8>),
    verify: (Mechanism<'a>, Vec<u8>),
}

/// SHA256_RSA_PKCS, SHA256_RSA_PKCS_PSS and raw PSS as themselves; ECDSA_SHA256 made on
/// keyferry is checked by SoftHSMv2 as raw CKM_ECDSA over the SHA-256 digest, which is
/// the same signature.
fn crossings<'a>(
    session: &Session,
    params: &'a PkcsPssParams,
    keyferry_signs: bool,
) -> Vec<Crossing<'a>> {
    let digest = session.digest(&Mechanism::Sha256, MESSAGE).unwrap();
    let message = MESSAGE.to_vec();
    let same = |make: &dyn Fn() -> Mechanism<'a>, input: &Vec<u8>| {
        ((make(), input.clone()), (make(), input.clone()))
    };
    let (rsa_pkcs, rsa_pss, raw_pss, raw_ecdsa) = (
        same(&|| Mechanism::Sha256RsaPkcs, &message),
        same(&|| Mechanism::Sha256RsaPkcsPss(*params), &message),
        same(&|| Mechanism::RsaPkcsPss(*params), &digest),
        same(&|| Mechanism::Ecdsa, &digest),
    );
    let on_keyferry = (Mechanism::EcdsaSha256, message);
    let on_softhsm = (Mechanism::Ecdsa, digest);
    let hashing_ecdsa = if keyferry_signs {
        (on_keyferry, on_softhsm)
    } else {
        (on_softhsm, on_keyferry)
    };
    [
        ("SHA256_RSA_PKCS", true, rsa_pkcs),
        ("SHA256_RSA_PKCS_PSS", true, rsa_pss),
        ("RSA_PKCS_PSS over a SHA-256 digest", true, raw_pss),
        (
            "ECDSA_SHA256 (raw ECDSA on SoftHSMv2)",
            false,
            hashing_ecdsa,
        ),
        ("ECDSA over a SHA-256 digest", false, raw_ecdsa),
    ]
    .into_iter()
    .map(|(name, rsa, (sign, verify))| Crossing {
        name,
        rsa,
        sign,
        verify,
    })
    .collect()
}

/// SoftHSMv2 2.6.1 offers raw CKM_ECDSA only: its C_SignInit and C_VerifyInit refuse
/// CKM_ECDSA_SHA256 as CKR_MECHANISM_INVALID, so the crossings above check keyferry's
/// ECDSA_SHA256 signatures against SoftHSMv2's raw ECDSA over the digest.
fn assert_softhsm_has_no_hashing_ecdsa(softhsm: &Session, pair: Pair) {
    assert_eq!(
        rv(softhsm.sign_init(&Mechanism::EcdsaSha256, pair.private)),
        RvError::MechanismInvalid
    );
    assert_eq!(
        rv(softhsm.verify_init(&Mechanism::EcdsaSha256, pair.public)),
        RvError::MechanismInvalid
    );
}

#[test]
fn softhsm_verifies_keyferry_signatures_with_imported_public_keys() {
    let keyferry = token(Module::Keyferry, "to-softhsm");
    let softhsm = token(Module::SoftHsm, "from-keyferry");
    let rsa = rsa_pair(&keyferry, 2048, None);
    let p256 = ec_pair(&keyferry, P256_OID);
    let rsa_there = import_rsa_public(
        &softhsm,
        &bytes(&keyferry, rsa.public, AttributeType::Modulus),
        &bytes(&keyferry, rsa.public, AttributeType::PublicExponent),
    );
    let p256_there = import_ec_public(
        &softhsm,
        P256_OID,
        &bytes(&keyferry, p256.public, AttributeType::EcPoint),
    );
    let params = pss_for(MechanismType::SHA256);
    for crossing in crossings(&keyferry, &params, true) {
        let name = crossing.name;
        let (private, public_there) = if crossing.rsa {
            (rsa.private, rsa_there)
        } else {
            (p256.private, p256_there)
        };
        let (mechanism, input) = &crossing.sign;
        let signature = keyferry
            .sign(mechanism, private, input)
            .unwrap_or_else(|err| panic!("{name}: keyferry sign: {err}"));
        let (mechanism, input) = &crossing.verify;
        softhsm
            .verify(mechanism, public_there, input, &signature)
            .unwrap_or_else(|err| panic!("{name}: SoftHSMv2 verify: {err}"));
        let mut flipped = signature.clone();
        flipped[10] ^= 0x80;
        assert_eq!(
            rv(softhsm.verify(mechanism, public_there, input, &flipped)),
            RvError::SignatureInvalid,
            "{name}: SoftHSMv2 with a flipped bit"
        );
    }
    let softhsm_p256 = generate(
        &softhsm,
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(P256_OID.to_vec())],
        &[Attribute::Private(true)],
    )
    .unwrap();
    assert_softhsm_has_no_hashing_ecdsa(&softhsm, softhsm_p256);
}

#[test]
fn keyferry_verifies_softhsm_signatures_with_imported_public_keys() {
    let keyferry = token(Module::Keyferry, "from-softhsm");
    let softhsm = token(Module::SoftHsm, "to-keyferry");
    let rsa = generate(
        &softhsm,
        &Mechanism::RsaPkcsKeyPairGen,
        &rsa_template(2048, Some(&[1, 0, 1])),
        &[Attribute::Sensitive(true), Attribute::Private(true)],
    )
    .unwrap();
    let p256 = generate(
        &softhsm,
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(P256_OID.to_vec())],
        &[Attribute::Sensitive(true), Attribute::Private(true)],
    )
    .unwrap();
    assert_softhsm_has_no_hashing_ecdsa(&softhsm, p256);
    let rsa_here = import_rsa_public(
        &keyferry,
        &bytes(&softhsm, rsa.public, AttributeType::Modulus),
        &bytes(&softhsm, rsa.public, AttributeType::PublicExponent),
    );
    let softhsm_point = bytes(&softhsm, p256.public, AttributeType::EcPoint);
    assert_eq!(
        softhsm_point[..3],
        [0x04, 0x41, 0x04],
        "SoftHSMv2's DER point"
    );
    let p256_here = import_ec_public(&keyferry, P256_OID, &softhsm_point);
    let params = pss_for(MechanismType::SHA256);
    for crossing in crossings(&keyferry, &params, false) {
        let name = crossing.name;
        let (private_there, public) = if crossing.rsa {
            (rsa.private, rsa_here)
        } else {
            (p256.private, p256_here)
        };
        let (mechanism, input) = &crossing.sign;
        let signature = softhsm
            .sign(mechanism, private_there, input)
            .unwrap_or_else(|err| panic!("{name}: SoftHSMv2 sign: {err}"));
        let (mechanism, input) = &crossing.verify;
        keyferry
            .verify(mechanism, public, input, &signature)
            .unwrap_or_else(|err| panic!("{name}: keyferry verify: {err}"));
        let mut flipped = signature.clone();
        flipped[10] ^= 0x80;
        assert_eq!(
            rv(keyferry.verify(mechanism, public, input, &flipped)),
            RvError::SignatureInvalid,
            "{name}: keyferry with a flipped bit"
        );
    }
    // PKCS#1 v1.5 is deterministic: keyferry's raw CKM_RSA_PKCS verification of the
    // DigestInfo accepts SoftHSMv2's SHA256_RSA_PKCS signature.
    let signature = softhsm
        .sign(&Mechanism::Sha256RsaPkcs, rsa.private, MESSAGE)
        .unwrap();
    let digest = keyferry.digest(&Mechanism::Sha256, MESSAGE).unwrap();
    let digest_info = [digest_info_prefix(MechanismType::SHA256), digest].concat();
    keyferry
        .verify(&Mechanism::RsaPkcs, rsa_here, &digest_info, &signature)
        .unwrap();
}

#[test]
fn raw_ecdsa_inputs_of_every_length_up_to_sha512_cross_between_the_tokens() {
    // X9.62: a digest longer than the order keeps its leftmost bits, a shorter one is
    // taken as it is; an empty one is 0. Both tokens must read each input alike.
    let keyferry = token(Module::Keyferry, "raw-ecdsa-kf");
    let softhsm = token(Module::SoftHsm, "raw-ecdsa-sh");
    let inputs: Vec<Vec<u8>> = [0usize, 1, 16, 20, 32, 47, 48, 64]
        .iter()
        .map(|&len| (0..len).map(|i| (i * 29 + 11) as u8).collect())
        .collect();
    for params in [P256_OID, P384_OID] {
        let mine = ec_pair(&keyferry, params);
        let mine_there = import_ec_public(
            &softhsm,
            params,
            &bytes(&keyferry, mine.public, AttributeType::EcPoint),
        );
        let theirs = generate(
            &softhsm,
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(params.to_vec())],
            &[Attribute::Private(true)],
        )
        .unwrap();
        let theirs_here = import_ec_public(
            &keyferry,
            params,
            &bytes(&softhsm, theirs.public, AttributeType::EcPoint),
        );
        for input in &inputs {
            let what = format!("{} over {} bytes", hex(params), input.len());
            let signature = keyferry
                .sign(&Mechanism::Ecdsa, mine.private, input)
                .unwrap();
            softhsm
                .verify(&Mechanism::Ecdsa, mine_there, input, &signature)
                .unwrap_or_else(|err| panic!("{what}: SoftHSMv2 verify: {err}"));
            let signature = softhsm
                .sign(&Mechanism::Ecdsa, theirs.private, input)
                .unwrap();
            keyferry
                .verify(&Mechanism::Ecdsa, theirs_here, input, &signature)
                .unwrap_or_else(|err| panic!("{what}: keyferry verify: {err}"));
        }
    }
}
