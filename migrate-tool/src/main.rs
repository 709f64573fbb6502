//! `keyferry`: moves root and data keys between PKCS#11 token slots, proves each arrived,
//! resumes after a crash. One function per command; errors print with a hint.

mod audit;
mod check;
mod cli;
mod demo;
mod error;
mod exit_code;
mod interrupt;
mod inventory;
mod journal;
mod migrate;
mod names;
mod p11raw;
mod pin;
mod plan;
mod rekey;
mod report;
mod retire;
mod rewrap;
mod samples;
mod status;
mod templates;
mod token;
mod transport;
mod uri;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Endpoints, InventoryArgs, MigrateArgs, PairArgs, SlotsArgs};
use crate::error::MigrateError;
use crate::journal::{Journal, RunHeader};
use crate::plan::{Action, Plan, Selection};
use crate::report::ObjectReport;
use crate::token::{Modules, Token, TokenFacts};
use crate::transport::{KekAgreement, Profile};
use crate::uri::TokenUri;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Slots(args) => slots(&args),
        Command::Inventory(args) => inventory(&args),
        Command::Plan(args) => plan_command(&args),
        Command::Migrate(args) => migrate_command(&args),
        Command::Verify(args) => verify_command(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Rewrap(args) => rewrap_command(&args),
        Command::Retire(args) => retire_command(&args),
        Command::Rekey(args) => rekey_command(&args),
        Command::Status(args) => status_command(&args),
        Command::Sync(args) => sync_command(&args),
        Command::Audit(cli::AuditCommand::Verify { log, head }) => {
            audit_verify(&log, head.as_deref())
        }
        Command::DemoSetup(args) => demo::setup(&args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            if let Some(hint) = err.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

fn parse_uri(who: &str, text: &str) -> Result<TokenUri, MigrateError> {
    text.parse().map_err(|source| MigrateError::Uri {
        who: who.to_owned(),
        source,
    })
}

/// The URI for one side from `--from`/`--to` and the flags that refine it.
fn endpoint(
    who: &str,
    uri: Option<&str>,
    module: Option<&PathBuf>,
    label: Option<&String>,
    serial: Option<&String>,
) -> Result<TokenUri, MigrateError> {
    let mut parsed = match uri {
        Some(text) => parse_uri(who, text)?,
        None if module.is_some() || label.is_some() || serial.is_some() => TokenUri::default(),
        None => {
            return Err(MigrateError::Usage(format!(
                "{who} is missing: give a token URI (or {who}-token / {who}-module)"
            )));
        }
    };
    if let Some(module) = module {
        parsed.module_path = Some(module.clone());
    }
    if let Some(label) = label {
        parsed.token = Some(label.clone());
    }
    if let Some(serial) = serial {
        parsed.serial = Some(serial.clone());
    }
    Ok(parsed)
}

fn endpoints(endpoints: &Endpoints) -> Result<(TokenUri, TokenUri), MigrateError> {
    let from = endpoint(
        "--from",
        endpoints.from.as_deref(),
        endpoints.from_module.as_ref(),
        endpoints.from_token.as_ref(),
        endpoints.from_serial.as_ref(),
    )?;
    let to = endpoint(
        "--to",
        endpoints.to.as_deref(),
        endpoints.to_module.as_ref(),
        endpoints.to_token.as_ref(),
        endpoints.to_serial.as_ref(),
    )?;
    Ok((from, to))
}

fn open_pair(
    modules: &mut Modules,
    from: &TokenUri,
    to: &TokenUri,
) -> Result<(Token, Token), MigrateError> {
    let (source, destination) = token::open_two(
        modules,
        ("--from", &from.without_object(), "KEYFERRY_FROM_PIN"),
        ("--to", &to.without_object(), "KEYFERRY_TO_PIN"),
    )?;
    let source = Token {
        uri: from.clone(),
        ..source
    };
    if source.module.path == destination.module.path && source.slot == destination.slot {
        return Err(MigrateError::Usage(format!(
            "--from and --to name the same token, {}",
            source.describe()
        )));
    }
    Ok((source, destination))
}

fn slots(args: &SlotsArgs) -> Result<u8, MigrateError> {
    let uri = TokenUri {
        module_path: args.module.clone(),
        ..TokenUri::default()
    };
    let mut modules = Modules::default();
    let module = modules.open(&token::module_path(&uri)?)?;
    let slots = module
        .pkcs11
        .get_all_slots()
        .map_err(|err| MigrateError::pkcs11("C_GetSlotList", &err))?;
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    for slot in slots {
        let info = module
            .pkcs11
            .get_slot_info(slot)
            .map_err(|err| MigrateError::pkcs11("C_GetSlotInfo", &err))?;
        let facts = if info.token_present() {
            Some(token::facts(&module, slot)?)
        } else {
            None
        };
        let initialized = facts.is_some()
            && module
                .pkcs11
                .get_token_info(slot)
                .map(|token| token.token_initialized())
                .unwrap_or(false);
        rows.push((
            slot.id(),
            info.slot_description().trim().to_owned(),
            facts,
            initialized,
        ));
    }
    for (slot_id, description, facts, initialized) in &rows {
        if args.json {
            let line = serde_json::json!({"type": "slot", "data": {
                "slot_id": slot_id, "description": description, "initialized": initialized, "token": facts,
            }});
            writeln!(out, "{line}").map_err(stdout_error)?;
        } else {
            match facts {
                Some(facts) if *initialized => writeln!(
                    out,
                    "slot {slot_id}: token \"{}\" ({}, model {}, serial {})",
                    facts.label, facts.manufacturer, facts.model, facts.serial
                ),
                Some(_) => writeln!(out, "slot {slot_id}: uninitialised token ({description})"),
                None => writeln!(out, "slot {slot_id}: no token ({description})"),
            }
            .map_err(stdout_error)?;
        }
    }
    Ok(exit_code::DONE)
}

fn stdout_error(err: std::io::Error) -> MigrateError {
    MigrateError::Usage(format!("writing to stdout: {err}"))
}

fn inventory(args: &InventoryArgs) -> Result<u8, MigrateError> {
    let uri = parse_uri("URI", &args.uri)?;
    let selection = Selection::new(&args.select)?;
    let mut modules = Modules::default();
    let opened = token::open(
        &mut modules,
        "the token",
        &uri.without_object(),
        "KEYFERRY_PIN",
    )?;
    let opened = Token { uri, ..opened };
    let objects = plan::selected(&opened, &selection)?;
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    for object in &objects {
        let kcv = check::compute(&opened, &opened.session, object);
        let flags = [
            (cryptoki_sys::CKA_SENSITIVE, "sensitive"),
            (cryptoki_sys::CKA_EXTRACTABLE, "extractable"),
            (cryptoki_sys::CKA_TRUSTED, "trusted"),
            (cryptoki_sys::CKA_WRAP_WITH_TRUSTED, "wrap-with-trusted"),
            (cryptoki_sys::CKA_PRIVATE, "private"),
        ]
        .into_iter()
        .filter(|&(kind, _)| object.flag(kind) == Some(true))
        .map(|(_, name)| name)
        .collect::<Vec<_>>();
        if args.json {
            let line = serde_json::json!({"type": "object", "data": {
                "class": names::class(object.class),
                "key_type": object.key_type().map(names::key_type),
                "bits": object.bits(),
                "label": object.label(),
                "id": hex::encode(object.id()),
                "usage": object.usage(),
                "flags": flags,
                "kcv": kcv.as_ref().ok().map(ToString::to_string),
                "kcv_unavailable": kcv.as_ref().err(),
                "token_check_value": object.bytes(cryptoki_sys::CKA_CHECK_VALUE).map(hex::encode),
                "unique_id": object.bytes(cryptoki_sys::CKA_UNIQUE_ID).map(|b| String::from_utf8_lossy(b).into_owned()),
            }});
            writeln!(out, "{line}").map_err(stdout_error)?;
        } else {
            rows.push([
                names::class(object.class),
                object.kind(),
                object
                    .bits()
                    .map(|bits| bits.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                object.label(),
                if object.id().is_empty() {
                    "-".to_owned()
                } else {
                    hex::encode(object.id())
                },
                object.usage().join(","),
                flags.join(","),
                kcv.map(|kcv| kcv.to_string())
                    .unwrap_or_else(|_| "-".to_owned()),
            ]);
        }
    }
    if !args.json {
        let header = [
            "CLASS",
            "TYPE",
            "BITS",
            "LABEL",
            "ID",
            "USAGE",
            "FLAGS",
            "CHECK VALUE",
        ]
        .map(str::to_owned);
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                rows.iter()
                    .chain([&header])
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in [&header].into_iter().chain(rows.iter()) {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end()).map_err(stdout_error)?;
        }
        writeln!(out, "\n{} objects on {}", objects.len(), opened.describe())
            .map_err(stdout_error)?;
    }
    Ok(exit_code::DONE)
}

/// Probes, negotiates and plans.
fn make_plan(
    source: &Token,
    destination: &Token,
    selection: &Selection,
    args: &PairArgs,
) -> Result<Plan, MigrateError> {
    let deep = args.verbose
        || matches!(
            args.transport,
            Some(KekAgreement::RsaAes | KekAgreement::RsaOaep)
        );
    // Both tokens are probed, each on a session of its own, while the source is read.
    let (objects, mut source_profile, mut destination_profile) = std::thread::scope(|scope| {
        let probing = |token: &Token| {
            token
                .fork()
                .ok()
                .map(|other| scope.spawn(move || transport::probe(&other, &other.session, deep)))
        };
        let (source_probe, destination_probe) = (probing(source), probing(destination));
        let objects = plan::selected(source, selection);
        let probed = |token: &Token, probe: Option<std::thread::ScopedJoinHandle<'_, Profile>>| {
            match probe {
                Some(probing) => probing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => transport::probe(token, &token.session, deep),
            }
        };
        let source_profile = probed(source, source_probe);
        let destination_profile = probed(destination, destination_probe);
        (objects, source_profile, destination_profile)
    });
    let objects = objects?;
    let mut transport = transport::negotiate(&source_profile, &destination_profile, args.transport);
    // Secrets the source would zero-pad go by RSA-OAEP instead, if both tokens do it.
    let padded = objects
        .iter()
        .any(|object| plan::needs_direct(object, &source_profile, &destination_profile));
    if (transport.is_err() || padded) && !deep {
        source_profile = transport::probe(source, &source.session, true);
        destination_profile = transport::probe(destination, &destination.session, true);
        transport = transport::negotiate(&source_profile, &destination_profile, args.transport);
    }
    plan::plan(
        source,
        destination,
        objects,
        source_profile,
        destination_profile,
        transport,
    )
}

/// What a report says of the two tokens, apart from them, so that they can close while
/// it is written.
struct Ends {
    from: TokenFacts,
    to: TokenFacts,
    from_described: String,
    to_described: String,
}

impl Ends {
    fn of(source: &Token, destination: &Token) -> Self {
        Self {
            from: source.facts.clone(),
            to: destination.facts.clone(),
            from_described: source.describe(),
            to_described: destination.describe(),
        }
    }
}

fn print_plan_header(
    out: &mut impl Write,
    ends: &Ends,
    plan: &Plan,
    verbose: bool,
) -> std::io::Result<()> {
    writeln!(out, "from: {}", ends.from_described)?;
    writeln!(out, "to:   {}", ends.to_described)?;
    match &plan.transport {
        Ok(transport) => writeln!(
            out,
            "transport: {} — {}",
            transport.describe(),
            transport.reason
        )?,
        Err(why) => writeln!(out, "transport: none — {why}")?,
    }
    if verbose {
        for (side, profile) in [
            ("source", &plan.source_profile),
            ("destination", &plan.destination_profile),
        ] {
            writeln!(out, "{side} profile: {}", profile_text(profile))?;
        }
    }
    writeln!(out)
}

fn profile_text(profile: &Profile) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(" ")
        }
    };
    let mut text = format!(
        "RFC 5649 {}{}; RFC 3394 {}; ECDH {}",
        list(&profile.rfc5649),
        if profile.rfc5649_zero_pads {
            " (zero-pads to 64-bit blocks)"
        } else {
            ""
        },
        if profile.rfc3394 { "yes" } else { "no" },
        list(&profile.ecdh_kdfs),
    );
    match &profile.oaep_hashes {
        Some(hashes) => text.push_str(&format!("; OAEP {}", list(hashes))),
        None => text.push_str("; OAEP not probed"),
    }
    match profile.rsa_aes {
        Some(works) => text.push_str(&format!("; RSA-AES {}", if works { "yes" } else { "no" })),
        None => text.push_str("; RSA-AES not probed"),
    }
    if !profile.refusals.is_empty() {
        let refused: Vec<String> = profile
            .refusals
            .iter()
            .map(|refusal| format!("{} {} ({})", refusal.class, refusal.attribute, refusal.rv))
            .collect();
        text.push_str(&format!("; refuses: {}", refused.join(", ")));
    }
    if !profile.generic_value_len {
        text.push_str("; no CKA_VALUE_LEN when unwrapping generic secrets");
    }
    text
}

fn plan_json(ends: &Ends, plan: &Plan) -> serde_json::Value {
    serde_json::json!({"type": "plan", "data": {
        "from": ends.from, "to": ends.to,
        "transport": plan.transport.as_ref().ok(),
        "transport_error": plan.transport.as_ref().err(),
        "profiles": {"source": plan.source_profile, "destination": plan.destination_profile},
    }})
}

fn plan_exit_code(plan: &Plan) -> u8 {
    if plan.count(Action::Refuse) + plan.count(Action::Conflict) > 0 {
        exit_code::REFUSED
    } else {
        exit_code::DONE
    }
}

fn plan_command(args: &PairArgs) -> Result<u8, MigrateError> {
    let (from, to) = endpoints(&args.endpoints)?;
    let selection = Selection::new(&args.select)?;
    let mut modules = Modules::default();
    let (source, destination) = open_pair(&mut modules, &from, &to)?;
    let plan = make_plan(&source, &destination, &selection, args)?;
    let reports: Vec<ObjectReport> = plan
        .entries
        .iter()
        .map(|entry| ObjectReport::planned(entry, plan.transport.as_ref().ok()))
        .collect();
    let mut out = std::io::stdout().lock();
    let ends = Ends::of(&source, &destination);
    if args.json {
        writeln!(out, "{}", plan_json(&ends, &plan)).map_err(stdout_error)?;
        report::write_json(
            &mut out,
            &plan_reports_as_actions(reports),
            serde_json::json!({}),
        )
        .map_err(stdout_error)?;
    } else {
        print_plan_header(&mut out, &ends, &plan, args.verbose).map_err(stdout_error)?;
        report::write_table(&mut out, &plan_reports_as_actions(reports), args.verbose)
            .map_err(stdout_error)?;
    }
    Ok(plan_exit_code(&plan))
}

/// In a plan the status column shows the action.
fn plan_reports_as_actions(mut reports: Vec<ObjectReport>) -> Vec<ObjectReport> {
    for report in &mut reports {
        report.status = report.action.clone();
    }
    reports
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn migrate_command(args: &MigrateArgs) -> Result<u8, MigrateError> {
    let pair = &args.pair;
    let (run, journal_path, from, to, selection, resumed) = match &args.resume {
        Some(run) => {
            let path = args
                .journal
                .clone()
                .unwrap_or_else(|| journal::default_path(run));
            let recorded = journal::read(&path)?;
            if recorded.header.run != *run {
                return Err(MigrateError::Journal {
                    path,
                    reason: format!("it belongs to run {}, not {run}", recorded.header.run),
                });
            }
            let from = parse_uri("--from", &recorded.header.from)?;
            let to = parse_uri("--to", &recorded.header.to)?;
            let selection = Selection::new(&recorded.header.select)?;
            (run.clone(), path, from, to, selection, true)
        }
        None => {
            let (from, to) = endpoints(&pair.endpoints)?;
            let run = journal::new_run_id();
            let path = args
                .journal
                .clone()
                .unwrap_or_else(|| journal::default_path(&run));
            (run, path, from, to, Selection::new(&pair.select)?, false)
        }
    };
    // The audit log is read and checked while the tokens are opened and the plan is made.
    let audit = (!args.dry_run).then(|| audit::Prepared::start(&args.audit.audit_log));
    let mut modules = Modules::default();
    let (source, destination) = open_pair(&mut modules, &from, &to)?;
    let plan = make_plan(&source, &destination, &selection, pair)?;
    let mut out = std::io::stdout().lock();
    let Some(audit) = audit else {
        let reports: Vec<ObjectReport> = plan
            .entries
            .iter()
            .map(|entry| ObjectReport::planned(entry, plan.transport.as_ref().ok()))
            .collect();
        return finish(
            &mut out,
            &Ends::of(&source, &destination),
            &plan,
            &reports,
            pair,
            serde_json::json!({"dry_run": true}),
            None,
        );
    };
    // From here a signal stops the run between two keys, journal and report complete.
    let hold = interrupt::hold();
    // Before the journal: a log that does not verify stops the run with nothing written.
    let mut audit = audit.open()?;
    let (mut journal, done) = if resumed {
        let (journal, recorded) = Journal::resume(&journal_path)?;
        (journal, recorded.states)
    } else {
        let header = RunHeader {
            run: run.clone(),
            from: from.to_string(),
            to: to.to_string(),
            select: selection.patterns().to_vec(),
            transport: pair.transport.map(|agreement| format!("{agreement:?}")),
            started: unix_now(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kind: None,
        };
        (Journal::create(&journal_path, header)?, Default::default())
    };
    let options = migrate::Options {
        fail_fast: args.fail_fast,
        run: run.clone(),
    };
    let reports = migrate::execute(
        &source,
        &destination,
        &plan,
        &mut journal,
        &mut audit,
        &done,
        &options,
    )?;
    let counts = report::summary(&reports);
    journal.append(&journal::Line::Finished {
        summary: serde_json::to_value(&counts).unwrap_or_default(),
    })?;
    journal.flush()?;
    let extra =
        serde_json::json!({"run": run, "journal": journal.path(), "audit_log": audit.path()});
    let ends = Ends::of(&source, &destination);
    let code = std::thread::scope(|scope| {
        // The tokens close (C_Finalize: keyferry checkpoints its token files) while the
        // report is written and the plan let go of, each about as long.
        scope.spawn(move || drop((source, destination, modules)));
        let code = finish(&mut out, &ends, &plan, &reports, pair, extra, Some(&run));
        drop(plan);
        code
    })?;
    out.flush().map_err(stdout_error)?;
    if let Some(signal) = interrupt::requested() {
        let left = reports
            .iter()
            .filter(|report| report.status == "not-attempted")
            .count();
        eprintln!(
            "keyferry: {signal}: stopped between two keys, {left} not attempted; \
             finish with: keyferry migrate --resume {run} --journal {}",
            journal.path().display()
        );
    }
    // A signal held off ends the process here, as it would have.
    hold.release();
    Ok(code)
}

fn finish(
    out: &mut impl Write,
    ends: &Ends,
    plan: &Plan,
    reports: &[ObjectReport],
    pair: &PairArgs,
    extra: serde_json::Value,
    run: Option<&str>,
) -> Result<u8, MigrateError> {
    if pair.json {
        writeln!(out, "{}", plan_json(ends, plan)).map_err(stdout_error)?;
        report::write_json(out, reports, extra).map_err(stdout_error)?;
    } else {
        print_plan_header(out, ends, plan, pair.verbose).map_err(stdout_error)?;
        report::write_table(out, reports, pair.verbose).map_err(stdout_error)?;
        if let Some(run) = run {
            writeln!(
                out,
                "run {run}; journal {}; audit log {}",
                extra["journal"].as_str().unwrap_or("-"),
                extra["audit_log"].as_str().unwrap_or("-")
            )
            .map_err(stdout_error)?;
        }
    }
    let failed = reports
        .iter()
        .filter(|report| report.status == "failed")
        .count();
    Ok(if failed > 0 {
        exit_code::SOME_FAILED
    } else {
        plan_exit_code(plan)
    })
}

fn verify_command(args: &PairArgs) -> Result<u8, MigrateError> {
    let (from, to) = endpoints(&args.endpoints)?;
    let selection = Selection::new(&args.select)?;
    let mut modules = Modules::default();
    let (source, destination) = open_pair(&mut modules, &from, &to)?;
    let objects = plan::selected(&source, &selection)?;
    let reports = migrate::verify(&source, &destination, objects)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        report::write_json(&mut out, &reports, serde_json::json!({})).map_err(stdout_error)?;
    } else {
        writeln!(
            out,
            "from: {}\nto:   {}\n",
            source.describe(),
            destination.describe()
        )
        .map_err(stdout_error)?;
        report::write_table(&mut out, &reports, args.verbose).map_err(stdout_error)?;
    }
    let all_verified = reports.iter().all(|report| report.status == "verified");
    Ok(if all_verified {
        exit_code::DONE
    } else {
        exit_code::SOME_FAILED
    })
}

fn audit_verify(log: &std::path::Path, head: Option<&str>) -> Result<u8, MigrateError> {
    match audit::verify(log, head) {
        Ok(verified) => {
            println!(
                "{}: {} entries, intact; head {}",
                log.display(),
                verified.entries,
                verified.head
            );
            Ok(exit_code::DONE)
        }
        Err(audit::AuditError::Io { path, source }) => Err(MigrateError::Usage(format!(
            "audit log {}: {source}",
            path.display()
        ))),
        Err(broken) => {
            println!("{}: BROKEN: {broken}", log.display());
            Ok(exit_code::SOME_FAILED)
        }
    }
}

fn rewrap_command(args: &cli::RewrapArgs) -> Result<u8, MigrateError> {
    let usage = |what: &str, err: String| MigrateError::Usage(format!("{what}: {err}"));
    let options = rewrap::Options {
        jobs: args.jobs,
        mechanism: rewrap::parse_mechanism(&args.mechanism)
            .map_err(|err| usage("--mechanism", err))?,
        input_mechanism: rewrap::parse_mechanism(&args.input_mechanism)
            .map_err(|err| usage("--input-mechanism", err))?,
        key_type: match args.key_type {
            cli::DataKeyType::Aes => cryptoki_sys::CKK_AES,
            cli::DataKeyType::Generic => cryptoki_sys::CKK_GENERIC_SECRET,
        },
        resume: args.resume,
    };
    let old_uri = parse_uri("--old-kek", &args.old_kek)?;
    let new_uri = parse_uri("--new-kek", &args.new_kek)?;
    let mut modules = Modules::default();
    let old = token::open(
        &mut modules,
        "--old-kek",
        &old_uri.without_object(),
        "KEYFERRY_FROM_PIN",
    )?;
    let old = Token {
        uri: old_uri,
        ..old
    };
    let new = token::open(
        &mut modules,
        "--new-kek",
        &new_uri.without_object(),
        "KEYFERRY_TO_PIN",
    )?;
    let new = Token {
        uri: new_uri,
        ..new
    };
    let mut audit = audit::AuditLog::open(&args.audit.audit_log)?;
    let summary = rewrap::run(&old, &new, &args.input, &args.output, &options)?;
    audit.append(audit::Event {
        action: "rewrap".to_owned(),
        token: new.uri.to_string(),
        objects: vec![
            args.input.display().to_string(),
            args.output.display().to_string(),
        ],
        result: format!(
            "processed {}, rewrapped {}, done earlier {}, failed {}",
            summary.processed, summary.rewrapped, summary.skipped, summary.failed
        ),
        run: None,
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let line = serde_json::json!({"type": "summary", "data": summary, "output": args.output});
        writeln!(out, "{line}").map_err(stdout_error)?;
    } else {
        writeln!(
            out,
            "processed {}: rewrapped {}, done earlier {}, failed {}; output {}",
            summary.processed,
            summary.rewrapped,
            summary.skipped,
            summary.failed,
            args.output.display()
        )
        .map_err(stdout_error)?;
        if summary.failed > 0 {
            writeln!(
                out,
                "failures, one per line with the reason: {}.failed",
                args.output.display()
            )
            .map_err(stdout_error)?;
        }
    }
    Ok(if summary.failed > 0 {
        exit_code::SOME_FAILED
    } else {
        exit_code::DONE
    })
}

fn retire_command(args: &cli::RetireArgs) -> Result<u8, MigrateError> {
    let path = args
        .journal
        .clone()
        .unwrap_or_else(|| journal::default_path(&args.run));
    let recorded = journal::read(&path)?;
    if recorded.header.run != args.run {
        return Err(MigrateError::Journal {
            path,
            reason: format!(
                "it belongs to run {}, not {}",
                recorded.header.run, args.run
            ),
        });
    }
    let from = parse_uri("--from", &recorded.header.from)?;
    let to = parse_uri("--to", &recorded.header.to)?;
    let mut modules = Modules::default();
    let rekey = recorded.header.kind.as_deref() == Some("rekey");
    // A rekey's run record names the old and the new KEK on one token.
    let (source, destination) = if rekey {
        let source = token::open(
            &mut modules,
            "the KEK's token",
            &from.without_object(),
            "KEYFERRY_PIN",
        )?;
        let source = Token {
            uri: from,
            ..source
        };
        let destination = Token {
            uri: to,
            ..source.fork()?
        };
        (source, destination)
    } else {
        open_pair(&mut modules, &from, &to)?
    };
    let mode = if args.deactivate {
        retire::Mode::Deactivate
    } else {
        retire::Mode::Destroy
    };
    let candidates = retire::candidates(&recorded, mode);
    if !args.dry_run
        && !args.yes
        && !candidates.is_empty()
        && !retire::confirm(candidates.len(), mode, &source)?
    {
        return Err(MigrateError::Usage(
            "not confirmed; nothing was changed".to_owned(),
        ));
    }
    // From here a signal stops the retirement between two objects (a SoftHSMv2 object
    // file is rewritten in place when its flags change: see `interrupt`).
    let hold = interrupt::hold();
    let mut audit = audit::AuditLog::open(&args.audit.audit_log)?;
    let (mut journal, _) = Journal::resume(&path)?;
    let prove = |object: &inventory::Object| -> Result<String, String> {
        if rekey {
            let new_kek =
                rewrap::find_kek(&destination).map_err(|err| format!("the new KEK: {err}"))?;
            let new_kek = inventory::read(&destination, new_kek).map_err(|err| err.to_string())?;
            check::compute(&destination, &destination.session, &new_kek)
                .map(|kcv| format!("the new KEK is in place ({kcv})"))
        } else {
            retire::destination_copy_proves(&source, &destination, object)
        }
    };
    let reports = retire::retire(
        &source,
        &prove,
        &candidates,
        mode,
        args.dry_run,
        &mut journal,
        &mut audit,
        &args.run,
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        report::write_json(&mut out, &reports, serde_json::json!({"run": args.run}))
            .map_err(stdout_error)?;
    } else {
        writeln!(
            out,
            "source: {}\ndestination: {}\n",
            source.describe(),
            destination.describe()
        )
        .map_err(stdout_error)?;
        report::write_table(&mut out, &reports, false).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    if let Some(signal) = interrupt::requested() {
        eprintln!(
            "keyferry: {signal}: stopped between two objects; run the same retire again for the rest"
        );
    }
    // A signal held off ends the process here, as it would have.
    hold.release();
    let troubled = reports
        .iter()
        .any(|report| matches!(report.status.as_str(), "refused" | "failed"));
    Ok(if troubled {
        exit_code::SOME_FAILED
    } else {
        exit_code::DONE
    })
}

fn status_command(args: &cli::StatusArgs) -> Result<u8, MigrateError> {
    let selection = Selection::new(&args.select)?;
    let mut modules = Modules::default();
    let mut stores = Vec::with_capacity(args.uris.len());
    for (index, text) in args.uris.iter().enumerate() {
        let who = format!("keystore {}", index + 1);
        let uri = parse_uri(&who, text)?;
        stores.push(token::open(&mut modules, &who, &uri, "KEYFERRY_PIN")?);
    }
    let rows = status::status(&stores, &selection)?;
    let mut out = std::io::stdout().lock();
    let names: Vec<String> = stores
        .iter()
        .map(|store| store.facts.label.clone())
        .collect();
    if args.json {
        for row in &rows {
            let copies: Vec<serde_json::Value> = row
                .copies
                .iter()
                .zip(&names)
                .map(|(copy, store)| serde_json::json!({"keystore": store, "copy": copy}))
                .collect();
            let line = serde_json::json!({"type": "key", "data": {"key": row.key, "in_sync": row.in_sync(), "copies": copies}});
            writeln!(out, "{line}").map_err(stdout_error)?;
        }
    } else {
        let mut table = vec![
            std::iter::once("KEY".to_owned())
                .chain(names.iter().cloned())
                .collect::<Vec<_>>(),
        ];
        for row in &rows {
            table.push(
                std::iter::once(row.key.clone())
                    .chain(row.copies.iter().map(status::Copy::word))
                    .collect(),
            );
        }
        let widths: Vec<usize> = (0..table[0].len())
            .map(|column| {
                table
                    .iter()
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &table {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end()).map_err(stdout_error)?;
        }
        let out_of_sync = rows.iter().filter(|row| !row.in_sync()).count();
        writeln!(out, "\n{} keys, {} out of sync", rows.len(), out_of_sync)
            .map_err(stdout_error)?;
    }
    Ok(if rows.iter().all(status::Row::in_sync) {
        exit_code::DONE
    } else {
        exit_code::SOME_FAILED
    })
}

fn sync_command(args: &cli::SyncArgs) -> Result<u8, MigrateError> {
    let (from, to) = endpoints(&args.endpoints)?;
    let selection = Selection::new(&args.select)?;
    let mut modules = Modules::default();
    let (source, destination) = open_pair(&mut modules, &from, &to)?;
    let mut audit = audit::AuditLog::open(&args.audit.audit_log)?;
    let fixed = status::fix_drift(&source, &destination, &selection, &mut audit)?;
    let pair = PairArgs {
        endpoints: args.endpoints.clone(),
        select: args.select.clone(),
        transport: None,
        verbose: false,
        json: args.json,
    };
    let plan = make_plan(&source, &destination, &selection, &pair)?;
    let run = journal::new_run_id();
    let path = args
        .journal
        .clone()
        .unwrap_or_else(|| journal::default_path(&run));
    let header = RunHeader {
        run: run.clone(),
        from: from.to_string(),
        to: to.to_string(),
        select: selection.patterns().to_vec(),
        transport: None,
        started: unix_now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kind: None,
    };
    let mut journal = Journal::create(&path, header)?;
    let options = migrate::Options {
        fail_fast: false,
        run: run.clone(),
    };
    let reports = migrate::execute(
        &source,
        &destination,
        &plan,
        &mut journal,
        &mut audit,
        &Default::default(),
        &options,
    )?;
    let mut pruned = Vec::new();
    if args.prune {
        let extras = status::extras(&source, &destination, &selection)?;
        if !extras.is_empty()
            && !args.yes
            && !retire::confirm(extras.len(), retire::Mode::Destroy, &destination)?
        {
            return Err(MigrateError::Usage(
                "--prune not confirmed; nothing was deleted".to_owned(),
            ));
        }
        for extra in extras {
            let outcome = destination
                .session
                .destroy_object(extra.handle)
                .map_err(|err| names::cryptoki_error(&err));
            audit.append(audit::Event {
                action: "sync.prune".to_owned(),
                token: destination.uri.to_string(),
                objects: vec![extra.identity().describe()],
                result: outcome
                    .as_ref()
                    .map_or_else(|err| format!("failed: {err}"), |()| "ok".to_owned()),
                run: Some(run.clone()),
            })?;
            pruned.push((extra.identity().describe(), outcome));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for (key, outcome) in &fixed {
            let line = serde_json::json!({"type": "fixed", "data": {"key": key, "attributes": outcome.as_ref().ok(), "error": outcome.as_ref().err()}});
            writeln!(out, "{line}").map_err(stdout_error)?;
        }
        for (key, outcome) in &pruned {
            let line = serde_json::json!({"type": "pruned", "data": {"key": key, "error": outcome.as_ref().err()}});
            writeln!(out, "{line}").map_err(stdout_error)?;
        }
        report::write_json(
            &mut out,
            &reports,
            serde_json::json!({"run": run, "journal": journal.path()}),
        )
        .map_err(stdout_error)?;
    } else {
        for (key, outcome) in &fixed {
            match outcome {
                Ok(attributes) => writeln!(out, "fixed {key}: {}", attributes.join(", ")),
                Err(error) => writeln!(out, "could not fix {key}: {error}"),
            }
            .map_err(stdout_error)?;
        }
        for (key, outcome) in &pruned {
            match outcome {
                Ok(()) => writeln!(out, "pruned {key}"),
                Err(error) => writeln!(out, "could not prune {key}: {error}"),
            }
            .map_err(stdout_error)?;
        }
        report::write_table(&mut out, &reports, false).map_err(stdout_error)?;
    }
    let failed = reports.iter().any(|report| report.status == "failed")
        || fixed.iter().any(|(_, outcome)| outcome.is_err())
        || pruned.iter().any(|(_, outcome)| outcome.is_err());
    Ok(if failed {
        exit_code::SOME_FAILED
    } else {
        plan_exit_code(&plan)
    })
}

fn rekey_command(args: &cli::RekeyArgs) -> Result<u8, MigrateError> {
    let uri = parse_uri("--kek", &args.kek)?;
    let new_id = match &args.new_id {
        Some(text) => Some(
            hex::decode(text)
                .map_err(|_| MigrateError::Usage(format!("--new-id {text:?} is not hex")))?,
        ),
        None => None,
    };
    let mut modules = Modules::default();
    let old = token::open(&mut modules, "--kek", &uri.without_object(), "KEYFERRY_PIN")?;
    let old = Token {
        uri: uri.clone(),
        ..old
    };
    let old_kek = rewrap::find_kek(&old)?;
    let run = args.resume.clone().unwrap_or_else(journal::new_run_id);
    let path = rekey::default_path(&run);
    if args.resume.is_none() && path.exists() {
        return Err(MigrateError::Usage(format!(
            "{} exists; pass --resume {run}",
            path.display()
        )));
    }
    let mut audit = audit::AuditLog::open(&args.audit.audit_log)?;
    let (new_kek, made) = rekey::new_kek(
        &old,
        old_kek,
        &args.new_label,
        new_id.as_deref(),
        args.resume.is_some(),
    )?;
    let new_uri = TokenUri {
        object: Some(args.new_label.clone()),
        id: None,
        ..uri.clone()
    };
    let new = Token {
        uri: new_uri,
        ..old.fork()?
    };
    if made {
        rekey::audit_generated(&mut audit, &new, &args.new_label, &run)?;
    }
    let options = rewrap::Options {
        jobs: args.jobs,
        mechanism: names::CKM_AES_KEY_WRAP_KWP,
        input_mechanism: names::CKM_AES_KEY_WRAP_KWP,
        key_type: match args.key_type {
            cli::DataKeyType::Aes => cryptoki_sys::CKK_AES,
            cli::DataKeyType::Generic => cryptoki_sys::CKK_GENERIC_SECRET,
        },
        resume: args.resume.is_some(),
    };
    let summary = rewrap::run(&old, &new, &args.input, &args.output, &options)?;
    let mut journal = rekey::record(&path, &run, &old, &new, new_kek)?;
    journal.append(&journal::Line::Finished {
        summary: serde_json::to_value(&summary).unwrap_or_default(),
    })?;
    audit.append(audit::Event {
        action: "rekey.rewrap".to_owned(),
        token: new.uri.to_string(),
        objects: vec![
            args.input.display().to_string(),
            args.output.display().to_string(),
        ],
        result: format!(
            "rewrapped {}, failed {}; {} pending retirement",
            summary.rewrapped, summary.failed, old.uri
        ),
        run: Some(run.clone()),
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let line = serde_json::json!({"type": "summary", "data": summary, "run": run, "journal": path, "new_kek": new.uri.to_string(), "pending_retirement": old.uri.to_string()});
        writeln!(out, "{line}").map_err(stdout_error)?;
    } else {
        writeln!(
            out,
            "new KEK {}; rewrapped {}, failed {}; the old KEK {} is pending retirement: keyferry retire --run {run}",
            new.uri, summary.rewrapped, summary.failed, old.uri
        )
        .map_err(stdout_error)?;
    }
    Ok(if summary.failed > 0 {
        exit_code::SOME_FAILED
    } else {
        exit_code::DONE
    })
}
