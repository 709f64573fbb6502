//! Spec-defined token behaviour, run against keyferry and SoftHSMv2 alike so that a
//! disagreement shows. Where SoftHSMv2 2.6.1 departs from PKCS#11 3.0, the test says so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use keyferry_tests::{fresh_token, pin, rv, user_session, Module, SO_PIN, USER_PIN};

fn aes_template(label: &str, value: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(value.to_vec()),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

#[test]
fn fresh_token_reports_truthful_flags() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "flags");
        let info = module.pkcs11().get_token_info(slot).unwrap();
        assert!(
            info.token_initialized() && info.login_required() && info.rng(),
            "{module:?}"
        );
        assert!(info.user_pin_initialized(), "{module:?}");
        assert!(
            !info.user_pin_count_low() && !info.user_pin_locked(),
            "{module:?}"
        );
    }
}

#[test]
fn login_is_shared_by_every_session_of_the_application() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "states");
        let pkcs11 = module.pkcs11();
        let ro = pkcs11.open_ro_session(slot).unwrap();
        let rw = pkcs11.open_rw_session(slot).unwrap();
        assert_eq!(
            ro.get_session_info().unwrap().session_state(),
            SessionState::RoPublic
        );
        assert_eq!(
            rw.get_session_info().unwrap().session_state(),
            SessionState::RwPublic
        );
        rw.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        assert_eq!(
            ro.get_session_info().unwrap().session_state(),
            SessionState::RoUser,
            "{module:?}"
        );
        assert_eq!(
            rw.get_session_info().unwrap().session_state(),
            SessionState::RwUser
        );
        assert_eq!(
            rv(ro.login(UserType::User, Some(&pin(USER_PIN)))),
            RvError::UserAlreadyLoggedIn
        );
        // Both codes apply (the user is in, and a read-only session exists); the spec
        // leaves the choice open. SoftHSMv2 reports the read-only session first.
        let expected = match module {
            Module::Keyferry => RvError::UserAnotherAlreadyLoggedIn,
            Module::SoftHsm => RvError::SessionReadOnlyExists,
        };
        assert_eq!(
            rv(ro.login(UserType::So, Some(&pin(SO_PIN)))),
            expected,
            "{module:?}"
        );
        ro.logout().unwrap();
        assert_eq!(
            rw.get_session_info().unwrap().session_state(),
            SessionState::RwPublic
        );
        match module {
            Module::Keyferry => assert_eq!(rv(rw.logout()), RvError::UserNotLoggedIn),
            // SoftHSMv2 2.6.1 answers CKR_OK to C_Logout with nobody logged in (3.0 §5.6.10
            // lists CKR_USER_NOT_LOGGED_IN).
            Module::SoftHsm => rw.logout().unwrap(),
        }
    }
}

#[test]
fn so_cannot_log_in_while_a_read_only_session_is_open() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "so-ro");
        let pkcs11 = module.pkcs11();
        let ro = pkcs11.open_ro_session(slot).unwrap();
        let rw = pkcs11.open_rw_session(slot).unwrap();
        assert_eq!(
            rv(rw.login(UserType::So, Some(&pin(SO_PIN)))),
            RvError::SessionReadOnlyExists,
            "{module:?}"
        );
        drop(ro);
        rw.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
        assert_eq!(
            rw.get_session_info().unwrap().session_state(),
            SessionState::RwSecurityOfficer
        );
        assert_eq!(
            rv(pkcs11.open_ro_session(slot)),
            RvError::SessionReadWriteSoExists,
            "{module:?}"
        );
    }
}

#[test]
fn private_objects_are_visible_only_to_the_logged_in_user() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "private");
        let session = user_session(module, slot);
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(b"secret-note".to_vec()),
                Attribute::Value(b"42".to_vec()),
            ])
            .unwrap();
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(b"public-note".to_vec()),
            ])
            .unwrap();
        let data = [Attribute::Class(ObjectClass::DATA)];
        assert_eq!(session.find_objects(&data).unwrap().len(), 2, "{module:?}");
        session.logout().unwrap();
        let found = session.find_objects(&data).unwrap();
        assert_eq!(found.len(), 1, "{module:?}");
        let label = session
            .get_attributes(found[0], &[AttributeType::Label])
            .unwrap();
        assert_eq!(label, vec![Attribute::Label(b"public-note".to_vec())]);
        let private_data = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Private(true),
        ];
        assert_eq!(
            rv(session.create_object(&[
                private_data[0].clone(),
                private_data[1].clone(),
                Attribute::Token(true)
            ])),
            RvError::UserNotLoggedIn,
            "{module:?}"
        );
    }
}

#[test]
fn generated_aes_keys_carry_the_token_computed_attributes() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "keygen");
        let session = user_session(module, slot);
        let key = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Label(b"root".to_vec()),
                ],
            )
            .unwrap();
        let attributes = session
            .get_attributes(
                key,
                &[
                    AttributeType::Local,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::KeyGenMechanism,
                    AttributeType::ValueLen,
                    AttributeType::KeyType,
                ],
            )
            .unwrap();
        assert_eq!(
            attributes,
            vec![
                Attribute::Local(true),
                Attribute::AlwaysSensitive(true),
                Attribute::NeverExtractable(true),
                Attribute::KeyGenMechanism(MechanismType::AES_KEY_GEN),
                Attribute::ValueLen(32.into()),
                Attribute::KeyType(KeyType::AES),
            ],
            "{module:?}"
        );
        let info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{module:?}: {info:?}"
        );
        let check = session
            .get_attributes(key, &[AttributeType::CheckValue])
            .unwrap();
        assert!(
            matches!(check.as_slice(), [Attribute::CheckValue(value)] if value.len() == 3),
            "{module:?}: {check:?}"
        );
    }
}

#[test]
fn aes_key_generation_refuses_a_length_aes_does_not_have() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "badlen");
        let session = user_session(module, slot);
        let result = session.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(20.into())]);
        assert_eq!(rv(result), RvError::AttributeValueInvalid, "{module:?}");
    }
}

#[test]
fn created_aes_key_gets_the_spec_check_value() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "kcv");
        let session = user_session(module, slot);
        let key = session
            .create_object(&aes_template("zero", &[0u8; 16]))
            .unwrap();
        let check = session
            .get_attributes(key, &[AttributeType::CheckValue])
            .unwrap();
        // AES-128 of the zero key over the zero block: 66 e9 4b d4 …
        assert_eq!(
            check,
            vec![Attribute::CheckValue(vec![0x66, 0xe9, 0x4b])],
            "{module:?}"
        );
        let value = session
            .get_attributes(key, &[AttributeType::Value])
            .unwrap();
        assert_eq!(value, vec![Attribute::Value(vec![0u8; 16])]);
    }
}

#[test]
fn sensitive_and_extractable_only_change_one_way() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "oneway");
        let session = user_session(module, slot);
        let key = session
            .create_object(&aes_template("oneway", &[7u8; 32]))
            .unwrap();
        session
            .update_attributes(key, &[Attribute::Sensitive(true)])
            .unwrap();
        session
            .update_attributes(key, &[Attribute::Extractable(false)])
            .unwrap();
        assert_eq!(
            rv(session.update_attributes(key, &[Attribute::Sensitive(false)])),
            RvError::AttributeReadOnly,
            "{module:?}"
        );
        assert_eq!(
            rv(session.update_attributes(key, &[Attribute::Extractable(true)])),
            RvError::AttributeReadOnly,
            "{module:?}"
        );
        let info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{module:?}: {info:?}"
        );
        let flags = session
            .get_attributes(
                key,
                &[
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .unwrap();
        assert_eq!(
            flags,
            vec![
                Attribute::AlwaysSensitive(false),
                Attribute::NeverExtractable(false)
            ],
            "{module:?}"
        );
    }
}

#[test]
fn objects_are_found_by_label_and_id_and_copies_are_new_objects() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "find");
        let session = user_session(module, slot);
        let mut template = aes_template("kek-2024", &[1u8; 32]);
        template.push(Attribute::Id(vec![0x20, 0x24]));
        let key = session.create_object(&template).unwrap();
        let by_label = session
            .find_objects(&[Attribute::Label(b"kek-2024".to_vec())])
            .unwrap();
        let by_id = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(vec![0x20, 0x24]),
            ])
            .unwrap();
        assert_eq!((by_label, by_id), (vec![key], vec![key]), "{module:?}");
        let copy = session
            .copy_object(key, &[Attribute::Label(b"kek-copy".to_vec())])
            .unwrap();
        assert_ne!(copy, key);
        let check = [AttributeType::CheckValue];
        assert_eq!(
            session.get_attributes(copy, &check).unwrap(),
            session.get_attributes(key, &check).unwrap()
        );
        session.destroy_object(key).unwrap();
        assert_eq!(
            rv(session.get_attributes(key, &[AttributeType::Label])),
            RvError::ObjectHandleInvalid,
            "{module:?}"
        );
        assert_eq!(
            session
                .find_objects(&[Attribute::Label(b"kek-copy".to_vec())])
                .unwrap(),
            vec![copy]
        );
    }
}

#[test]
fn a_read_only_session_cannot_write_token_objects() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "ro");
        let writer = user_session(module, slot);
        let key = writer
            .create_object(&aes_template("ro", &[2u8; 16]))
            .unwrap();
        let reader = module.pkcs11().open_ro_session(slot).unwrap();
        assert_eq!(
            rv(reader.create_object(&aes_template("ro2", &[3u8; 16]))),
            RvError::SessionReadOnly,
            "{module:?}"
        );
        assert_eq!(
            rv(reader.destroy_object(key)),
            RvError::SessionReadOnly,
            "{module:?}"
        );
        assert_eq!(
            rv(reader.update_attributes(key, &[Attribute::Label(b"x".to_vec())])),
            RvError::SessionReadOnly
        );
        let mut session_key = aes_template("session", &[4u8; 16]);
        session_key[2] = Attribute::Token(false);
        reader.create_object(&session_key).unwrap();
    }
}

#[test]
fn a_wrong_pin_is_counted_and_the_right_one_resets_the_count() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "count");
        let pkcs11 = module.pkcs11();
        let session = pkcs11.open_ro_session(slot).unwrap();
        assert_eq!(
            rv(session.login(UserType::User, Some(&pin("wrong-pin")))),
            RvError::PinIncorrect
        );
        assert!(
            pkcs11.get_token_info(slot).unwrap().user_pin_count_low(),
            "{module:?}"
        );
        session.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        assert!(
            !pkcs11.get_token_info(slot).unwrap().user_pin_count_low(),
            "{module:?}"
        );
    }
}

#[test]
fn set_pin_replaces_the_user_pin() {
    for module in Module::ALL {
        let (slot, _) = fresh_token(module, "setpin");
        let session = module.pkcs11().open_rw_session(slot).unwrap();
        assert_eq!(
            rv(session.set_pin(&pin("wrong-pin"), &pin("new-pin-5678"))),
            RvError::PinIncorrect,
            "{module:?}"
        );
        session
            .set_pin(&pin(USER_PIN), &pin("new-pin-5678"))
            .unwrap();
        assert_eq!(
            rv(session.login(UserType::User, Some(&pin(USER_PIN)))),
            RvError::PinIncorrect
        );
        session
            .login(UserType::User, Some(&pin("new-pin-5678")))
            .unwrap();
    }
}
