//! keyferry-bench: the same PKCS#11 call sequences against several modules in one run, one
//! table with a column per module and how many times better the first is than each other,
//! then the `keyferry` tool's throughput and the targets. Speed is judged here, as
//! ratios on one machine, never by timing assertions in tests.
//!
//! Each module runs in a child process of its own (`keyferry-bench worker …`) whose
//! environment comes from the module's init command: a script that makes a fresh token
//! labelled `bench` in a temporary directory and prints `export VAR=VALUE` lines (the
//! `softhsm-config/make-*-tokens` scripts do exactly that).

mod figure;
mod scenarios;
mod targets;
mod tool;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::figure::{Figure, Unit};

/// The bench token's label and PINs (throwaway tokens in a temporary directory).
const LABEL: &str = "bench";
const SO_PIN: &str = "bench-so-pin-1234";
const USER_PIN: &str = "bench-user-pin-1234";
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Compare PKCS#11 modules on identical call sequences.
#[derive(Parser)]
#[command(name = "keyferry-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Job>,
    #[command(flatten)]
    options: Options,
}

/// The jobs the parent starts in child processes (hidden: not for people).
#[derive(Subcommand)]
enum Job {
    /// Runs every scenario against one module, in the environment the parent set up.
    #[command(hide = true)]
    Worker {
        module: PathBuf,
        #[command(flatten)]
        options: WorkerOptions,
    },
    /// A fresh process: C_Initialize + C_OpenSession, then peak memory after a find.
    #[command(hide = true)]
    Probe { module: PathBuf, label: String },
    /// Fills a token with extractable AES keys.
    #[command(hide = true)]
    Fill {
        module: PathBuf,
        token: String,
        count: usize,
    },
    /// The bare wrap + unwrap calls of a migration; prints seconds.
    #[command(hide = true)]
    Bare {
        /// Also the calls of the proof: check values on both sides, the copy read back.
        #[arg(long)]
        verify: bool,
        module: PathBuf,
        from: String,
        to: String,
        count: usize,
    },
    /// Writes rewrap input: blobs under a new token key old-kek.
    #[command(hide = true)]
    Blobs {
        module: PathBuf,
        token: String,
        count: usize,
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
struct Options {
    /// A module as NAME=PATH (repeatable; the first is the baseline of the ratio column).
    /// Default: keyferry (beside this binary) and SoftHSMv2.
    #[arg(long = "module", value_name = "NAME=PATH")]
    modules: Vec<String>,
    /// The init command for a module, NAME=COMMAND; `{dir}` becomes a fresh temporary
    /// directory. Default for keyferry and softhsm: softhsm-config/make-*-tokens.
    #[arg(long = "init", value_name = "NAME=COMMAND")]
    inits: Vec<String>,
    /// The largest token a module is filled to, NAME=COUNT (SoftHSMv2 spends 12 ms on
    /// each token key and a third of a second on one search among 10 000).
    #[arg(long = "max-objects", value_name = "NAME=COUNT")]
    max_objects: Vec<String>,
    /// Keys per `keyferry migrate` run.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Blobs per `keyferry rewrap` run (and a tenth as many, for memory growth).
    #[arg(long, default_value_t = 100_000)]
    blobs: usize,
    /// Leave out the `keyferry` tool's migrate and rewrap runs.
    #[arg(long)]
    no_tool: bool,
    #[command(flatten)]
    worker: WorkerOptions,
    /// JSON on stdout instead of the tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct WorkerOptions {
    /// Timed calls per scenario (1 MiB scenarios and logins take a tenth).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Token object counts for the growth scenarios, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    objects: Vec<usize>,
    /// A few iterations of everything at tiny sizes: shows the bench works, judges nothing.
    #[arg(long)]
    smoke: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Job::Worker { module, options }) => scenarios::run(&module, &options)
            .and_then(|figures| serde_json::to_string(&figures).map_err(|e| e.to_string()))
            .map(|text| println!("{text}")),
        Some(Job::Probe { module, label }) => scenarios::probe(&module, &label)
            .and_then(|probe| serde_json::to_string(&probe).map_err(|e| e.to_string()))
            .map(|text| println!("{text}")),
        Some(Job::Fill {
            module,
            token,
            count,
        }) => tool::fill(&module, &token, count),
        Some(Job::Bare {
            verify,
            module,
            from,
            to,
            count,
        }) => tool::bare(&module, &from, &to, count, verify).map(|seconds| println!("{seconds}")),
        Some(Job::Blobs {
            module,
            token,
            count,
            out,
        }) => tool::blobs(&module, &token, count, &out),
        None => parent(&cli.options),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// NAME=VALUE.
fn split(text: &str, what: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{what} {text:?} is not NAME=VALUE"))
}

/// The `export VAR=VALUE` lines of an init command's output.
fn exports(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(variable, value)| (variable.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

fn default_init(name: &str) -> Option<String> {
    let script = match name {
        "keyferry" => "make-keyferry-tokens",
        "softhsm" => "make-softhsm-tokens",
        _ => return None,
    };
    let path = repo_root().join("softhsm-config").join(script);
    Some(format!(
        "{} {{dir}} {LABEL} {SO_PIN} {USER_PIN}",
        path.display()
    ))
}

/// One module's figures.
struct Column {
    name: String,
    figures: Vec<Figure>,
}

fn parent(options: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let beside = |file: &str| exe.parent().map(|dir| dir.join(file)).unwrap_or_default();
    let modules: Vec<(String, String)> = if options.modules.is_empty() {
        vec![
            (
                "keyferry".to_owned(),
                beside("libkeyferry_pkcs11.so").display().to_string(),
            ),
            ("softhsm".to_owned(), SOFTHSM_MODULE.to_owned()),
        ]
    } else {
        options
            .modules
            .iter()
            .map(|text| split(text, "--module"))
            .collect::<Result<_, _>>()?
    };
    let inits: BTreeMap<String, String> = options
        .inits
        .iter()
        .map(|text| split(text, "--init"))
        .collect::<Result<_, _>>()?;
    let max_objects: BTreeMap<String, usize> = options
        .max_objects
        .iter()
        .map(|text| {
            let (name, count) = split(text, "--max-objects")?;
            let count = count
                .parse()
                .map_err(|_| format!("--max-objects {text:?}: {count:?} is not a count"))?;
            Ok((name, count))
        })
        .collect::<Result<_, String>>()?;
    let mut columns: Vec<Column> = Vec::new();
    for (name, path) in &modules {
        let dir = tempfile::Builder::new()
            .prefix("keyferry-bench-")
            .tempdir()
            .map_err(|err| err.to_string())?;
        let init = inits
            .get(name)
            .cloned()
            .or_else(|| default_init(name))
            .ok_or_else(|| format!("no --init for module {name}"))?
            .replace("{dir}", &dir.path().display().to_string());
        let output = Command::new("sh")
            .args(["-c", &init])
            .output()
            .map_err(|err| format!("{name}: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "{name}: init failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let objects: Vec<String> = options
            .worker
            .objects
            .iter()
            .filter(|count| max_objects.get(name).is_none_or(|max| *count <= max))
            .map(ToString::to_string)
            .collect();
        let mut worker = Command::new(&exe);
        worker
            .envs(exports(&String::from_utf8_lossy(&output.stdout)))
            .arg("worker")
            .arg(path)
            .args(["--iterations", &options.worker.iterations.to_string()])
            .args(["--objects", &objects.join(",")]);
        if options.worker.smoke {
            worker.arg("--smoke");
        }
        eprintln!("benchmarking {name} ({path})");
        let output = worker
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|err| format!("{name}: {err}"))?;
        if !output.status.success() {
            return Err(format!("{name}: the worker failed ({})", output.status));
        }
        let figures: Vec<Figure> =
            serde_json::from_slice(&output.stdout).map_err(|err| format!("{name}: {err}"))?;
        columns.push(Column {
            name: name.clone(),
            figures,
        });
    }
    let mut tool_figures = Vec::new();
    let keyferry = modules.iter().find(|(name, _)| name == "keyferry");
    if let (false, Some((_, keyferry))) = (options.no_tool, keyferry) {
        let (keys, blobs) = if options.worker.smoke {
            (options.keys.min(10), options.blobs.min(200))
        } else {
            (options.keys, options.blobs)
        };
        tool_figures = tool::run(&tool::Setup {
            exe: exe.clone(),
            keyferry_module: PathBuf::from(keyferry),
            softhsm_module: modules
                .iter()
                .find(|(name, _)| name == "softhsm")
                .map(|(_, path)| PathBuf::from(path)),
            keyferry_cli: beside("keyferry"),
            keys,
            blobs,
        })?;
        let seconds = if options.worker.smoke { 1 } else { 3 };
        let ceiling = tool::openssl_ceiling(seconds)?;
        tool_figures.push(Figure::value(
            "openssl speed -evp aes-256-gcm, 1 MiB blocks (ceiling)",
            Unit::MegabytesPerSecond,
            ceiling,
            1,
        ));
    }
    if options.json {
        let mut value: BTreeMap<&str, &Vec<Figure>> = columns
            .iter()
            .map(|column| (column.name.as_str(), &column.figures))
            .collect();
        value.insert("tool", &tool_figures);
        let text = serde_json::to_string(&value).map_err(|err| err.to_string())?;
        return writeln!(std::io::stdout(), "{text}").map_err(|err| err.to_string());
    }
    let mut out = String::new();
    table(&columns, &mut out);
    if !tool_figures.is_empty() {
        out.push_str("\nkeyferry tool (one run each)\n");
        for figure in &tool_figures {
            out.push_str(&format!("{:<66}{:>18}\n", figure.scenario, figure.cell()));
        }
    }
    out.push('\n');
    out.push_str(&targets::report(&columns, &tool_figures));
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|err| err.to_string())
}

/// A row per scenario (in the order the first module ran them), a column per module, then
/// how many times better the first module is than each other one.
fn table(columns: &[Column], out: &mut String) {
    let Some(base) = columns.first() else {
        return;
    };
    let mut scenarios: Vec<&str> = Vec::new();
    for column in columns {
        for figure in &column.figures {
            if !scenarios.contains(&figure.scenario.as_str()) {
                scenarios.push(&figure.scenario);
            }
        }
    }
    out.push_str(&format!("{:<66}", "scenario (median / p99 µs, or value)"));
    for column in columns {
        out.push_str(&format!("{:>20}", column.name));
    }
    for column in columns.iter().skip(1) {
        out.push_str(&format!(
            "{:>22}",
            format!("{} vs {}", base.name, column.name)
        ));
    }
    out.push('\n');
    for scenario in scenarios {
        let find = |column: &'_ Column| {
            column
                .figures
                .iter()
                .find(|figure| figure.scenario == scenario)
                .cloned()
        };
        out.push_str(&format!("{scenario:<66}"));
        for column in columns {
            let cell = find(column).map_or_else(|| "-".to_owned(), |figure| figure.cell());
            out.push_str(&format!("{cell:>20}"));
        }
        for column in columns.iter().skip(1) {
            let ratio = find(base)
                .zip(find(column))
                .and_then(|(ours, theirs)| ours.advantage_over(&theirs))
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.1}×"));
            out.push_str(&format!("{ratio:>22}"));
        }
        out.push('\n');
    }
}
