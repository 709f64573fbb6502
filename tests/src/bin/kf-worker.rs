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
        // Reads a live token file here, not in the test process: closing a second SQLite
        // copy's connection there would drop the locks its module holds on the file
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
        _ => {
            eprintln!("usage: kf-worker create TOKEN PREFIX COUNT | list TOKEN data|keys | login TOKEN | so-login TOKEN | flags TOKEN | timing TOKEN LABEL | slots | token-info SLOT_ID | encrypt TOKEN | set-encrypt TOKEN LABEL true|false | destroy TOKEN LABEL | query FILE SQL");
            std::process::exit(2);
        }
    }
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
