//! `keyferry demo`: two throwaway tokens in a temporary directory, sample root and data keys,
//! then plan → migrate → verify, each shown as the command a user would type.
//!
//! The modules read their configuration from the environment (KEYFERRY_CONF, SOFTHSM2_CONF),
//! so the demo runs each step as a child process with the demo's environment rather than
//! changing its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, CertificateType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::cli::{DemoArgs, DemoSetupArgs};
use crate::error::MigrateError;
use crate::exit_code;
use crate::samples;
use crate::token::{self, Modules};
use crate::uri::TokenUri;

/// SoftHSMv2 as Debian installs it.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

const SOURCE_LABEL: &str = "demo-source";
const DESTINATION_LABEL: &str = "demo-destination";

fn io_error(what: &str) -> impl Fn(std::io::Error) -> MigrateError + '_ {
    move |err| MigrateError::Usage(format!("{what}: {err}"))
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, contents: &str) -> Result<(), MigrateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("writing the demo files"))?;
    file.write_all(contents.as_bytes())
        .map_err(io_error("writing the demo files"))
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<u8, MigrateError> {
    if args.softhsm && !Path::new(SOFTHSM_MODULE).is_file() {
        return Err(MigrateError::Module {
            path: PathBuf::from(SOFTHSM_MODULE),
            reason: "SoftHSMv2 is not installed (apt-get install softhsm2), or run the demo without --softhsm".to_owned(),
        });
    }
    let temp = tempfile::Builder::new()
        .prefix("keyferry-demo-")
        .tempdir()
        .map_err(io_error("making a temporary directory"))?;
    let dir = temp.path().to_owned();
    std::fs::create_dir(dir.join("keyferry-tokens"))
        .map_err(io_error("making the token directory"))?;
    std::fs::create_dir(dir.join("softhsm-tokens"))
        .map_err(io_error("making the token directory"))?;
    write_private(
        &dir.join("keyferry.toml"),
        "token_dir = \"keyferry-tokens\"\nlog_level = \"warn\"\n",
    )?;
    write_private(
        &dir.join("softhsm2.conf"),
        &format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            dir.join("softhsm-tokens").display()
        ),
    )?;
    let mut random = [0u8; 12];
    getrandom::fill(&mut random)
        .map_err(|err| MigrateError::Usage(format!("the OS random generator: {err}")))?;
    write_private(
        &dir.join("so.pin"),
        &format!("so-{}\n", hex::encode(&random[..6])),
    )?;
    write_private(
        &dir.join("user.pin"),
        &format!("user-{}\n", hex::encode(&random[6..])),
    )?;

    println!("keyferry demo: two throwaway tokens in {}", dir.display());
    let exe = std::env::current_exe().map_err(io_error("finding the keyferry executable"))?;
    let child = |arguments: &[String]| -> Result<u8, MigrateError> {
        let status = Command::new(&exe)
            .args(arguments)
            .env("KEYFERRY_CONF", dir.join("keyferry.toml"))
            .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
            .current_dir(&dir)
            .status()
            .map_err(io_error("running keyferry"))?;
        Ok(status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .unwrap_or(exit_code::SOME_FAILED))
    };
    let mut setup = vec!["demo-setup".to_owned(), dir.display().to_string()];
    if args.softhsm {
        setup.push("--softhsm".to_owned());
    }
    println!("\n### making the tokens and sample keys");
    if child(&setup)? != exit_code::DONE {
        return Err(MigrateError::Usage(
            "the demo setup failed (see above)".to_owned(),
        ));
    }
    let pin = format!("pin-source=file:{}", dir.join("user.pin").display());
    let source = if args.softhsm {
        format!("pkcs11:token={SOURCE_LABEL}?module-path={SOFTHSM_MODULE}&{pin}")
    } else {
        format!("pkcs11:token={SOURCE_LABEL}?{pin}")
    };
    let destination = format!("pkcs11:token={DESTINATION_LABEL}?{pin}");
    let steps: [(&str, Vec<String>, &[u8]); 4] = [
        (
            "what is on the source",
            vec!["inventory".to_owned(), source.clone()],
            &[exit_code::DONE],
        ),
        (
            "the plan: nothing is written yet",
            vec![
                "plan".to_owned(),
                "--from".to_owned(),
                source.clone(),
                "--to".to_owned(),
                destination.clone(),
            ],
            &[exit_code::REFUSED],
        ),
        (
            "the migration, journalled",
            vec![
                "migrate".to_owned(),
                "--from".to_owned(),
                source.clone(),
                "--to".to_owned(),
                destination.clone(),
                "--journal".to_owned(),
                "demo.journal".to_owned(),
            ],
            &[exit_code::REFUSED],
        ),
        (
            "verification on demand, key by key",
            vec![
                "verify".to_owned(),
                "--from".to_owned(),
                source,
                "--to".to_owned(),
                destination,
            ],
            &[exit_code::SOME_FAILED],
        ),
    ];
    for (title, arguments, expected) in steps {
        println!("\n### {title}\n$ keyferry {}", arguments.join(" "));
        let code = child(&arguments)?;
        if !expected.contains(&code) {
            return Err(MigrateError::Usage(format!(
                "the demo step \"{title}\" ended with exit code {code}"
            )));
        }
    }
    println!(
        "\nEvery key that can move was moved and proved equal on both tokens. \"hsm-bound-root\" is \
         not extractable, so the plan refused it and named the remedy, and verify reports it missing."
    );
    if args.keep {
        let kept = temp.keep();
        println!(
            "The tokens, PIN files and journal are kept in {}",
            kept.display()
        );
    }
    Ok(exit_code::DONE)
}

fn init_token(
    modules: &mut Modules,
    module_path: &Path,
    label: &str,
    so_pin: &str,
    user_pin: &str,
) -> Result<Session, MigrateError> {
    let uri = TokenUri {
        module_path: Some(module_path.to_owned()),
        ..TokenUri::default()
    };
    let module = modules.open(&token::module_path(&uri)?)?;
    let pkcs11 = &module.pkcs11;
    let fail = |what: &str, err: cryptoki::error::Error| {
        MigrateError::pkcs11(format!("{label}: {what}"), &err)
    };
    let slot = pkcs11
        .get_slots_with_token()
        .map_err(|err| fail("C_GetSlotList", err))?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .map(|info| !info.token_initialized())
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            MigrateError::Usage(format!(
                "{}: no free slot for a new token",
                module_path.display()
            ))
        })?;
    let so = AuthPin::new(so_pin.into());
    let user = AuthPin::new(user_pin.into());
    pkcs11
        .init_token(slot, &so, label)
        .map_err(|err| fail("C_InitToken", err))?;
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|err| fail("C_OpenSession", err))?;
    session
        .login(UserType::So, Some(&so))
        .map_err(|err| fail("C_Login (SO)", err))?;
    session
        .init_pin(&user)
        .map_err(|err| fail("C_InitPIN", err))?;
    session.logout().map_err(|err| fail("C_Logout", err))?;
    session
        .login(UserType::User, Some(&user))
        .map_err(|err| fail("C_Login", err))?;
    Ok(session)
}

fn secret(label: &str, id: u8, extractable: bool, usage: &[Attribute]) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(vec![id]),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
    ];
    let unused = [
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    template.extend(unused.into_iter().filter(|flag| {
        !usage
            .iter()
            .any(|given| given.attribute_type() == flag.attribute_type())
    }));
    template.extend_from_slice(usage);
    template
}

/// Creates the sample keys on the source token.
fn sample_keys(session: &Session) -> Result<(), MigrateError> {
    let fail = |what: &str, err: cryptoki::error::Error| {
        MigrateError::pkcs11(format!("creating {what}"), &err)
    };
    let aes = |label: &str, id: u8, bytes: u64, extractable: bool, usage: &[Attribute]| {
        let mut template = secret(label, id, extractable, usage);
        template.push(Attribute::ValueLen(bytes.into()));
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|err| fail(label, err))
    };
    let kek_usage = [
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(true),
    ];
    let data_usage = [Attribute::Encrypt(true), Attribute::Decrypt(true)];
    aes("root-kek", 0x01, 32, true, &kek_usage)?;
    aes("hsm-bound-root", 0x02, 32, false, &kek_usage)?;
    aes("dek-payments", 0x10, 16, true, &data_usage)?;
    aes("dek-orders", 0x11, 24, true, &data_usage)?;
    aes("dek-archive", 0x12, 32, true, &data_usage)?;
    let mut hmac = secret(
        "hmac-audit",
        0x20,
        true,
        &[Attribute::Sign(true), Attribute::Verify(true)],
    );
    hmac.push(Attribute::ValueLen(20.into()));
    session
        .generate_key(&Mechanism::GenericSecretKeyGen, &hmac)
        .map_err(|err| fail("hmac-audit", err))?;
    for (label, id) in [("signing-rsa", 0x30u8), ("signing-ec", 0x31)] {
        for template in sample_pair(label, id) {
            session
                .create_object(&template)
                .map_err(|err| fail(label, err))?;
        }
    }
    Ok(())
}

/// The sample RSA or EC key pair with its certificate: private, public and certificate
/// templates.
pub fn sample_pair(label: &str, id: u8) -> [Vec<Attribute>; 3] {
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
        ]
    };
    let rsa = label.contains("rsa");
    let mut private = common(ObjectClass::PRIVATE_KEY);
    let mut public = common(ObjectClass::PUBLIC_KEY);
    let mut certificate = common(ObjectClass::CERTIFICATE);
    private.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Sign(true),
    ]);
    public.push(Attribute::Verify(true));
    certificate.push(Attribute::CertificateType(CertificateType::X_509));
    if rsa {
        let modulus = samples::bytes(samples::RSA_MODULUS);
        let exponent = samples::bytes(samples::RSA_PUBLIC_EXPONENT);
        private.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus.clone()),
            Attribute::PublicExponent(exponent.clone()),
            Attribute::PrivateExponent(samples::bytes(samples::RSA_PRIVATE_EXPONENT)),
            Attribute::Prime1(samples::bytes(samples::RSA_PRIME_1)),
            Attribute::Prime2(samples::bytes(samples::RSA_PRIME_2)),
            Attribute::Exponent1(samples::bytes(samples::RSA_EXPONENT_1)),
            Attribute::Exponent2(samples::bytes(samples::RSA_EXPONENT_2)),
            Attribute::Coefficient(samples::bytes(samples::RSA_COEFFICIENT)),
        ]);
        public.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(exponent),
        ]);
        certificate.extend(certificate_attributes(
            samples::RSA_CERTIFICATE,
            samples::RSA_CERTIFICATE_SUBJECT,
            samples::RSA_CERTIFICATE_SERIAL,
        ));
    } else {
        let params = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let point = samples::bytes(samples::EC_POINT);
        let mut point_der = vec![0x04, u8::try_from(point.len()).unwrap_or(0)];
        point_der.extend(point);
        private.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(params.clone()),
            Attribute::Value(samples::bytes(samples::EC_PRIVATE_VALUE)),
        ]);
        public.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(params),
            Attribute::EcPoint(point_der),
        ]);
        certificate.extend(certificate_attributes(
            samples::EC_CERTIFICATE,
            samples::EC_CERTIFICATE_SUBJECT,
            samples::EC_CERTIFICATE_SERIAL,
        ));
    }
    [private, public, certificate]
}

fn certificate_attributes(value: &[&str], subject: &[&str], serial: &[&str]) -> [Attribute; 4] {
    [
        Attribute::Value(samples::bytes(value)),
        Attribute::Subject(samples::bytes(subject)),
        Attribute::Issuer(samples::bytes(subject)),
        Attribute::SerialNumber(samples::bytes(serial)),
    ]
}

/// `keyferry demo-setup DIR`: runs inside the demo's environment.
pub fn setup(args: &DemoSetupArgs) -> Result<u8, MigrateError> {
    let read = |name: &str| -> Result<zeroize::Zeroizing<String>, MigrateError> {
        let path = args.dir.join(name);
        crate::pin::pin_from_source(&format!("file:{}", path.display())).map_err(MigrateError::from)
    };
    let (so_pin, user_pin) = (read("so.pin")?, read("user.pin")?);
    let keyferry = token::module_path(&TokenUri::default())?;
    let source_module = if args.softhsm {
        PathBuf::from(SOFTHSM_MODULE)
    } else {
        keyferry.clone()
    };
    let mut modules = Modules::default();
    let source = init_token(
        &mut modules,
        &source_module,
        SOURCE_LABEL,
        &so_pin,
        &user_pin,
    )?;
    sample_keys(&source)?;
    init_token(
        &mut modules,
        &keyferry,
        DESTINATION_LABEL,
        &so_pin,
        &user_pin,
    )?;
    println!(
        "source \"{SOURCE_LABEL}\" ({}): a root KEK, a non-extractable root, three AES data keys, an HMAC key, \
         RSA-2048 and P-256 key pairs with certificates; destination \"{DESTINATION_LABEL}\" (keyferry): empty",
        if args.softhsm {
            "SoftHSMv2"
        } else {
            "keyferry"
        }
    );
    Ok(exit_code::DONE)
}
