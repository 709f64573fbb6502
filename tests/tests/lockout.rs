//! PIN lockout: counted in the token file, so it survives a restart; the SO unlocks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::error::RvError;
use cryptoki::session::UserType;
use keyferry_tests::{fresh_token, pin, rv, worker, Module, SO_PIN, USER_PIN};

const WORKER: &str = env!("CARGO_BIN_EXE_kf-worker");

#[test]
fn ten_wrong_pins_lock_the_user_across_restarts_until_the_so_resets_it() {
    let (slot, token) = fresh_token(Module::Keyferry, "lockout");
    let pkcs11 = Module::Keyferry.pkcs11();
    let session = pkcs11.open_rw_session(slot).unwrap();
    for attempt in 1..=10 {
        assert_eq!(
            rv(session.login(UserType::User, Some(&pin("wrong-pin")))),
            RvError::PinIncorrect,
            "attempt {attempt}"
        );
        if attempt == 9 {
            assert!(pkcs11.get_token_info(slot).unwrap().user_pin_final_try());
        }
    }
    assert_eq!(
        rv(session.login(UserType::User, Some(&pin(USER_PIN)))),
        RvError::PinLocked
    );
    assert!(pkcs11.get_token_info(slot).unwrap().user_pin_locked());
    // A new process reads the lock from the token file.
    assert_eq!(worker(WORKER, &["login", &token], &[]).trim(), "PinLocked");
    assert!(worker(WORKER, &["flags", &token], &[]).contains("user_locked=true"));
    session.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    session.init_pin(&pin("fresh-pin-2468")).unwrap();
    session.logout().unwrap();
    assert_eq!(
        worker(
            WORKER,
            &["login", &token],
            &[("KF_TEST_PIN", "fresh-pin-2468")]
        )
        .trim(),
        "CKR_OK"
    );
    assert!(worker(WORKER, &["flags", &token], &[])
        .contains("user_count_low=false user_final_try=false user_locked=false"));
}

#[test]
fn wrong_so_pins_count_too_and_lock_the_so() {
    let (slot, token) = fresh_token(Module::Keyferry, "so-lock");
    let pkcs11 = Module::Keyferry.pkcs11();
    let session = pkcs11.open_rw_session(slot).unwrap();
    assert_eq!(
        rv(session.login(UserType::So, Some(&pin("wrong-so-pin")))),
        RvError::PinIncorrect
    );
    assert!(worker(WORKER, &["flags", &token], &[]).contains("so_count_low=true"));
    session.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    session.logout().unwrap();
    assert!(worker(WORKER, &["flags", &token], &[]).contains("so_count_low=false"));
    for _ in 0..10 {
        assert_eq!(
            rv(session.login(UserType::So, Some(&pin("wrong-so-pin")))),
            RvError::PinIncorrect
        );
    }
    assert_eq!(
        rv(session.login(UserType::So, Some(&pin(SO_PIN)))),
        RvError::PinLocked
    );
    assert!(worker(WORKER, &["flags", &token], &[]).contains("so_locked=true"));
    // C_InitToken checks the SO PIN too, so a locked SO cannot wipe the token.
    drop(session);
    assert_eq!(
        rv(pkcs11.init_token(slot, &pin(SO_PIN), &token)),
        RvError::PinLocked
    );
}

#[test]
fn setting_the_user_pin_keeps_wrong_so_pins_counted_by_another_process() {
    let (slot, token) = fresh_token(Module::Keyferry, "stale");
    let session = Module::Keyferry.pkcs11().open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    // Another process guesses the SO PIN while this one is logged in as the SO.
    assert_eq!(
        worker(WORKER, &["so-login", &token], &[("KF_TEST_PIN", "guess-1")]).trim(),
        "PinIncorrect"
    );
    assert_eq!(
        worker(WORKER, &["so-login", &token], &[("KF_TEST_PIN", "guess-2")]).trim(),
        "PinIncorrect"
    );
    session.init_pin(&pin("another-user-pin")).unwrap();
    // The SO's C_InitPIN wrote only the user PIN: the guesses still count.
    assert!(worker(WORKER, &["flags", &token], &[]).contains("so_count_low=true"));
}
