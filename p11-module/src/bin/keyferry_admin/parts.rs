//! Master-key parts: the files custodians keep, how a new master key is split into them and
//! how a master key is put back together from all of them.
//!
//! A master key split into N parts is the XOR of N random 256-bit values. Any N − 1 parts
//! say nothing about the key; all N recreate it. Each part is a text file, one
//! `key: value` line each, in this order and nothing else:
//!
//! ```text
//! keyferry master-key part
//! part: 2 of 3
//! part-check: 5e1f0a
//! domain-check: 9c04d2
//! value: <64 hex digits>
//! ```
//!
//! `part-check` is the check value of the part itself as an AES-256 key (the first three
//! bytes of AES-256-ECB of a zero block), so a damaged file is caught before it is used;
//! `domain-check` is the check value of the whole master key, the "domain" that
//! `keyferry-admin show-slots` prints for every token made with it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keyferry_core::Error;
use keyferry_core::store::keys::Key256;
use zeroize::Zeroizing;

use crate::Failure;

/// The fewest parts a master key is split into.
pub(crate) const MIN_PARTS: u8 = 2;
/// The most parts a master key is split into.
pub(crate) const MAX_PARTS: u8 = 16;
/// `--split-master-key`'s range, as clap wants it (`u8` to `i64` is lossless).
pub(crate) const PART_COUNTS: std::ops::RangeInclusive<i64> = MIN_PARTS as i64..=MAX_PARTS as i64;

const HEADER: &str = "keyferry master-key part";
const CHECK_LEN: usize = 3;
// A part file is about 150 bytes; anything much larger is not one.
const MAX_FILE_LEN: usize = 1024;
const FORMAT_HINT: &str = "a part file has exactly the five lines init-token --split-master-key wrote; ask its custodian for an intact copy";

/// One custodian's part of a master key. No `Debug`: it holds key bytes.
pub(crate) struct Part {
    /// Which part this is, from 1 to `total`.
    number: u8,
    /// How many parts the master key was split into.
    total: u8,
    /// The part's own check value.
    part_check: [u8; CHECK_LEN],
    /// The master key's check value.
    domain_check: [u8; CHECK_LEN],
    value: Key256,
}

/// A part file written by `write_all`, for the report.
pub(crate) struct Written {
    pub(crate) path: PathBuf,
    pub(crate) number: u8,
    pub(crate) total: u8,
    pub(crate) part_check: [u8; CHECK_LEN],
}

/// A fresh master key and the `total` random parts whose XOR it is.
pub(crate) fn split(total: u8) -> Result<(Key256, Vec<Part>), Failure> {
    let mut values = Vec::with_capacity(usize::from(total));
    for _ in 0..total {
        values.push(Key256::random()?);
    }
    let master = xor(values.iter());
    let domain_check = check_value(&master)?;
    let mut parts = Vec::with_capacity(values.len());
    for (number, value) in (1..=total).zip(values) {
        parts.push(Part {
            number,
            total,
            part_check: check_value(&value)?,
            domain_check,
            value,
        });
    }
    Ok((master, parts))
}

/// Where part `number` of a split goes: `DIR/part-K.key`.
pub(crate) fn part_path(dir: &Path, number: u8) -> PathBuf {
    dir.join(format!("part-{number}.key"))
}

/// Refuse before anything is written if any of the `total` part files already exists:
/// a key part is never overwritten.
pub(crate) fn check_free(dir: &Path, total: u8) -> Result<(), Failure> {
    for number in 1..=total {
        let path = part_path(dir, number);
        // symlink_metadata: a dangling symlink is in the way too.
        if path.symlink_metadata().is_ok() {
            return Err(already_exists(&path));
        }
    }
    Ok(())
}

/// Write every part to `dir` (made 0700 if missing), each file 0600 and new. On any
/// failure the files written so far are removed again.
pub(crate) fn write_all(dir: &Path, parts: &[Part]) -> Result<Vec<Written>, Failure> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| {
            Failure::usage(
                format!("cannot create {}: {err}", dir.display()),
                "check --parts-dir and its parent's permissions",
            )
        })?;
    let mut written = Vec::with_capacity(parts.len());
    for part in parts {
        let path = part_path(dir, part.number);
        if let Err(failure) = write_one(&path, part) {
            remove(written.iter().map(|done: &Written| done.path.as_path()));
            return Err(failure);
        }
        written.push(Written {
            path,
            number: part.number,
            total: part.total,
            part_check: part.part_check,
        });
    }
    // The directory entries are durable before the token that needs them exists.
    if let Err(err) = File::open(dir).and_then(|handle| handle.sync_all()) {
        remove(written.iter().map(|done| done.path.as_path()));
        return Err(Failure::usage(
            format!("cannot sync {}: {err}", dir.display()),
            "check the file system of --parts-dir",
        ));
    }
    Ok(written)
}

/// Remove part files again (a split whose token was never made); a failure is reported
/// on stderr, since the caller is already reporting the error that matters.
pub(crate) fn remove<'a>(paths: impl Iterator<Item = &'a Path>) {
    for path in paths {
        if let Err(err) = std::fs::remove_file(path) {
            eprintln!(
                "warning: cannot remove {}: {err}; it is part of a master key no token uses",
                path.display()
            );
        }
    }
}

fn write_one(path: &Path, part: &Part) -> Result<(), Failure> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::AlreadyExists => already_exists(path),
            _ => Failure::usage(
                format!("cannot create {}: {err}", path.display()),
                "check --parts-dir and its permissions",
            ),
        })?;
    let text = render(part);
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| {
            // Left half-written it would look like a damaged part; it never held a whole one.
            remove(std::iter::once(path));
            Failure::usage(
                format!("cannot write {}: {err}", path.display()),
                "check the free space and permissions of --parts-dir",
            )
        })
}

fn already_exists(path: &Path) -> Failure {
    Failure::usage(
        format!(
            "{} already exists; a key part is never overwritten",
            path.display()
        ),
        "choose an empty --parts-dir, or move the old parts away once their custodians have them",
    )
}

/// The file text of a part, in a buffer zeroed on drop.
fn render(part: &Part) -> Zeroizing<String> {
    let mut value_hex = Zeroizing::new([0u8; 64]);
    hex::encode_to_slice(part.value.expose(), value_hex.as_mut())
        .expect("32 bytes are exactly 64 hex digits");
    // Room for the whole file up front: a String that grows leaves copies behind.
    let mut text = Zeroizing::new(String::with_capacity(256));
    text.push_str(HEADER);
    text.push_str(&format!(
        "\npart: {} of {}\npart-check: {}\ndomain-check: {}\nvalue: ",
        part.number,
        part.total,
        hex::encode(part.part_check),
        hex::encode(part.domain_check),
    ));
    text.push_str(std::str::from_utf8(value_hex.as_ref()).expect("hex digits are ASCII"));
    text.push('\n');
    text
}

/// Read and check one part file: its format, line by line, and that its value matches
/// its own check value. Errors name the file and the line, never what is on it.
pub(crate) fn read(path: &Path) -> Result<Part, Failure> {
    let unreadable = |err: std::io::Error| {
        Failure::usage(
            format!("cannot read {}: {err}", path.display()),
            "check the part file's path and permissions",
        )
    };
    let mut file = File::open(path).map_err(unreadable)?;
    // A fixed buffer, read into in place: nothing is reallocated and left behind unzeroed.
    let mut buffer = Zeroizing::new([0u8; MAX_FILE_LEN + 1]);
    let mut len = 0;
    while let Some(free) = buffer.get_mut(len..).filter(|free| !free.is_empty()) {
        match file.read(free) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(unreadable(err)),
        }
    }
    if len > MAX_FILE_LEN {
        return Err(Failure::usage(
            format!("{}: too large for a key-part file", path.display()),
            FORMAT_HINT,
        ));
    }
    let text = buffer
        .get(..len)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .ok_or_else(|| {
            Failure::usage(
                format!("{}: not a key-part file (not text)", path.display()),
                FORMAT_HINT,
            )
        })?;
    let part = parse(path, text)?;
    if check_value(&part.value)? != part.part_check {
        return Err(Failure::usage(
            format!(
                "{}: its value does not match its check value; the file is damaged",
                path.display()
            ),
            format!(
                "ask the custodian of part {} of {} for an intact copy",
                part.number, part.total
            ),
        ));
    }
    Ok(part)
}

fn parse(path: &Path, text: &str) -> Result<Part, Failure> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = body
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let mut line_number = 0;
    let mut next = |expected: &str| {
        line_number += 1;
        let number = line_number;
        let bad = move |what: String| {
            Failure::usage(
                format!("{}, line {number}: {what}", path.display()),
                FORMAT_HINT,
            )
        };
        match lines.next() {
            Some(line) => Ok((line, bad)),
            None => Err(bad(format!(
                "expected {expected}, found the end of the file"
            ))),
        }
    };

    let (line, bad) = next(&format!("\"{HEADER}\""))?;
    if line != HEADER {
        return Err(bad(format!(
            "expected \"{HEADER}\"; this is not a key-part file"
        )));
    }

    const PART_LINE: &str = "\"part: K of N\" (N from 2 to 16, K from 1 to N)";
    let (line, bad) = next(PART_LINE)?;
    let (number, total) = line
        .strip_prefix("part: ")
        .and_then(|rest| rest.split_once(" of "))
        .and_then(|(number, total)| Some((decimal(number)?, decimal(total)?)))
        .filter(|&(number, total)| {
            (MIN_PARTS..=MAX_PARTS).contains(&total) && (1..=total).contains(&number)
        })
        .ok_or_else(|| bad(format!("expected {PART_LINE}")))?;

    let mut check_line = |name: &str| {
        let expected = format!("\"{name}: <6 hex digits>\"");
        let (line, bad) = next(&expected)?;
        let mut check = [0u8; CHECK_LEN];
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(": "))
            .filter(|digits| digits.len() == 2 * CHECK_LEN)
            .and_then(|digits| hex::decode_to_slice(digits, &mut check).ok())
            .ok_or_else(|| bad(format!("expected {expected}")))?;
        Ok::<_, Failure>(check)
    };
    let part_check = check_line("part-check")?;
    let domain_check = check_line("domain-check")?;

    let (line, bad) = next("\"value: <64 hex digits>\"")?;
    let digits = line
        .strip_prefix("value: ")
        .ok_or_else(|| bad("expected \"value: <64 hex digits>\"".into()))?;
    if digits.len() != 64 {
        return Err(bad(format!(
            "the value has {} characters, not 64 hex digits",
            digits.chars().count()
        )));
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(digits, bytes.as_mut())
        .map_err(|_| bad("the value is not hexadecimal".into()))?;
    let value = Key256::from_slice(bytes.as_ref())
        .ok_or_else(|| bad("the value is not 32 bytes".into()))?;

    if let Ok((_, bad)) = next("the end of the file") {
        return Err(bad("unexpected text after the value line".into()));
    }
    Ok(Part {
        number,
        total,
        part_check,
        domain_check,
        value,
    })
}

/// A small decimal number as written by `render`: digits only, no sign or padding.
fn decimal(text: &str) -> Option<u8> {
    let plain = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    let canonical = !(text.starts_with('0') && text.len() > 1);
    (plain && canonical).then(|| text.parse().ok()).flatten()
}

/// The master key from every part of one split, each already checked by `read`: all of
/// one split, each part once, none missing, and the result has the domain they name.
pub(crate) fn combine(parts: &[(PathBuf, Part)]) -> Result<Key256, Failure> {
    let Some((first_path, first)) = parts.first() else {
        return Err(Failure::usage(
            "no key parts given",
            "pass every part of the split, one --master-key-part FILE each",
        ));
    };
    for (path, part) in parts {
        if part.total != first.total || part.domain_check != first.domain_check {
            return Err(Failure::usage(
                format!(
                    "{} and {} come from different splits: part {} of {} of domain {}, part {} of {} of domain {}",
                    first_path.display(),
                    path.display(),
                    first.number,
                    first.total,
                    hex::encode(first.domain_check),
                    part.number,
                    part.total,
                    hex::encode(part.domain_check),
                ),
                "pass the parts of one split only; each part file names its domain",
            ));
        }
    }
    for (index, (path, part)) in parts.iter().enumerate() {
        for (earlier_path, earlier) in parts.iter().take(index) {
            if earlier.number == part.number {
                return Err(Failure::usage(
                    format!(
                        "{} and {} are both part {} of {}",
                        earlier_path.display(),
                        path.display(),
                        part.number,
                        part.total
                    ),
                    "pass each custodian's part once",
                ));
            }
            if earlier.value.ct_eq(&part.value) {
                return Err(Failure::usage(
                    format!(
                        "{} and {} hold the same value",
                        earlier_path.display(),
                        path.display()
                    ),
                    "the parts of a split all differ: one of these files was edited; ask the custodians for intact copies",
                ));
            }
        }
    }
    let missing: Vec<String> = (1..=first.total)
        .filter(|number| parts.iter().all(|(_, part)| part.number != *number))
        .map(|number| number.to_string())
        .collect();
    match missing.as_slice() {
        [] => {}
        [one] => {
            return Err(missing_parts(format!(
                "part {one} of {} is missing",
                first.total
            )));
        }
        several => {
            return Err(missing_parts(format!(
                "parts {} of {} are missing",
                several.join(", "),
                first.total
            )));
        }
    }
    let master = xor(parts.iter().map(|(_, part)| &part.value));
    let combined_check = check_value(&master)?;
    if combined_check != first.domain_check {
        return Err(Failure::usage(
            format!(
                "the {} parts combine to domain {}, not the domain {} they name",
                parts.len(),
                hex::encode(combined_check),
                hex::encode(first.domain_check)
            ),
            "a part file was altered; ask the custodians for intact copies",
        ));
    }
    Ok(master)
}

fn missing_parts(message: String) -> Failure {
    Failure::usage(
        message,
        "pass every part of the split, one --master-key-part FILE each",
    )
}

fn xor<'a>(values: impl Iterator<Item = &'a Key256>) -> Key256 {
    let mut combined = Zeroizing::new([0u8; 32]);
    for value in values {
        for (byte, part_byte) in combined.iter_mut().zip(value.expose()) {
            *byte ^= part_byte;
        }
    }
    Key256::from_slice(combined.as_ref()).expect("the buffer is exactly 32 bytes")
}

/// A key's check value as a fixed array.
pub(crate) fn check_value(key: &Key256) -> Result<[u8; CHECK_LEN], Failure> {
    let check = key.check_value()?;
    check.as_slice().try_into().map_err(|_| {
        Failure::from(Error::General(format!(
            "a key check value of {} bytes, not {CHECK_LEN}",
            check.len()
        )))
    })
}
