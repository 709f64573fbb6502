//! Symmetric cryptography agrees between keyferry and SoftHSMv2: the same imported key
//! encrypts the same plaintext to byte-identical ciphertext under ECB, CBC, CBC_PAD, CTR
//! and GCM, a ciphertext made on either token decrypts on the other, and SHA-256,
//! HMAC-SHA-256 and AES-CMAC give the same bytes. Where the standards give a known
//! answer, both tokens must give it. Where SoftHSMv2 2.6.1 refuses something, its exact
//! behaviour is asserted in a commented per-module branch.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyferry_tests::{fresh_token, rv, user_session, Module};
use pkcs11_sys::{CK_AES_CTR_PARAMS, CK_ULONG};

fn h(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// NIST SP 800-38A, Appendix F: key, plaintext, IV and initial counter block.
const SP800_38A_KEY_128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const SP800_38A_KEY_256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const SP800_38A_PLAIN: &str = concat!(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
);
const SP800_38A_IV: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const SP800_38A_COUNTER: [u8; 16] = [
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
];
/// F.1.1/F.1.5 (ECB), F.2.1/F.2.5 (CBC), F.5.1/F.5.5 (CTR) for the 128- and 256-bit keys.
const SP800_38A_VECTORS: [(&str, [&str; 3]); 2] = [
    (
        SP800_38A_KEY_128,
        [
            concat!(
                "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf",
                "43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4",
            ),
            concat!(
                "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2",
                "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7",
            ),
            concat!(
                "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff",
                "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee",
            ),
        ],
    ),
    (
        SP800_38A_KEY_256,
        [
            concat!(
                "f3eed1bdb5d2a03c064b5a7e3db181f8591ccb10d410ed26dc5ba74a31362870",
                "b6ed21b99ca6f4f9f153e7b1beafed1d23304b7a39f9f3ff067d8d8f9e24ecc7",
            ),
            concat!(
                "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d",
                "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
            ),
            concat!(
                "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5",
                "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
            ),
        ],
    ),
];

/// McGrew & Viega GCM test case 4 (AES-128, 96-bit IV, 20 bytes of AAD).
const GCM_KEY: &str = "feffe9928665731c6d6a8f9467308308";
const GCM_IV: &str = "cafebabefacedbaddecaf888";
const GCM_AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
const GCM_PLAIN: &str = concat!(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
);
const GCM_SEALED: &str = concat!(
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
    "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
    "5bc94fbc3221a5db94fae95ae7121a47",
);

/// A 37-byte plaintext: not whole blocks, so padding and partial counter blocks show.
const ODD_PLAIN: &[u8] = b"thirty-seven bytes of plaintext here.";

/// A token of one module with a user session.
struct Side {
    module: Module,
    session: Session,
}

fn side(module: Module, name: &str) -> Side {
    let (slot, _) = fresh_token(module, name);
    Side {
        module,
        session: user_session(module, slot),
    }
}

/// Both modules' sides, keyferry first.
fn both(name: &str) -> [Side; 2] {
    Module::ALL.map(|module| side(module, name))
}

impl Side {
    /// Import a session secret key allowed every symmetric function.
    fn import(&self, key_type: KeyType, value: &[u8]) -> ObjectHandle {
        self.session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::Token(false),
                Attribute::Value(value.to_vec()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ])
            .unwrap_or_else(|err| panic!("{:?}: importing a key: {err}", self.module))
    }

    fn aes(&self, value: &[u8]) -> ObjectHandle {
        self.import(KeyType::AES, value)
    }

    fn encrypt(&self, mechanism: &Mechanism, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
        self.session
            .encrypt(mechanism, key, data)
            .unwrap_or_else(|err| panic!("{:?} encrypt {mechanism:?}: {err}", self.module))
    }

    fn decrypt(&self, mechanism: &Mechanism, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
        self.session
            .decrypt(mechanism, key, data)
            .unwrap_or_else(|err| panic!("{:?} decrypt {mechanism:?}: {err}", self.module))
    }
}

/// CKM_AES_CTR with CK_AES_CTR_PARAMS, which cryptoki 0.12 has no variant for.
fn ctr_params(counter_bits: CK_ULONG, block: [u8; 16]) -> CK_AES_CTR_PARAMS {
    CK_AES_CTR_PARAMS {
        ulCounterBits: counter_bits,
        cb: block,
    }
}

fn ctr(params: &CK_AES_CTR_PARAMS) -> Mechanism<'_> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new(
        MechanismType::AES_CTR,
        Some(params),
    ))
}

/// CKM_AES_GCM; the IV and AAD must outlive the mechanism.
fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8], tag_bits: u64) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, tag_bits.into()).unwrap())
}

#[test]
fn ecb_cbc_and_ctr_give_the_sp800_38a_vectors_on_both_tokens() {
    let sides = both("sp800-38a");
    let plain = h(SP800_38A_PLAIN);
    let counter = ctr_params(128, SP800_38A_COUNTER);
    for side in &sides {
        for (key, [ecb, cbc, ctr_expected]) in SP800_38A_VECTORS {
            let key = side.aes(&h(key));
            for (mechanism, expected) in [
                (Mechanism::AesEcb, ecb),
                (Mechanism::AesCbc(SP800_38A_IV), cbc),
                (ctr(&counter), ctr_expected),
            ] {
                let sealed = side.encrypt(&mechanism, key, &plain);
                assert_eq!(hex(&sealed), expected, "{:?} {mechanism:?}", side.module);
                assert_eq!(side.decrypt(&mechanism, key, &sealed), plain);
            }
        }
    }
}

#[test]
fn every_mode_gives_byte_identical_ciphertext_on_both_tokens_and_crosses_both_ways() {
    let sides = both("modes");
    let key_value: Vec<u8> = (0..32).map(|i| i * 3 + 1).collect();
    let block_plain = h(SP800_38A_PLAIN);
    let counter = ctr_params(64, [0x5c; 16]);
    let (mut iv, aad) = ([0x0c; 12], b"header".to_vec());
    let (mut short_iv, no_aad) = ([0x0d; 12], Vec::new());
    let cases: Vec<(&str, Mechanism, &[u8])> = vec![
        ("ECB", Mechanism::AesEcb, &block_plain),
        ("CBC", Mechanism::AesCbc([0x1f; 16]), &block_plain),
        ("CBC_PAD", Mechanism::AesCbcPad([0x2f; 16]), ODD_PLAIN),
        (
            "CBC_PAD, whole blocks",
            Mechanism::AesCbcPad([0x3f; 16]),
            &block_plain,
        ),
        ("CTR", ctr(&counter), ODD_PLAIN),
        ("GCM", gcm(&mut iv, &aad, 128), ODD_PLAIN),
        (
            "GCM, 96-bit tag",
            gcm(&mut short_iv, &no_aad, 96),
            ODD_PLAIN,
        ),
    ];
    for key_len in [16, 24, 32] {
        let keys = sides.each_ref().map(|side| side.aes(&key_value[..key_len]));
        for (name, mechanism, plain) in &cases {
            let what = format!("{name}, {key_len}-byte key");
            let sealed = [0, 1].map(|i| sides[i].encrypt(mechanism, keys[i], plain));
            assert_eq!(hex(&sealed[0]), hex(&sealed[1]), "{what}");
            let expected_len = match *name {
                "CBC_PAD" | "CBC_PAD, whole blocks" => (plain.len() / 16 + 1) * 16,
                "GCM" => plain.len() + 16,
                "GCM, 96-bit tag" => plain.len() + 12,
                _ => plain.len(),
            };
            assert_eq!(sealed[0].len(), expected_len, "{what}");
            // Made on one, opened on the other.
            for (from, to) in [(0, 1), (1, 0)] {
                assert_eq!(
                    sides[to].decrypt(mechanism, keys[to], &sealed[from]),
                    *plain,
                    "{what}: {:?} -> {:?}",
                    sides[from].module,
                    sides[to].module
                );
            }
        }
    }
}

#[test]
fn gcm_gives_the_mcgrew_viega_test_case_4_on_both_tokens() {
    let sides = both("gcm");
    for side in &sides {
        let key = side.aes(&h(GCM_KEY));
        let mut iv = h(GCM_IV);
        let aad = h(GCM_AAD);
        let mechanism = gcm(&mut iv, &aad, 128);
        let sealed = side.encrypt(&mechanism, key, &h(GCM_PLAIN));
        assert_eq!(hex(&sealed), GCM_SEALED, "{:?}", side.module);
        assert_eq!(side.decrypt(&mechanism, key, &sealed), h(GCM_PLAIN));
        // A 96-bit tag is the first 12 bytes of the 128-bit one.
        let mut iv = h(GCM_IV);
        let truncated = gcm(&mut iv, &aad, 96);
        let sealed = side.encrypt(&truncated, key, &h(GCM_PLAIN));
        assert_eq!(
            hex(&sealed),
            GCM_SEALED[..GCM_SEALED.len() - 8],
            "{:?}",
            side.module
        );
    }
}

#[test]
fn multi_part_encryption_matches_single_part_on_both_tokens() {
    let sides = both("multipart");
    let plain: Vec<u8> = (0..100u8).collect();
    let mechanisms = [
        Mechanism::AesCbcPad([0x4a; 16]),
        Mechanism::AesCbc([0x4b; 16]),
        Mechanism::AesEcb,
    ];
    let mut outputs = Vec::new();
    for side in &sides {
        let key = side.aes(&[0x6d; 16]);
        for mechanism in &mechanisms {
            let plain = match mechanism {
                Mechanism::AesCbcPad(_) => &plain[..],
                _ => &plain[..96],
            };
            let single = side.encrypt(mechanism, key, plain);
            side.session.encrypt_init(mechanism, key).unwrap();
            let mut multi = Vec::new();
            for part in [&plain[..7], &plain[7..40], &plain[40..41], &plain[41..]] {
                multi.extend(side.session.encrypt_update(part).unwrap());
            }
            multi.extend(side.session.encrypt_final().unwrap());
            assert_eq!(multi, single, "{:?} {mechanism:?}", side.module);
            side.session.decrypt_init(mechanism, key).unwrap();
            let mut opened = Vec::new();
            for part in single.chunks(13) {
                opened.extend(side.session.decrypt_update(part).unwrap());
            }
            opened.extend(side.session.decrypt_final().unwrap());
            assert_eq!(opened, plain, "{:?} {mechanism:?}", side.module);
            outputs.push(single);
        }
    }
    let (keyferry, softhsm) = outputs.split_at(mechanisms.len());
    assert_eq!(keyferry, softhsm);
}

#[test]
fn digests_hmac_and_cmac_agree_between_the_tokens() {
    let sides = both("macs");
    let messages: Vec<Vec<u8>> = [0usize, 3, 55, 56, 64, 65, 1000]
        .iter()
        .map(|&len| (0..len).map(|i| (i * 13 + 7) as u8).collect())
        .collect();
    let hmac_value: Vec<u8> = (0..32).map(|i| 0x80 | i).collect();
    // Per side: [HMAC key, CMAC key].
    let keys = sides.each_ref().map(|side| {
        [
            side.import(KeyType::GENERIC_SECRET, &hmac_value),
            side.aes(&h(SP800_38A_KEY_128)),
        ]
    });
    for message in &messages {
        let len = message.len();
        let digests = [0, 1].map(|i| {
            sides[i]
                .session
                .digest(&Mechanism::Sha256, message)
                .unwrap()
        });
        assert_eq!(digests[0], digests[1], "SHA-256 of {len} bytes");
        assert_eq!(digests[0].len(), 32);
        for (name, mechanism, which) in [
            ("HMAC-SHA-256", Mechanism::Sha256Hmac, 0),
            ("AES-CMAC", Mechanism::AesCMac, 1),
        ] {
            let macs = [0, 1].map(|i| {
                sides[i]
                    .session
                    .sign(&mechanism, keys[i][which], message)
                    .unwrap()
            });
            assert_eq!(hex(&macs[0]), hex(&macs[1]), "{name} of {len} bytes");
            // Each token verifies the other's MAC, and refuses it with one bit flipped.
            for (from, to) in [(0, 1), (1, 0)] {
                let key = keys[to][which];
                sides[to]
                    .session
                    .verify(&mechanism, key, message, &macs[from])
                    .unwrap();
                let mut wrong = macs[from].clone();
                wrong[5] ^= 0x10;
                assert_eq!(
                    rv(sides[to].session.verify(&mechanism, key, message, &wrong)),
                    RvError::SignatureInvalid,
                    "{:?} {name}",
                    sides[to].module
                );
            }
        }
    }
    // Known answers: FIPS 180 "abc" and RFC 4493 example 2, on both.
    for (side, [_, cmac_key]) in sides.iter().zip(keys) {
        assert_eq!(
            hex(&side.session.digest(&Mechanism::Sha256, b"abc").unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let example_2 = &h(SP800_38A_PLAIN)[..16];
        assert_eq!(
            hex(&side
                .session
                .sign(&Mechanism::AesCMac, cmac_key, example_2)
                .unwrap()),
            "070a16b46b4d4144f79bdd9dd04a287c",
            "{:?}",
            side.module
        );
    }
}

#[test]
fn an_hmac_key_shorter_than_the_hash() {
    // RFC 4231 test case 2: a 4-byte key.
    let data = b"what do ya want for nothing?";
    let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    for side in both("short-hmac") {
        let key = side.import(KeyType::GENERIC_SECRET, b"Jefe");
        let result = side.session.sign(&Mechanism::Sha256Hmac, key, data);
        match side.module {
            // RFC 2104 allows any key length; PKCS#11 3.0 §2.20.5 leaves the sizes to
            // C_GetMechanismInfo, where keyferry offers 1 to 512 bytes.
            Module::Keyferry => assert_eq!(hex(&result.unwrap()), expected),
            // SoftHSMv2 2.6.1 requires an HMAC key at least as long as the hash.
            Module::SoftHsm => assert_eq!(rv(result), RvError::KeySizeRange),
        }
    }
}

/// The code of a refused call.
fn refused<T: std::fmt::Debug>(side: &Side, result: cryptoki::error::Result<T>) -> RvError {
    match result {
        Ok(value) => panic!("{:?}: accepted, giving {value:?}", side.module),
        failed => rv(failed),
    }
}

#[test]
fn data_errors_get_their_own_codes_on_keyferry_and_general_error_on_softhsm() {
    for side in both("refusals") {
        // PKCS#11 3.0 §5.9 names CKR_ENCRYPTED_DATA_INVALID for a ciphertext that fails
        // its check and CKR_ENCRYPTED_DATA_LEN_RANGE for one of an impossible length.
        // SoftHSMv2 2.6.1 reports CKR_GENERAL_ERROR for these data errors of GCM and
        // CBC_PAD (its decryptFinal failures all map to it).
        let (invalid, len_range) = match side.module {
            Module::Keyferry => (
                RvError::EncryptedDataInvalid,
                RvError::EncryptedDataLenRange,
            ),
            Module::SoftHsm => (RvError::GeneralError, RvError::GeneralError),
        };
        let key = side.aes(&h(GCM_KEY));
        let aad = h(GCM_AAD);
        let mut sealed = h(GCM_SEALED);
        *sealed.last_mut().unwrap() ^= 1;
        let mut iv = h(GCM_IV);
        let result = side.session.decrypt(&gcm(&mut iv, &aad, 128), key, &sealed);
        assert_eq!(refused(&side, result), invalid, "{:?} GCM tag", side.module);
        let mut iv = h(GCM_IV);
        let result = side
            .session
            .decrypt(&gcm(&mut iv, &aad, 128), key, &sealed[..15]);
        assert_eq!(
            refused(&side, result),
            len_range,
            "{:?} GCM, 15 bytes",
            side.module
        );

        // Final blocks made with plain CBC that decrypt to bytes that are not PKCS#7.
        let iv = [0x71; 16];
        for last in [0u8, 17, 0xff] {
            let mut plain = [0u8; 32];
            plain[31] = last;
            let raw = side.encrypt(&Mechanism::AesCbc(iv), key, &plain);
            let result = side.session.decrypt(&Mechanism::AesCbcPad(iv), key, &raw);
            assert_eq!(
                refused(&side, result),
                invalid,
                "{:?} padding {last}",
                side.module
            );
        }
        // CBC_PAD ciphertext is at least one block.
        let result = side.session.decrypt(&Mechanism::AesCbcPad(iv), key, &[]);
        assert_eq!(
            refused(&side, result),
            len_range,
            "{:?} CBC_PAD, empty",
            side.module
        );

        // Lengths that are not whole blocks: both give the spec's codes.
        let result = side.session.encrypt(&Mechanism::AesEcb, key, &[0; 15]);
        assert_eq!(
            refused(&side, result),
            RvError::DataLenRange,
            "{:?}",
            side.module
        );
        for mechanism in [Mechanism::AesCbc(iv), Mechanism::AesCbcPad(iv)] {
            let result = side.session.decrypt(&mechanism, key, &[0; 17]);
            assert_eq!(
                refused(&side, result),
                RvError::EncryptedDataLenRange,
                "{:?} {mechanism:?}",
                side.module
            );
        }
        // A MAC of the wrong length.
        let mac = side.session.sign(&Mechanism::AesCMac, key, b"m").unwrap();
        let result = side
            .session
            .verify(&Mechanism::AesCMac, key, b"m", &mac[..15]);
        assert_eq!(
            refused(&side, result),
            RvError::SignatureLenRange,
            "{:?}",
            side.module
        );
        // A digest mechanism for encryption.
        let result = side.session.encrypt(&Mechanism::Sha256, key, &[0; 16]);
        assert_eq!(
            refused(&side, result),
            RvError::MechanismInvalid,
            "{:?}",
            side.module
        );
    }
}

#[test]
fn gcm_with_a_128_bit_iv_agrees_and_a_64_bit_tag_is_keyferrys_refusal() {
    let sides = both("gcm-params");
    let keys = sides.each_ref().map(|side| side.aes(&[0x31; 16]));
    // A 16-byte IV goes through GHASH (SP 800-38D §7.1); both tokens take it and agree.
    let outputs = [0, 1].map(|i| {
        let mut iv = vec![0x44; 16];
        sides[i].encrypt(&gcm(&mut iv, b"aad", 128), keys[i], ODD_PLAIN)
    });
    assert_eq!(outputs[0], outputs[1]);
    // PKCS#11 3.0 §2.10.8 allows tags of 0 to 128 bits; keyferry offers 96 to 128 (SP
    // 800-38D's floor for general use) and refuses the rest at C_EncryptInit, where
    // SoftHSMv2 2.6.1 takes a 64-bit tag.
    let outputs = [0, 1].map(|i| {
        let mut iv = vec![0x44; 12];
        sides[i]
            .session
            .encrypt(&gcm(&mut iv, b"aad", 64), keys[i], ODD_PLAIN)
    });
    let [keyferry, softhsm] = outputs;
    assert_eq!(refused(&sides[0], keyferry), RvError::MechanismParamInvalid);
    assert_eq!(softhsm.unwrap().len(), ODD_PLAIN.len() + 8);
}

#[test]
fn ctr_with_a_short_counter_near_its_end() {
    let sides = both("ctr-end");
    let mut block = [0x12; 16];
    block[15] = 0xfe;
    // An 8-bit counter at 0xfe: two blocks before it would wrap into the nonce.
    let counter = ctr_params(8, block);
    for side in &sides {
        let key = side.aes(&[0x21; 16]);
        let two_blocks = side.encrypt(&ctr(&counter), key, &[0; 32]);
        assert_eq!(two_blocks.len(), 32);
        let result = side.session.encrypt(&ctr(&counter), key, &[0; 33]);
        assert_eq!(rv(result), RvError::DataLenRange, "{:?}", side.module);
    }
    // Within the counter's range both give the same keystream.
    let outputs = sides.each_ref().map(|side| {
        let key = side.aes(&[0x21; 16]);
        side.encrypt(&ctr(&counter), key, &[0; 32])
    });
    assert_eq!(outputs[0], outputs[1]);
}
