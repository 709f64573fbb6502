//! General-purpose functions (PKCS#11 3.0 §5.4): C_Initialize and its arguments,
//! C_Finalize, C_GetInfo, the function lists and the interfaces.

use std::ptr::null_mut;

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

/// Calls every kind of function (general, slot, session, object, key, not supported,
/// 3.0-only) and asserts each one says CKR_CRYPTOKI_NOT_INITIALIZED and writes nothing.
fn assert_every_kind_is_not_initialized(slot: CK_SLOT_ID, session: CK_SESSION_HANDLE) {
    let f = functions();
    let f3 = functions_3_0();
    let pin = USER_PIN.as_ptr().cast_mut();
    let pin_len = USER_PIN.len() as CK_ULONG;

    let mut info = CK_INFO::default();
    // SAFETY: `info` is a writable CK_INFO.
    let rv = unsafe { (f.C_GetInfo.unwrap())(&mut info) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(info.manufacturerID, [0; 32]);

    let mut count = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { (f.C_GetSlotList.unwrap())(CK_TRUE, null_mut(), &mut count) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(count, UNTOUCHED);

    let mut slot_info = CK_SLOT_INFO::default();
    // SAFETY: `slot_info` is writable.
    let rv = unsafe { (f.C_GetSlotInfo.unwrap())(slot, &mut slot_info) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    let mut token = CK_TOKEN_INFO::default();
    // SAFETY: `token` is writable.
    let rv = unsafe { (f.C_GetTokenInfo.unwrap())(slot, &mut token) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(token.flags, 0);

    let mut count = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { (f.C_GetMechanismList.unwrap())(slot, null_mut(), &mut count) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(count, UNTOUCHED);

    let label = label32("never");
    // SAFETY: PIN valid for its length, label for 32 bytes.
    let rv = unsafe { (f.C_InitToken.unwrap())(slot, pin, pin_len, label.as_ptr().cast_mut()) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    let mut opened = UNTOUCHED;
    // SAFETY: `opened` is writable; no callback.
    let rv = unsafe {
        (f.C_OpenSession.unwrap())(slot, CKF_SERIAL_SESSION, null_mut(), None, &mut opened)
    };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(opened, UNTOUCHED);

    assert_eq!(close_session(session), CKR_CRYPTOKI_NOT_INITIALIZED);
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_CloseAllSessions.unwrap())(slot) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    let mut session_info = CK_SESSION_INFO::default();
    // SAFETY: `session_info` is writable.
    let rv = unsafe { (f.C_GetSessionInfo.unwrap())(session, &mut session_info) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    assert_eq!(
        login(session, CKU_USER, USER_PIN),
        CKR_CRYPTOKI_NOT_INITIALIZED
    );
    assert_eq!(logout(session), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(init_pin(session, USER_PIN), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(
        set_pin(session, USER_PIN, SO_PIN),
        CKR_CRYPTOKI_NOT_INITIALIZED
    );

    assert_eq!(
        create(session, &data_object("never")),
        Err(CKR_CRYPTOKI_NOT_INITIALIZED)
    );
    // SAFETY: an empty template.
    let rv = unsafe { (f.C_FindObjectsInit.unwrap())(session, null_mut(), 0) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    let mut handles = [UNTOUCHED; 2];
    let mut found = UNTOUCHED;
    // SAFETY: two writable handles and a writable count.
    let rv = unsafe { (f.C_FindObjects.unwrap())(session, handles.as_mut_ptr(), 2, &mut found) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!((handles, found), ([UNTOUCHED; 2], UNTOUCHED));
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_FindObjectsFinal.unwrap())(session) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(
        attribute(session, 1, CKA_LABEL),
        Err(CKR_CRYPTOKI_NOT_INITIALIZED)
    );

    let template = Template::new().ulong(CKA_VALUE_LEN, 16);
    assert_eq!(
        generate_key(session, CKM_AES_KEY_GEN, &template),
        Err(CKR_CRYPTOKI_NOT_INITIALIZED)
    );
    let mut random = [0u8; 16];
    // SAFETY: `random` holds 16 writable bytes.
    let rv = unsafe { (f.C_GenerateRandom.unwrap())(session, random.as_mut_ptr(), 16) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(random, [0; 16]);
    // SAFETY: a NULL seed of length 0.
    let rv = unsafe { (f.C_SeedRandom.unwrap())(session, null_mut(), 0) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    // SAFETY: the module does not read the mechanism of a function it lacks.
    let rv = unsafe { (f.C_EncryptInit.unwrap())(session, null_mut(), 1) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    // SAFETY: takes no pointers.
    let rv = unsafe { (f.C_GetFunctionStatus.unwrap())(session) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    let mut event_slot = UNTOUCHED;
    // SAFETY: `event_slot` is writable; pReserved is NULL.
    let rv =
        unsafe { (f.C_WaitForSlotEvent.unwrap())(CKF_DONT_BLOCK, &mut event_slot, null_mut()) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(event_slot, UNTOUCHED);

    // SAFETY: PIN valid for its length, no user name.
    let rv = unsafe { (f3.C_LoginUser.unwrap())(session, CKU_USER, pin, pin_len, null_mut(), 0) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    // SAFETY: takes no pointers.
    let rv = unsafe { (f3.C_SessionCancel.unwrap())(session, 0) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    // SAFETY: the module does not read the mechanism of a function it lacks.
    let rv = unsafe { (f3.C_MessageEncryptInit.unwrap())(session, null_mut(), 1) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);

    assert_eq!(finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
}

#[test]
#[serial]
fn every_function_before_initialize_is_cryptoki_not_initialized() {
    let _fixture = Fixture::configured(CONFIG);
    assert_every_kind_is_not_initialized(0, 1);
}

#[test]
#[serial]
fn every_function_after_finalize_is_cryptoki_not_initialized() {
    let _fixture = Fixture::new();
    let slot = init_token("finalized");
    let session = open_rw(slot);
    assert_eq!(finalize(), CKR_OK);
    assert_every_kind_is_not_initialized(slot, session);
}

#[test]
#[serial]
fn function_lists_and_interfaces_work_before_initialize() {
    let _fixture = Fixture::configured(CONFIG);
    assert_eq!(functions().version.major, 2);
    assert_eq!(functions_3_0().version.major, 3);
    let mut count = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { crate::ffi::C_GetInterfaceList(null_mut(), &mut count) };
    assert_eq!((rv, count), (CKR_OK, 2));
}

#[test]
#[serial]
fn initialize_twice_is_already_initialized_and_keeps_the_module() {
    let _fixture = Fixture::new();
    let slot = init_token("kept");
    assert_eq!(initialize(), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    assert_eq!(token_info(slot).label, label32("kept"));
}

#[test]
#[serial]
fn finalize_with_reserved_pointer_is_arguments_bad_and_keeps_the_module() {
    let _fixture = Fixture::new();
    let mut reserved = 0u8;
    // SAFETY: pReserved must be NULL; the module only checks whether it is.
    let rv = unsafe { (functions().C_Finalize.unwrap())((&raw mut reserved).cast()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert_eq!(slot_list(), vec![0]);
}

#[test]
#[serial]
fn finalize_twice_is_not_initialized() {
    let _fixture = Fixture::new();
    assert_eq!(finalize(), CKR_OK);
    assert_eq!(finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
}

#[test]
#[serial]
fn finalize_closes_sessions_so_old_handles_are_invalid_after_restart() {
    let fixture = Fixture::new();
    let slot = init_token("restart");
    let session = open_rw(slot);
    fixture.restart();
    assert_eq!(close_session(session), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(token_info(slot).ulSessionCount, 0);
}

extern "C" fn create_mutex(_mutex: CK_VOID_PTR_PTR) -> CK_RV {
    CKR_GENERAL_ERROR
}

extern "C" fn use_mutex(_mutex: CK_VOID_PTR) -> CK_RV {
    CKR_GENERAL_ERROR
}

/// CK_C_INITIALIZE_ARGS with the mutex functions named by bits 0..4 (create, destroy,
/// lock, unlock).
fn init_args(mutex_functions: u8, flags: CK_FLAGS) -> CK_C_INITIALIZE_ARGS {
    let has = |bit: u8| mutex_functions & (1 << bit) != 0;
    CK_C_INITIALIZE_ARGS {
        CreateMutex: has(0).then_some(create_mutex as _),
        DestroyMutex: has(1).then_some(use_mutex as _),
        LockMutex: has(2).then_some(use_mutex as _),
        UnlockMutex: has(3).then_some(use_mutex as _),
        flags,
        pReserved: null_mut(),
    }
}

const ALL_MUTEX_FUNCTIONS: u8 = 0b1111;

fn initialize_with(args: &mut CK_C_INITIALIZE_ARGS) -> CK_RV {
    // SAFETY: `args` is a valid CK_C_INITIALIZE_ARGS.
    unsafe { (functions().C_Initialize.unwrap())((args as *mut CK_C_INITIALIZE_ARGS).cast()) }
}

/// Whether the module answers as initialised (C_GetInfo succeeds).
fn is_initialized() -> bool {
    let mut info = CK_INFO::default();
    // SAFETY: `info` is a writable CK_INFO.
    match unsafe { (functions().C_GetInfo.unwrap())(&mut info) } {
        CKR_OK => true,
        CKR_CRYPTOKI_NOT_INITIALIZED => false,
        other => panic!("C_GetInfo returned 0x{other:x}"),
    }
}

#[test]
#[serial]
fn initialize_args_with_reserved_pointer_is_arguments_bad() {
    let _fixture = Fixture::configured(CONFIG);
    let mut reserved = 0u8;
    let mut args = init_args(0, 0);
    args.pReserved = (&raw mut reserved).cast();
    assert_eq!(initialize_with(&mut args), CKR_ARGUMENTS_BAD);
    assert!(!is_initialized());
}

#[test]
#[serial]
fn initialize_args_with_some_but_not_all_mutex_functions_is_arguments_bad() {
    let _fixture = Fixture::configured(CONFIG);
    for subset in 1..ALL_MUTEX_FUNCTIONS {
        for flags in [0, CKF_OS_LOCKING_OK] {
            let mut args = init_args(subset, flags);
            assert_eq!(
                initialize_with(&mut args),
                CKR_ARGUMENTS_BAD,
                "mutex functions {subset:04b}, flags {flags}"
            );
            assert!(!is_initialized());
        }
    }
}

#[test]
#[serial]
fn initialize_args_with_mutex_functions_but_no_os_locking_cant_lock() {
    let _fixture = Fixture::configured(CONFIG);
    let mut args = init_args(ALL_MUTEX_FUNCTIONS, 0);
    assert_eq!(initialize_with(&mut args), CKR_CANT_LOCK);
    assert!(!is_initialized());
}

#[test]
#[serial]
fn initialize_args_with_mutex_functions_and_os_locking_ok_succeeds() {
    let _fixture = Fixture::configured(CONFIG);
    let mut args = init_args(ALL_MUTEX_FUNCTIONS, CKF_OS_LOCKING_OK);
    assert_eq!(initialize_with(&mut args), CKR_OK);
    assert!(is_initialized());
}

#[test]
#[serial]
fn initialize_args_without_mutex_functions_succeed_with_or_without_os_locking() {
    for flags in [0, CKF_OS_LOCKING_OK] {
        let _fixture = Fixture::configured(CONFIG);
        let mut args = init_args(0, flags);
        assert_eq!(initialize_with(&mut args), CKR_OK, "flags {flags}");
        assert!(is_initialized());
        assert_eq!(finalize(), CKR_OK);
    }
}

#[test]
#[serial]
fn broken_config_is_general_error_and_a_good_one_then_works() {
    let broken = [
        ("bad TOML", "token_dir = \n"),
        ("unknown key", "token_dir = \"tokens\"\ntokendir = \"x\"\n"),
        (
            "Argon2 memory below 8 × parallelism",
            "token_dir = \"tokens\"\n[kdf]\nmemory_kib = 4\niterations = 1\nparallelism = 1\n",
        ),
        (
            "max_pin_attempts 0",
            "token_dir = \"tokens\"\nmax_pin_attempts = 0\n",
        ),
    ];
    for (what, config) in broken {
        let _fixture = Fixture::configured(config);
        assert_eq!(initialize(), CKR_GENERAL_ERROR, "{what}");
        assert!(!is_initialized(), "{what}");
    }
    let _fixture = Fixture::new();
    assert_eq!(slot_list(), vec![0]);
}

#[test]
#[serial]
fn missing_config_file_is_general_error() {
    let fixture = Fixture::configured(CONFIG);
    std::fs::remove_file(fixture.dir().join("keyferry.toml")).unwrap();
    assert_eq!(initialize(), CKR_GENERAL_ERROR);
    assert!(!is_initialized());
}

type AnyFunction = Option<unsafe extern "C" fn()>;

/// A function table's entries, everything after its CK_VERSION, as one array.
fn entries<T>(table: &T, first: usize) -> &[AnyFunction] {
    let count = (size_of::<T>() - first) / size_of::<AnyFunction>();
    assert_eq!((size_of::<T>() - first) % size_of::<AnyFunction>(), 0);
    // SAFETY: both CK_FUNCTION_LIST and CK_FUNCTION_LIST_3_0 are repr(C): a CK_VERSION,
    // then only `Option<unsafe extern "C" fn(..)>` fields from `first` to the end, each
    // laid out as one nullable pointer like AnyFunction.
    unsafe { std::slice::from_raw_parts((table as *const T).cast::<u8>().add(first).cast(), count) }
}

#[test]
#[serial]
fn function_list_2_40_has_version_2_40_and_every_one_of_its_68_entries() {
    let list = functions();
    assert_eq!((list.version.major, list.version.minor), (2, 40));
    let entries = entries(list, std::mem::offset_of!(CK_FUNCTION_LIST, C_Initialize));
    assert_eq!(entries.len(), 68);
    for (index, entry) in entries.iter().enumerate() {
        assert!(entry.is_some(), "2.40 entry {index} is NULL");
    }
}

#[test]
#[serial]
fn function_list_3_0_has_version_3_0_and_every_one_of_its_92_entries() {
    let list = functions_3_0();
    assert_eq!((list.version.major, list.version.minor), (3, 0));
    let entries = entries(
        list,
        std::mem::offset_of!(CK_FUNCTION_LIST_3_0, C_Initialize),
    );
    assert_eq!(entries.len(), 92);
    for (index, entry) in entries.iter().enumerate() {
        assert!(entry.is_some(), "3.0 entry {index} is NULL");
    }
}

#[test]
#[serial]
fn get_function_list_with_null_is_arguments_bad() {
    // SAFETY: NULL is refused before anything is written.
    let rv = unsafe { crate::ffi::C_GetFunctionList(null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

fn empty_interface() -> CK_INTERFACE {
    CK_INTERFACE {
        pInterfaceName: null_mut(),
        pFunctionList: null_mut(),
        flags: UNTOUCHED,
    }
}

/// The name of an interface, without its NUL.
fn interface_name(interface: &CK_INTERFACE) -> Vec<u8> {
    // SAFETY: the module's interface names are static NUL-terminated strings.
    unsafe { std::ffi::CStr::from_ptr(interface.pInterfaceName.cast()) }
        .to_bytes()
        .to_vec()
}

/// The version of the function list behind an interface.
fn interface_version(interface: &CK_INTERFACE) -> (u8, u8) {
    // SAFETY: every function list begins with its CK_VERSION.
    let version = unsafe { *(interface.pFunctionList as *const CK_VERSION) };
    (version.major, version.minor)
}

#[test]
#[serial]
fn interface_list_length_query_counts_two() {
    let mut count = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { crate::ffi::C_GetInterfaceList(null_mut(), &mut count) };
    assert_eq!((rv, count), (CKR_OK, 2));
}

#[test]
#[serial]
fn interface_list_short_buffer_is_buffer_too_small_with_the_count_and_nothing_written() {
    let mut interfaces = [empty_interface()];
    let mut count: CK_ULONG = 1;
    // SAFETY: `interfaces` holds `count` writable CK_INTERFACEs.
    let rv = unsafe { crate::ffi::C_GetInterfaceList(interfaces.as_mut_ptr(), &mut count) };
    assert_eq!((rv, count), (CKR_BUFFER_TOO_SMALL, 2));
    assert!(interfaces[0].pInterfaceName.is_null());
    assert!(interfaces[0].pFunctionList.is_null());
    assert_eq!(interfaces[0].flags, UNTOUCHED);
}

#[test]
#[serial]
fn interface_list_with_null_count_is_arguments_bad() {
    let mut interfaces = [empty_interface(), empty_interface()];
    // SAFETY: NULL count is refused before anything is written.
    let rv = unsafe { crate::ffi::C_GetInterfaceList(null_mut(), null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: as above, with a valid list.
    let rv = unsafe { crate::ffi::C_GetInterfaceList(interfaces.as_mut_ptr(), null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    assert!(interfaces[0].pInterfaceName.is_null());
}

#[test]
#[serial]
fn interface_list_offers_pkcs11_3_0_then_2_40() {
    let mut interfaces = [empty_interface(), empty_interface(), empty_interface()];
    let mut count: CK_ULONG = 3;
    // SAFETY: `interfaces` holds `count` writable CK_INTERFACEs.
    let rv = unsafe { crate::ffi::C_GetInterfaceList(interfaces.as_mut_ptr(), &mut count) };
    assert_eq!((rv, count), (CKR_OK, 2));
    assert_eq!(interface_name(&interfaces[0]), b"PKCS 11");
    assert_eq!(interface_name(&interfaces[1]), b"PKCS 11");
    assert_eq!(interface_version(&interfaces[0]), (3, 0));
    assert_eq!(interface_version(&interfaces[1]), (2, 40));
    assert_eq!((interfaces[0].flags, interfaces[1].flags), (0, 0));
    assert!(std::ptr::eq(
        interfaces[1].pFunctionList.cast_const(),
        std::ptr::from_ref(functions()).cast()
    ));
    assert_eq!(interfaces[2].flags, UNTOUCHED, "a third entry was written");
}

/// C_GetInterface; the interface on CKR_OK, and on failure the output is untouched.
fn get_interface(
    name: Option<&[u8]>,
    version: Option<(u8, u8)>,
    flags: CK_FLAGS,
) -> Result<&'static CK_INTERFACE, CK_RV> {
    let name = name.map(|name| [name, b"\0"].concat());
    let name_ptr = name
        .as_ref()
        .map_or(null_mut(), |name| name.as_ptr().cast_mut());
    let mut version = version.map(|(major, minor)| CK_VERSION { major, minor });
    let version_ptr = version
        .as_mut()
        .map_or(null_mut(), |version| version as *mut CK_VERSION);
    let mut interface: CK_INTERFACE_PTR = null_mut();
    // SAFETY: the name is NULL or NUL-terminated, the version NULL or valid, and
    // `interface` writable.
    let rv = unsafe { crate::ffi::C_GetInterface(name_ptr, version_ptr, &mut interface, flags) };
    if rv != CKR_OK {
        assert!(
            interface.is_null(),
            "a failed C_GetInterface wrote a pointer"
        );
        return Err(rv);
    }
    // SAFETY: on CKR_OK the pointer leads to a static CK_INTERFACE.
    Ok(unsafe { interface.as_ref() }.unwrap())
}

#[test]
#[serial]
fn get_interface_without_name_or_version_is_pkcs11_3_0() {
    let interface = get_interface(None, None, 0).unwrap();
    assert_eq!(interface_name(interface), b"PKCS 11");
    assert_eq!(interface_version(interface), (3, 0));
}

#[test]
#[serial]
fn get_interface_by_name_and_version_2_40_is_the_get_function_list_table() {
    let interface = get_interface(Some(b"PKCS 11"), Some((2, 40)), 0).unwrap();
    assert_eq!(interface_version(interface), (2, 40));
    assert!(std::ptr::eq(
        interface.pFunctionList.cast_const(),
        std::ptr::from_ref(functions()).cast()
    ));
}

#[test]
#[serial]
fn get_interface_by_name_and_version_3_0_is_the_3_0_table() {
    let interface = get_interface(Some(b"PKCS 11"), Some((3, 0)), 0).unwrap();
    assert!(std::ptr::eq(
        interface.pFunctionList.cast_const(),
        std::ptr::from_ref(functions_3_0()).cast()
    ));
    let by_name = get_interface(Some(b"PKCS 11"), None, 0).unwrap();
    assert_eq!(interface_version(by_name), (3, 0));
}

#[test]
#[serial]
fn get_interface_unknown_name_version_or_flags_is_arguments_bad() {
    assert_eq!(
        get_interface(Some(b"PKCS 12"), None, 0).err(),
        Some(CKR_ARGUMENTS_BAD)
    );
    assert_eq!(
        get_interface(Some(b"pkcs 11"), Some((3, 0)), 0).err(),
        Some(CKR_ARGUMENTS_BAD)
    );
    assert_eq!(
        get_interface(Some(b""), None, 0).err(),
        Some(CKR_ARGUMENTS_BAD)
    );
    for version in [(2, 20), (3, 1), (0, 0)] {
        assert_eq!(
            get_interface(None, Some(version), 0).err(),
            Some(CKR_ARGUMENTS_BAD),
            "version {version:?}"
        );
    }
    assert_eq!(
        get_interface(None, None, CKF_INTERFACE_FORK_SAFE).err(),
        Some(CKR_ARGUMENTS_BAD)
    );
}

#[test]
#[serial]
fn get_interface_with_null_output_is_arguments_bad() {
    // SAFETY: NULL output is refused before anything is read or written.
    let rv = unsafe { crate::ffi::C_GetInterface(null_mut(), null_mut(), null_mut(), 0) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}

#[test]
#[serial]
fn get_info_reports_cryptoki_3_0_and_the_library() {
    let _fixture = Fixture::new();
    for get_info in [functions().C_GetInfo, functions_3_0().C_GetInfo] {
        let mut info = CK_INFO::default();
        // SAFETY: `info` is a writable CK_INFO.
        let rv = unsafe { (get_info.unwrap())(&mut info) };
        assert_eq!(rv, CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (3, 0)
        );
        assert_eq!(info.flags, 0);
        let mut manufacturer = [b' '; 32];
        manufacturer[..8].copy_from_slice(b"keyferry");
        assert_eq!(info.manufacturerID, manufacturer);
        assert!(
            info.libraryDescription
                .iter()
                .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
        );
        let version = (info.libraryVersion.major, info.libraryVersion.minor);
        let expected: (u8, u8) = (
            env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap(),
            env!("CARGO_PKG_VERSION_MINOR").parse().unwrap(),
        );
        assert_eq!(version, expected);
    }
}

#[test]
#[serial]
fn get_info_with_null_is_arguments_bad() {
    let _fixture = Fixture::new();
    // SAFETY: NULL is refused before anything is written.
    let rv = unsafe { (functions().C_GetInfo.unwrap())(null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
}
