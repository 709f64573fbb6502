//! A second process for the integration tests: loads keyferry, does one job, prints the
//! result on stdout. The test passes KEYFERRY_CONF and TEST_KEYFERRY_MODULE in the
//! environment, and the PIN in KF_TEST_PIN (never on argv).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: failures should panic loudly

use std::time::Instant;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use keyferry_tests::{initialised_keyferry, pin, rv, slot_labelled, USER_PIN};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let pkcs11 = initialised_keyferry();
    let user_pin = std::env::var("KF_TEST_PIN").unwrap_or_else(|_| USER_PIN.into());
    match args.as_slice() {
        ["create", token, prefix, count] => {
            let session = pkcs11
                .open_rw_session(slot_labelled(&pkcs11, token))
                .unwrap();
            session
                .login(UserType::User, Some(&pin(&user_pin)))
                .unwrap();
            for index in 0..count.parse::<usize>().unwrap() {
                session
                    .create_object(&[
                        Attribute::Class(ObjectClass::DATA),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Label(format!("{prefix}-{index}").into_bytes()),
                        Attribute::Value(index.to_be_bytes().to_vec()),
                    ])
                    .unwrap();
            }
            println!("created {count}");
        }
        ["list", token, class] => {
            let session = pkcs11
                .open_ro_session(slot_labelled(&pkcs11, token))
                .unwrap();
            session
                .login(UserType::User, Some(&pin(&user_pin)))
                .unwrap();
            let class = match *class {
                "data" => ObjectClass::DATA,
                _ => ObjectClass::SECRET_KEY,
            };
            let wanted = [AttributeType::Label, AttributeType::UniqueId];
            for handle in session.find_objects(&[Attribute::Class(class)]).unwrap() {
                let mut line = Vec::new();
                for attribute in session.get_attributes(handle, &wanted).unwrap() {
                    match attribute {
                        Attribute::Label(label) => {
                            line.push(String::from_utf8_lossy(&label).into_owned())
                        }
                        Attribute::UniqueId(id) => {
                            line.push(String::from_utf8_lossy(&id).into_owned())
                        }
                        _ => {}
                    }
                }
                if class == ObjectClass::SECRET_KEY {
                    let check = session
                        .get_attributes(handle, &[AttributeType::CheckValue])
                        .unwrap();
                    if let Some(Attribute::CheckValue(value)) = check.first() {
                        line.push(value.iter().map(|byte| format!("{byte:02x}")).collect());
                    }
                }
                println!("{}", line.join(" "));
            }
        }
        ["login", token] => {
            let session = pkcs11
                .open_ro_session(slot_labelled(&pkcs11, token))
                .unwrap();
            match session.login(UserType::User, Some(&pin(&user_pin))) {
                Ok(()) => println!("CKR_OK"),
                Err(err) => println!("{:?}", rv::<()>(Err(err))),
            }
        }
        ["so-login", token] => {
            let session = pkcs11
                .open_rw_session(slot_labelled(&pkcs11, token))
                .unwrap();
            match session.login(UserType::So, Some(&pin(&user_pin))) {
                Ok(()) => println!("CKR_OK"),
                Err(err) => println!("{:?}", rv::<()>(Err(err))),
            }
        }
        ["flags", token] => {
            let info = pkcs11
                .get_token_info(slot_labelled(&pkcs11, token))
                .unwrap();
            println!(
                "user_count_low={} user_final_try={} user_locked={} so_count_low={} so_locked={}",
                info.user_pin_count_low(),
                info.user_pin_final_try(),
                info.user_pin_locked(),
                info.so_pin_count_low(),
                info.so_pin_locked()
            );
        }
        ["timing", token, label] => {
            let session = pkcs11
                .open_ro_session(slot_labelled(&pkcs11, token))
                .unwrap();
            let init_open_us = started.elapsed().as_micros();
            session
                .login(UserType::User, Some(&pin(&user_pin)))
                .unwrap();
            let searched = Instant::now();
            let found = session
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .unwrap();
            let find_us = searched.elapsed().as_micros();
            assert_eq!(found.len(), 1, "exactly one object labelled {label}");
            println!("init_open_us {init_open_us} find_us {find_us}");
        }
        ["slots"] => {
            for slot in pkcs11.get_all_slots().unwrap() {
                let info = pkcs11.get_token_info(slot).unwrap();
                let label = if info.token_initialized() {
                    info.label()
                } else {
                    "-"
                };
                println!("{} {label}", slot.id());
            }
        }
        ["token-info", slot_id] => {
            let slot = Slot::try_from(slot_id.parse::<u64>().unwrap()).unwrap();
            match pkcs11.get_token_info(slot) {
                Ok(info) => println!("CKR_OK {}", info.label()),
                Err(err) => println!("{:?}", rv::<()>(Err(err))),
            }
        }
        ["encrypt", token] => {
            // FIPS-197 Appendix C.1: AES-128 of 00112233…ff under 00010203…0f.
            let session = pkcs11
                .open_ro_session(slot_labelled(&pkcs11, token))
                .unwrap();
            session
                .login(UserType::User, Some(&pin(&user_pin)))
                .unwrap();
            let key = session
                .create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Value((0u8..16).collect()),
                    Attribute::Encrypt(true),
                ])
                .unwrap();
            let plaintext: Vec<u8> = (0u8..16).map(|i| i * 0x11).collect();
            match session.encrypt(&Mechanism::AesEcb, key, &plaintext) {
                Ok(ciphertext) => println!("CKR_OK {}", hex::encode(ciphertext)),
                Err(err) => println!("{:?}", rv::<()>(Err(err))),
            }
        }
        ["set-encrypt", token, label, value] => {
            let (session, key) = secret_key(&pkcs11, token, label, &user_pin);
            match session.update_attributes(key, &[Attribute::Encrypt(*value == "true")]) {
                Ok(()) => println!("CKR_OK"),
                Err(err) => println!("{:?}", rv::<()>(Err(err))),
            }
        }
        ["destroy", token, label] => {
            let (session, key) = secret_key(&pkcs11, token, label, &user_pin);
            match session.destroy_object(key) {
                Ok(()) => println!("CKR_OK"),
                Err(err) => println!("{:?}", rv::<()>(Err(err))),
            }
        }
        // The jobs on a live token file run here, not in the test process: closing a second
        // SQLite copy's connection there would drop the locks its module holds on the file
        // (POSIX locks are per process), and the next process to open it would truncate
        // the shared-memory file under the module's mapping (SIGBUS).
        ["query", file, sql] => {
            let conn = rusqlite::Connection::open_with_flags(
                file,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let text: String = conn.query_row(sql, [], |row| row.get(0)).unwrap();
            println!("{text}");
        }
        ["exec", file, sql] => {
            let changed = rusqlite::Connection::open(file)
                .unwrap()
                .execute(sql, [])
                .unwrap();
            println!("{changed}");
        }
        ["set-stored", file, label, kind, hex] => {
            set_stored(
                file,
                label,
                kind.parse().unwrap(),
                &hex::decode(hex).unwrap(),
            );
            println!("set");
        }
        ["bulk-fill", file, prefix, count] => {
            bulk_fill(file, prefix, count.parse().unwrap());
            println!("filled {count}");
        }
        _ => {
            eprintln!("usage: kf-worker create TOKEN PREFIX COUNT | list TOKEN data|keys | login TOKEN | so-login TOKEN | flags TOKEN | timing TOKEN LABEL | slots | token-info SLOT_ID | encrypt TOKEN | set-encrypt TOKEN LABEL true|false | destroy TOKEN LABEL | query FILE SQL | exec FILE SQL | set-stored FILE LABEL CKA HEX | bulk-fill FILE PREFIX COUNT");
            std::process::exit(2);
        }
    }
}

/// Sets one stored attribute of the object labelled `label` straight in its row, as
/// someone with the sqlite3 CLI would.
fn set_stored(file: &str, label: &str, kind: pkcs11_sys::CK_ATTRIBUTE_TYPE, value: &[u8]) {
    use keyferry_core::token::attr::{self, Value};
    let conn = rusqlite::Connection::open(file).unwrap();
    let stored: Vec<u8> = conn
        .query_row(
            "SELECT attrs FROM objects WHERE label = ?1",
            [label.as_bytes()],
            |row| row.get(0),
        )
        .unwrap();
    let mut attributes = attr::decode(&stored).expect("a readable row");
    attributes
        .iter_mut()
        .find(|a| a.kind == kind)
        .expect("the attribute is stored")
        .value = Value::bytes(value.to_vec());
    let changed = conn
        .execute(
            "UPDATE objects SET attrs = ?1 WHERE label = ?2",
            rusqlite::params![attr::encode(&attributes), label.as_bytes()],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// Adds `count` public data objects labelled `obj-N` to a token file in one transaction,
/// row for row as keyferry stores them (creating them one call at a time would take
/// minutes); their unique ids start with `prefix`.
fn bulk_fill(file: &str, prefix: &str, count: usize) {
    use keyferry_core::token::attr::{self, Value};
    use pkcs11_sys::{
        CKA_CLASS, CKA_COPYABLE, CKA_DESTROYABLE, CKA_LABEL, CKA_MODIFIABLE, CKA_PRIVATE,
        CKA_TOKEN, CKA_UNIQUE_ID, CKO_DATA,
    };
    let mut conn = rusqlite::Connection::open(file).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO objects (unique_id, class, label, ckid, private, attrs, sealed) VALUES (?1, 0, ?2, x'', 0, ?3, NULL)")
            .unwrap();
        for index in 0..count {
            let label = format!("obj-{index}");
            let unique_id = format!("bulk-{prefix}-{index}");
            let row = [
                (CKA_CLASS, Value::ulong(CKO_DATA)),
                (CKA_TOKEN, Value::bool(true)),
                (CKA_PRIVATE, Value::bool(false)),
                (CKA_MODIFIABLE, Value::bool(true)),
                (CKA_COPYABLE, Value::bool(true)),
                (CKA_DESTROYABLE, Value::bool(true)),
                (CKA_LABEL, Value::bytes(label.clone().into_bytes())),
                (CKA_UNIQUE_ID, Value::bytes(unique_id.clone().into_bytes())),
            ];
            let attributes: Vec<_> = row
                .into_iter()
                .map(|(kind, value)| attr::Attribute::new(kind, value))
                .collect();
            insert
                .execute(rusqlite::params![
                    unique_id,
                    label.as_bytes(),
                    attr::encode(&attributes)
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A logged-in read/write session on `token` and its secret key labelled `label`.
fn secret_key(
    pkcs11: &cryptoki::context::Pkcs11,
    token: &str,
    label: &str,
    user_pin: &str,
) -> (cryptoki::session::Session, cryptoki::object::ObjectHandle) {
    let session = pkcs11
        .open_rw_session(slot_labelled(pkcs11, token))
        .unwrap();
    session.login(UserType::User, Some(&pin(user_pin))).unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .pop()
        .expect("the key");
    (session, key)
}
