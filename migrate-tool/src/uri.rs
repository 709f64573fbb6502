//! RFC 7512 PKCS#11 URIs: parsing `pkcs11:` strings into a [`TokenUri`] and printing them back.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// RFC 7512 §3: the scheme name is case-insensitive, like every URI scheme (RFC 3986 §3.1).
const SCHEME: &str = "pkcs11:";

/// Characters besides RFC 3986 `unreserved` that RFC 7512 §2.3 lets a path value carry
/// unencoded (`pk11-path-res-avail`). `;` separates attributes and `/`, `?` and `%` mean
/// something else, so they are always encoded.
const PATH_UNENCODED: &[u8] = b":[]@!$'()*+,=&";

/// Characters besides RFC 3986 `unreserved` that RFC 7512 §2.3 lets a query value carry
/// unencoded (`pk11-query-res-avail`); `&` separates query attributes, so it is encoded.
const QUERY_UNENCODED: &[u8] = b":[]@!$'()*+,=/?|";

/// Every path attribute RFC 7512 §2.3 defines (`pk11-pattr`), to say which component a
/// misplaced one belongs in.
const PATH_ATTRIBUTES: [&str; 13] = [
    "token",
    "manufacturer",
    "model",
    "serial",
    "slot-id",
    "slot-description",
    "slot-manufacturer",
    "library-manufacturer",
    "library-description",
    "library-version",
    "object",
    "id",
    "type",
];

/// The `type` path attribute: which class of object a URI names (RFC 7512 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// `public`: CKO_PUBLIC_KEY.
    Public,
    /// `private`: CKO_PRIVATE_KEY.
    Private,
    /// `cert`: CKO_CERTIFICATE.
    Cert,
    /// `secret-key`: CKO_SECRET_KEY.
    SecretKey,
    /// `data`: CKO_DATA.
    Data,
}

impl ObjectType {
    /// Every type, in the order RFC 7512 §2.3 lists them.
    pub const ALL: [ObjectType; 5] = [
        ObjectType::Public,
        ObjectType::Private,
        ObjectType::Cert,
        ObjectType::SecretKey,
        ObjectType::Data,
    ];

    /// The value as it appears after `type=`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectType::Public => "public",
            ObjectType::Private => "private",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// What went wrong reading a PKCS#11 URI. Messages name the attribute, never a PIN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// `type` is not one of the five RFC 7512 object types.
    #[error("unknown object type {0:?}; valid types are public, private, cert, secret-key, data")]
    BadObjectType(String),
    /// A `%` is not followed by two hex digits.
    #[error("bad percent-encoding in \"{0}\"")]
    BadPercentEncoding(&'static str),
    /// `slot-id` is not a decimal number that fits in 64 bits.
    #[error("slot-id {0:?} is not a number")]
    BadSlotId(String),
    /// The same attribute is given twice; RFC 7512 §2.3 allows each at most once.
    #[error("\"{0}\" appears twice")]
    Duplicate(&'static str),
    /// An attribute has no `=`. The text is not echoed: it may be a PIN typed in the wrong place.
    #[error("a URI attribute has no \"=\"; attributes are written name=value")]
    MissingEquals,
    /// The string does not start with the `pkcs11:` scheme.
    #[error("not a PKCS#11 URI: it must start with \"pkcs11:\"")]
    NotPkcs11,
    /// A text attribute does not decode to UTF-8.
    #[error("\"{0}\" is not valid UTF-8 after percent-decoding")]
    NotUtf8(&'static str),
    /// A path attribute (`token`, `object`, ...) was written after the `?`.
    #[error("\"{0}\" is a path attribute: put it before the \"?\"")]
    PathAttributeInQuery(String),
    /// The URI carries `pin-value`, which would leave the PIN in shell history and `ps`.
    #[error("the URI carries pin-value; PINs are never read from the command line")]
    PinOnCommandLine,
    /// A query attribute (`module-path`, ...) was written before the `?`.
    #[error("\"{0}\" is a query attribute: put it after a \"?\"")]
    QueryAttributeInPath(&'static str),
    /// A path attribute that neither RFC 7512 nor an `x-` vendor prefix defines.
    #[error("unknown URI attribute {0:?}")]
    UnknownAttribute(String),
    /// A query attribute that neither RFC 7512 nor an `x-` vendor prefix defines.
    #[error("unknown URI query attribute {0:?}")]
    UnknownQueryAttribute(String),
    /// An RFC 7512 attribute keyferry cannot honour; ignoring it would widen the match.
    #[error("the URI attribute \"{0}\" is not supported")]
    UnsupportedAttribute(&'static str),
}

/// A parsed PKCS#11 URI: which module, token and (optionally) objects a command works on.
/// Every field is a filter; `None` matches anything. It holds no secret: `pin-value` is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenUri {
    /// `token`: CK_TOKEN_INFO label.
    pub token: Option<String>,
    /// `manufacturer`: CK_TOKEN_INFO manufacturerID.
    pub manufacturer: Option<String>,
    /// `model`: CK_TOKEN_INFO model.
    pub model: Option<String>,
    /// `serial`: CK_TOKEN_INFO serialNumber.
    pub serial: Option<String>,
    /// `slot-id`: the CK_SLOT_ID, in decimal.
    pub slot_id: Option<u64>,
    /// `slot-description`: CK_SLOT_INFO slotDescription.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`: CK_SLOT_INFO manufacturerID.
    pub slot_manufacturer: Option<String>,
    /// `library-manufacturer`: CK_INFO manufacturerID.
    pub library_manufacturer: Option<String>,
    /// `library-description`: CK_INFO libraryDescription.
    pub library_description: Option<String>,
    /// `object`: CKA_LABEL.
    pub object: Option<String>,
    /// `id`: CKA_ID, raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type`: the object class.
    pub object_type: Option<ObjectType>,
    /// `module-path`: the PKCS#11 library to load, relative paths kept as given.
    pub module_path: Option<PathBuf>,
    /// `module-name`: the PKCS#11 library by name.
    pub module_name: Option<String>,
    /// `pin-source`: where the PIN comes from (see `pin::pin_from_source`).
    pub pin_source: Option<String>,
}

impl TokenUri {
    /// The same URI naming the whole token: `object`, `id` and `type` removed.
    pub fn without_object(&self) -> TokenUri {
        TokenUri {
            object: None,
            id: None,
            object_type: None,
            ..self.clone()
        }
    }

    fn set_path_attribute(&mut self, name: &str, value: &str) -> Result<(), UriError> {
        match name {
            "token" => set(&mut self.token, "token", text("token", value)?),
            "manufacturer" => set(
                &mut self.manufacturer,
                "manufacturer",
                text("manufacturer", value)?,
            ),
            "model" => set(&mut self.model, "model", text("model", value)?),
            "serial" => set(&mut self.serial, "serial", text("serial", value)?),
            "slot-id" => set(&mut self.slot_id, "slot-id", slot_id(value)?),
            "slot-description" => set(
                &mut self.slot_description,
                "slot-description",
                text("slot-description", value)?,
            ),
            "slot-manufacturer" => set(
                &mut self.slot_manufacturer,
                "slot-manufacturer",
                text("slot-manufacturer", value)?,
            ),
            "library-manufacturer" => set(
                &mut self.library_manufacturer,
                "library-manufacturer",
                text("library-manufacturer", value)?,
            ),
            "library-description" => set(
                &mut self.library_description,
                "library-description",
                text("library-description", value)?,
            ),
            "object" => set(&mut self.object, "object", text("object", value)?),
            "id" => set(&mut self.id, "id", percent_decode("id", value)?),
            "type" => set(&mut self.object_type, "type", object_type(value)?),
            "library-version" => Err(UriError::UnsupportedAttribute("library-version")),
            "pin-value" => Err(UriError::PinOnCommandLine),
            "module-path" => Err(UriError::QueryAttributeInPath("module-path")),
            "module-name" => Err(UriError::QueryAttributeInPath("module-name")),
            "pin-source" => Err(UriError::QueryAttributeInPath("pin-source")),
            // RFC 7512 §2.3: vendor attributes (`pk11-v-pattr`) are ignored by those who
            // don't know them.
            vendor if vendor.starts_with("x-") => Ok(()),
            unknown => Err(UriError::UnknownAttribute(unknown.to_owned())),
        }
    }

    fn set_query_attribute(&mut self, name: &str, value: &str) -> Result<(), UriError> {
        match name {
            "module-path" => set(
                &mut self.module_path,
                "module-path",
                PathBuf::from(text("module-path", value)?),
            ),
            "module-name" => set(
                &mut self.module_name,
                "module-name",
                text("module-name", value)?,
            ),
            "pin-source" => set(
                &mut self.pin_source,
                "pin-source",
                text("pin-source", value)?,
            ),
            "pin-value" => Err(UriError::PinOnCommandLine),
            path if PATH_ATTRIBUTES.contains(&path) => {
                Err(UriError::PathAttributeInQuery(path.to_owned()))
            }
            // RFC 7512 §2.3: vendor query attributes (`pk11-v-qattr`) likewise.
            vendor if vendor.starts_with("x-") => Ok(()),
            unknown => Err(UriError::UnknownQueryAttribute(unknown.to_owned())),
        }
    }
}

impl FromStr for TokenUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        let rest = text
            .get(..SCHEME.len())
            .filter(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
            .and_then(|_| text.get(SCHEME.len()..))
            .ok_or(UriError::NotPkcs11)?;
        // RFC 7512 §2.3: a path value never holds an unencoded "?", so the first one starts
        // the query, whose values may hold more.
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, query),
            None => (rest, ""),
        };
        let mut uri = TokenUri::default();
        // Empty attributes (`pkcs11:;` or a trailing `&`) carry nothing, so they are skipped.
        for attribute in path.split(';').filter(|attribute| !attribute.is_empty()) {
            let (name, value) = attribute.split_once('=').ok_or(UriError::MissingEquals)?;
            uri.set_path_attribute(name, value)?;
        }
        for attribute in query.split('&').filter(|attribute| !attribute.is_empty()) {
            let (name, value) = attribute.split_once('=').ok_or(UriError::MissingEquals)?;
            uri.set_query_attribute(name, value)?;
        }
        Ok(uri)
    }
}

impl fmt::Display for TokenUri {
    /// The canonical form: attributes in field order, values percent-encoded as RFC 7512
    /// §2.3 requires, `id` fully encoded as §2.3 recommends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        let mut path = Attributes::new("", ";", PATH_UNENCODED);
        path.text(f, "token", self.token.as_deref())?;
        path.text(f, "manufacturer", self.manufacturer.as_deref())?;
        path.text(f, "model", self.model.as_deref())?;
        path.text(f, "serial", self.serial.as_deref())?;
        if let Some(slot_id) = self.slot_id {
            path.text(f, "slot-id", Some(&slot_id.to_string()))?;
        }
        path.text(f, "slot-description", self.slot_description.as_deref())?;
        path.text(f, "slot-manufacturer", self.slot_manufacturer.as_deref())?;
        path.text(
            f,
            "library-manufacturer",
            self.library_manufacturer.as_deref(),
        )?;
        path.text(
            f,
            "library-description",
            self.library_description.as_deref(),
        )?;
        path.text(f, "object", self.object.as_deref())?;
        if let Some(id) = &self.id {
            path.name(f, "id")?;
            // RFC 7512 §2.3: an id is binary, so every byte is encoded, letters included.
            for byte in id {
                write!(f, "%{byte:02X}")?;
            }
        }
        path.text(f, "type", self.object_type.as_ref().map(ObjectType::as_str))?;

        let mut query = Attributes::new("?", "&", QUERY_UNENCODED);
        // A module path that is not UTF-8 could not have come from a parsed URI; printing
        // it lossily is the best a text URI can do.
        let module_path = self.module_path.as_ref().map(|path| path.to_string_lossy());
        query.text(f, "module-path", module_path.as_deref())?;
        query.text(f, "module-name", self.module_name.as_deref())?;
        query.text(f, "pin-source", self.pin_source.as_deref())
    }
}

/// Writes one URI component: `opening` before its first attribute, `between` the others.
struct Attributes {
    opening: &'static str,
    between: &'static str,
    unencoded: &'static [u8],
    started: bool,
}

impl Attributes {
    fn new(opening: &'static str, between: &'static str, unencoded: &'static [u8]) -> Self {
        Attributes {
            opening,
            between,
            unencoded,
            started: false,
        }
    }

    fn name(&mut self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.write_str(if self.started {
            self.between
        } else {
            self.opening
        })?;
        self.started = true;
        write!(f, "{name}=")
    }

    fn text(&mut self, f: &mut fmt::Formatter<'_>, name: &str, value: Option<&str>) -> fmt::Result {
        match value {
            Some(value) => {
                self.name(f, name)?;
                encode(f, value.as_bytes(), self.unencoded)
            }
            None => Ok(()),
        }
    }
}

/// Percent-encodes `value`, leaving RFC 3986 `unreserved` characters and `unencoded` as is.
fn encode(f: &mut fmt::Formatter<'_>, value: &[u8], unencoded: &[u8]) -> fmt::Result {
    for &byte in value {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || unencoded.contains(&byte) {
            write!(f, "{}", char::from(byte))?;
        } else {
            write!(f, "%{byte:02X}")?;
        }
    }
    Ok(())
}

/// Stores `value` unless the attribute was already given (RFC 7512 §2.3: at most once).
fn set<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::Duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Decodes `%XX` escapes (RFC 3986 §2.1); other bytes pass through, so a hand-typed space
/// is taken as meant.
fn percent_decode(name: &'static str, value: &str) -> Result<Vec<u8>, UriError> {
    let mut decoded = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let [high, low, after @ ..] = tail else {
                return Err(UriError::BadPercentEncoding(name));
            };
            let (Some(high), Some(low)) = (hex_digit(*high), hex_digit(*low)) else {
                return Err(UriError::BadPercentEncoding(name));
            };
            decoded.push(high << 4 | low);
            rest = after;
        } else {
            decoded.push(byte);
            rest = tail;
        }
    }
    Ok(decoded)
}

fn hex_digit(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// A text attribute: percent-decoded, then UTF-8 (RFC 7512 §2.3 values are UTF-8 strings).
fn text(name: &'static str, value: &str) -> Result<String, UriError> {
    String::from_utf8(percent_decode(name, value)?).map_err(|_| UriError::NotUtf8(name))
}

fn slot_id(value: &str) -> Result<u64, UriError> {
    let decoded = String::from_utf8_lossy(&percent_decode("slot-id", value)?).into_owned();
    // RFC 7512 §2.3: `pk11-slot-id = "slot-id" "=" 1*DIGIT`; u64::from_str alone would
    // also take a leading "+".
    if decoded.is_empty() || !decoded.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(UriError::BadSlotId(decoded));
    }
    decoded.parse().map_err(|_| UriError::BadSlotId(decoded))
}

fn object_type(value: &str) -> Result<ObjectType, UriError> {
    let decoded = text("type", value)?;
    ObjectType::ALL
        .into_iter()
        .find(|object_type| object_type.as_str() == decoded)
        .ok_or(UriError::BadObjectType(decoded))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TokenUri, UriError> {
        text.parse()
    }

    fn every_attribute() -> TokenUri {
        TokenUri {
            token: Some("prod token".to_owned()),
            manufacturer: Some("SoftHSM project".to_owned()),
            model: Some("SoftHSM v2".to_owned()),
            serial: Some("3a2b".to_owned()),
            slot_id: Some(1_234_567),
            slot_description: Some("slot; first".to_owned()),
            slot_manufacturer: Some("a/b?c".to_owned()),
            library_manufacturer: Some("Ümlaut & Co".to_owned()),
            library_description: Some("50%".to_owned()),
            object: Some("root-kek".to_owned()),
            id: Some(vec![0x00, 0x41, 0xff]),
            object_type: Some(ObjectType::SecretKey),
            module_path: Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")),
            module_name: Some("softhsm2".to_owned()),
            pin_source: Some("file:/run/pins/a&b?c|d".to_owned()),
        }
    }

    #[test]
    fn parses_every_attribute() {
        let uri = parse(
            "pkcs11:token=prod%20token;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;\
             serial=3a2b;slot-id=1234567;slot-description=slot%3B%20first;\
             slot-manufacturer=a%2Fb%3Fc;library-manufacturer=%C3%9Cmlaut%20&%20Co;\
             library-description=50%25;object=root-kek;id=%00A%ff;type=secret-key\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&module-name=softhsm2\
             &pin-source=file:/run/pins/a%26b?c|d",
        )
        .unwrap();
        assert_eq!(uri, every_attribute());
    }

    #[test]
    fn displays_canonical_form() {
        assert_eq!(
            every_attribute().to_string(),
            "pkcs11:token=prod%20token;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;\
             serial=3a2b;slot-id=1234567;slot-description=slot%3B%20first;\
             slot-manufacturer=a%2Fb%3Fc;library-manufacturer=%C3%9Cmlaut%20&%20Co;\
             library-description=50%25;object=root-kek;id=%00%41%FF;type=secret-key\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&module-name=softhsm2\
             &pin-source=file:/run/pins/a%26b?c|d"
        );
    }

    #[test]
    fn round_trips() {
        let every = every_attribute();
        assert_eq!(parse(&every.to_string()).unwrap(), every);
        let query_only = TokenUri {
            module_name: Some("p11-kit-proxy".to_owned()),
            ..TokenUri::default()
        };
        assert_eq!(query_only.to_string(), "pkcs11:?module-name=p11-kit-proxy");
        assert_eq!(parse(&query_only.to_string()).unwrap(), query_only);
        let path_only = TokenUri {
            object: Some("=;:[]@!$'()*+,~".to_owned()),
            id: Some(Vec::new()),
            ..TokenUri::default()
        };
        assert_eq!(path_only.to_string(), "pkcs11:object==%3B:[]@!$'()*+,~;id=");
        assert_eq!(parse(&path_only.to_string()).unwrap(), path_only);
    }

    #[test]
    fn empty_uri_names_any_token() {
        assert_eq!(parse("pkcs11:").unwrap(), TokenUri::default());
        assert_eq!(parse("pkcs11:?").unwrap(), TokenUri::default());
        assert_eq!(parse("pkcs11:;;?&").unwrap(), TokenUri::default());
        assert_eq!(TokenUri::default().to_string(), "pkcs11:");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let uri = parse("PKCS11:token=a").unwrap();
        assert_eq!(uri.token.as_deref(), Some("a"));
        assert_eq!(uri.to_string(), "pkcs11:token=a");
    }

    #[test]
    fn refuses_other_schemes() {
        for text in [
            "",
            "pkcs11",
            "pkcs12:token=a",
            "token=a",
            " pkcs11:",
            "pkcs1ä:",
        ] {
            assert_eq!(parse(text), Err(UriError::NotPkcs11), "{text}");
        }
        assert_eq!(
            UriError::NotPkcs11.to_string(),
            "not a PKCS#11 URI: it must start with \"pkcs11:\""
        );
    }

    #[test]
    fn refuses_pin_value_in_query_and_path() {
        let err = parse("pkcs11:token=old?pin-value=1234").unwrap_err();
        assert_eq!(err, UriError::PinOnCommandLine);
        assert_eq!(
            err.to_string(),
            "the URI carries pin-value; PINs are never read from the command line"
        );
        assert_eq!(
            parse("pkcs11:token=old;pin-value=1234"),
            Err(UriError::PinOnCommandLine)
        );
    }

    #[test]
    fn refuses_unknown_attributes() {
        let err = parse("pkcs11:tokne=a").unwrap_err();
        assert_eq!(err, UriError::UnknownAttribute("tokne".to_owned()));
        assert_eq!(err.to_string(), "unknown URI attribute \"tokne\"");
        let err = parse("pkcs11:?module=x").unwrap_err();
        assert_eq!(err.to_string(), "unknown URI query attribute \"module\"");
        // Attribute names are matched exactly.
        assert_eq!(
            parse("pkcs11:Token=a"),
            Err(UriError::UnknownAttribute("Token".to_owned()))
        );
    }

    #[test]
    fn ignores_vendor_attributes() {
        let uri = parse("pkcs11:x-vendor=%zz;token=a;x-vendor=2?x-flag=1&x-flag=2").unwrap();
        assert_eq!(uri.token.as_deref(), Some("a"));
        assert_eq!(uri.to_string(), "pkcs11:token=a");
    }

    #[test]
    fn names_the_right_component_for_misplaced_attributes() {
        let err = parse("pkcs11:module-path=/lib/p11.so").unwrap_err();
        assert_eq!(err, UriError::QueryAttributeInPath("module-path"));
        assert_eq!(
            err.to_string(),
            "\"module-path\" is a query attribute: put it after a \"?\""
        );
        let err = parse("pkcs11:?token=a").unwrap_err();
        assert_eq!(err, UriError::PathAttributeInQuery("token".to_owned()));
        assert_eq!(
            err.to_string(),
            "\"token\" is a path attribute: put it before the \"?\""
        );
    }

    #[test]
    fn every_path_attribute_is_known_to_the_path() {
        for name in PATH_ATTRIBUTES {
            let result = TokenUri::default().set_path_attribute(name, "1");
            assert!(
                !matches!(result, Err(UriError::UnknownAttribute(_))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn refuses_library_version() {
        let err = parse("pkcs11:library-version=2.40").unwrap_err();
        assert_eq!(err, UriError::UnsupportedAttribute("library-version"));
        assert_eq!(
            err.to_string(),
            "the URI attribute \"library-version\" is not supported"
        );
    }

    #[test]
    fn refuses_repeated_attributes() {
        let err = parse("pkcs11:token=a;object=k;token=a").unwrap_err();
        assert_eq!(err, UriError::Duplicate("token"));
        assert_eq!(err.to_string(), "\"token\" appears twice");
        assert_eq!(
            parse("pkcs11:?pin-source=file:a&pin-source=file:b"),
            Err(UriError::Duplicate("pin-source"))
        );
        assert_eq!(
            parse("pkcs11:id=%01;id=%01"),
            Err(UriError::Duplicate("id"))
        );
    }

    #[test]
    fn refuses_attribute_without_equals() {
        let err = parse("pkcs11:token=a;1234").unwrap_err();
        assert_eq!(err, UriError::MissingEquals);
        assert_eq!(
            err.to_string(),
            "a URI attribute has no \"=\"; attributes are written name=value"
        );
        assert_eq!(parse("pkcs11:?module-name"), Err(UriError::MissingEquals));
    }

    #[test]
    fn decodes_percent_escapes() {
        let uri = parse("pkcs11:token=a%2fb%2F c;id=%DE%ad%bE%eFz").unwrap();
        assert_eq!(uri.token.as_deref(), Some("a/b/ c"));
        assert_eq!(uri.id, Some(vec![0xde, 0xad, 0xbe, 0xef, b'z']));
    }

    #[test]
    fn refuses_bad_percent_escapes() {
        for text in [
            "pkcs11:token=%",
            "pkcs11:token=%4",
            "pkcs11:token=%zz",
            "pkcs11:token=%4g",
            "pkcs11:token=%+4",
        ] {
            assert_eq!(
                parse(text),
                Err(UriError::BadPercentEncoding("token")),
                "{text}"
            );
        }
        let err = parse("pkcs11:id=%0").unwrap_err();
        assert_eq!(err.to_string(), "bad percent-encoding in \"id\"");
    }

    #[test]
    fn text_attributes_must_be_utf8_but_id_need_not() {
        let err = parse("pkcs11:object=%ff").unwrap_err();
        assert_eq!(err, UriError::NotUtf8("object"));
        assert_eq!(
            err.to_string(),
            "\"object\" is not valid UTF-8 after percent-decoding"
        );
        assert_eq!(parse("pkcs11:id=%ff").unwrap().id, Some(vec![0xff]));
    }

    #[test]
    fn parses_slot_id() {
        assert_eq!(parse("pkcs11:slot-id=0").unwrap().slot_id, Some(0));
        assert_eq!(
            parse("pkcs11:slot-id=18446744073709551615")
                .unwrap()
                .slot_id,
            Some(u64::MAX)
        );
        let err = parse("pkcs11:slot-id=x").unwrap_err();
        assert_eq!(err, UriError::BadSlotId("x".to_owned()));
        assert_eq!(err.to_string(), "slot-id \"x\" is not a number");
        for bad in ["", "+5", "-1", "0x10", " 1", "18446744073709551616"] {
            assert_eq!(
                parse(&format!("pkcs11:slot-id={bad}")),
                Err(UriError::BadSlotId(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_every_object_type() {
        for object_type in ObjectType::ALL {
            let text = format!("pkcs11:type={}", object_type.as_str());
            let uri = parse(&text).unwrap();
            assert_eq!(uri.object_type, Some(object_type));
            assert_eq!(uri.to_string(), text);
        }
    }

    #[test]
    fn refuses_unknown_object_type() {
        let err = parse("pkcs11:type=secret").unwrap_err();
        assert_eq!(err, UriError::BadObjectType("secret".to_owned()));
        assert_eq!(
            err.to_string(),
            "unknown object type \"secret\"; valid types are public, private, cert, \
             secret-key, data"
        );
        // The message's list is the table's.
        let names: Vec<&str> = ObjectType::ALL.iter().map(ObjectType::as_str).collect();
        assert!(err.to_string().ends_with(&names.join(", ")));
    }

    #[test]
    fn keeps_relative_module_path() {
        let uri = parse("pkcs11:?module-path=lib/libsofthsm2.so").unwrap();
        assert_eq!(uri.module_path, Some(PathBuf::from("lib/libsofthsm2.so")));
        assert_eq!(uri.to_string(), "pkcs11:?module-path=lib/libsofthsm2.so");
    }

    #[test]
    fn query_values_may_hold_question_marks() {
        let uri = parse("pkcs11:token=a?pin-source=file:pin?x").unwrap();
        assert_eq!(uri.pin_source.as_deref(), Some("file:pin?x"));
    }

    #[test]
    fn object_filter() {
        let token_only = parse("pkcs11:token=a?module-name=m").unwrap();
        assert_eq!(token_only.without_object(), token_only);
        for filter in ["object=k", "id=%01", "type=data"] {
            let uri = parse(&format!("pkcs11:token=a;{filter}?module-name=m")).unwrap();
            assert_ne!(uri, token_only, "{filter}");
            assert_eq!(uri.without_object(), token_only, "{filter}");
        }
    }
}
