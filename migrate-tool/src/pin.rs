//! Where a token PIN comes from: the URI's pin-source file, an environment variable or the terminal.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The longest PIN file read. PKCS#11 tokens take far shorter PINs (255 bytes at most
/// here); the cap lets the file be read into one buffer that never reallocates, so no
/// copy of the PIN is left behind in freed memory.
pub const MAX_PIN_FILE_LEN: usize = 1024;

/// Why no PIN could be had. Messages name the source, never its content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The environment variable holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    EnvNotUtf8(String),
    /// The PIN file is empty, or holds only a line ending.
    #[error("PIN file \"{}\" is empty", .0.display())]
    FileEmpty(PathBuf),
    /// The PIN file is not UTF-8 text.
    #[error("PIN file \"{}\" is not valid UTF-8", .0.display())]
    FileNotUtf8(PathBuf),
    /// The PIN file is longer than [`MAX_PIN_FILE_LEN`].
    #[error("PIN file \"{}\" is longer than {MAX_PIN_FILE_LEN} bytes", .0.display())]
    FileTooLong(PathBuf),
    /// The PIN file could not be opened or read.
    #[error("cannot read PIN file \"{}\": {kind}", path.display())]
    FileUnreadable {
        /// The file, as named by the pin-source.
        path: PathBuf,
        /// Why, without the OS message's detail.
        kind: io::ErrorKind,
    },
    /// No pin-source, no environment variable and no terminal to ask on.
    #[error(
        "no PIN for {who}: no pin-source in the URI, {env_var} is not set and stdin is not a terminal"
    )]
    NoPin {
        /// Whose PIN, e.g. "the source token".
        who: String,
        /// The variable that was consulted, e.g. `KEYFERRY_FROM_PIN`.
        env_var: String,
    },
    /// Asking on the terminal failed.
    #[error("reading the PIN for {who} from the terminal failed: {kind}")]
    Prompt {
        /// Whose PIN.
        who: String,
        /// Why.
        kind: io::ErrorKind,
    },
    /// A pin-source other than a local file, such as RFC 7512's `|command`.
    #[error("unsupported pin-source {0:?}; use file:PATH")]
    UnsupportedSource(String),
}

/// Reads the PIN for `who` (e.g. "the source token") in this order:
/// 1. `pin_source` from the URI, through [`pin_from_source`];
/// 2. the environment variable `env_var` (e.g. `KEYFERRY_FROM_PIN`) if set and non-empty;
/// 3. a prompt, `PIN for {who}: `, when stdin is a terminal;
/// 4. otherwise [`PinError::NoPin`].
pub fn read_pin(
    who: &str,
    pin_source: Option<&str>,
    env_var: &str,
) -> Result<Zeroizing<String>, PinError> {
    let terminal = io::stdin()
        .is_terminal()
        .then_some(rpassword::prompt_password);
    read_pin_with(
        who,
        pin_source,
        env_var,
        std::env::var_os(env_var),
        terminal,
    )
}

/// [`read_pin`] with the environment's value and the terminal passed in, so tests need
/// neither. `prompt` is `None` when stdin is not a terminal.
fn read_pin_with(
    who: &str,
    pin_source: Option<&str>,
    env_var: &str,
    env_value: Option<OsString>,
    prompt: Option<impl FnOnce(String) -> io::Result<String>>,
) -> Result<Zeroizing<String>, PinError> {
    if let Some(source) = pin_source {
        return pin_from_source(source);
    }
    if let Some(env_value) = env_value {
        let pin = match env_value.into_string() {
            Ok(pin) => Zeroizing::new(pin),
            Err(not_utf8) => {
                drop(Zeroizing::new(not_utf8.into_encoded_bytes()));
                return Err(PinError::EnvNotUtf8(env_var.to_owned()));
            }
        };
        if !pin.is_empty() {
            return Ok(pin);
        }
    }
    match prompt {
        Some(prompt) => prompt(format!("PIN for {who}: "))
            .map(Zeroizing::new)
            .map_err(|err| PinError::Prompt {
                who: who.to_owned(),
                kind: err.kind(),
            }),
        None => Err(PinError::NoPin {
            who: who.to_owned(),
            env_var: env_var.to_owned(),
        }),
    }
}

/// Reads a PIN from a URI's `pin-source`. Only local files are taken: `file:PATH` (relative
/// to the current directory, or absolute) or `file:///abs/path`. RFC 7512 §2.3 leaves the
/// format to the application; a `|command` source would run whatever a URI says, so it is
/// refused. The path is used as written: the URI parser has already percent-decoded it.
/// One trailing "\n" or "\r\n" is removed, as editors and `echo` add one.
pub fn pin_from_source(source: &str) -> Result<Zeroizing<String>, PinError> {
    let path = file_path(source).ok_or_else(|| PinError::UnsupportedSource(source.to_owned()))?;
    read_pin_file(Path::new(path))
}

/// The path of a `file:` pin-source, or `None` for any other scheme or a remote host.
fn file_path(source: &str) -> Option<&str> {
    const FILE: &str = "file:";
    let rest = source
        .get(..FILE.len())
        .filter(|scheme| scheme.eq_ignore_ascii_case(FILE))
        .and_then(|_| source.get(FILE.len()..))?;
    // RFC 8089 §2: "file://host/path" names a host; only the local one (empty or
    // "localhost") is readable here.
    match rest.strip_prefix("//") {
        None => Some(rest),
        Some(authority_and_path) if authority_and_path.starts_with('/') => Some(authority_and_path),
        Some(authority_and_path) => authority_and_path
            .strip_prefix("localhost")
            .filter(|path| path.starts_with('/')),
    }
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, PinError> {
    let unreadable = |err: io::Error| PinError::FileUnreadable {
        path: path.to_owned(),
        kind: err.kind(),
    };
    let mut file = File::open(path).map_err(unreadable)?;
    // One extra byte tells a file of exactly the limit from a longer one.
    let mut buffer = Zeroizing::new(vec![0u8; MAX_PIN_FILE_LEN + 1]);
    let mut filled = 0;
    loop {
        let Some(free) = buffer.get_mut(filled..).filter(|free| !free.is_empty()) else {
            return Err(PinError::FileTooLong(path.to_owned()));
        };
        match file.read(free) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(unreadable(err)),
        }
    }
    // `truncate` keeps the allocation, which `Zeroizing` wipes whole on drop.
    buffer.truncate(filled);
    if buffer.ends_with(b"\r\n") {
        buffer.truncate(filled - 2);
    } else if buffer.ends_with(b"\n") {
        buffer.truncate(filled - 1);
    }
    if buffer.is_empty() {
        return Err(PinError::FileEmpty(path.to_owned()));
    }
    // `from_utf8` moves the allocation into the String, and on failure hands it back to be
    // wiped: the bytes are never copied.
    match String::from_utf8(std::mem::take(&mut *buffer)) {
        Ok(pin) => Ok(Zeroizing::new(pin)),
        Err(err) => {
            drop(Zeroizing::new(err.into_bytes()));
            Err(PinError::FileNotUtf8(path.to_owned()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A PIN file in the temp directory, removed on drop.
    struct PinFile(PathBuf);

    impl PinFile {
        fn new(test: &str, content: &[u8]) -> Self {
            let path =
                std::env::temp_dir().join(format!("keyferry-pin-{}-{test}", std::process::id()));
            std::fs::write(&path, content).unwrap();
            PinFile(path)
        }

        fn source(&self) -> String {
            format!("file:{}", self.0.display())
        }
    }

    impl Drop for PinFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    type Prompt = fn(String) -> io::Result<String>;

    fn no_terminal() -> Option<Prompt> {
        None
    }

    #[test]
    fn file_without_newline() {
        let file = PinFile::new("plain", b"123456");
        assert_eq!(pin_from_source(&file.source()).unwrap().as_str(), "123456");
    }

    #[test]
    fn file_loses_one_trailing_newline() {
        let file = PinFile::new("lf", b"123456\n");
        assert_eq!(pin_from_source(&file.source()).unwrap().as_str(), "123456");
        let file = PinFile::new("lflf", b"123456\n\n");
        assert_eq!(
            pin_from_source(&file.source()).unwrap().as_str(),
            "123456\n"
        );
        let file = PinFile::new("inner", b" 12\n34 \n");
        assert_eq!(
            pin_from_source(&file.source()).unwrap().as_str(),
            " 12\n34 "
        );
    }

    #[test]
    fn file_loses_one_trailing_crlf() {
        let file = PinFile::new("crlf", b"123456\r\n");
        assert_eq!(pin_from_source(&file.source()).unwrap().as_str(), "123456");
        let file = PinFile::new("cr", b"123456\r");
        assert_eq!(
            pin_from_source(&file.source()).unwrap().as_str(),
            "123456\r"
        );
    }

    #[test]
    fn file_uri_forms() {
        let file = PinFile::new("forms", b"pin\n");
        let absolute = file.0.to_str().unwrap();
        assert!(absolute.starts_with('/'));
        for source in [
            format!("file:{absolute}"),
            format!("file://{absolute}"),
            format!("file://localhost{absolute}"),
            format!("FILE:{absolute}"),
        ] {
            assert_eq!(
                pin_from_source(&source).unwrap().as_str(),
                "pin",
                "{source}"
            );
        }
    }

    #[test]
    fn relative_file_is_read_from_current_directory() {
        assert_eq!(file_path("file:pins/user.pin"), Some("pins/user.pin"));
        assert_eq!(file_path("file:///run/user.pin"), Some("/run/user.pin"));
        assert_eq!(file_path("file://host/run/user.pin"), None);
        assert_eq!(file_path("file://localhostile/x"), None);
    }

    #[test]
    fn refuses_other_sources() {
        for source in [
            "|/usr/bin/get-pin",
            "env:PIN",
            "/etc/pin",
            "https://x/pin",
            "fil",
        ] {
            let err = pin_from_source(source).unwrap_err();
            assert_eq!(err, PinError::UnsupportedSource(source.to_owned()));
        }
        assert_eq!(
            pin_from_source("|get-pin").unwrap_err().to_string(),
            "unsupported pin-source \"|get-pin\"; use file:PATH"
        );
        assert_eq!(
            pin_from_source("file://pinhost/pin").unwrap_err(),
            PinError::UnsupportedSource("file://pinhost/pin".to_owned())
        );
    }

    #[test]
    fn missing_file() {
        let path =
            std::env::temp_dir().join(format!("keyferry-pin-{}-missing", std::process::id()));
        let err = pin_from_source(&format!("file:{}", path.display())).unwrap_err();
        assert_eq!(
            err,
            PinError::FileUnreadable {
                path: path.clone(),
                kind: io::ErrorKind::NotFound
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read PIN file \"{}\": entity not found",
                path.display()
            )
        );
    }

    #[test]
    fn empty_file() {
        for (test, content) in [
            ("empty", &b""[..]),
            ("only-lf", b"\n"),
            ("only-crlf", b"\r\n"),
        ] {
            let file = PinFile::new(test, content);
            let err = pin_from_source(&file.source()).unwrap_err();
            assert_eq!(err, PinError::FileEmpty(file.0.clone()), "{test}");
            assert_eq!(
                err.to_string(),
                format!("PIN file \"{}\" is empty", file.0.display())
            );
        }
    }

    #[test]
    fn file_not_utf8() {
        let file = PinFile::new("latin1", b"caf\xe9\n");
        let err = pin_from_source(&file.source()).unwrap_err();
        assert_eq!(err, PinError::FileNotUtf8(file.0.clone()));
        assert_eq!(
            err.to_string(),
            format!("PIN file \"{}\" is not valid UTF-8", file.0.display())
        );
    }

    #[test]
    fn file_length_limit() {
        let longest = vec![b'7'; MAX_PIN_FILE_LEN];
        let file = PinFile::new("longest", &longest);
        assert_eq!(
            pin_from_source(&file.source()).unwrap().len(),
            MAX_PIN_FILE_LEN
        );
        let file = PinFile::new("too-long", &[b'7'; MAX_PIN_FILE_LEN + 1]);
        let err = pin_from_source(&file.source()).unwrap_err();
        assert_eq!(err, PinError::FileTooLong(file.0.clone()));
        assert_eq!(
            err.to_string(),
            format!(
                "PIN file \"{}\" is longer than 1024 bytes",
                file.0.display()
            )
        );
    }

    #[test]
    fn pin_source_comes_before_environment() {
        let file = PinFile::new("first", b"from-file\n");
        let pin = read_pin_with(
            "the source token",
            Some(&file.source()),
            "KEYFERRY_FROM_PIN",
            Some("from-env".into()),
            no_terminal(),
        )
        .unwrap();
        assert_eq!(pin.as_str(), "from-file");
    }

    #[test]
    fn pin_source_errors_are_not_masked_by_environment() {
        let err = read_pin_with(
            "the source token",
            Some("|get-pin"),
            "KEYFERRY_FROM_PIN",
            Some("from-env".into()),
            no_terminal(),
        )
        .unwrap_err();
        assert_eq!(err, PinError::UnsupportedSource("|get-pin".to_owned()));
    }

    #[test]
    fn environment_comes_before_terminal() {
        let pin = read_pin_with(
            "the source token",
            None,
            "KEYFERRY_FROM_PIN",
            Some("from-env".into()),
            Some(|_: String| -> io::Result<String> { panic!("prompted") }),
        )
        .unwrap();
        assert_eq!(pin.as_str(), "from-env");
    }

    #[cfg(unix)]
    #[test]
    fn environment_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let err = read_pin_with(
            "the source token",
            None,
            "KEYFERRY_FROM_PIN",
            Some(OsString::from_vec(b"caf\xe9".to_vec())),
            no_terminal(),
        )
        .unwrap_err();
        assert_eq!(err, PinError::EnvNotUtf8("KEYFERRY_FROM_PIN".to_owned()));
        assert_eq!(err.to_string(), "KEYFERRY_FROM_PIN is not valid UTF-8");
    }

    #[test]
    fn empty_environment_falls_through_to_terminal() {
        let pin = read_pin_with(
            "the target token",
            None,
            "KEYFERRY_TO_PIN",
            Some(OsString::new()),
            Some(|prompt: String| {
                assert_eq!(prompt, "PIN for the target token: ");
                Ok("typed".to_owned())
            }),
        )
        .unwrap();
        assert_eq!(pin.as_str(), "typed");
    }

    #[test]
    fn terminal_failure() {
        let err = read_pin_with(
            "the target token",
            None,
            "KEYFERRY_TO_PIN",
            None,
            Some(|_: String| Err(io::Error::from(io::ErrorKind::UnexpectedEof))),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PinError::Prompt {
                who: "the target token".to_owned(),
                kind: io::ErrorKind::UnexpectedEof
            }
        );
        assert_eq!(
            err.to_string(),
            "reading the PIN for the target token from the terminal failed: unexpected end of file"
        );
    }

    #[test]
    fn no_pin_anywhere() {
        for env_value in [None, Some(OsString::new())] {
            let err = read_pin_with(
                "the source token",
                None,
                "KEYFERRY_FROM_PIN",
                env_value,
                no_terminal(),
            )
            .unwrap_err();
            assert_eq!(
                err,
                PinError::NoPin {
                    who: "the source token".to_owned(),
                    env_var: "KEYFERRY_FROM_PIN".to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                "no PIN for the source token: no pin-source in the URI, KEYFERRY_FROM_PIN is \
                 not set and stdin is not a terminal"
            );
        }
    }
}
