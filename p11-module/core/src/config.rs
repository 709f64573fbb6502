//! Configuration: `KEYFERRY_CONF`, else `$XDG_CONFIG_HOME/keyferry/keyferry.toml`, else
//! defaults. Relative paths are relative to the config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::store::KdfParams;

/// Shortest PIN a token accepts unless configured otherwise.
pub const DEFAULT_MIN_PIN_LEN: usize = 4;
/// Longest PIN a token accepts.
pub const MAX_PIN_LEN: usize = 255;
/// Wrong PINs in a row before a PIN locks, unless configured otherwise.
pub const DEFAULT_MAX_PIN_ATTEMPTS: u32 = 10;

/// The module's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where token files live.
    pub token_dir: PathBuf,
    /// Shortest PIN accepted by `C_InitToken`, `C_InitPIN`, `C_SetPIN`.
    pub min_pin_len: usize,
    /// Wrong PINs in a row before the PIN locks.
    pub max_pin_attempts: u32,
    /// Argon2id cost for PINs set from now on.
    pub kdf: KdfParams,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Log file; stderr when unset.
    pub log_file: Option<PathBuf>,
    /// The file these settings came from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    token_dir: Option<PathBuf>,
    min_pin_len: Option<usize>,
    max_pin_attempts: Option<u32>,
    kdf: Option<KdfParams>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
}

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

impl Config {
    /// Load from the environment's choice of file, or defaults.
    pub fn load() -> Result<Self> {
        if let Some(path) = std::env::var_os("KEYFERRY_CONF") {
            return Self::from_file(Path::new(&path));
        }
        let config_home = xdg_dir("XDG_CONFIG_HOME", ".config");
        if let Some(path) = config_home.map(|dir| dir.join("keyferry/keyferry.toml")) {
            if path.is_file() {
                return Self::from_file(&path);
            }
        }
        Self::from_raw(RawConfig::default(), None)
    }

    /// Load one file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| Error::Config(format!("cannot read {}: {err}", path.display())))?;
        let raw: RawConfig = toml::from_str(&text)
            .map_err(|err| Error::Config(format!("{}: {err}", path.display())))?;
        Self::from_raw(raw, Some(path))
    }

    fn from_raw(raw: RawConfig, source: Option<&Path>) -> Result<Self> {
        let whence = source.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        let base = source.and_then(Path::parent).map(Path::to_path_buf);
        let relative = |path: PathBuf| match (&base, path.is_relative()) {
            (Some(base), true) => base.join(path),
            _ => path,
        };
        let token_dir = match raw.token_dir {
            Some(dir) => relative(dir),
            None => xdg_dir("XDG_DATA_HOME", ".local/share")
                .map(|dir| dir.join("keyferry/tokens"))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{whence}: no token_dir, and neither XDG_DATA_HOME nor HOME is set"
                    ))
                })?,
        };
        let min_pin_len = raw.min_pin_len.unwrap_or(DEFAULT_MIN_PIN_LEN);
        if !(1..=MAX_PIN_LEN).contains(&min_pin_len) {
            return Err(Error::Config(format!(
                "{whence}: min_pin_len must be 1..={MAX_PIN_LEN}, not {min_pin_len}"
            )));
        }
        let max_pin_attempts = raw.max_pin_attempts.unwrap_or(DEFAULT_MAX_PIN_ATTEMPTS);
        if max_pin_attempts == 0 {
            return Err(Error::Config(format!(
                "{whence}: max_pin_attempts must be at least 1"
            )));
        }
        let kdf = raw.kdf.unwrap_or(KdfParams::DEFAULT);
        argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
            .map_err(|err| Error::Config(format!("{whence}: kdf ({kdf}): {err}")))?;
        if !kdf.is_bounded() {
            return Err(Error::Config(format!(
                "{whence}: kdf ({kdf}) is beyond 1 GiB of memory, 64 iterations or 16 lanes"
            )));
        }
        let log_level = raw.log_level.unwrap_or_else(|| "warn".into());
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(Error::Config(format!(
                "{whence}: log_level {log_level:?} is not one of {}",
                LOG_LEVELS.join(", ")
            )));
        }
        Ok(Self {
            token_dir,
            min_pin_len,
            max_pin_attempts,
            kdf,
            log_level,
            log_file: raw.log_file.map(relative),
            source: source.map(Path::to_path_buf),
        })
    }
}

fn xdg_dir(variable: &str, under_home: &str) -> Option<PathBuf> {
    match std::env::var_os(variable) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(under_home)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keyferry.toml");
        std::fs::write(&path, text).expect("written");
        (dir, path)
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let (dir, path) = write(
            "token_dir = \"tokens\"\nlog_file = \"k.log\"\n[kdf]\nmemory_kib = 64\niterations = 1\nparallelism = 1\n",
        );
        let config = Config::from_file(&path).expect("valid");
        assert_eq!(config.token_dir, dir.path().join("tokens"));
        assert_eq!(config.log_file, Some(dir.path().join("k.log")));
        assert_eq!(config.max_pin_attempts, DEFAULT_MAX_PIN_ATTEMPTS);
    }

    #[test]
    fn broken_configs_say_what_is_wrong() {
        for (text, needle) in [
            ("token_dir = ", "keyferry.toml"),
            ("tokendir = \"x\"", "unknown field"),
            ("min_pin_len = 0", "min_pin_len"),
            ("max_pin_attempts = 0", "max_pin_attempts"),
            ("log_level = \"loud\"", "log_level"),
            (
                "[kdf]\nmemory_kib = 1\niterations = 1\nparallelism = 1",
                "kdf",
            ),
        ] {
            let (_dir, path) = write(text);
            match Config::from_file(&path) {
                Err(Error::Config(message)) => assert!(message.contains(needle), "{message}"),
                _ => panic!("{text:?} was accepted"),
            }
        }
    }
}
