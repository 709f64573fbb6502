//! How keys travel: probing what each token really does (token profiles), choosing the best
//! transport both sides support, agreeing a session KEK, and carrying one object across.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};

use crate::check::raw_point;
use crate::inventory::Object;
use crate::names::{self, CKM_AES_KEY_WRAP_KWP};
use crate::p11raw::{RawAttribute, RawError, RawMechanism, RawValue, Read};
use crate::templates::{self, Refusal};
use crate::token::Token;

/// DER OID of P-256, the curve transport keys are agreed on.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A 20-byte value the RFC 5649 probe carries: not whole 64-bit blocks, to catch padding.
const ODD_PROBE: [u8; 20] = *b"keyferry-odd-probe!!";

/// What a token was seen to do, by throwaway session objects.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Profile {
    /// The RFC 5649 mechanism numbers that wrapped and unwrapped a 20-byte key.
    pub rfc5649: Vec<String>,
    /// Its RFC 5649 pads a 20-byte key to 24 bytes with zeros (SoftHSMv2 2.6.1).
    pub rfc5649_zero_pads: bool,
    /// RFC 3394 (CKM_AES_KEY_WRAP) round-trips a 16-byte key.
    pub rfc3394: bool,
    /// ECDH1 KDFs that derived an AES-256 key on P-256.
    pub ecdh_kdfs: Vec<String>,
    /// OAEP hashes that wrapped and unwrapped an AES key (probed only when needed).
    pub oaep_hashes: Option<Vec<String>>,
    /// CKM_RSA_AES_KEY_WRAP round-trips (probed only when needed).
    pub rsa_aes: Option<bool>,
    /// Attributes the token refuses when it creates objects, by class.
    pub refusals: Vec<Refusal>,
    /// A generic secret's unwrap template may carry CKA_VALUE_LEN (to trim zero padding).
    pub generic_value_len: bool,
    /// The check value of the token's keyferry domain key, when it has one: tokens with
    /// equal values share a master key.
    pub domain: Option<String>,
}

impl Profile {
    fn kwp(&self) -> Option<CK_MECHANISM_TYPE> {
        // Prefer the 3.0 number; fall back to SoftHSMv2's.
        if self
            .rfc5649
            .iter()
            .any(|name| name == "CKM_AES_KEY_WRAP_KWP")
        {
            Some(CKM_AES_KEY_WRAP_KWP)
        } else if self
            .rfc5649
            .iter()
            .any(|name| name == "CKM_AES_KEY_WRAP_PAD")
        {
            Some(CKM_AES_KEY_WRAP_PAD)
        } else {
            None
        }
    }

    /// Whether the token refused this attribute on objects of this class.
    pub fn refuses(&self, class: CK_OBJECT_CLASS, kind: CK_ATTRIBUTE_TYPE) -> bool {
        // Asked for every attribute of every object carried: names are made only when a
        // refusal could match, and most tokens refuse nothing.
        if self.refusals.is_empty() {
            return false;
        }
        let (class, name) = (names::class(class), names::attribute(kind));
        self.refusals
            .iter()
            .any(|refusal| refusal.class == class && refusal.attribute == name)
    }
}

fn secret_template(value: &[u8], key_type: KeyType) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Value(value.to_vec()),
    ]
}

fn unwrap_template(key_type: CK_KEY_TYPE) -> Vec<RawAttribute> {
    vec![
        RawAttribute::ulong(CKA_CLASS, CKO_SECRET_KEY),
        RawAttribute::ulong(CKA_KEY_TYPE, key_type),
        RawAttribute::flag(CKA_TOKEN, false),
        RawAttribute::flag(CKA_SENSITIVE, false),
        RawAttribute::flag(CKA_EXTRACTABLE, true),
    ]
}

fn value_of(session: &Session, key: ObjectHandle) -> Option<Vec<u8>> {
    match session
        .get_attributes(key, &[cryptoki::object::AttributeType::Value])
        .ok()?
        .pop()
    {
        Some(Attribute::Value(value)) => Some(value),
        _ => None,
    }
}

/// Session objects a probe or a link made; destroyed when dropped.
struct Scratch<'a> {
    session: &'a Session,
    objects: Vec<ObjectHandle>,
}

impl<'a> Scratch<'a> {
    fn new(session: &'a Session) -> Self {
        Self {
            session,
            objects: Vec::new(),
        }
    }

    fn keep(&mut self, handle: ObjectHandle) -> ObjectHandle {
        self.objects.push(handle);
        handle
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        for handle in self.objects.drain(..) {
            let _ = self.session.destroy_object(handle);
        }
    }
}

fn transport_kek_template(wrap: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Wrap(wrap),
        Attribute::Unwrap(!wrap),
    ]
}

/// Probes `token` with throwaway session keys; `deep` also probes RSA (OAEP, RSA-AES).
pub fn probe(token: &Token, session: &Session, deep: bool) -> Profile {
    let raw = &token.module.raw;
    let mut profile = Profile {
        domain: domain_key(token, session).map(|(_, check)| check),
        ..Profile::default()
    };
    let mut scratch = Scratch::new(session);
    let kek = session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ],
    );
    let odd = session.create_object(&secret_template(&ODD_PROBE, KeyType::GENERIC_SECRET));
    let aes = session.create_object(&secret_template(&[0x5a; 16], KeyType::AES));
    if let (Ok(kek), Ok(odd), Ok(aes)) = (kek, odd, aes) {
        for handle in [kek, odd, aes] {
            scratch.keep(handle);
        }
        for mechanism in [CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD] {
            let plain = RawMechanism::Plain(mechanism);
            let Ok(blob) = raw.wrap_key(session, &plain, kek, odd) else {
                continue;
            };
            let Ok(back) = raw.unwrap_key(
                session,
                &plain,
                kek,
                &blob,
                &unwrap_template(CKK_GENERIC_SECRET),
            ) else {
                continue;
            };
            scratch.keep(back);
            match value_of(session, back) {
                Some(value) if value == ODD_PROBE => {
                    profile.rfc5649.push(names::mechanism(mechanism))
                }
                Some(value)
                    if value.starts_with(&ODD_PROBE)
                        && value[ODD_PROBE.len()..].iter().all(|&b| b == 0) =>
                {
                    profile.rfc5649.push(names::mechanism(mechanism));
                    profile.rfc5649_zero_pads = true;
                }
                _ => {}
            }
        }
        let plain = RawMechanism::Plain(CKM_AES_KEY_WRAP);
        if let Ok(blob) = raw.wrap_key(session, &plain, kek, aes)
            && let Ok(back) = raw.unwrap_key(session, &plain, kek, &blob, &unwrap_template(CKK_AES))
        {
            scratch.keep(back);
            profile.rfc3394 = value_of(session, back).as_deref() == Some(&[0x5a; 16][..]);
        }
        if let Some(kwp) = profile.kwp() {
            (profile.refusals, profile.generic_value_len) =
                templates::probe(token, session, kek, kwp);
        }
    }
    if let Ok((public, private)) = ec_pair(session) {
        scratch.keep(public);
        scratch.keep(private);
        if let Ok(point) = ec_point(session, public) {
            for (kdf, name) in [(CKD_SHA256_KDF, "CKD_SHA256_KDF"), (CKD_NULL, "CKD_NULL")] {
                if let Ok(derived) = derive(token, session, private, &point, kdf, true) {
                    scratch.keep(derived);
                    profile.ecdh_kdfs.push(name.to_owned());
                }
            }
        }
    }
    if deep {
        probe_rsa(token, session, &mut scratch, &mut profile);
    }
    profile
}

fn probe_rsa(token: &Token, session: &Session, scratch: &mut Scratch, profile: &mut Profile) {
    let mut hashes = Vec::new();
    let mut rsa_aes = false;
    if let Ok((public, private)) = rsa_pair(session)
        && let Ok(aes) = session.create_object(&secret_template(&[0x5a; 16], KeyType::AES))
    {
        scratch.keep(public);
        scratch.keep(private);
        scratch.keep(aes);
        for (hash, mgf, name) in OAEP_HASHES {
            let mechanism = RawMechanism::Oaep { hash, mgf };
            if let Ok(blob) = token.module.raw.wrap_key(session, &mechanism, public, aes)
                && let Ok(back) = token.module.raw.unwrap_key(
                    session,
                    &mechanism,
                    private,
                    &blob,
                    &unwrap_template(CKK_AES),
                )
            {
                scratch.keep(back);
                hashes.push(name.to_owned());
            }
        }
        let mechanism = RawMechanism::RsaAes {
            aes_bits: 256,
            hash: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
        };
        if let Ok(blob) = token.module.raw.wrap_key(session, &mechanism, public, aes)
            && let Ok(back) = token.module.raw.unwrap_key(
                session,
                &mechanism,
                private,
                &blob,
                &unwrap_template(CKK_AES),
            )
        {
            scratch.keep(back);
            rsa_aes = true;
        }
    }
    profile.oaep_hashes = Some(hashes);
    profile.rsa_aes = Some(rsa_aes);
}

/// The token's keyferry domain key and its check value (hex), if it has one.
pub fn domain_key(token: &Token, session: &Session) -> Option<(ObjectHandle, String)> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(names::DOMAIN_KEY_LABEL.as_bytes().to_vec()),
        ])
        .ok()?;
    found.into_iter().find_map(|handle| {
        let allowed = token
            .module
            .raw
            .attribute(session, handle, CKA_ALLOWED_MECHANISMS)
            .ok()?;
        let check = token
            .module
            .raw
            .attribute(session, handle, CKA_CHECK_VALUE)
            .ok()?;
        match (allowed, check) {
            (Read::Value(RawValue::Bytes(allowed)), Read::Value(RawValue::Bytes(check)))
                if allowed == names::CKM_KEYFERRY_DOMAIN_WRAP.to_ne_bytes()
                    && !check.is_empty() =>
            {
                Some((handle, hex::encode(check)))
            }
            _ => None,
        }
    })
}

/// OAEP hashes, best first.
const OAEP_HASHES: [(CK_MECHANISM_TYPE, CK_ULONG, &str); 2] = [
    (CKM_SHA256, CKG_MGF1_SHA256, "SHA-256"),
    (CKM_SHA_1, CKG_MGF1_SHA1, "SHA-1"),
];

/// A P-256 pair whose private half may be wrapped (template probes).
pub fn extractable_ec_pair(
    session: &Session,
) -> Result<(ObjectHandle, ObjectHandle), cryptoki::error::Error> {
    session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::EcParams(P256_PARAMS.to_vec()),
        ],
        &[
            Attribute::Token(false),
            Attribute::Sign(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ],
    )
}

fn ec_pair(session: &Session) -> Result<(ObjectHandle, ObjectHandle), cryptoki::error::Error> {
    session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::EcParams(P256_PARAMS.to_vec()),
        ],
        &[
            Attribute::Token(false),
            Attribute::Derive(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ],
    )
}

fn rsa_pair(session: &Session) -> Result<(ObjectHandle, ObjectHandle), cryptoki::error::Error> {
    session.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Wrap(true),
            Attribute::Encrypt(true),
        ],
        &[
            Attribute::Token(false),
            Attribute::Unwrap(true),
            Attribute::Decrypt(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ],
    )
}

fn ec_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, String> {
    match session.get_attributes(public, &[cryptoki::object::AttributeType::EcPoint]) {
        Ok(mut attributes) => match attributes.pop() {
            Some(Attribute::EcPoint(point)) => Ok(raw_point(&point).to_vec()),
            _ => Err("no CKA_EC_POINT".to_owned()),
        },
        Err(err) => Err(names::cryptoki_error(&err)),
    }
}

fn derive(
    token: &Token,
    session: &Session,
    private: ObjectHandle,
    peer_point: &[u8],
    kdf: CK_ULONG,
    wrap: bool,
) -> Result<ObjectHandle, String> {
    let mut template = vec![
        RawAttribute::ulong(CKA_CLASS, CKO_SECRET_KEY),
        RawAttribute::ulong(CKA_KEY_TYPE, CKK_AES),
        RawAttribute::ulong(CKA_VALUE_LEN, 32),
        RawAttribute::flag(CKA_TOKEN, false),
        RawAttribute::flag(CKA_SENSITIVE, true),
        RawAttribute::flag(CKA_EXTRACTABLE, false),
        RawAttribute::flag(CKA_ENCRYPT, true),
    ];
    template.push(RawAttribute::flag(
        if wrap { CKA_WRAP } else { CKA_UNWRAP },
        true,
    ));
    token
        .module
        .raw
        .derive_key(
            session,
            &RawMechanism::Ecdh {
                kdf,
                public: peer_point.to_vec(),
            },
            private,
            &template,
        )
        .map_err(|err| err.to_string())
}

/// How the session KEK is agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KekAgreement {
    /// Same-root domain clone (CKM_KEYFERRY_DOMAIN_WRAP under each token's domain key):
    /// both tokens hold the same master key, and every object moves with every attribute,
    /// non-extractable keys included.
    Domain,
    /// ECDH on P-256 between two ephemeral key pairs: no transport key is ever extractable.
    Ecdh,
    /// CKM_RSA_AES_KEY_WRAP to an ephemeral RSA key of the destination.
    RsaAes,
    /// An AES key of the source wrapped with RSA-OAEP to an ephemeral RSA key of the destination.
    RsaOaep,
}

/// The transport chosen for a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transport {
    /// How the KEK is agreed.
    pub agreement: KekAgreement,
    /// ECDH KDF or OAEP hash, by name.
    pub detail: String,
    /// The mechanism the source wraps objects with.
    pub wrap: String,
    /// The mechanism the destination unwraps them with.
    pub unwrap: String,
    /// Why this one (and why not the better ones).
    pub reason: String,
}

impl Transport {
    /// "ecdh(CKD_NULL) + CKM_AES_KEY_WRAP_PAD → CKM_AES_KEY_WRAP_KWP".
    pub fn describe(&self) -> String {
        let agreement = match self.agreement {
            KekAgreement::Domain => "domain-clone",
            KekAgreement::Ecdh => "ecdh",
            KekAgreement::RsaAes => "rsa-aes",
            KekAgreement::RsaOaep => "rsa-oaep",
        };
        if self.wrap == self.unwrap {
            format!("{agreement}({}) + {}", self.detail, self.wrap)
        } else {
            format!(
                "{agreement}({}) + {} → {}",
                self.detail, self.wrap, self.unwrap
            )
        }
    }
}

fn mechanism_number(name: &str) -> CK_MECHANISM_TYPE {
    match name {
        "CKM_AES_KEY_WRAP_KWP" => CKM_AES_KEY_WRAP_KWP,
        "CKM_AES_KEY_WRAP_PAD" => CKM_AES_KEY_WRAP_PAD,
        "CKM_RSA_AES_KEY_WRAP" => CKM_RSA_AES_KEY_WRAP,
        "CKM_KEYFERRY_DOMAIN_WRAP" => names::CKM_KEYFERRY_DOMAIN_WRAP,
        _ => CKM_AES_KEY_WRAP,
    }
}

/// Chooses the best transport both profiles support (DESIGN.md order), or says why none.
/// `forced` restricts the choice to one agreement.
pub fn negotiate(
    source: &Profile,
    destination: &Profile,
    forced: Option<KekAgreement>,
) -> Result<Transport, String> {
    let allowed = |agreement| forced.is_none_or(|only| only == agreement);
    let mut passed_over = Vec::new();
    if allowed(KekAgreement::Domain) {
        match (&source.domain, &destination.domain) {
            (Some(here), Some(there)) if here == there => {
                return Ok(Transport {
                    agreement: KekAgreement::Domain,
                    detail: format!("domain {here}"),
                    wrap: names::mechanism(names::CKM_KEYFERRY_DOMAIN_WRAP),
                    unwrap: names::mechanism(names::CKM_KEYFERRY_DOMAIN_WRAP),
                    reason: "same-root domain clone: both tokens hold the same master key, so every key moves with every attribute, non-extractable ones included".to_owned(),
                });
            }
            (Some(_), Some(_)) => {
                passed_over.push("domain clone: the tokens belong to different domains".to_owned())
            }
            (Some(_), None) | (None, Some(_)) => passed_over.push(
                "domain clone: only one of the tokens belongs to a keyferry domain".to_owned(),
            ),
            // Neither token was built from key parts: a domain clone was never an option.
            (None, None) => {}
        }
    }
    let object_wrap = match (source.kwp(), destination.kwp()) {
        (Some(wrap), Some(unwrap)) => Some((names::mechanism(wrap), names::mechanism(unwrap))),
        _ if source.rfc3394 && destination.rfc3394 => {
            passed_over.push(
                "no RFC 5649 on both sides: RFC 3394 carries only keys of whole 64-bit blocks"
                    .to_owned(),
            );
            Some(("CKM_AES_KEY_WRAP".to_owned(), "CKM_AES_KEY_WRAP".to_owned()))
        }
        _ => None,
    };
    if allowed(KekAgreement::Ecdh) {
        let common = source
            .ecdh_kdfs
            .iter()
            .find(|kdf| destination.ecdh_kdfs.contains(kdf));
        match (common, &object_wrap) {
            (Some(kdf), Some((wrap, unwrap))) => {
                return Ok(Transport {
                    agreement: KekAgreement::Ecdh,
                    detail: kdf.clone(),
                    wrap: wrap.clone(),
                    unwrap: unwrap.clone(),
                    reason: with_passed_over(
                        "ECDH-agreed KEK: no transport key is ever extractable",
                        &passed_over,
                    ),
                });
            }
            (None, _) => passed_over.push("ECDH: no KDF works on both tokens".to_owned()),
            (_, None) => {
                passed_over.push("no AES key wrap mechanism works on both tokens".to_owned())
            }
        }
    }
    if allowed(KekAgreement::RsaAes) {
        if source.rsa_aes == Some(true) && destination.rsa_aes == Some(true) {
            return Ok(Transport {
                agreement: KekAgreement::RsaAes,
                detail: "SHA-256".to_owned(),
                wrap: "CKM_RSA_AES_KEY_WRAP".to_owned(),
                unwrap: "CKM_RSA_AES_KEY_WRAP".to_owned(),
                reason: with_passed_over("CKM_RSA_AES_KEY_WRAP on both tokens", &passed_over),
            });
        }
        passed_over.push("CKM_RSA_AES_KEY_WRAP: not on both tokens".to_owned());
    }
    if allowed(KekAgreement::RsaOaep) {
        let source_hashes = source.oaep_hashes.clone().unwrap_or_default();
        let destination_hashes = destination.oaep_hashes.clone().unwrap_or_default();
        let common = source_hashes
            .iter()
            .find(|hash| destination_hashes.contains(hash));
        match (common, &object_wrap) {
            (Some(hash), Some((wrap, unwrap))) => {
                return Ok(Transport {
                    agreement: KekAgreement::RsaOaep,
                    detail: hash.clone(),
                    wrap: wrap.clone(),
                    unwrap: unwrap.clone(),
                    reason: with_passed_over("RSA-OAEP transport key", &passed_over),
                });
            }
            _ => passed_over.push("RSA-OAEP: no hash works on both tokens".to_owned()),
        }
    }
    Err(passed_over.join("; "))
}

fn with_passed_over(chosen: &str, passed_over: &[String]) -> String {
    if passed_over.is_empty() {
        chosen.to_owned()
    } else {
        format!("{chosen} (passed over: {})", passed_over.join("; "))
    }
}

/// An agreed KEK: one session object on each side, destroyed on drop.
pub struct Link<'a> {
    /// The transport.
    pub transport: Transport,
    source: &'a Token,
    destination: &'a Token,
    /// Wraps on the source: the AES KEK, or the destination's RSA public key (RSA-AES).
    source_kek: Option<ObjectHandle>,
    /// Unwraps on the destination.
    destination_kek: Option<ObjectHandle>,
    source_scratch: Vec<ObjectHandle>,
    destination_scratch: Vec<ObjectHandle>,
    /// The destination's ephemeral RSA key: its public half on the source, its private half.
    rsa: Option<(ObjectHandle, ObjectHandle)>,
}

impl Drop for Link<'_> {
    fn drop(&mut self) {
        for handle in self.source_scratch.drain(..) {
            let _ = self.source.session.destroy_object(handle);
        }
        for handle in self.destination_scratch.drain(..) {
            let _ = self.destination.session.destroy_object(handle);
        }
    }
}

fn oaep(hash_name: &str) -> RawMechanism {
    match hash_name {
        "SHA-1" => RawMechanism::Oaep {
            hash: CKM_SHA_1,
            mgf: CKG_MGF1_SHA1,
        },
        _ => RawMechanism::Oaep {
            hash: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
        },
    }
}

impl<'a> Link<'a> {
    /// Agrees the session KEK between the two tokens and checks both halves are equal.
    pub fn establish(
        source: &'a Token,
        destination: &'a Token,
        transport: Transport,
    ) -> Result<Self, String> {
        let mut link = Link {
            transport,
            source,
            destination,
            source_kek: None,
            destination_kek: None,
            source_scratch: Vec::new(),
            destination_scratch: Vec::new(),
            rsa: None,
        };
        let (src, dst) = (&source.session, &destination.session);
        match link.transport.agreement {
            KekAgreement::Domain => {
                // The domain keys are the tokens' own objects: used, never destroyed.
                let (source_key, _) =
                    domain_key(source, src).ok_or("the source has no domain key")?;
                let (destination_key, _) =
                    domain_key(destination, dst).ok_or("the destination has no domain key")?;
                link.source_kek = Some(source_key);
                link.destination_kek = Some(destination_key);
            }
            KekAgreement::Ecdh => {
                let kdf = if link.transport.detail == "CKD_SHA256_KDF" {
                    CKD_SHA256_KDF
                } else {
                    CKD_NULL
                };
                let (source_public, source_private) = ec_pair(src)
                    .map_err(|err| format!("source: {}", names::cryptoki_error(&err)))?;
                link.source_scratch.extend([source_public, source_private]);
                let (destination_public, destination_private) = ec_pair(dst)
                    .map_err(|err| format!("destination: {}", names::cryptoki_error(&err)))?;
                link.destination_scratch
                    .extend([destination_public, destination_private]);
                let source_point = ec_point(src, source_public)?;
                let destination_point = ec_point(dst, destination_public)?;
                let source_kek =
                    derive(source, src, source_private, &destination_point, kdf, true)?;
                link.source_scratch.push(source_kek);
                link.source_kek = Some(source_kek);
                let destination_kek = derive(
                    destination,
                    dst,
                    destination_private,
                    &source_point,
                    kdf,
                    false,
                )?;
                link.destination_scratch.push(destination_kek);
                link.destination_kek = Some(destination_kek);
                link.check_equal_keks()?;
            }
            KekAgreement::RsaAes | KekAgreement::RsaOaep => {
                let (source_public, private) = link.rsa_channel()?;
                if link.transport.agreement == KekAgreement::RsaAes {
                    link.source_kek = Some(source_public);
                    link.destination_kek = Some(private);
                } else {
                    let mut template = transport_kek_template(true);
                    template.push(Attribute::ValueLen(32.into()));
                    template.retain(|attribute| !matches!(attribute, Attribute::Extractable(_)));
                    template.push(Attribute::Extractable(true));
                    let aes = src
                        .generate_key(&Mechanism::AesKeyGen, &template)
                        .map_err(|err| format!("source: {}", names::cryptoki_error(&err)))?;
                    link.source_scratch.push(aes);
                    let mechanism = oaep(&link.transport.detail);
                    let blob = source
                        .module
                        .raw
                        .wrap_key(src, &mechanism, source_public, aes)
                        .map_err(|err| format!("source: {err}"))?;
                    let unwrap: Vec<RawAttribute> = vec![
                        RawAttribute::ulong(CKA_CLASS, CKO_SECRET_KEY),
                        RawAttribute::ulong(CKA_KEY_TYPE, CKK_AES),
                        RawAttribute::flag(CKA_TOKEN, false),
                        RawAttribute::flag(CKA_SENSITIVE, true),
                        RawAttribute::flag(CKA_EXTRACTABLE, false),
                        RawAttribute::flag(CKA_ENCRYPT, true),
                        RawAttribute::flag(CKA_UNWRAP, true),
                    ];
                    let kek = destination
                        .module
                        .raw
                        .unwrap_key(dst, &mechanism, private, &blob, &unwrap)
                        .map_err(|err| format!("destination: {err}"))?;
                    link.destination_scratch.push(kek);
                    link.source_kek = Some(aes);
                    link.destination_kek = Some(kek);
                    link.check_equal_keks()?;
                }
            }
        }
        Ok(link)
    }

    /// An ephemeral RSA-2048 pair on the destination (private half unwraps) with its public
    /// half imported on the source (wraps); made once per link.
    fn rsa_channel(&mut self) -> Result<(ObjectHandle, ObjectHandle), String> {
        if let Some(channel) = self.rsa {
            return Ok(channel);
        }
        let (src, dst) = (&self.source.session, &self.destination.session);
        let (public, private) =
            rsa_pair(dst).map_err(|err| format!("destination: {}", names::cryptoki_error(&err)))?;
        self.destination_scratch.extend([public, private]);
        let attributes = dst
            .get_attributes(
                public,
                &[
                    cryptoki::object::AttributeType::Modulus,
                    cryptoki::object::AttributeType::PublicExponent,
                ],
            )
            .map_err(|err| names::cryptoki_error(&err))?;
        let mut imported = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Encrypt(true),
        ];
        imported.extend(attributes);
        let source_public = src
            .create_object(&imported)
            .map_err(|err| format!("source: {}", names::cryptoki_error(&err)))?;
        self.source_scratch.push(source_public);
        self.rsa = Some((source_public, private));
        Ok((source_public, private))
    }

    /// Readies RSA-OAEP wrapping straight to the destination's RSA key, for secrets the
    /// source's RFC 5649 would zero-pad (see `Entry::direct`).
    pub fn enable_direct(&mut self) -> Result<(), String> {
        self.rsa_channel().map(|_| ())
    }

    /// Wraps a secret on the source with RSA-OAEP (`hash`) under the destination's RSA key.
    pub fn wrap_direct(&self, object: &Object, hash: &str) -> Result<Vec<u8>, RawError> {
        let (source_public, _) = self.rsa.ok_or_else(|| no_kek("C_WrapKey"))?;
        self.source.module.raw.wrap_key(
            &self.source.session,
            &oaep(hash),
            source_public,
            object.handle,
        )
    }

    /// Unwraps an RSA-OAEP blob on the destination.
    pub fn unwrap_direct(
        &self,
        blob: &[u8],
        template: &[RawAttribute],
        hash: &str,
    ) -> Result<ObjectHandle, RawError> {
        let (_, private) = self.rsa.ok_or_else(|| no_kek("C_UnwrapKey"))?;
        self.destination.module.raw.unwrap_key(
            &self.destination.session,
            &oaep(hash),
            private,
            blob,
            template,
        )
    }

    fn keks(&self) -> Result<(ObjectHandle, ObjectHandle), String> {
        self.source_kek
            .zip(self.destination_kek)
            .ok_or_else(|| "no transport key agreed".to_owned())
    }

    fn check_equal_keks(&self) -> Result<(), String> {
        let (source_kek, destination_kek) = self.keks()?;
        let source = self
            .source
            .session
            .encrypt(&Mechanism::AesEcb, source_kek, &[0u8; 16]);
        let destination =
            self.destination
                .session
                .encrypt(&Mechanism::AesEcb, destination_kek, &[0u8; 16]);
        match (source, destination) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Ok(_), Ok(_)) => Err("the two tokens agreed different transport keys".to_owned()),
            (Err(err), _) | (_, Err(err)) => Err(format!(
                "checking the transport key: {}",
                names::cryptoki_error(&err)
            )),
        }
    }

    fn wrap_mechanism(&self) -> (RawMechanism, RawMechanism) {
        match self.transport.agreement {
            KekAgreement::RsaAes => {
                let mechanism = RawMechanism::RsaAes {
                    aes_bits: 256,
                    hash: CKM_SHA256,
                    mgf: CKG_MGF1_SHA256,
                };
                (mechanism.clone(), mechanism)
            }
            _ => (
                RawMechanism::Plain(mechanism_number(&self.transport.wrap)),
                RawMechanism::Plain(mechanism_number(&self.transport.unwrap)),
            ),
        }
    }

    /// Wraps `object` on the source.
    pub fn wrap(&self, object: &Object) -> Result<Vec<u8>, RawError> {
        self.wrap_handle(object.handle)
    }

    /// Wraps the source key `key` for the destination.
    pub fn wrap_handle(&self, key: ObjectHandle) -> Result<Vec<u8>, RawError> {
        self.wrapper()
            .ok_or_else(|| no_kek("C_WrapKey"))?
            .wrap(self.source, key)
    }

    /// What wrapping on the source takes, for a thread with a session of its own there:
    /// the transport key is a session object (or the domain key), which every session of
    /// this process on the source can use.
    pub fn wrapper(&self) -> Option<Wrapper> {
        let (mechanism, _) = self.wrap_mechanism();
        let (kek, _) = self.keks().ok()?;
        Some(Wrapper { mechanism, kek })
    }

    /// Unwraps `blob` on the destination with `template`.
    pub fn unwrap(&self, blob: &[u8], template: &[RawAttribute]) -> Result<ObjectHandle, RawError> {
        let (_, unwrap) = self.wrap_mechanism();
        let (_, destination_kek) = self.keks().map_err(|_| no_kek("C_UnwrapKey"))?;
        self.destination.module.raw.unwrap_key(
            &self.destination.session,
            &unwrap,
            destination_kek,
            blob,
            template,
        )
    }
}

/// Wraps source keys for the destination (see `Link::wrapper`).
pub struct Wrapper {
    mechanism: RawMechanism,
    kek: ObjectHandle,
}

impl Wrapper {
    /// Wraps `key` on `source`, a session on the link's source token.
    pub fn wrap(&self, source: &Token, key: ObjectHandle) -> Result<Vec<u8>, RawError> {
        source
            .module
            .raw
            .wrap_key(&source.session, &self.mechanism, self.kek, key)
    }
}

fn no_kek(function: &'static str) -> RawError {
    RawError {
        function,
        rv: CKR_KEY_HANDLE_INVALID,
    }
}
