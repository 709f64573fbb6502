//! Session management (PKCS#11 3.0 §5.6): opening and closing sessions, their states,
//! login and logout (shared by every session of the application), C_InitPIN, C_SetPIN,
//! C_LoginUser and the legacy parallel functions.

use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

fn open_session_raw(slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE, CK_RV> {
    let mut session = UNTOUCHED;
    // SAFETY: `session` is writable; no callback.
    let rv = unsafe {
        (functions().C_OpenSession.unwrap())(slot, flags, null_mut(), None, &mut session)
    };
    if rv == CKR_OK {
        return Ok(session);
    }
    assert_eq!(session, UNTOUCHED, "a failed C_OpenSession wrote a handle");
    Err(rv)
}

fn state(session: CK_SESSION_HANDLE) -> CK_STATE {
    session_info(session).state
}

#[test]
#[serial]
fn open_session_without_serial_flag_is_session_parallel_not_supported() {
    let _fixture = Fixture::new();
    let slot = init_token("serial");
    for flags in [0, CKF_RW_SESSION] {
        assert_eq!(
            open_session_raw(slot, flags),
            Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED)
        );
    }
    assert_eq!(token_info(slot).ulSessionCount, 0);
}

#[test]
#[serial]
fn open_session_with_null_handle_pointer_is_arguments_bad() {
    let _fixture = Fixture::new();
    let slot = init_token("null");
    // SAFETY: the NULL output is refused before anything is written.
    let rv = unsafe {
        (functions().C_OpenSession.unwrap())(slot, CKF_SERIAL_SESSION, null_mut(), None, null_mut())
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(token_info(slot).ulSessionCount, 0);
}

#[test]
#[serial]
fn sessions_get_distinct_handles() {
    let _fixture = Fixture::new();
    let slot = init_token("handles");
    let (a, b) = (open_ro(slot), open_rw(slot));
    assert_ne!(a, b);
    assert_ne!(a, CK_INVALID_HANDLE);
    assert_ne!(b, CK_INVALID_HANDLE);
}

#[test]
#[serial]
fn session_info_reports_public_and_user_states_for_ro_and_rw_sessions() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let (ro, rw) = (open_ro(slot), open_rw(slot));
    let info = session_info(ro);
    assert_eq!(info.slotID, slot);
    assert_eq!(info.flags, CKF_SERIAL_SESSION);
    assert_eq!(info.ulDeviceError, 0);
    assert_eq!(session_info(rw).flags, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    assert_eq!(state(ro), CKS_RO_PUBLIC_SESSION);
    assert_eq!(state(rw), CKS_RW_PUBLIC_SESSION);
    assert_eq!(login(ro, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(state(ro), CKS_RO_USER_FUNCTIONS);
    assert_eq!(state(rw), CKS_RW_USER_FUNCTIONS);
}

#[test]
#[serial]
fn session_info_reports_rw_so_functions_for_the_so() {
    let _fixture = Fixture::new();
    let slot = init_token("so");
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(state(session), CKS_RW_SO_FUNCTIONS);
}

#[test]
#[serial]
fn session_info_with_null_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = open_ro(init_token("null"));
    // SAFETY: the NULL output is refused before anything is written.
    let rv = unsafe { (functions().C_GetSessionInfo.unwrap())(session, null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

/// Calls every function that takes a session handle with `session` and asserts each one
/// says CKR_SESSION_HANDLE_INVALID and writes nothing. `object` is a live object.
fn assert_session_handle_invalid(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) {
    let f = functions();
    const INVALID: CK_RV = CKR_SESSION_HANDLE_INVALID;
    assert_eq!(close_session(session), INVALID);
    let mut info = CK_SESSION_INFO::default();
    // SAFETY: `info` is writable.
    let rv = unsafe { (f.C_GetSessionInfo.unwrap())(session, &mut info) };
    assert_eq!((rv, info.flags), (INVALID, 0));
    assert_eq!(login(session, CKU_USER, USER_PIN), INVALID);
    assert_eq!(logout(session), INVALID);
    assert_eq!(init_pin(session, USER_PIN), INVALID);
    assert_eq!(set_pin(session, USER_PIN, b"other-pin"), INVALID);

    assert_eq!(create(session, &data_object("x")), Err(INVALID));
    let mut copy = UNTOUCHED;
    // SAFETY: an empty template; `copy` is writable.
    let rv = unsafe { (f.C_CopyObject.unwrap())(session, object, null_mut(), 0, &mut copy) };
    assert_eq!((rv, copy), (INVALID, UNTOUCHED));
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_DestroyObject.unwrap())(session, object) };
    assert_eq!(rv, INVALID);
    let mut size = UNTOUCHED;
    // SAFETY: `size` is writable.
    let rv = unsafe { (f.C_GetObjectSize.unwrap())(session, object, &mut size) };
    assert_eq!((rv, size), (INVALID, UNTOUCHED));
    assert_eq!(attribute(session, object, CKA_LABEL), Err(INVALID));
    let relabel = Template::new().bytes(CKA_LABEL, b"y");
    assert_eq!(set_attributes(session, object, &relabel), INVALID);

    // SAFETY: an empty template.
    let rv = unsafe { (f.C_FindObjectsInit.unwrap())(session, null_mut(), 0) };
    assert_eq!(rv, INVALID);
    let mut handles = [UNTOUCHED; 1];
    let mut count = UNTOUCHED;
    // SAFETY: one writable handle and a writable count.
    let rv = unsafe { (f.C_FindObjects.unwrap())(session, handles.as_mut_ptr(), 1, &mut count) };
    assert_eq!((rv, handles, count), (INVALID, [UNTOUCHED], UNTOUCHED));
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_FindObjectsFinal.unwrap())(session) };
    assert_eq!(rv, INVALID);

    let template = Template::new().ulong(CKA_VALUE_LEN, 16);
    assert_eq!(
        generate_key(session, CKM_AES_KEY_GEN, &template),
        Err(INVALID)
    );
    let mut random = [0u8; 8];
    // SAFETY: `random` holds 8 writable bytes.
    let rv = unsafe { (f.C_GenerateRandom.unwrap())(session, random.as_mut_ptr(), 8) };
    assert_eq!((rv, random), (INVALID, [0; 8]));
    let seed = [1u8; 8];
    // SAFETY: `seed` holds 8 readable bytes.
    let rv = unsafe { (f.C_SeedRandom.unwrap())(session, seed.as_ptr().cast_mut(), 8) };
    assert_eq!(rv, INVALID);
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_GetFunctionStatus.unwrap())(session) };
    assert_eq!(rv, INVALID);
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_CancelFunction.unwrap())(session) };
    assert_eq!(rv, INVALID);
    // SAFETY: the PIN is valid for its length; no user name.
    let rv = unsafe {
        (functions_3_0().C_LoginUser.unwrap())(
            session,
            CKU_USER,
            USER_PIN.as_ptr().cast_mut(),
            USER_PIN.len() as CK_ULONG,
            null_mut(),
            0,
        )
    };
    assert_eq!(rv, INVALID);
}

#[test]
#[serial]
fn a_closed_session_handle_is_invalid_for_every_session_function() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let keeper = open_rw(slot);
    let object = create(keeper, &data_object("live")).unwrap();
    let closed = open_rw(slot);
    assert_eq!(close_session(closed), CKR_OK);
    assert_session_handle_invalid(closed, object);
    assert_eq!(attribute(keeper, object, CKA_LABEL), Ok(b"live".to_vec()));
}

#[test]
#[serial]
fn never_issued_session_handles_are_invalid_for_every_session_function() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let keeper = open_rw(slot);
    let object = create(keeper, &data_object("live")).unwrap();
    for session in [CK_INVALID_HANDLE, 0xdead_beef, keeper + 1000] {
        assert_session_handle_invalid(session, object);
    }
}

#[test]
#[serial]
fn login_with_an_unknown_user_type_is_user_type_invalid() {
    let _fixture = Fixture::new();
    let session = open_rw(user_token());
    for user_type in [3, 42, CK_UNAVAILABLE_INFORMATION] {
        assert_eq!(login(session, user_type, USER_PIN), CKR_USER_TYPE_INVALID);
    }
    assert_eq!(state(session), CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn user_login_when_the_user_is_logged_in_is_user_already_logged_in() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let (first, second) = (user_session(slot), open_ro(slot));
    assert_eq!(login(first, CKU_USER, USER_PIN), CKR_USER_ALREADY_LOGGED_IN);
    assert_eq!(
        login(second, CKU_USER, USER_PIN),
        CKR_USER_ALREADY_LOGGED_IN
    );
}

#[test]
#[serial]
fn so_login_when_the_user_is_logged_in_is_user_another_already_logged_in() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    assert_eq!(
        login(session, CKU_SO, SO_PIN),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    );
    assert_eq!(state(session), CKS_RW_USER_FUNCTIONS);
}

#[test]
#[serial]
fn user_login_when_the_so_is_logged_in_is_user_another_already_logged_in() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(
        login(session, CKU_USER, USER_PIN),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    );
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_USER_ALREADY_LOGGED_IN);
}

#[test]
#[serial]
fn so_login_while_a_read_only_session_exists_is_session_read_only_exists() {
    let _fixture = Fixture::new();
    let slot = init_token("so");
    let (ro, rw) = (open_ro(slot), open_rw(slot));
    assert_eq!(login(rw, CKU_SO, SO_PIN), CKR_SESSION_READ_ONLY_EXISTS);
    assert_eq!(login(ro, CKU_SO, SO_PIN), CKR_SESSION_READ_ONLY_EXISTS);
    assert_eq!(close_session(ro), CKR_OK);
    assert_eq!(login(rw, CKU_SO, SO_PIN), CKR_OK);
}

#[test]
#[serial]
fn read_only_session_while_the_so_is_logged_in_is_session_read_write_so_exists() {
    let _fixture = Fixture::new();
    let slot = init_token("so");
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(
        open_session_raw(slot, CKF_SERIAL_SESSION),
        Err(CKR_SESSION_READ_WRITE_SO_EXISTS)
    );
    let another = open_rw(slot);
    assert_eq!(state(another), CKS_RW_SO_FUNCTIONS);
}

#[test]
#[serial]
fn user_login_before_init_pin_is_user_pin_not_initialized() {
    let _fixture = Fixture::new();
    let session = open_rw(init_token("no user"));
    assert_eq!(
        login(session, CKU_USER, USER_PIN),
        CKR_USER_PIN_NOT_INITIALIZED
    );
    assert_eq!(state(session), CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn context_specific_login_with_no_operation_pending_is_operation_not_initialized() {
    let _fixture = Fixture::new();
    let token = user_token();
    let public = open_rw(token);
    assert_eq!(
        login(public, CKU_CONTEXT_SPECIFIC, USER_PIN),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(state(public), CKS_RW_PUBLIC_SESSION);
    let session = user_session(token);
    assert_eq!(
        login(session, CKU_CONTEXT_SPECIFIC, USER_PIN),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(state(session), CKS_RW_USER_FUNCTIONS);
}

#[test]
#[serial]
fn logout_when_nobody_is_logged_in_is_user_not_logged_in() {
    let _fixture = Fixture::new();
    let session = open_rw(user_token());
    assert_eq!(logout(session), CKR_USER_NOT_LOGGED_IN);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(logout(session), CKR_USER_NOT_LOGGED_IN);
}

#[test]
#[serial]
fn login_with_a_wrong_pin_is_pin_incorrect_and_leaves_the_session_public() {
    let _fixture = Fixture::new();
    let session = open_rw(user_token());
    assert_eq!(login(session, CKU_USER, b"not-the-pin"), CKR_PIN_INCORRECT);
    assert_eq!(login(session, CKU_SO, b"not-the-pin"), CKR_PIN_INCORRECT);
    assert_eq!(state(session), CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn login_with_a_null_pin_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = open_rw(user_token());
    // SAFETY: the NULL PIN is refused before anything is read.
    let rv = unsafe { (functions().C_Login.unwrap())(session, CKU_USER, null_mut(), 4) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(state(session), CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn login_state_is_shared_by_every_session_of_the_application() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let (ro, rw) = (open_ro(slot), open_rw(slot));
    assert_eq!(login(rw, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(state(ro), CKS_RO_USER_FUNCTIONS);
    let later = open_ro(slot);
    assert_eq!(state(later), CKS_RO_USER_FUNCTIONS);
    assert_eq!(logout(later), CKR_OK);
    assert_eq!(state(ro), CKS_RO_PUBLIC_SESSION);
    assert_eq!(state(rw), CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn closing_one_of_two_sessions_keeps_the_login() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let (first, second) = (user_session(slot), open_ro(slot));
    assert_eq!(close_session(first), CKR_OK);
    assert_eq!(state(second), CKS_RO_USER_FUNCTIONS);
}

#[test]
#[serial]
fn closing_the_last_session_logs_out() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    assert_eq!(close_session(session), CKR_OK);
    let next = open_rw(slot);
    assert_eq!(state(next), CKS_RW_PUBLIC_SESSION);
    assert_eq!(logout(next), CKR_USER_NOT_LOGGED_IN);
}

#[test]
#[serial]
fn init_pin_without_the_so_logged_in_is_user_not_logged_in() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let public = open_rw(slot);
    assert_eq!(init_pin(public, b"new-user-pin"), CKR_USER_NOT_LOGGED_IN);
    assert_eq!(login(public, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(init_pin(public, b"new-user-pin"), CKR_USER_NOT_LOGGED_IN);
    assert_eq!(logout(public), CKR_OK);
    assert_eq!(login(public, CKU_USER, USER_PIN), CKR_OK);
}

#[test]
#[serial]
fn init_pin_in_a_read_only_session_is_session_read_only() {
    let _fixture = Fixture::new();
    let session = open_ro(init_token("ro"));
    assert_eq!(init_pin(session, USER_PIN), CKR_SESSION_READ_ONLY);
}

#[test]
#[serial]
fn init_pin_with_a_pin_outside_the_length_range_is_pin_len_range() {
    let _fixture = Fixture::new();
    let slot = init_token("lengths");
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(init_pin(session, b"123"), CKR_PIN_LEN_RANGE);
    assert_eq!(init_pin(session, &[b'7'; 256]), CKR_PIN_LEN_RANGE);
    assert_eq!(token_info(slot).flags & CKF_USER_PIN_INITIALIZED, 0);
    assert_eq!(init_pin(session, b"1234"), CKR_OK);
    assert_eq!(init_pin(session, &[b'7'; 255]), CKR_OK);
}

#[test]
#[serial]
fn init_pin_with_a_null_pin_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = open_rw(init_token("null"));
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    // SAFETY: the NULL PIN is refused before anything is read.
    let rv = unsafe { (functions().C_InitPIN.unwrap())(session, null_mut(), 4) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

#[test]
#[serial]
fn set_pin_with_a_wrong_old_pin_is_pin_incorrect() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    assert_eq!(
        set_pin(session, b"not-the-pin", b"new-user-pin"),
        CKR_PIN_INCORRECT
    );
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login(session, CKU_USER, b"new-user-pin"), CKR_PIN_INCORRECT);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
}

#[test]
#[serial]
fn set_pin_in_a_read_only_session_is_session_read_only() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_ro(slot);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
    assert_eq!(
        set_pin(session, USER_PIN, b"new-user-pin"),
        CKR_SESSION_READ_ONLY
    );
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
}

#[test]
#[serial]
fn set_pin_with_a_too_short_new_pin_is_pin_len_range() {
    let _fixture = Fixture::new();
    let session = user_session(user_token());
    assert_eq!(set_pin(session, USER_PIN, b"123"), CKR_PIN_LEN_RANGE);
}

#[test]
#[serial]
fn set_pin_changes_the_user_pin_and_the_new_one_logs_in() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    assert_eq!(set_pin(session, USER_PIN, b"new-user-pin"), CKR_OK);
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_PIN_INCORRECT);
    assert_eq!(login(session, CKU_USER, b"new-user-pin"), CKR_OK);
}

#[test]
#[serial]
fn set_pin_in_a_public_rw_session_changes_the_user_pin() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    assert_eq!(set_pin(session, USER_PIN, b"new-user-pin"), CKR_OK);
    assert_eq!(state(session), CKS_RW_PUBLIC_SESSION);
    assert_eq!(login(session, CKU_USER, b"new-user-pin"), CKR_OK);
}

#[test]
#[serial]
fn set_pin_as_the_so_changes_the_so_pin() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_eq!(set_pin(session, SO_PIN, b"new-so-pin"), CKR_OK);
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login(session, CKU_SO, SO_PIN), CKR_PIN_INCORRECT);
    assert_eq!(login(session, CKU_SO, b"new-so-pin"), CKR_OK);
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);
}

fn login_user(
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: &[u8],
    name: Option<&[u8]>,
) -> CK_RV {
    let (name_ptr, name_len) = name.map_or((null_mut(), 0), |name| {
        (name.as_ptr().cast_mut(), name.len() as CK_ULONG)
    });
    // SAFETY: the PIN and the name are NULL or valid for their lengths.
    unsafe {
        (functions_3_0().C_LoginUser.unwrap())(
            session,
            user_type,
            pin.as_ptr().cast_mut(),
            pin.len() as CK_ULONG,
            name_ptr,
            name_len,
        )
    }
}

#[test]
#[serial]
fn login_user_logs_in_like_login() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let session = open_rw(slot);
    assert_eq!(
        login_user(session, CKU_USER, b"not-the-pin", Some(b"alice")),
        CKR_PIN_INCORRECT
    );
    assert_eq!(
        login_user(session, CKU_USER, USER_PIN, Some(b"alice")),
        CKR_OK
    );
    assert_eq!(state(session), CKS_RW_USER_FUNCTIONS);
    assert_eq!(
        login_user(session, CKU_USER, USER_PIN, None),
        CKR_USER_ALREADY_LOGGED_IN
    );
    assert_eq!(logout(session), CKR_OK);
    assert_eq!(login_user(session, CKU_SO, SO_PIN, None), CKR_OK);
    assert_eq!(state(session), CKS_RW_SO_FUNCTIONS);
    assert_eq!(login_user(session, 9, SO_PIN, None), CKR_USER_TYPE_INVALID);
}

#[test]
#[serial]
fn login_user_with_a_null_name_and_a_length_is_arguments_bad() {
    let _fixture = Fixture::new();
    let session = open_rw(user_token());
    // SAFETY: the PIN is valid for its length; the NULL name with a length is refused.
    let rv = unsafe {
        (functions_3_0().C_LoginUser.unwrap())(
            session,
            CKU_USER,
            USER_PIN.as_ptr().cast_mut(),
            USER_PIN.len() as CK_ULONG,
            null_mut(),
            5,
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(state(session), CKS_RW_PUBLIC_SESSION);
}

#[test]
#[serial]
fn get_function_status_and_cancel_function_are_function_not_parallel() {
    let _fixture = Fixture::new();
    let session = open_ro(init_token("legacy"));
    // SAFETY: takes no pointers.
    let rv = unsafe { (functions().C_GetFunctionStatus.unwrap())(session) };
    assert_eq!(rv, CKR_FUNCTION_NOT_PARALLEL);
    // SAFETY: takes no pointers.
    let rv = unsafe { (functions().C_CancelFunction.unwrap())(session) };
    assert_eq!(rv, CKR_FUNCTION_NOT_PARALLEL);
}
