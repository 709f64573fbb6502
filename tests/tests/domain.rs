//! Same-root domains: tokens built from the same master-key parts share a domain key, and
//! CKM_KEYFERRY_DOMAIN_WRAP clones any object between them, non-extractable keys included,
//! with every attribute; another domain learns nothing. Then `keyferry` choosing it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup should panic loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cryptoki::error::RvError;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyferry_tests::cli::{self, uri};
use keyferry_tests::{
    environment, keyferry_build, rv, slot_of, user_session, Module, SO_PIN, USER_PIN,
};

const DOMAIN_WRAP: u64 = 0x8000_0000 | 0x4b46_0001;

fn domain_wrap() -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(DOMAIN_WRAP).unwrap();
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

/// Runs keyferry-admin against the test process's token directory.
fn admin(args: &[&str]) -> std::process::Output {
    let dir = environment();
    std::fs::write(dir.join("so.pin"), SO_PIN).unwrap();
    std::fs::write(dir.join("user.pin"), USER_PIN).unwrap();
    let exe = std::env::var_os("KEYFERRY_ADMIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| keyferry_build().join("keyferry-admin"));
    Command::new(exe)
        .args(args)
        .args(["--so-pin-file", dir.join("so.pin").to_str().unwrap()])
        .args(["--pin-file", dir.join("user.pin").to_str().unwrap()])
        .env("KEYFERRY_CONF", dir.join("keyferry.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn unique(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{serial}", std::process::id() % 10_000)
}

/// A token from a fresh split into `parts` parts, written to `dir`.
fn split(label: &str, parts: u32, dir: &Path) {
    let output = admin(&[
        "init-token",
        "--free",
        "--label",
        label,
        "--split-master-key",
        &parts.to_string(),
        "--parts-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A token from the part files of an earlier split.
fn join(label: &str, dir: &Path, parts: u32) {
    let files: Vec<String> = (1..=parts)
        .map(|part| dir.join(format!("part-{part}.key")).display().to_string())
        .collect();
    let mut args = vec!["init-token", "--free", "--label", label];
    for file in &files {
        args.extend(["--master-key-part", file.as_str()]);
    }
    let output = admin(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn domain_key(session: &Session) -> (ObjectHandle, Vec<u8>) {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"keyferry-domain-key".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "one domain key");
    match session
        .get_attributes(found[0], &[AttributeType::CheckValue])
        .unwrap()
        .pop()
    {
        Some(Attribute::CheckValue(check)) => (found[0], check),
        other => panic!("{other:?}"),
    }
}

fn flags(session: &Session, key: ObjectHandle) -> Vec<Attribute> {
    session
        .get_attributes(
            key,
            &[
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Local,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::KeyGenMechanism,
                AttributeType::Encrypt,
                AttributeType::Sign,
                AttributeType::Wrap,
            ],
        )
        .unwrap()
}

fn unique_id(session: &Session, key: ObjectHandle) -> Vec<u8> {
    match session
        .get_attributes(key, &[AttributeType::UniqueId])
        .unwrap()
        .pop()
    {
        Some(Attribute::UniqueId(id)) => id,
        other => panic!("{other:?}"),
    }
}

struct Domains {
    a: (Session, String),
    b: (Session, String),
    c: (Session, String),
    _parts: tempfile::TempDir,
}

/// A and B from the same three parts; C from another split. Made before anything loads
/// the module in this process (a loaded module does not look for tokens other processes
/// create), hence one test in this file.
fn domains() -> Domains {
    let parts = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (a, b, c) = (unique("dom-a"), unique("dom-b"), unique("dom-c"));
    split(&a, 3, parts.path());
    join(&b, parts.path(), 3);
    split(&c, 2, other.path());
    let open = |label: &str| user_session(Module::Keyferry, slot_of(Module::Keyferry, label));
    Domains {
        a: (open(&a), a),
        b: (open(&b), b),
        c: (open(&c), c),
        _parts: parts,
    }
}

#[test]
fn domain_clones_within_a_domain_only_by_mechanism_and_by_keyferry() {
    let domains = domains();
    a_non_extractable_root_and_an_ec_key_clone_exactly_within_a_domain_only(&domains);
    keyferry_clones_non_extractable_keys_within_a_domain_and_refuses_them_across_domains(&domains);
}

fn a_non_extractable_root_and_an_ec_key_clone_exactly_within_a_domain_only(domains: &Domains) {
    let (a, b, c) = (&domains.a.0, &domains.b.0, &domains.c.0);
    let (a_domain, a_check) = domain_key(a);
    let (b_domain, b_check) = domain_key(b);
    let (c_domain, c_check) = domain_key(c);
    assert_eq!(a_check, b_check, "same parts, same domain");
    assert_ne!(a_check, c_check, "another split, another domain");

    let root = a
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"root".to_vec()),
                Attribute::Id(vec![1]),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Wrap(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    let blob = a.wrap_key(&domain_wrap(), a_domain, root).unwrap();
    let clone = b
        .unwrap_key(&domain_wrap(), b_domain, &blob, &[Attribute::Token(true)])
        .unwrap();
    assert_eq!(flags(a, root), flags(b, clone));
    assert_ne!(unique_id(a, root), unique_id(b, clone));
    let zero = [0u8; 16];
    assert_eq!(
        a.encrypt(&Mechanism::AesEcb, root, &zero).unwrap(),
        b.encrypt(&Mechanism::AesEcb, clone, &zero).unwrap()
    );

    let (public, private) = a
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Label(b"signer".to_vec()),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    let blob = a.wrap_key(&domain_wrap(), a_domain, private).unwrap();
    let signer = b
        .unwrap_key(&domain_wrap(), b_domain, &blob, &[Attribute::Token(true)])
        .unwrap();
    let digest = [0x42u8; 32];
    let signature = b.sign(&Mechanism::Ecdsa, signer, &digest).unwrap();
    a.verify(&Mechanism::Ecdsa, public, &digest, &signature)
        .unwrap();

    // Another domain cannot open it, and a tampered blob opens nowhere.
    assert_eq!(
        rv(c.unwrap_key(&domain_wrap(), c_domain, &blob, &[Attribute::Token(true)])),
        RvError::WrappedKeyInvalid
    );
    let mut tampered = blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        rv(b.unwrap_key(
            &domain_wrap(),
            b_domain,
            &tampered,
            &[Attribute::Token(true)]
        )),
        RvError::WrappedKeyInvalid
    );
    // Only the domain key wraps with the domain mechanism.
    let ordinary = a
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    assert_eq!(
        rv(a.wrap_key(&domain_wrap(), ordinary, root)),
        RvError::WrappingKeyTypeInconsistent
    );
    // The domain key itself cannot be used otherwise, changed or destroyed.
    assert_eq!(
        rv(a.encrypt(&Mechanism::AesEcb, a_domain, &zero)),
        RvError::KeyFunctionNotPermitted
    );
    assert_eq!(rv(a.destroy_object(a_domain)), RvError::ActionProhibited);
}

fn keyferry_clones_non_extractable_keys_within_a_domain_and_refuses_them_across_domains(
    domains: &Domains,
) {
    let (a, a_label) = (&domains.a.0, &domains.a.1);
    let (b_label, c_label) = (&domains.b.1, &domains.c.1);
    a.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Label(b"hsm-root".to_vec()),
            Attribute::Id(vec![7]),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (from, same, other) = (
        uri(Module::Keyferry, a_label),
        uri(Module::Keyferry, b_label),
        uri(Module::Keyferry, c_label),
    );
    let migrated = cli::run(
        &[
            "migrate", "--from", &from, "--to", &same, "--select", "hsm-root", "--json",
        ],
        dir.path(),
    );
    assert_eq!(migrated.code, 0, "{}\n{}", migrated.stdout, migrated.stderr);
    let plan = &migrated.json("plan")[0];
    assert_eq!(plan["transport"]["agreement"], "domain", "{plan}");
    let objects = migrated.json("object");
    assert_eq!(
        objects.len(),
        1,
        "the domain key itself never moves: {objects:?}"
    );
    assert_eq!(objects[0]["status"], "moved");
    assert!(objects[0]["proof"]
        .as_str()
        .unwrap()
        .starts_with("aes-ecb:"));
    let changed = objects[0]["attributes"]["changed"].as_array().unwrap();
    assert!(
        changed
            .iter()
            .all(|change| change.as_str().unwrap().starts_with("CKA_UNIQUE_ID")),
        "a domain clone keeps LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE: {changed:?}"
    );
    let across = cli::run(
        &[
            "plan", "--from", &from, "--to", &other, "--select", "hsm-root", "--json",
        ],
        dir.path(),
    );
    assert_eq!(across.code, 3, "{}", across.stdout);
    let refused = &across.json("object")[0];
    assert_eq!(refused["blame"], "CKA_EXTRACTABLE");
    assert!(refused["remedy"].as_str().unwrap().contains("domain clone"));
    assert!(
        across.json("plan")[0]["transport"]["reason"]
            .as_str()
            .unwrap()
            .contains("different domains"),
        "{}",
        across.stdout
    );
}
