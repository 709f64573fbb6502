//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::transport::KekAgreement;

/// keyferry moves root keys (KEKs) and data keys between PKCS#11 token slots — keyferry,
/// SoftHSMv2 or any other module — proves every key arrived intact, and resumes after a crash.
///
/// Tokens are named by PKCS#11 URI (RFC 7512), e.g.
/// pkcs11:token=prod?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:pin.txt
/// A URI without module-path uses libkeyferry_pkcs11.so beside this executable (or
/// $KEYFERRY_MODULE). PINs come from pin-source=file:PATH, KEYFERRY_FROM_PIN /
/// KEYFERRY_TO_PIN / KEYFERRY_PIN, or a prompt on a terminal; never from the command line.
#[derive(Debug, Parser)]
#[command(name = "keyferry", version, after_help = crate::exit_code::HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the slots and tokens of a module.
    Slots(SlotsArgs),
    /// List every object of a token with class, type, size, label, id, usage and a check value.
    Inventory(InventoryArgs),
    /// Probe both tokens, choose the transport and say what would happen to each object.
    /// Writes nothing (only throwaway session objects).
    Plan(PairArgs),
    /// Carry out the plan: move, verify, journal every step, report.
    Migrate(MigrateArgs),
    /// Compare source and destination key by key.
    Verify(PairArgs),
    /// Rewrap data-key blobs kept outside the tokens from an old KEK to a new one (the
    /// KEKs may live on different tokens); keys exist in clear only inside tokens.
    Rewrap(RewrapArgs),
    /// Rotate a KEK: a new one beside it on the same token, the data-key blobs rewrapped to
    /// it, the old one kept for old blobs and recorded as pending retirement.
    Rekey(RekeyArgs),
    /// Which copies of each key exist in which keystore, and which are out of sync and why.
    Status(StatusArgs),
    /// Bring --to in line with --from: fix drifted labels and usage flags, copy missing keys,
    /// report value conflicts; delete extras only with --prune and a confirmation.
    Sync(SyncArgs),
    /// After a verified migration, destroy (or --deactivate) the source copies whose
    /// destination copy still proves equal; asks first (or --yes).
    Retire(RetireArgs),
    /// Two throwaway keyferry tokens, sample root and data keys, then plan → migrate → verify.
    Demo(DemoArgs),
    /// Check the audit log's hash chain: any edited, reordered, inserted or deleted line.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Sets up the demo's tokens (run by `keyferry demo` with the demo's environment).
    #[command(hide = true)]
    DemoSetup(DemoSetupArgs),
}

/// `keyferry slots`.
#[derive(Debug, Args)]
pub struct SlotsArgs {
    /// The PKCS#11 module (default: libkeyferry_pkcs11.so beside keyferry, or $KEYFERRY_MODULE).
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `keyferry inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The token (PKCS#11 URI); object=, id= and type= narrow the listing. PIN: KEYFERRY_PIN.
    #[arg(value_name = "URI")]
    pub uri: String,
    /// Only objects matching: label=GLOB, id=HEX, class=secret|private|public|cert|data, or a
    /// label GLOB (repeatable; any match selects).
    #[arg(long, value_name = "PATTERN")]
    pub select: Vec<String>,
    /// JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How a token is named: a URI, or flags that build one.
#[derive(Debug, Args, Clone, Default)]
pub struct Endpoints {
    /// Source token (PKCS#11 URI). PIN: pin-source=, KEYFERRY_FROM_PIN, or a prompt.
    #[arg(long, value_name = "URI")]
    pub from: Option<String>,
    /// Source module (instead of, or on top of, module-path= in --from).
    #[arg(long, value_name = "PATH")]
    pub from_module: Option<PathBuf>,
    /// Source token label.
    #[arg(long, value_name = "LABEL")]
    pub from_token: Option<String>,
    /// Source token serial number.
    #[arg(long, value_name = "SERIAL")]
    pub from_serial: Option<String>,
    /// Destination token (PKCS#11 URI). PIN: pin-source=, KEYFERRY_TO_PIN, or a prompt.
    #[arg(long, value_name = "URI")]
    pub to: Option<String>,
    /// Destination module.
    #[arg(long, value_name = "PATH")]
    pub to_module: Option<PathBuf>,
    /// Destination token label.
    #[arg(long, value_name = "LABEL")]
    pub to_token: Option<String>,
    /// Destination token serial number.
    #[arg(long, value_name = "SERIAL")]
    pub to_serial: Option<String>,
}

/// `keyferry plan` and `keyferry verify`.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The two tokens.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Only objects matching: label=GLOB, id=HEX, class=secret|private|public|cert|data, or a
    /// label GLOB (repeatable; any match selects).
    #[arg(long, value_name = "PATTERN")]
    pub select: Vec<String>,
    /// Use only this KEK agreement (default: the best both tokens support).
    #[arg(long, value_enum)]
    pub transport: Option<KekAgreement>,
    /// Show token profiles, attribute matrices and proofs.
    #[arg(long, short)]
    pub verbose: bool,
    /// JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `keyferry migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Tokens, selection, transport and output, as for plan.
    #[command(flatten)]
    pub pair: PairArgs,
    /// The journal file (default: keyferry-RUN.journal in the current directory).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Finish an interrupted run: its journal gives the tokens and selection.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Stop at the first object that fails (default: go on and report).
    #[arg(long)]
    pub fail_fast: bool,
    /// Print the report a real run would, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where changes are audited.
    #[command(flatten)]
    pub audit: AuditLogArg,
}

/// `keyferry rekey`.
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// The KEK to replace: its token's URI with object= (and/or id=). PIN: KEYFERRY_PIN.
    #[arg(long, value_name = "URI")]
    pub kek: String,
    /// The new KEK's label.
    #[arg(long, value_name = "LABEL")]
    pub new_label: String,
    /// The new KEK's CKA_ID, hex (default: the old KEK's).
    #[arg(long, value_name = "HEX")]
    pub new_id: Option<String>,
    /// The blobs under the old KEK (as for rewrap).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The blobs under the new KEK (as for rewrap).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// The data keys' type.
    #[arg(long, value_enum, default_value = "aes")]
    pub key_type: DataKeyType,
    /// Parallel sessions.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Finish an interrupted rekey: its run id.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where changes are audited.
    #[command(flatten)]
    pub audit: AuditLogArg,
}

/// `keyferry status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Two or more keystores (token URIs); PINs from pin-source= or KEYFERRY_PIN.
    #[arg(value_name = "URI", num_args = 2.., required = true)]
    pub uris: Vec<String>,
    /// Only keys matching (as for plan).
    #[arg(long, value_name = "PATTERN")]
    pub select: Vec<String>,
    /// JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `keyferry sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The two tokens.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Only keys matching (as for plan).
    #[arg(long, value_name = "PATTERN")]
    pub select: Vec<String>,
    /// Also destroy target objects the source does not have (asks first, or --yes).
    #[arg(long)]
    pub prune: bool,
    /// Confirm --prune without a prompt.
    #[arg(long)]
    pub yes: bool,
    /// JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// The journal of the copy step (default: keyferry-RUN.journal here).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Where changes are audited.
    #[command(flatten)]
    pub audit: AuditLogArg,
}

/// `keyferry retire`.
#[derive(Debug, Args)]
pub struct RetireArgs {
    /// The migration run whose source copies go.
    #[arg(long, value_name = "RUN")]
    pub run: String,
    /// Its journal (default: keyferry-RUN.journal in the current directory).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Clear the usage flags that allow new encryption, wrapping, signing and derivation
    /// instead of destroying; decryption, unwrapping and verification keep working.
    #[arg(long)]
    pub deactivate: bool,
    /// Confirm without a prompt (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Say what would be retired; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where changes are audited.
    #[command(flatten)]
    pub audit: AuditLogArg,
}

/// `keyferry rewrap`.
#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The old KEK: its token's URI with object= (and/or id=). PIN: KEYFERRY_FROM_PIN.
    #[arg(long, value_name = "URI")]
    pub old_kek: String,
    /// The new KEK, likewise. PIN: KEYFERRY_TO_PIN.
    #[arg(long, value_name = "URI")]
    pub new_kek: String,
    /// A directory of blob files (file name = id) or a JSON Lines file of
    /// {"id", "blob" (base64), "mechanism"}.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The JSON Lines output {"id", "blob", "mechanism"}; written as OUT.partial, renamed
    /// when done; failures in OUT.failed.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// The mechanism of the new blobs.
    #[arg(long, value_name = "MECHANISM", default_value = "CKM_AES_KEY_WRAP_KWP")]
    pub mechanism: String,
    /// The mechanism of input blobs that name none (directory input).
    #[arg(long, value_name = "MECHANISM", default_value = "CKM_AES_KEY_WRAP_KWP")]
    pub input_mechanism: String,
    /// The data keys' type.
    #[arg(long, value_enum, default_value = "aes")]
    pub key_type: DataKeyType,
    /// Parallel sessions.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Finish an interrupted run (OUT.partial): ids already there are not rewrapped again.
    #[arg(long)]
    pub resume: bool,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where changes are audited.
    #[command(flatten)]
    pub audit: AuditLogArg,
}

/// The type of the data keys a rewrap carries.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DataKeyType {
    /// CKK_AES.
    Aes,
    /// CKK_GENERIC_SECRET (HMAC keys).
    Generic,
}

/// The hash-chained audit log every change is appended to.
#[derive(Debug, Args)]
pub struct AuditLogArg {
    /// The hash-chained audit log every change is appended to.
    #[arg(
        long,
        value_name = "FILE",
        env = "KEYFERRY_AUDIT_LOG",
        default_value = "keyferry-audit.jsonl"
    )]
    pub audit_log: PathBuf,
}

/// `keyferry audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every line of an audit log; exit 0 when intact, 1 when broken.
    Verify {
        /// The log (keyferry-audit.jsonl where the tool ran, or --audit-log's file).
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// The hash the last entry must have (as printed by an earlier verify or run):
        /// catches lines deleted from the end, which a chain alone cannot.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
    },
}

/// `keyferry demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use a SoftHSMv2 token as the source (needs the softhsm2 package).
    #[arg(long)]
    pub softhsm: bool,
    /// Keep the demo directory (tokens, PIN files, journal) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// `keyferry demo-setup`.
#[derive(Debug, Args)]
pub struct DemoSetupArgs {
    /// The demo directory.
    pub dir: PathBuf,
    /// The source is SoftHSMv2.
    #[arg(long)]
    pub softhsm: bool,
}
