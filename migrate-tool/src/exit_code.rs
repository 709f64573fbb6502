//! The process exit codes, listed in `keyferry --help`.

/// Everything asked for is done (or, for `plan`, every object can move).
pub const DONE: u8 = 0;
/// Some objects failed; the report says which and why.
pub const SOME_FAILED: u8 = 1;
/// Usage or configuration error: bad URI, missing module, wrong PIN, unreadable journal.
pub const USAGE: u8 = 2;
/// The plan refuses some objects (non-extractable, conflicts); nothing was written for them.
pub const REFUSED: u8 = 3;

/// The text `--help` shows under "Exit codes".
pub const HELP: &str = "Exit codes:
  0  all done
  1  some objects failed (the report says which and why)
  2  usage or configuration error (bad URI, missing module, wrong PIN, unreadable journal)
  3  refused by plan (objects that cannot move as asked; nothing written for them)";
