//! keyferry's handling of logout and session ends: keys leave memory with the login.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use keyferry_tests::{fresh_token, rv, user_session, Module};

#[test]
fn logout_ends_every_cryptographic_operation_of_the_application() {
    let (slot, _) = fresh_token(Module::Keyferry, "logout-ops");
    let session = user_session(Module::Keyferry, slot);
    let other = Module::Keyferry.pkcs11().open_ro_session(slot).unwrap();
    let key = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![9; 16]),
        ])
        .unwrap();
    session.encrypt_init(&Mechanism::AesEcb, key).unwrap();
    other.encrypt_init(&Mechanism::AesEcb, key).unwrap();
    other.logout().unwrap();
    for s in [&session, &other] {
        assert_eq!(
            rv(s.encrypt_update(&[0u8; 16])),
            RvError::OperationNotInitialized
        );
    }
}

/// A session keeps a copy of the session key it keeps using, so that using it again takes
/// no shared lock; any change another session makes to the key, its destruction and a
/// logout must still be seen at the very next use.
#[test]
fn a_key_a_session_keeps_using_follows_changes_made_by_other_sessions() {
    let (slot, _) = fresh_token(Module::Keyferry, "kept-key");
    let user = user_session(Module::Keyferry, slot);
    let other = Module::Keyferry.pkcs11().open_rw_session(slot).unwrap();
    let template = |private: bool| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![9; 16]),
            Attribute::Encrypt(true),
            Attribute::Private(private),
        ]
    };
    let key = user.create_object(&template(false)).unwrap();
    let encrypt = |key| user.encrypt(&Mechanism::AesEcb, key, &[0u8; 16]);
    let used = || {
        for _ in 0..3 {
            encrypt(key).unwrap();
        }
    };
    used();
    other
        .update_attributes(key, &[Attribute::Encrypt(false)])
        .unwrap();
    assert_eq!(rv(encrypt(key)), RvError::KeyFunctionNotPermitted);
    other
        .update_attributes(key, &[Attribute::Encrypt(true)])
        .unwrap();
    used();
    other.destroy_object(key).unwrap();
    assert_eq!(rv(encrypt(key)), RvError::KeyHandleInvalid);

    let private = user.create_object(&template(true)).unwrap();
    for _ in 0..3 {
        encrypt(private).unwrap();
    }
    other.logout().unwrap();
    assert_eq!(rv(encrypt(private)), RvError::KeyHandleInvalid);
}
