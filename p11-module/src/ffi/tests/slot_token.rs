//! Slot and token management (PKCS#11 3.0 §5.5): slot lists, slot and token info,
//! mechanisms, C_InitToken, PIN counters and flags, C_WaitForSlotEvent.

use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

const SLOT_INVALID: CK_SLOT_ID = 7;

fn init_token_raw(slot: CK_SLOT_ID, pin: &[u8], label: &str) -> CK_RV {
    let label = label32(label);
    // SAFETY: the PIN is valid for its length and the label for 32 bytes.
    unsafe {
        (functions().C_InitToken.unwrap())(
            slot,
            pin.as_ptr().cast_mut(),
            pin.len() as CK_ULONG,
            label.as_ptr().cast_mut(),
        )
    }
}

fn mechanism_list(slot: CK_SLOT_ID) -> Vec<CK_MECHANISM_TYPE> {
    let get = functions().C_GetMechanismList.unwrap();
    let mut count: CK_ULONG = 0;
    // SAFETY: NULL list asks for the count; `count` is writable.
    assert_eq!(unsafe { get(slot, null_mut(), &mut count) }, CKR_OK);
    let mut list = vec![UNTOUCHED; count as usize];
    // SAFETY: `list` holds `count` writable entries.
    assert_eq!(unsafe { get(slot, list.as_mut_ptr(), &mut count) }, CKR_OK);
    list
}

fn mechanism_info(
    slot: CK_SLOT_ID,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<CK_MECHANISM_INFO, CK_RV> {
    let mut info = CK_MECHANISM_INFO {
        ulMinKeySize: UNTOUCHED,
        ulMaxKeySize: UNTOUCHED,
        flags: UNTOUCHED,
    };
    // SAFETY: `info` is a writable CK_MECHANISM_INFO.
    let rv = unsafe { (functions().C_GetMechanismInfo.unwrap())(slot, mechanism, &mut info) };
    if rv == CKR_OK {
        return Ok(info);
    }
    assert_eq!(
        (info.ulMinKeySize, info.ulMaxKeySize, info.flags),
        (UNTOUCHED, UNTOUCHED, UNTOUCHED)
    );
    Err(rv)
}

#[test]
#[serial]
fn slot_list_length_query_counts_the_spare_slot() {
    let _fixture = Fixture::new();
    let mut count = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { (functions().C_GetSlotList.unwrap())(CK_FALSE, null_mut(), &mut count) };
    assert_eq!((rv, count), (CKR_OK, 1));
}

#[test]
#[serial]
fn slot_list_short_buffer_is_buffer_too_small_with_the_count_and_the_buffer_untouched() {
    let _fixture = Fixture::new();
    init_token("one");
    for capacity in [0, 1] {
        let mut slots = [UNTOUCHED; 1];
        let mut count: CK_ULONG = capacity;
        // SAFETY: `slots` holds at least `count` writable slot IDs.
        let rv = unsafe {
            (functions().C_GetSlotList.unwrap())(CK_FALSE, slots.as_mut_ptr(), &mut count)
        };
        assert_eq!(
            (rv, count),
            (CKR_BUFFER_TOO_SMALL, 2),
            "capacity {capacity}"
        );
        assert_eq!(slots, [UNTOUCHED]);
    }
}

#[test]
#[serial]
fn slot_list_with_token_present_true_or_false_lists_every_slot() {
    let _fixture = Fixture::new();
    init_token("one");
    for present in [CK_TRUE, CK_FALSE] {
        let mut slots = [UNTOUCHED; 3];
        let mut count: CK_ULONG = 3;
        // SAFETY: `slots` holds `count` writable slot IDs.
        let rv = unsafe {
            (functions().C_GetSlotList.unwrap())(present, slots.as_mut_ptr(), &mut count)
        };
        assert_eq!((rv, count), (CKR_OK, 2), "tokenPresent {present}");
        assert_eq!(slots, [0, 1, UNTOUCHED], "tokenPresent {present}");
    }
}

#[test]
#[serial]
fn slot_list_with_null_count_is_arguments_bad() {
    let _fixture = Fixture::new();
    let mut slots = [UNTOUCHED; 2];
    for list in [null_mut(), slots.as_mut_ptr()] {
        // SAFETY: the NULL count is refused before anything is written.
        let rv = unsafe { (functions().C_GetSlotList.unwrap())(CK_TRUE, list, null_mut()) };
        assert_eq!(rv, CKR_ARGUMENTS_BAD);
    }
    assert_eq!(slots, [UNTOUCHED; 2]);
}

#[test]
#[serial]
fn invalid_slot_id_is_slot_id_invalid_for_every_slot_function() {
    let _fixture = Fixture::new();
    let f = functions();
    for slot in [1, SLOT_INVALID, CK_UNAVAILABLE_INFORMATION] {
        let mut slot_info = CK_SLOT_INFO::default();
        // SAFETY: `slot_info` is writable.
        let rv = unsafe { (f.C_GetSlotInfo.unwrap())(slot, &mut slot_info) };
        assert_eq!(rv, CKR_SLOT_ID_INVALID);
        assert_eq!(slot_info.flags, 0);

        let mut token = CK_TOKEN_INFO::default();
        // SAFETY: `token` is writable.
        let rv = unsafe { (f.C_GetTokenInfo.unwrap())(slot, &mut token) };
        assert_eq!(rv, CKR_SLOT_ID_INVALID);
        assert_eq!(token.flags, 0);

        let mut count = UNTOUCHED;
        // SAFETY: NULL list with a writable count.
        let rv = unsafe { (f.C_GetMechanismList.unwrap())(slot, null_mut(), &mut count) };
        assert_eq!((rv, count), (CKR_SLOT_ID_INVALID, UNTOUCHED));

        assert_eq!(
            mechanism_info(slot, CKM_AES_KEY_GEN).err(),
            Some(CKR_SLOT_ID_INVALID)
        );
        assert_eq!(init_token_raw(slot, SO_PIN, "nowhere"), CKR_SLOT_ID_INVALID);

        let mut session = UNTOUCHED;
        // SAFETY: `session` is writable; no callback.
        let rv = unsafe {
            (f.C_OpenSession.unwrap())(slot, CKF_SERIAL_SESSION, null_mut(), None, &mut session)
        };
        assert_eq!((rv, session), (CKR_SLOT_ID_INVALID, UNTOUCHED));

        // SAFETY: takes no pointers.
        let rv = unsafe { (f.C_CloseAllSessions.unwrap())(slot) };
        assert_eq!(rv, CKR_SLOT_ID_INVALID);
    }
    assert_eq!(slot_list(), vec![0], "a token appeared in an invalid slot");
}

#[test]
#[serial]
fn spare_slot_holds_a_token_that_is_not_initialised() {
    let _fixture = Fixture::new();
    let mut slot_info = CK_SLOT_INFO::default();
    // SAFETY: `slot_info` is writable.
    let rv = unsafe { (functions().C_GetSlotInfo.unwrap())(0, &mut slot_info) };
    assert_eq!(rv, CKR_OK);
    assert_eq!(slot_info.flags, CKF_TOKEN_PRESENT);
    let flags = token_info(0).flags;
    assert_eq!(flags & CKF_TOKEN_INITIALIZED, 0);
    assert_eq!(flags & CKF_USER_PIN_INITIALIZED, 0);
}

#[test]
#[serial]
fn init_token_turns_the_spare_into_a_token_and_offers_a_new_spare() {
    let _fixture = Fixture::new();
    assert_eq!(slot_list(), vec![0]);
    assert_eq!(init_token("first"), 0);
    assert_eq!(slot_list(), vec![0, 1]);
    let info = token_info(0);
    assert_eq!(info.label, label32("first"));
    assert_eq!(info.flags & CKF_TOKEN_INITIALIZED, CKF_TOKEN_INITIALIZED);
    assert_eq!(info.flags & CKF_USER_PIN_INITIALIZED, 0);
    assert!(info.serialNumber.iter().all(u8::is_ascii_hexdigit));
    assert_eq!(token_info(1).flags & CKF_TOKEN_INITIALIZED, 0);
    assert_eq!(init_token("second"), 1);
    assert_eq!(slot_list(), vec![0, 1, 2]);
    assert_ne!(token_info(1).serialNumber, info.serialNumber);
}

#[test]
#[serial]
fn tokens_keep_their_slots_labels_and_objects_across_restart() {
    let fixture = Fixture::new();
    init_token("first");
    let slot = init_token("second");
    let session = open_rw(slot);
    create(session, &data_object("kept").bool(CKA_TOKEN, true)).unwrap();
    fixture.restart();
    assert_eq!(slot_list(), vec![0, 1, 2]);
    assert_eq!(token_info(0).label, label32("first"));
    assert_eq!(token_info(1).label, label32("second"));
    let session = open_ro(slot);
    let found = find(session, &Template::new().bytes(CKA_LABEL, b"kept"));
    assert_eq!(found.len(), 1);
}

#[test]
#[serial]
fn open_session_on_the_spare_slot_is_token_not_recognized() {
    let _fixture = Fixture::new();
    let mut session = UNTOUCHED;
    // SAFETY: `session` is writable; no callback.
    let rv = unsafe {
        (functions().C_OpenSession.unwrap())(
            0,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut session,
        )
    };
    assert_eq!((rv, session), (CKR_TOKEN_NOT_RECOGNIZED, UNTOUCHED));
}

#[test]
#[serial]
fn init_token_with_null_pin_or_label_is_arguments_bad_and_makes_no_token() {
    let _fixture = Fixture::new();
    let label = label32("null");
    // SAFETY: the NULL PIN is refused before anything is read.
    let rv =
        unsafe { (functions().C_InitToken.unwrap())(0, null_mut(), 8, label.as_ptr().cast_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: the PIN is valid for its length; the NULL label is refused.
    let rv = unsafe {
        (functions().C_InitToken.unwrap())(
            0,
            SO_PIN.as_ptr().cast_mut(),
            SO_PIN.len() as CK_ULONG,
            null_mut(),
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(slot_list(), vec![0]);
}

#[test]
#[serial]
fn init_token_with_an_so_pin_shorter_than_min_pin_len_is_pin_incorrect() {
    // PKCS#11 3.0 lists no CKR_PIN_LEN_RANGE for C_InitToken.
    let _fixture = Fixture::new();
    assert_eq!(init_token_raw(0, b"123", "short"), CKR_PIN_INCORRECT);
    assert_eq!(slot_list(), vec![0]);
}

#[test]
#[serial]
fn init_token_with_a_session_open_is_session_exists() {
    let _fixture = Fixture::new();
    let slot = init_token("busy");
    let session = open_ro(slot);
    assert_eq!(init_token_raw(slot, SO_PIN, "again"), CKR_SESSION_EXISTS);
    assert_eq!(token_info(slot).label, label32("busy"));
    assert_eq!(close_session(session), CKR_OK);
    assert_eq!(init_token_raw(slot, SO_PIN, "again"), CKR_OK);
    assert_eq!(token_info(slot).label, label32("again"));
}

#[test]
#[serial]
fn reinit_with_a_wrong_so_pin_is_pin_incorrect_and_sets_so_pin_count_low() {
    let _fixture = Fixture::new();
    let slot = init_token("guarded");
    assert_eq!(token_info(slot).flags & CKF_SO_PIN_COUNT_LOW, 0);
    assert_eq!(
        init_token_raw(slot, b"wrong-so-pin", "taken"),
        CKR_PIN_INCORRECT
    );
    let info = token_info(slot);
    assert_eq!(info.label, label32("guarded"));
    assert_eq!(info.flags & CKF_SO_PIN_COUNT_LOW, CKF_SO_PIN_COUNT_LOW);
    assert_eq!(info.flags & (CKF_SO_PIN_FINAL_TRY | CKF_SO_PIN_LOCKED), 0);
    assert_eq!(init_token_raw(slot, SO_PIN, "fresh"), CKR_OK);
    assert_eq!(token_info(slot).flags & CKF_SO_PIN_COUNT_LOW, 0);
}

#[test]
#[serial]
fn reinit_with_the_right_so_pin_destroys_every_object_and_the_user_pin() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    create(session, &data_object("public").bool(CKA_TOKEN, true)).unwrap();
    let private = data_object("private")
        .bool(CKA_TOKEN, true)
        .bool(CKA_PRIVATE, true);
    create(session, &private).unwrap();
    assert_eq!(find(session, &Template::new()).len(), 2);
    assert_eq!(close_session(session), CKR_OK);

    assert_eq!(init_token_raw(slot, SO_PIN, "fresh"), CKR_OK);
    let info = token_info(slot);
    assert_eq!(info.label, label32("fresh"));
    assert_eq!(info.flags & CKF_USER_PIN_INITIALIZED, 0);
    assert_eq!(slot_list(), vec![0, 1]);
    let session = open_rw(slot);
    assert_eq!(
        login(session, CKU_USER, USER_PIN),
        CKR_USER_PIN_NOT_INITIALIZED
    );
    assert_eq!(
        find(session, &Template::new()),
        Vec::<CK_OBJECT_HANDLE>::new()
    );
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(
        find(session, &Template::new()),
        Vec::<CK_OBJECT_HANDLE>::new()
    );
}

#[test]
#[serial]
fn mechanism_list_length_query_short_buffer_and_contents() {
    let _fixture = Fixture::new();
    let get = functions().C_GetMechanismList.unwrap();
    let mut count = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { get(0, null_mut(), &mut count) };
    assert_eq!(rv, CKR_OK);
    let list = mechanism_list(0);
    assert_eq!(count as usize, list.len());
    let mut short = [UNTOUCHED; 1];
    let mut count: CK_ULONG = 1;
    // SAFETY: `short` holds `count` writable entries.
    let rv = unsafe { get(0, short.as_mut_ptr(), &mut count) };
    assert_eq!((rv, count as usize), (CKR_BUFFER_TOO_SMALL, list.len()));
    assert_eq!(short, [UNTOUCHED]);
    for expected in [
        CKM_AES_KEY_GEN,
        CKM_GENERIC_SECRET_KEY_GEN,
        CKM_AES_GCM,
        CKM_SHA256,
        CKM_SHA256_HMAC,
    ] {
        assert!(list.contains(&expected), "0x{expected:x} missing");
    }
    let slot = init_token("mechanisms");
    assert_eq!(mechanism_list(slot), list);
}

#[test]
#[serial]
fn mechanism_list_with_null_count_is_arguments_bad() {
    let _fixture = Fixture::new();
    // SAFETY: the NULL count is refused before anything is written.
    let rv = unsafe { (functions().C_GetMechanismList.unwrap())(0, null_mut(), null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

#[test]
#[serial]
fn mechanism_info_gives_key_sizes_and_the_generate_flag() {
    let _fixture = Fixture::new();
    let aes = mechanism_info(0, CKM_AES_KEY_GEN).unwrap();
    assert_eq!(
        (aes.ulMinKeySize, aes.ulMaxKeySize, aes.flags),
        (16, 32, CKF_GENERATE)
    );
    // Generic secret key generation gives its key sizes in bits, not bytes.
    let generic = mechanism_info(0, CKM_GENERIC_SECRET_KEY_GEN).unwrap();
    assert_eq!(
        (generic.ulMinKeySize, generic.ulMaxKeySize, generic.flags),
        (8, 4096, CKF_GENERATE)
    );
}

#[test]
#[serial]
fn mechanism_info_of_an_unknown_mechanism_is_mechanism_invalid() {
    let _fixture = Fixture::new();
    let slot = init_token("mechanisms");
    for mechanism in [
        CKM_DES_KEY_GEN,
        CKM_VENDOR_DEFINED,
        CK_UNAVAILABLE_INFORMATION,
    ] {
        assert_eq!(
            mechanism_info(slot, mechanism).err(),
            Some(CKR_MECHANISM_INVALID)
        );
    }
}

#[test]
#[serial]
fn mechanism_info_with_null_is_arguments_bad() {
    let _fixture = Fixture::new();
    // SAFETY: the NULL output is refused before anything is written.
    let rv = unsafe { (functions().C_GetMechanismInfo.unwrap())(0, CKM_AES_KEY_GEN, null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

#[test]
#[serial]
fn token_info_says_login_required_and_rng_and_counts_sessions() {
    let _fixture = Fixture::new();
    let slot = init_token("counted");
    let info = token_info(slot);
    assert_eq!(info.flags & CKF_LOGIN_REQUIRED, CKF_LOGIN_REQUIRED);
    assert_eq!(info.flags & CKF_RNG, CKF_RNG);
    assert_eq!((info.ulSessionCount, info.ulRwSessionCount), (0, 0));
    assert_eq!((info.ulMinPinLen, info.ulMaxPinLen), (4, 255));
    open_ro(slot);
    open_rw(slot);
    open_ro(slot);
    let info = token_info(slot);
    assert_eq!((info.ulSessionCount, info.ulRwSessionCount), (3, 1));
}

#[test]
#[serial]
fn token_info_with_null_is_arguments_bad() {
    let _fixture = Fixture::new();
    // SAFETY: the NULL output is refused before anything is written.
    let rv = unsafe { (functions().C_GetTokenInfo.unwrap())(0, null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: as above.
    let rv = unsafe { (functions().C_GetSlotInfo.unwrap())(0, null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

#[test]
#[serial]
fn user_pin_initialized_is_set_only_by_init_pin() {
    let _fixture = Fixture::new();
    let slot = init_token("user");
    assert_eq!(token_info(slot).flags & CKF_USER_PIN_INITIALIZED, 0);
    init_user_pin(slot);
    assert_eq!(
        token_info(slot).flags & CKF_USER_PIN_INITIALIZED,
        CKF_USER_PIN_INITIALIZED
    );
}

const USER_PIN_FLAGS: CK_FLAGS =
    CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;

fn user_pin_flags(slot: CK_SLOT_ID) -> CK_FLAGS {
    token_info(slot).flags & USER_PIN_FLAGS
}

/// Log in as the user with a wrong PIN `times` times, each CKR_PIN_INCORRECT.
fn wrong_user_pins(session: CK_SESSION_HANDLE, times: usize) {
    for _ in 0..times {
        assert_eq!(login(session, CKU_USER, b"wrong-pin"), CKR_PIN_INCORRECT);
    }
}

#[test]
#[serial]
fn wrong_user_pins_set_count_low_then_final_try_then_locked() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    assert_eq!(user_pin_flags(slot), 0);
    wrong_user_pins(session, 1);
    assert_eq!(user_pin_flags(slot), CKF_USER_PIN_COUNT_LOW);
    wrong_user_pins(session, 7);
    assert_eq!(user_pin_flags(slot), CKF_USER_PIN_COUNT_LOW);
    wrong_user_pins(session, 1);
    assert_eq!(
        user_pin_flags(slot),
        CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY
    );
    wrong_user_pins(session, 1);
    assert_eq!(
        user_pin_flags(slot),
        CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED
    );
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_PIN_LOCKED);
    assert_eq!(login(session, CKU_USER, b"wrong-pin"), CKR_PIN_LOCKED);
    assert_eq!(session_info(session).state, CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn a_locked_user_pin_stays_locked_across_restart() {
    let fixture = Fixture::new();
    let slot = user_token();
    wrong_user_pins(open_rw(slot), 10);
    fixture.restart();
    assert_eq!(
        user_pin_flags(slot) & CKF_USER_PIN_LOCKED,
        CKF_USER_PIN_LOCKED
    );
    assert_eq!(login(open_rw(slot), CKU_USER, USER_PIN), CKR_PIN_LOCKED);
}

#[test]
#[serial]
fn so_init_pin_unlocks_a_locked_user_pin() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    wrong_user_pins(session, 10);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(init_pin(session, b"new-user-pin"), CKR_OK);
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(user_pin_flags(slot), 0);
    assert_eq!(login(session, CKU_USER, b"new-user-pin"), CKR_OK);
}

#[test]
#[serial]
fn a_right_user_pin_clears_count_low() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    wrong_user_pins(session, 3);
    assert_eq!(user_pin_flags(slot), CKF_USER_PIN_COUNT_LOW);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(user_pin_flags(slot), 0);
}

#[test]
#[serial]
fn wait_for_slot_event_without_blocking_is_no_event() {
    let _fixture = Fixture::new();
    let mut slot = UNTOUCHED;
    // SAFETY: `slot` is writable; pReserved is NULL.
    let rv =
        unsafe { (functions().C_WaitForSlotEvent.unwrap())(CKF_DONT_BLOCK, &mut slot, null_mut()) };
    assert_eq!((rv, slot), (CKR_NO_EVENT, UNTOUCHED));
}

#[test]
#[serial]
fn wait_for_slot_event_with_reserved_pointer_is_arguments_bad() {
    let _fixture = Fixture::new();
    let mut slot = UNTOUCHED;
    let mut reserved = 0u8;
    // SAFETY: `slot` is writable; the non-NULL pReserved is refused, never read.
    let rv = unsafe {
        (functions().C_WaitForSlotEvent.unwrap())(
            CKF_DONT_BLOCK,
            &mut slot,
            (&raw mut reserved).cast(),
        )
    };
    assert_eq!((rv, slot), (CKR_ARGUMENTS_BAD, UNTOUCHED));
}

#[test]
#[serial]
fn close_all_sessions_closes_only_that_slots_sessions_and_logs_it_out() {
    let _fixture = Fixture::new();
    let first = user_token();
    let second = init_token("other");
    let (a, b) = (user_session(first), open_ro(first));
    let other = open_ro(second);
    // SAFETY: takes no pointers.
    let rv = unsafe { (functions().C_CloseAllSessions.unwrap())(first) };
    assert_eq!(rv, CKR_OK);
    assert_eq!(close_session(a), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(close_session(b), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(session_info(other).state, CKS_RO_PUBLIC_SESSION);
    assert_eq!(token_info(first).ulSessionCount, 0);
    assert_eq!(session_info(open_ro(first)).state, CKS_RO_PUBLIC_SESSION);
}

#[test]
#[serial]
fn close_all_sessions_on_the_spare_slot_has_nothing_to_close() {
    let _fixture = Fixture::new();
    // SAFETY: takes no pointers.
    let rv = unsafe { (functions().C_CloseAllSessions.unwrap())(0) };
    assert_eq!(rv, CKR_OK);
}

#[test]
#[serial]
fn wrong_so_pins_lock_the_so_pin_and_then_init_token_is_pin_locked() {
    let _fixture = Fixture::new();
    let slot = init_token("so lockout");
    let session = open_rw(slot);
    let so_flags = || {
        token_info(slot).flags & (CKF_SO_PIN_COUNT_LOW | CKF_SO_PIN_FINAL_TRY | CKF_SO_PIN_LOCKED)
    };
    for _ in 0..9 {
        assert_eq!(login(session, CKU_SO, b"wrong-so-pin"), CKR_PIN_INCORRECT);
    }
    assert_eq!(so_flags() & CKF_SO_PIN_FINAL_TRY, CKF_SO_PIN_FINAL_TRY);
    assert_eq!(login(session, CKU_SO, b"wrong-so-pin"), CKR_PIN_INCORRECT);
    assert_eq!(so_flags(), CKF_SO_PIN_COUNT_LOW | CKF_SO_PIN_LOCKED);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_PIN_LOCKED);
    assert_eq!(close_session(session), CKR_OK);
    assert_eq!(init_token_raw(slot, SO_PIN, "taken over"), CKR_PIN_LOCKED);
    assert_eq!(token_info(slot).label, label32("so lockout"));
}

#[test]
#[serial]
fn init_token_with_a_label_that_is_not_utf8_is_arguments_bad() {
    let _fixture = Fixture::new();
    let mut label = label32("");
    label[0] = 0xff;
    // SAFETY: the PIN is valid for its length and the label for 32 bytes.
    let rv = unsafe {
        (functions().C_InitToken.unwrap())(
            0,
            SO_PIN.as_ptr().cast_mut(),
            SO_PIN.len() as CK_ULONG,
            label.as_mut_ptr(),
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(slot_list(), vec![0]);
}
