//! The asymmetric transports a migration uses, between real tokens: a key wrapped with
//! RSA-OAEP to the other token's public key, and an AES key both sides agree by ECDH.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyferry_tests::{fresh_token, user_session, Module};

/// DER of the P-256 named-curve OID.
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn aes_fingerprint(session: &Session, key: ObjectHandle) -> Vec<u8> {
    session
        .encrypt(&Mechanism::AesEcb, key, &[0u8; 16])
        .unwrap()
}

fn one(session: &Session, kind: AttributeType, object: ObjectHandle) -> Attribute {
    session.get_attributes(object, &[kind]).unwrap().remove(0)
}

#[test]
fn oaep_sha1_carries_a_key_from_softhsm_to_keyferry() {
    // keyferry makes the RSA pair; SoftHSMv2 receives its public key and wraps with it.
    let (kf_slot, _) = fresh_token(Module::Keyferry, "oaep-kf");
    let (sh_slot, _) = fresh_token(Module::SoftHsm, "oaep-sh");
    let keyferry = user_session(Module::Keyferry, kf_slot);
    let softhsm = user_session(Module::SoftHsm, sh_slot);
    let (public, private) = keyferry
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::ModulusBits(2048.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ],
            &[Attribute::Token(false), Attribute::Unwrap(true)],
        )
        .unwrap();
    let modulus = one(&keyferry, AttributeType::Modulus, public);
    let exponent = one(&keyferry, AttributeType::PublicExponent, public);
    let imported = softhsm
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Wrap(true),
            modulus,
            exponent,
        ])
        .unwrap();
    let payload = softhsm
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![0x77; 32]),
            Attribute::Extractable(true),
            Attribute::Encrypt(true),
        ])
        .unwrap();
    // SoftHSMv2 2.6.1 takes OAEP with SHA-1 only (DESIGN.md, peer quirks).
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    );
    let blob = softhsm
        .wrap_key(&Mechanism::RsaPkcsOaep(oaep), imported, payload)
        .unwrap();
    let arrived = keyferry
        .unwrap_key(
            &Mechanism::RsaPkcsOaep(oaep),
            private,
            &blob,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    assert_eq!(
        aes_fingerprint(&keyferry, arrived),
        aes_fingerprint(&softhsm, payload)
    );
}

fn p256_pair(session: &Session) -> (ObjectHandle, ObjectHandle) {
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256.to_vec()), Attribute::Token(false)],
            &[
                Attribute::Token(false),
                Attribute::Derive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap()
}

fn agree(session: &Session, private: ObjectHandle, peer_point: &[u8], kdf: EcKdf) -> ObjectHandle {
    agree_len(session, private, peer_point, kdf, 32).unwrap()
}

fn agree_len(
    session: &Session,
    private: ObjectHandle,
    peer_point: &[u8],
    kdf: EcKdf,
    len: u64,
) -> cryptoki::error::Result<ObjectHandle> {
    let params = Ecdh1DeriveParams::new(kdf, peer_point);
    session.derive_key(
        &Mechanism::Ecdh1Derive(params),
        private,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(if len > 32 {
                KeyType::GENERIC_SECRET
            } else {
                KeyType::AES
            }),
            Attribute::ValueLen(len.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
        ],
    )
}

/// The raw SEC1 point inside a CKA_EC_POINT DER OCTET STRING.
fn point(session: &Session, public: ObjectHandle) -> Vec<u8> {
    match one(session, AttributeType::EcPoint, public) {
        Attribute::EcPoint(der) => der[2..].to_vec(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ecdh_with_ckd_null_agrees_one_key_between_softhsm_and_keyferry() {
    let (kf_slot, _) = fresh_token(Module::Keyferry, "ecdh-kf");
    let (sh_slot, _) = fresh_token(Module::SoftHsm, "ecdh-sh");
    let keyferry = user_session(Module::Keyferry, kf_slot);
    let softhsm = user_session(Module::SoftHsm, sh_slot);
    let (kf_public, kf_private) = p256_pair(&keyferry);
    let (sh_public, sh_private) = p256_pair(&softhsm);
    let kf_key = agree(
        &keyferry,
        kf_private,
        &point(&softhsm, sh_public),
        EcKdf::null(),
    );
    let sh_key = agree(
        &softhsm,
        sh_private,
        &point(&keyferry, kf_public),
        EcKdf::null(),
    );
    assert_eq!(
        aes_fingerprint(&keyferry, kf_key),
        aes_fingerprint(&softhsm, sh_key)
    );
    // No extractable transport key exists at any point.
    assert_eq!(
        one(&keyferry, AttributeType::NeverExtractable, kf_key),
        Attribute::NeverExtractable(true)
    );
}

#[test]
fn ecdh_with_the_sha256_kdf_agrees_between_two_keyferry_tokens() {
    let (a_slot, _) = fresh_token(Module::Keyferry, "ecdh-a");
    let (b_slot, _) = fresh_token(Module::Keyferry, "ecdh-b");
    let a = user_session(Module::Keyferry, a_slot);
    let b = user_session(Module::Keyferry, b_slot);
    let (a_public, a_private) = p256_pair(&a);
    let (b_public, b_private) = p256_pair(&b);
    let shared_info = b"keyferry transport";
    let a_key = agree(
        &a,
        a_private,
        &point(&b, b_public),
        EcKdf::sha256(shared_info),
    );
    let b_key = agree(
        &b,
        b_private,
        &point(&a, a_public),
        EcKdf::sha256(shared_info),
    );
    assert_eq!(aes_fingerprint(&a, a_key), aes_fingerprint(&b, b_key));
    let other_info = agree(
        &a,
        a_private,
        &point(&b, b_public),
        EcKdf::sha256(b"something else"),
    );
    assert_ne!(aes_fingerprint(&a, a_key), aes_fingerprint(&a, other_info));
}

/// Sign with `private` on one token and verify with `public` on another (raw CKM_ECDSA
/// over a SHA-256 digest: SoftHSMv2 2.6.1 has no CKM_ECDSA_SHA256).
fn signs_for(signer: &Session, private: ObjectHandle, verifier: &Session, public: ObjectHandle) {
    let digest = signer
        .digest(&Mechanism::Sha256, b"a key that moved")
        .unwrap();
    let signature = signer.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    verifier
        .verify(&Mechanism::Ecdsa, public, &digest, &signature)
        .unwrap();
}

#[test]
fn ec_private_keys_cross_between_softhsm_and_keyferry_as_pkcs8_under_rfc_5649() {
    let (kf_slot, _) = fresh_token(Module::Keyferry, "pkcs8-kf");
    let (sh_slot, _) = fresh_token(Module::SoftHsm, "pkcs8-sh");
    let keyferry = user_session(Module::Keyferry, kf_slot);
    let softhsm = user_session(Module::SoftHsm, sh_slot);
    let kek_template = |session: &Session| {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Value(vec![0x3c; 32]),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
            ])
            .unwrap()
    };
    let (kf_kek, sh_kek) = (kek_template(&keyferry), kek_template(&softhsm));
    let pair = |session: &Session| {
        session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::EcParams(P256.to_vec()),
                    Attribute::Token(false),
                    Attribute::Verify(true),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sign(true),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap()
    };
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::Sign(true),
    ];
    for (from, from_kek, to, to_kek) in [
        (&softhsm, sh_kek, &keyferry, kf_kek),
        (&keyferry, kf_kek, &softhsm, sh_kek),
    ] {
        let (public, private) = pair(from);
        let blob = from
            .wrap_key(&Mechanism::AesKeyWrapPad, from_kek, private)
            .unwrap();
        let arrived = to
            .unwrap_key(&Mechanism::AesKeyWrapPad, to_kek, &blob, &template)
            .unwrap();
        signs_for(to, arrived, from, public);
    }
}

#[test]
fn imported_public_keys_are_checked_and_completed() {
    let (slot, _) = fresh_token(Module::Keyferry, "import");
    let session = user_session(Module::Keyferry, slot);
    let (public, _) = p256_pair(&session);
    let point = point(&session, public);
    let import = |ec_point: Vec<u8>| {
        session.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(P256.to_vec()),
            Attribute::EcPoint(ec_point),
        ])
    };
    let mut der = vec![0x04, point.len() as u8];
    der.extend_from_slice(&point);
    let imported = import(der).unwrap();
    assert_eq!(
        one(&session, AttributeType::PublicKeyInfo, imported),
        one(&session, AttributeType::PublicKeyInfo, public)
    );
    let mut off_curve = point.clone();
    off_curve[64] ^= 1;
    assert_eq!(
        keyferry_tests::rv(import(off_curve)),
        cryptoki::error::RvError::AttributeValueInvalid
    );
    assert_eq!(
        keyferry_tests::rv(import(vec![0x00])),
        cryptoki::error::RvError::AttributeValueInvalid
    );
}

#[test]
fn ecdh_ckd_null_truncates_z_from_the_leading_end_as_softhsm_does() {
    let (kf_slot, _) = fresh_token(Module::Keyferry, "ecdh16-kf");
    let (sh_slot, _) = fresh_token(Module::SoftHsm, "ecdh16-sh");
    let keyferry = user_session(Module::Keyferry, kf_slot);
    let softhsm = user_session(Module::SoftHsm, sh_slot);
    let (kf_public, kf_private) = p256_pair(&keyferry);
    let (sh_public, sh_private) = p256_pair(&softhsm);
    // AES-128 from a 32-byte Z: both tokens must keep the same 16 bytes.
    let kf_key = agree_len(
        &keyferry,
        kf_private,
        &point(&softhsm, sh_public),
        EcKdf::null(),
        16,
    )
    .unwrap();
    let sh_key = agree_len(
        &softhsm,
        sh_private,
        &point(&keyferry, kf_public),
        EcKdf::null(),
        16,
    )
    .unwrap();
    assert_eq!(
        aes_fingerprint(&keyferry, kf_key),
        aes_fingerprint(&softhsm, sh_key)
    );
    // A length past any key is refused before anything is computed.
    let huge = agree_len(
        &keyferry,
        kf_private,
        &point(&softhsm, sh_public),
        EcKdf::sha256(b""),
        1 << 40,
    );
    assert_eq!(
        keyferry_tests::rv(huge),
        cryptoki::error::RvError::TemplateInconsistent
    );
}

#[test]
fn an_rsa_key_that_unwraps_does_no_pkcs1_v15_decryption() {
    let (slot, _) = fresh_token(Module::Keyferry, "bleichenbacher");
    let session = user_session(Module::Keyferry, slot);
    for (unwrap, expected) in [
        (true, Err(cryptoki::error::RvError::KeyFunctionNotPermitted)),
        (false, Ok(())),
    ] {
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[Attribute::ModulusBits(2048.into()), Attribute::Token(false)],
                &[
                    Attribute::Token(false),
                    Attribute::Unwrap(unwrap),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        let ciphertext = session
            .encrypt(&Mechanism::RsaPkcs, public, b"secret")
            .unwrap();
        let result = session
            .decrypt(&Mechanism::RsaPkcs, private, &ciphertext)
            .map(|plain| assert_eq!(plain, b"secret"));
        match expected {
            Ok(()) => result.unwrap(),
            Err(rv) => assert_eq!(keyferry_tests::rv(result), rv),
        }
    }
}

#[test]
fn hostile_oaep_and_ecdh_inputs_get_exact_codes() {
    let (slot, _) = fresh_token(Module::Keyferry, "hostile");
    let session = user_session(Module::Keyferry, slot);
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::ModulusBits(2048.into()), Attribute::Token(false)],
            &[Attribute::Token(false), Attribute::Decrypt(true)],
        )
        .unwrap();
    let sha256 = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    let mixed = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    );
    // SHA-256 with MGF1-SHA1 (Java's OAEPWithSHA-256AndMGF1Padding) round-trips.
    let mixed_ciphertext = session
        .encrypt(&Mechanism::RsaPkcsOaep(mixed), public, b"java")
        .unwrap();
    assert_eq!(
        session
            .decrypt(&Mechanism::RsaPkcsOaep(mixed), private, &mixed_ciphertext)
            .unwrap(),
        b"java"
    );
    let not_a_hash = PkcsOaepParams::new(
        MechanismType::AES_ECB,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    );
    assert_eq!(
        keyferry_tests::rv(session.encrypt(&Mechanism::RsaPkcsOaep(not_a_hash), public, b"x")),
        cryptoki::error::RvError::MechanismParamInvalid
    );
    let ciphertext = session
        .encrypt(&Mechanism::RsaPkcsOaep(sha256), public, b"key bytes")
        .unwrap();
    // Every way a ciphertext can be wrong answers the same code: no padding oracle.
    let mut flipped_first = ciphertext.clone();
    flipped_first[0] ^= 0x80;
    let mut flipped_last = ciphertext.clone();
    flipped_last[255] ^= 0x01;
    let labelled = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::data_specified(b"other"),
    );
    for (params, bytes) in [
        (sha256, &flipped_first),
        (sha256, &flipped_last),
        (labelled, &ciphertext),
    ] {
        assert_eq!(
            keyferry_tests::rv(session.decrypt(&Mechanism::RsaPkcsOaep(params), private, bytes)),
            cryptoki::error::RvError::EncryptedDataInvalid
        );
    }
    assert_eq!(
        keyferry_tests::rv(session.decrypt(
            &Mechanism::RsaPkcsOaep(sha256),
            private,
            &ciphertext[..255]
        )),
        cryptoki::error::RvError::EncryptedDataLenRange
    );

    let (ec_public, ec_private) = p256_pair(&session);
    let mut off_curve = point(&session, ec_public);
    off_curve[64] ^= 1;
    let identity = vec![0x00];
    for peer in [off_curve, identity, vec![0x04; 65]] {
        assert_eq!(
            keyferry_tests::rv(agree_len(&session, ec_private, &peer, EcKdf::null(), 32)),
            cryptoki::error::RvError::MechanismParamInvalid
        );
    }
}
