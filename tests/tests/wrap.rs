//! Key wrapping between real tokens: blobs made on SoftHSMv2 open on keyferry and the
//! other way round, and every transported key is proven equal by what it computes.
//! (CKM_AES_KEY_WRAP_KWP, 0x210B, is beyond cryptoki's vocabulary; the C-ABI tests in
//! p11-module cover it against SoftHSMv2's 0x210A blobs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyferry_tests::{fresh_token, rv, user_session, Module};

const KEK: [u8; 32] = [0x4b; 32];

struct Side {
    module: Module,
    session: Session,
    kek: ObjectHandle,
}

fn side(module: Module, name: &str) -> Side {
    let (slot, _) = fresh_token(module, name);
    let session = user_session(module, slot);
    let kek = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(KEK.to_vec()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ])
        .unwrap();
    Side {
        module,
        session,
        kek,
    }
}

fn secret(side: &Side, key_type: KeyType, value: &[u8]) -> ObjectHandle {
    side.session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(true),
            Attribute::Sign(true),
        ])
        .unwrap()
}

/// What a key computes: AES-ECB of the zero block, or HMAC-SHA-256 of a fixed message.
fn fingerprint(side: &Side, key_type: KeyType, key: ObjectHandle) -> Vec<u8> {
    if key_type == KeyType::AES {
        side.session
            .encrypt(&Mechanism::AesEcb, key, &[0u8; 16])
            .unwrap()
    } else {
        // HMAC-SHA-1: SoftHSMv2 refuses HMAC keys shorter than the hash, and these are 20 bytes.
        side.session
            .sign(&Mechanism::Sha1Hmac, key, b"keyferry key check")
            .unwrap()
    }
}

fn unwrap_template(key_type: KeyType) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Encrypt(true),
        Attribute::Sign(true),
    ]
}

/// The template a destination needs: keyferry is told a generic secret's length, which
/// lets it drop the zero padding SoftHSMv2 puts into its blobs of such keys.
fn template_for(to: &Side, key_type: KeyType, len: usize) -> Vec<Attribute> {
    let mut template = unwrap_template(key_type);
    if to.module == Module::Keyferry && key_type == KeyType::GENERIC_SECRET {
        template.push(Attribute::ValueLen((len as u64).into()));
    }
    template
}

/// Wrap on `from`, unwrap on `to`, and compare what the two keys compute.
fn carry(from: &Side, to: &Side, mechanism: &Mechanism, key_type: KeyType, value: &[u8]) {
    let key = secret(from, key_type, value);
    let blob = from.session.wrap_key(mechanism, from.kek, key).unwrap();
    let arrived = to
        .session
        .unwrap_key(
            mechanism,
            to.kek,
            &blob,
            &template_for(to, key_type, value.len()),
        )
        .unwrap_or_else(|err| {
            panic!(
                "{:?} -> {:?} {mechanism:?} {} bytes: {err}",
                from.module,
                to.module,
                value.len()
            )
        });
    assert_eq!(
        fingerprint(from, key_type, key),
        fingerprint(to, key_type, arrived),
        "{:?} -> {:?} {mechanism:?} {} bytes",
        from.module,
        to.module,
        value.len()
    );
}

#[test]
fn rfc_3394_and_rfc_5649_blobs_cross_between_softhsm_and_keyferry() {
    let keyferry = side(Module::Keyferry, "kw-kf");
    let softhsm = side(Module::SoftHsm, "kw-sh");
    for (from, to) in [(&softhsm, &keyferry), (&keyferry, &softhsm)] {
        for len in [16, 24, 32] {
            let value: Vec<u8> = (0..len as u8).map(|byte| byte.wrapping_mul(37)).collect();
            carry(from, to, &Mechanism::AesKeyWrap, KeyType::AES, &value);
            carry(from, to, &Mechanism::AesKeyWrapPad, KeyType::AES, &value);
        }
        carry(
            from,
            to,
            &Mechanism::AesKeyWrapPad,
            KeyType::GENERIC_SECRET,
            &[0x20; 20],
        );
    }
}

#[test]
fn keyferry_blobs_equal_softhsm_blobs_byte_for_byte() {
    let keyferry = side(Module::Keyferry, "same-kf");
    let softhsm = side(Module::SoftHsm, "same-sh");
    let blobs = |mechanism: &Mechanism, key_type: KeyType, value: &[u8]| -> Vec<Vec<u8>> {
        [&keyferry, &softhsm]
            .iter()
            .map(|side| {
                let key = secret(side, key_type, value);
                side.session.wrap_key(mechanism, side.kek, key).unwrap()
            })
            .collect()
    };
    for len in [16, 24, 32] {
        for mechanism in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
            let made = blobs(&mechanism, KeyType::AES, &vec![7u8; len]);
            assert_eq!(made[0], made[1], "{mechanism:?} {len} bytes");
        }
    }
    // A 20-byte secret: keyferry wraps the 20 bytes (RFC 5649's length indicator says 20);
    // SoftHSMv2 2.6.1 first pads them with zeros to 24, so its blob is another one.
    let made = blobs(
        &Mechanism::AesKeyWrapPad,
        KeyType::GENERIC_SECRET,
        &[9u8; 20],
    );
    assert_eq!(made[0].len(), made[1].len());
    assert_ne!(made[0], made[1]);
}

#[test]
fn keyferry_refuses_to_pad_rfc_3394_where_softhsm_pads_with_zeros() {
    let keyferry = side(Module::Keyferry, "pad-kf");
    let softhsm = side(Module::SoftHsm, "pad-sh");
    let odd = [0x31u8; 20];
    let key = secret(&keyferry, KeyType::GENERIC_SECRET, &odd);
    assert_eq!(
        rv(keyferry
            .session
            .wrap_key(&Mechanism::AesKeyWrap, keyferry.kek, key)),
        RvError::KeySizeRange
    );
    // SoftHSMv2 2.6.1 zero-pads the 20 bytes to 24 and wraps them (DESIGN.md, peer quirks).
    let key = secret(&softhsm, KeyType::GENERIC_SECRET, &odd);
    let blob = softhsm
        .session
        .wrap_key(&Mechanism::AesKeyWrap, softhsm.kek, key)
        .unwrap();
    assert_eq!(blob.len(), 32);
}

#[test]
fn tampered_and_truncated_blobs_create_nothing() {
    let keyferry = side(Module::Keyferry, "tamper-kf");
    let key = secret(&keyferry, KeyType::AES, &[5u8; 32]);
    let template = unwrap_template(KeyType::AES);
    for mechanism in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
        let blob = keyferry
            .session
            .wrap_key(&mechanism, keyferry.kek, key)
            .unwrap();
        let before = keyferry.session.find_objects(&[]).unwrap().len();
        let mut flipped = blob.clone();
        flipped[10] ^= 0x01;
        assert_eq!(
            rv(keyferry
                .session
                .unwrap_key(&mechanism, keyferry.kek, &flipped, &template)),
            RvError::WrappedKeyInvalid
        );
        assert_eq!(
            rv(keyferry.session.unwrap_key(
                &mechanism,
                keyferry.kek,
                &blob[..blob.len() - 1],
                &template
            )),
            RvError::WrappedKeyLenRange
        );
        assert_eq!(
            keyferry.session.find_objects(&[]).unwrap().len(),
            before,
            "no object created"
        );
    }
}

#[test]
fn unwrapped_keys_are_not_local_and_get_their_own_identity() {
    let keyferry = side(Module::Keyferry, "attrs-kf");
    let key = secret(&keyferry, KeyType::AES, &[6u8; 16]);
    let blob = keyferry
        .session
        .wrap_key(&Mechanism::AesKeyWrapPad, keyferry.kek, key)
        .unwrap();
    let mut template = unwrap_template(KeyType::AES);
    template.push(Attribute::ValueLen(16.into()));
    let arrived = keyferry
        .session
        .unwrap_key(&Mechanism::AesKeyWrapPad, keyferry.kek, &blob, &template)
        .unwrap();
    let wanted = [
        AttributeType::Local,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::CheckValue,
    ];
    let got = keyferry.session.get_attributes(arrived, &wanted).unwrap();
    let original_check = keyferry
        .session
        .get_attributes(key, &[AttributeType::CheckValue])
        .unwrap();
    assert_eq!(
        got[..3],
        [
            Attribute::Local(false),
            Attribute::AlwaysSensitive(false),
            Attribute::NeverExtractable(false)
        ]
    );
    assert_eq!(got[3..], original_check[..]);
    let ids = [AttributeType::UniqueId];
    assert_ne!(
        keyferry.session.get_attributes(arrived, &ids).unwrap(),
        keyferry.session.get_attributes(key, &ids).unwrap()
    );
    let mut wrong_len = unwrap_template(KeyType::AES);
    wrong_len.push(Attribute::ValueLen(32.into()));
    assert_eq!(
        rv(keyferry
            .session
            .unwrap_key(&Mechanism::AesKeyWrapPad, keyferry.kek, &blob, &wrong_len)),
        RvError::TemplateInconsistent
    );
}

#[test]
fn wrapping_policy_is_enforced_with_the_exact_codes() {
    let keyferry = side(Module::Keyferry, "policy-kf");
    let session = &keyferry.session;
    let locked_in = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![1; 16]),
            Attribute::Extractable(false),
        ])
        .unwrap();
    assert_eq!(
        rv(session.wrap_key(&Mechanism::AesKeyWrap, keyferry.kek, locked_in)),
        RvError::KeyUnextractable
    );

    let no_unwrap = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(KEK.to_vec()),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ])
        .unwrap();
    let key = secret(&keyferry, KeyType::AES, &[2; 16]);
    assert_eq!(
        rv(session.wrap_key(&Mechanism::AesKeyWrap, no_unwrap, key)),
        RvError::KeyFunctionNotPermitted
    );
    let blob = session
        .wrap_key(&Mechanism::AesKeyWrap, keyferry.kek, key)
        .unwrap();
    assert_eq!(
        rv(session.unwrap_key(
            &Mechanism::AesKeyWrap,
            no_unwrap,
            &blob,
            &unwrap_template(KeyType::AES)
        )),
        RvError::KeyFunctionNotPermitted
    );
    let gone = secret(&keyferry, KeyType::AES, &[4; 16]);
    session.destroy_object(gone).unwrap();
    assert_eq!(
        rv(session.unwrap_key(
            &Mechanism::AesKeyWrap,
            gone,
            &blob,
            &unwrap_template(KeyType::AES)
        )),
        RvError::UnwrappingKeyHandleInvalid
    );
    assert_eq!(
        rv(session.wrap_key(&Mechanism::AesKeyWrap, gone, key)),
        RvError::WrappingKeyHandleInvalid
    );
    assert_eq!(
        rv(session.wrap_key(&Mechanism::AesKeyWrap, keyferry.kek, gone)),
        RvError::KeyHandleInvalid
    );
    let hmac_key = secret(&keyferry, KeyType::GENERIC_SECRET, &[3; 32]);
    assert_eq!(
        rv(session.wrap_key(&Mechanism::AesKeyWrap, hmac_key, key)),
        RvError::WrappingKeyTypeInconsistent
    );
    let mut value_in_template = unwrap_template(KeyType::AES);
    value_in_template.push(Attribute::Value(vec![2; 16]));
    assert_eq!(
        rv(session.unwrap_key(
            &Mechanism::AesKeyWrap,
            keyferry.kek,
            &blob,
            &value_in_template
        )),
        RvError::TemplateInconsistent
    );
}

#[test]
fn wrap_with_trusted_needs_a_wrapping_key_the_so_trusts() {
    let (slot, _) = fresh_token(Module::Keyferry, "trusted");
    let pkcs11 = Module::Keyferry.pkcs11();
    // The SO sees only public objects, so a trusted wrapping key is a public one.
    let so = pkcs11.open_rw_session(slot).unwrap();
    so.login(
        cryptoki::session::UserType::So,
        Some(&keyferry_tests::pin(keyferry_tests::SO_PIN)),
    )
    .unwrap();
    let trusted_kek = so
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(b"trusted-kek".to_vec()),
            Attribute::Value(KEK.to_vec()),
            Attribute::Wrap(true),
            Attribute::Trusted(true),
        ])
        .unwrap();
    so.logout().unwrap();
    drop(so);
    let user = user_session(Module::Keyferry, slot);
    let plain_kek = user
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(KEK.to_vec()),
            Attribute::Wrap(true),
        ])
        .unwrap();
    let precious = user
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![8; 32]),
            Attribute::WrapWithTrusted(true),
        ])
        .unwrap();
    assert_eq!(
        rv(user.wrap_key(&Mechanism::AesKeyWrap, plain_kek, precious)),
        RvError::KeyNotWrappable
    );
    assert_eq!(
        user.wrap_key(&Mechanism::AesKeyWrap, trusted_kek, precious)
            .unwrap()
            .len(),
        40
    );
    // The user may not make a key trusted, nor take WRAP_WITH_TRUSTED back.
    assert_eq!(
        rv(user.update_attributes(plain_kek, &[Attribute::Trusted(true)])),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        rv(user.update_attributes(precious, &[Attribute::WrapWithTrusted(false)])),
        RvError::AttributeReadOnly
    );
}

fn import(session: &Session, key_type: KeyType, value: &[u8], wrap: bool) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Wrap(wrap),
            Attribute::Unwrap(wrap),
            Attribute::Extractable(true),
        ])
        .unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc_3394_vectors_through_the_pkcs11_api_on_both_tokens() {
    // RFC 3394 §4.1, §4.3 and §4.6.
    let vectors = [
        (
            "000102030405060708090A0B0C0D0E0F",
            "00112233445566778899AABBCCDDEEFF",
            "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
        ),
        (
            "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
            "00112233445566778899AABBCCDDEEFF",
            "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
        ),
        (
            "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
            "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
            "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
        ),
    ];
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "rfc3394");
        let session = user_session(module, slot);
        for (kek, key, wrapped) in vectors {
            let kek = import(&session, KeyType::AES, &hex(kek), true);
            let key = import(&session, KeyType::AES, &hex(key), false);
            assert_eq!(
                session.wrap_key(&Mechanism::AesKeyWrap, kek, key).unwrap(),
                hex(wrapped),
                "{module:?}"
            );
        }
    }
}

#[test]
fn rfc_5649_vectors_through_the_pkcs11_api() {
    // RFC 5649 §6: a 20-byte and a 7-byte key under a 192-bit KEK. (SoftHSMv2 zero-pads
    // such keys before wrapping, so only keyferry reproduces the RFC's blobs.)
    let (slot, _) = fresh_token(Module::Keyferry, "rfc5649");
    let session = user_session(Module::Keyferry, slot);
    let kek = import(
        &session,
        KeyType::AES,
        &hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"),
        true,
    );
    for (key, wrapped) in [
        (
            "c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        ),
        ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
    ] {
        let secret = import(&session, KeyType::GENERIC_SECRET, &hex(key), false);
        let blob = session
            .wrap_key(&Mechanism::AesKeyWrapPad, kek, secret)
            .unwrap();
        assert_eq!(blob, hex(wrapped));
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(false),
        ];
        let back = session
            .unwrap_key(&Mechanism::AesKeyWrapPad, kek, &blob, &template)
            .unwrap();
        assert_eq!(
            session
                .get_attributes(back, &[AttributeType::Value])
                .unwrap(),
            vec![Attribute::Value(hex(key))]
        );
    }
}
