//! Threads and processes at the C ABI: C_Initialize and C_Finalize raced from many
//! threads, and a forked child that must initialise its own copy of the module while its
//! parent's sessions, handles and token file stay intact.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pkcs11_sys::*;
use serial_test::serial;

use super::*;

/// Threads released together by a barrier in each round.
const THREADS: usize = 8;
/// Rounds of the C_Initialize race.
const ROUNDS: usize = 50;

/// Every thread calls `call` at once; returns each thread's CK_RV.
fn race(call: impl Fn() -> CK_RV + Sync) -> Vec<CK_RV> {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    call()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect()
    })
}

fn count(codes: &[CK_RV], rv: CK_RV) -> usize {
    codes.iter().filter(|code| **code == rv).count()
}

/// AES-ECB of a zero block under `key`.
fn ecb_zero(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<Vec<u8>, CK_RV> {
    let f = functions();
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_ECB,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    // SAFETY: a mechanism without parameter.
    let rv = unsafe { (f.C_EncryptInit.unwrap())(session, &mut mechanism, key) };
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut plain = [0u8; 16];
    let mut sealed = [0u8; 16];
    let mut sealed_len: CK_ULONG = 16;
    // SAFETY: 16 readable bytes in, 16 writable bytes and a writable length out.
    let rv = unsafe {
        (f.C_Encrypt.unwrap())(
            session,
            plain.as_mut_ptr(),
            16,
            sealed.as_mut_ptr(),
            &mut sealed_len,
        )
    };
    match rv {
        CKR_OK => Ok(sealed[..sealed_len as usize].to_vec()),
        rv => Err(rv),
    }
}

/// A token AES key with this label and value.
fn token_key(label: &str, value: &[u8]) -> Template {
    aes_key(value)
        .bool(CKA_TOKEN, true)
        .bool(CKA_PRIVATE, true)
        .bool(CKA_ENCRYPT, true)
        .bytes(CKA_LABEL, label.as_bytes())
}

fn labelled(label: &str) -> Template {
    Template::new().bytes(CKA_LABEL, label.as_bytes())
}

/// The token file of the token in `slot`, under the fixture's `tokens` directory.
fn token_file(fixture: &Fixture, slot: CK_SLOT_ID) -> PathBuf {
    let serial = token_info(slot).serialNumber;
    let serial = String::from_utf8_lossy(&serial).trim().to_string();
    fixture
        .dir()
        .join("tokens")
        .join(format!("{serial}.kftoken"))
}

fn integrity_check(file: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(file).unwrap();
    let mut statement = conn.prepare("PRAGMA integrity_check").unwrap();
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
#[serial]
fn racing_c_initialize_lets_exactly_one_thread_in_and_the_module_works() {
    let _fixture = Fixture::new();
    let slot = user_token();
    assert_eq!(finalize(), CKR_OK);
    for round in 0..ROUNDS {
        let codes = race(initialize);
        assert_eq!(count(&codes, CKR_OK), 1, "round {round}: {codes:x?}");
        assert_eq!(
            count(&codes, CKR_CRYPTOKI_ALREADY_INITIALIZED),
            THREADS - 1,
            "round {round}: {codes:x?}"
        );
        let session = user_session(slot);
        let key = create(session, &token_key("race", &[round as u8; 16]));
        assert_eq!(ecb_zero(session, key.unwrap()).map(|c| c.len()), Ok(16));
        assert_eq!(close_session(session), CKR_OK);

        let codes = race(finalize);
        assert_eq!(count(&codes, CKR_OK), 1, "round {round}: {codes:x?}");
        assert_eq!(
            count(&codes, CKR_CRYPTOKI_NOT_INITIALIZED),
            THREADS - 1,
            "round {round}: {codes:x?}"
        );
    }
    assert_eq!(initialize(), CKR_OK);
    let session = user_session(slot);
    assert_eq!(find(session, &labelled("race")).len(), ROUNDS);
}

#[test]
#[serial]
fn initialize_finalize_and_calls_racing_on_many_threads_only_return_their_codes() {
    let _fixture = Fixture::new();
    let slot = user_token();
    let slots_before = slot_list();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let barrier = &barrier;
            let slots_before = &slots_before;
            scope.spawn(move || {
                barrier.wait();
                for step in 0..100 {
                    match (thread + step) % 4 {
                        0 => {
                            let rv = initialize();
                            assert!(
                                [CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED].contains(&rv),
                                "C_Initialize: {rv:#x}"
                            );
                        }
                        1 => {
                            let rv = finalize();
                            assert!(
                                [CKR_OK, CKR_CRYPTOKI_NOT_INITIALIZED].contains(&rv),
                                "C_Finalize: {rv:#x}"
                            );
                        }
                        2 => {
                            let mut slots = [UNTOUCHED; 4];
                            let mut len: CK_ULONG = 4;
                            // SAFETY: 4 writable slot IDs and a writable count.
                            let rv = unsafe {
                                (functions().C_GetSlotList.unwrap())(
                                    CK_FALSE,
                                    slots.as_mut_ptr(),
                                    &mut len,
                                )
                            };
                            match rv {
                                CKR_OK => assert_eq!(&slots[..len as usize], slots_before),
                                CKR_CRYPTOKI_NOT_INITIALIZED => assert_eq!(slots, [UNTOUCHED; 4]),
                                rv => panic!("C_GetSlotList: {rv:#x}"),
                            }
                        }
                        _ => {
                            let mut session = UNTOUCHED;
                            // SAFETY: no callback; `session` is writable.
                            let rv = unsafe {
                                (functions().C_OpenSession.unwrap())(
                                    slot,
                                    CKF_SERIAL_SESSION,
                                    null_mut(),
                                    None,
                                    &mut session,
                                )
                            };
                            match rv {
                                CKR_OK => {
                                    // A C_Finalize of another thread may have closed it.
                                    let rv = close_session(session);
                                    assert!(
                                        [
                                            CKR_OK,
                                            CKR_SESSION_HANDLE_INVALID,
                                            CKR_CRYPTOKI_NOT_INITIALIZED
                                        ]
                                        .contains(&rv),
                                        "C_CloseSession: {rv:#x}"
                                    );
                                }
                                CKR_CRYPTOKI_NOT_INITIALIZED => assert_eq!(session, UNTOUCHED),
                                rv => panic!("C_OpenSession: {rv:#x}"),
                            }
                        }
                    }
                }
            });
        }
    });
    // Whatever the race left, the module can be brought to a known state and works.
    let _ = finalize();
    assert_eq!(initialize(), CKR_OK);
    let session = user_session(slot);
    assert_eq!(
        create(session, &token_key("after the race", &[7; 16])).map(|_| ()),
        Ok(())
    );
    assert_eq!(find(session, &labelled("after the race")).len(), 1);
}

/// Keys the child and the parent each create while both run.
const BATCH: u8 = 20;

/// What the forked child checks, in order; its exit code is the number of the step that
/// failed (0: all passed).
const CHILD_STEPS: [&str; 8] = [
    "all passed",
    "calls before C_Initialize say CKR_CRYPTOKI_NOT_INITIALIZED",
    "C_Initialize in the child",
    "open a session and log in",
    "find the parent's key",
    "encrypt with the parent's key as the parent did",
    "create the child's own token keys while the parent writes",
    "C_Finalize in the child",
];

/// The forked child's work. Panics on the first failed check; `step` says which.
fn child_steps(
    step: &Cell<i32>,
    slot: CK_SLOT_ID,
    parent_session: CK_SESSION_HANDLE,
    parent_key: CK_OBJECT_HANDLE,
    parent_sealed: &[u8],
) {
    let f = functions();
    step.set(1);
    let mut len = UNTOUCHED;
    // SAFETY: NULL list with a writable count.
    let rv = unsafe { (f.C_GetSlotList.unwrap())(CK_TRUE, null_mut(), &mut len) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(len, UNTOUCHED);
    let mut info = CK_SESSION_INFO::default();
    // SAFETY: `info` is writable.
    let rv = unsafe { (f.C_GetSessionInfo.unwrap())(parent_session, &mut info) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(
        ecb_zero(parent_session, parent_key),
        Err(CKR_CRYPTOKI_NOT_INITIALIZED)
    );
    assert_eq!(finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);

    step.set(2);
    assert_eq!(initialize(), CKR_OK);
    assert_eq!(slot_list().first(), Some(&slot));

    step.set(3);
    let session = open_rw(slot);
    // The parent's login is not inherited: the child logs in afresh.
    assert_eq!(login(session, CKU_USER, USER_PIN), CKR_OK);

    step.set(4);
    let found = find(session, &labelled("parent key"));
    assert_eq!(found.len(), 1);

    step.set(5);
    assert_eq!(ecb_zero(session, found[0]).as_deref(), Ok(parent_sealed));

    step.set(6);
    let own = create(session, &token_key("child key", &[0xc4; 32])).unwrap();
    assert_eq!(ecb_zero(session, own).map(|sealed| sealed.len()), Ok(16));
    // While the parent writes too: two processes, one inherited (forgotten) connection.
    for index in 0..BATCH {
        assert_eq!(
            create(session, &token_key("child batch", &[index; 16])).map(|_| ()),
            Ok(())
        );
    }

    step.set(7);
    assert_eq!(finalize(), CKR_OK);
    step.set(0);
}

#[test]
#[serial]
fn a_forked_child_initialises_its_own_module_and_the_parent_keeps_working() {
    let fixture = Fixture::new();
    let slot = user_token();
    let session = user_session(slot);
    let key = create(session, &token_key("parent key", &[0x5a; 32])).unwrap();
    let sealed = ecb_zero(session, key).unwrap();
    let file = token_file(&fixture, slot);
    let log = fixture.dir().join("child.log");

    // SAFETY: the child runs only `child_steps` (this module's calls, on this thread) and
    // leaves by `_exit`, never returning into the multi-threaded test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let step = Cell::new(-1);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            child_steps(&step, slot, session, key, &sealed);
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            let _ = std::fs::write(&log, format!("step {}: {message}", step.get()));
        }
        // SAFETY: ends the child at once, without unwinding into the harness or running
        // the parent's exit handlers.
        unsafe { libc::_exit(step.get()) };
    }
    for index in 0..BATCH {
        assert_eq!(
            create(session, &token_key("parent batch", &[index; 16])).map(|_| ()),
            Ok(())
        );
    }
    let mut status = 0;
    // SAFETY: `status` is writable; `pid` is our child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code,
        0,
        "the child failed at step {code} ({}): {}",
        CHILD_STEPS
            .get(code as usize)
            .copied()
            .unwrap_or("unknown step"),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The parent's session, login and handle are as they were.
    let info = session_info(session);
    assert_eq!(info.state, CKS_RW_USER_FUNCTIONS);
    assert_eq!(ecb_zero(session, key), Ok(sealed.clone()));
    // The child's object is visible to a new search (another writer bumped the store's
    // generation), and it works here too.
    let found = find(session, &labelled("child key"));
    assert_eq!(found.len(), 1);
    assert_eq!(
        find(session, &labelled("child batch")).len(),
        usize::from(BATCH)
    );
    assert_eq!(
        find(session, &labelled("parent batch")).len(),
        usize::from(BATCH)
    );
    assert_eq!(
        ecb_zero(session, found[0]).map(|sealed| sealed.len()),
        Ok(16)
    );
    // The parent still writes, and the file is sound.
    assert_eq!(
        create(session, &token_key("after the child", &[1; 16])).map(|_| ()),
        Ok(())
    );
    assert_eq!(integrity_check(&file), ["ok"]);
    // And all three keys survive a restart.
    fixture.restart();
    let session = user_session(slot);
    for label in ["parent key", "child key", "after the child"] {
        assert_eq!(find(session, &labelled(label)).len(), 1, "{label}");
    }
    for label in ["child batch", "parent batch"] {
        assert_eq!(
            find(session, &labelled(label)).len(),
            usize::from(BATCH),
            "{label}"
        );
    }
}

/// Forks taken while another thread of the parent writes to the token.
const BUSY_FORKS: usize = 10;

// A child forked while another parent thread was inside a SQLite write transaction used to
// hang: the parent's forgotten connection sat in SQLite's per-process lock bookkeeping
// (unixInodeInfo/unixShmNode) with the WAL write lock marked held, so the child's own
// connection waited in the busy handler until BUSY_TIMEOUT (18 of 20 children hung in
// C_Login's `count_failure` write). The fork handlers (ffi/fork.rs) now keep forks out of
// token transactions.
#[test]
#[serial]
fn children_forked_during_a_parent_write_initialise_and_write() {
    let fixture = Fixture::new();
    let slot = user_token();
    // Keeps the application's login for the writer thread's sessions.
    let anchor = user_session(slot);
    let log = fixture.dir().join("child.log");
    let mut outcomes = Vec::new();
    for round in 0..BUSY_FORKS {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let writing = open_rw(slot);
                let mut written = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    let key = token_key("parent busy", &[written; 16]);
                    assert_eq!(create(writing, &key).map(|_| ()), Ok(()));
                    written = written.wrapping_add(1);
                }
                assert_eq!(close_session(writing), CKR_OK);
            });
            std::thread::sleep(Duration::from_millis(5 + (3 * round as u64) % 17));
            // SAFETY: the child runs only the closure below on this thread and leaves by
            // `_exit`, never returning into the multi-threaded test harness.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let step = Cell::new(1);
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    assert_eq!(initialize(), CKR_OK);
                    step.set(2);
                    let child = user_session(slot);
                    step.set(3);
                    let key = token_key("busy child", &[round as u8; 16]);
                    assert_eq!(create(child, &key).map(|_| ()), Ok(()));
                    step.set(0);
                }));
                if let Err(panic) = outcome {
                    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                    let _ = std::fs::write(&log, format!("step {}: {message}", step.get()));
                }
                // SAFETY: ends the child at once, without unwinding into the harness.
                unsafe { libc::_exit(step.get()) };
            }
            // The parent goes idle before waiting: whatever blocks the child is not a
            // lock the parent still holds.
            stop.store(true, Ordering::Relaxed);
            writer.join().unwrap();
            outcomes.push(wait_or_kill(pid, Duration::from_secs(10)));
        });
    }
    assert_eq!(
        outcomes,
        vec![Some(0); BUSY_FORKS],
        "child exit codes (None: hung and killed); {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(find(anchor, &labelled("busy child")).len(), BUSY_FORKS);
}

/// The exit code of child `pid`, or `None` if it did not exit within `limit` (it is then
/// killed and reaped).
fn wait_or_kill(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `status` is writable; `pid` is our child.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if waited == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if started.elapsed() > limit {
            // SAFETY: `pid` is our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
