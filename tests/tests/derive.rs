//! C_DeriveKey with CKM_AES_CBC_ENCRYPT_DATA, on keyferry and SoftHSMv2 alike: the same
//! base key and data give the same derived key, with the attributes the spec prescribes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::error::RvError;
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use keyferry_tests::{fresh_token, rv, user_session, Module};

const DATA: [u8; 32] = [0x5a; 32];

#[test]
fn cbc_encrypt_data_derives_the_same_key_on_both_tokens() {
    let mut fingerprints = Vec::new();
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "derive");
        let session = user_session(module, slot);
        let base = session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Value(vec![0x11; 32]),
                Attribute::Derive(true),
            ])
            .unwrap();
        let mechanism = Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([3u8; 16], &DATA));
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Encrypt(true),
        ];
        match module {
            // Without CKA_VALUE_LEN the key takes all the encrypted data (32 bytes here).
            Module::Keyferry => {}
            // SoftHSMv2 2.6.1 answers CKR_ATTRIBUTE_VALUE_INVALID without it.
            Module::SoftHsm => {
                assert_eq!(
                    rv(session.derive_key(&mechanism, base, &template)),
                    RvError::AttributeValueInvalid
                );
                template.push(Attribute::ValueLen(32.into()));
            }
        }
        let derived = session.derive_key(&mechanism, base, &template).unwrap();
        fingerprints.push(
            session
                .encrypt(&Mechanism::AesEcb, derived, &[0u8; 16])
                .unwrap(),
        );
        if module == Module::Keyferry {
            let attributes = session
                .get_attributes(derived, &[AttributeType::Local, AttributeType::ValueLen])
                .unwrap();
            assert_eq!(
                attributes,
                vec![Attribute::Local(false), Attribute::ValueLen(32.into())]
            );
        }
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
}

#[test]
fn derived_keys_inherit_always_sensitive_and_never_extractable() {
    let (slot, _) = fresh_token(Module::Keyferry, "inherit");
    let session = user_session(Module::Keyferry, slot);
    let generated = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Derive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    let mechanism = Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([0u8; 16], &DATA));
    let derive = |extractable: bool| {
        session
            .derive_key(
                &mechanism,
                generated,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(16.into()),
                    Attribute::Extractable(extractable),
                ],
            )
            .unwrap()
    };
    let wanted = [
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::ValueLen,
    ];
    assert_eq!(
        session.get_attributes(derive(false), &wanted).unwrap(),
        vec![
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::ValueLen(16.into())
        ]
    );
    assert_eq!(
        session.get_attributes(derive(true), &wanted).unwrap()[1],
        Attribute::NeverExtractable(false)
    );
    let no_derive = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![1; 16]),
            Attribute::Derive(false),
        ])
        .unwrap();
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
    ];
    assert_eq!(
        rv(session.derive_key(&mechanism, no_derive, &template)),
        RvError::KeyFunctionNotPermitted
    );
    let odd = Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([0u8; 16], &DATA[..20]));
    assert_eq!(
        rv(session.derive_key(&odd, generated, &template)),
        RvError::MechanismParamInvalid
    );
}
