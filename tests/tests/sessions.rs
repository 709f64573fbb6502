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
