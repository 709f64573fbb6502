//! Issue 8's targets, read off one run's figures: keyferry (the first module) against the
//! second (SoftHSMv2), against itself at other sizes, and the tool's throughput.

use crate::Column;
use crate::figure::Figure;

/// One target: what it says, the figure that decides it, and whether that figure meets it.
struct Target {
    goal: String,
    measured: Option<f64>,
    unit: &'static str,
    met: Option<bool>,
}

fn lookup<'a>(figures: &'a [Figure], scenario: &str) -> Option<&'a Figure> {
    figures.iter().find(|figure| figure.scenario == scenario)
}

fn at_least(
    goal: impl Into<String>,
    measured: Option<f64>,
    unit: &'static str,
    floor: f64,
) -> Target {
    Target {
        goal: goal.into(),
        measured,
        unit,
        met: measured.map(|value| value >= floor),
    }
}

fn at_most(
    goal: impl Into<String>,
    measured: Option<f64>,
    unit: &'static str,
    ceiling: f64,
) -> Target {
    Target {
        goal: goal.into(),
        measured,
        unit,
        met: measured.map(|value| value <= ceiling),
    }
}

pub fn report(columns: &[Column], tool: &[Figure]) -> String {
    let empty = Vec::new();
    let ours = columns.first().map_or(&empty, |column| &column.figures);
    let theirs = columns.get(1).map_or(&empty, |column| &column.figures);
    let peer = columns
        .get(1)
        .map_or("the second module", |column| column.name.as_str());
    let ours_at = |scenario: &str| lookup(ours, scenario).map(|figure| figure.median);
    let advantage = |scenario: &str| {
        lookup(ours, scenario)
            .zip(lookup(theirs, scenario))
            .and_then(|(ours, theirs)| ours.advantage_over(theirs))
    };
    let growth = |large: &str, small: &str| ours_at(large).zip(ours_at(small)).map(|(l, s)| l / s);
    let tool_at = |scenario: &str| lookup(tool, scenario).map(|figure| figure.median);
    let find = |count: u32| format!("find one key by label among {count}");
    let gcm = |count: u32| format!("AES-GCM 64 B, reused handle, {count} objects");

    let mut targets = vec![
        at_least(
            format!("find-by-label at 10 000 objects ≥ 100× {peer}"),
            advantage(&find(10_000)),
            "×",
            100.0,
        ),
        at_most(
            "find-by-label at 100 000 objects ≤ 2× keyferry's own at 100",
            growth(&find(100_000), &find(100)),
            "×",
            2.0,
        ),
        at_least(
            format!("AES-GCM encrypt 64 B ≥ 3× {peer}"),
            advantage("AES-GCM encrypt 64 B"),
            "×",
            3.0,
        ),
        at_most(
            "AES-GCM 64 B reused handle at 100 000 objects ≤ 1.3× at 100",
            growth(&gcm(100_000), &gcm(100)),
            "×",
            1.3,
        ),
    ];
    for scenario in [
        "AES-256 keygen, token object (+ destroy)",
        "wrap AES-256 with AES-KW",
        "unwrap AES-256 with AES-KW (+ destroy)",
        "wrap AES-256 with RFC 5649 (0x210A)",
        "unwrap AES-256 with RFC 5649 (0x210A) (+ destroy)",
    ] {
        targets.push(at_least(
            format!("{scenario} ≥ 5× {peer}"),
            advantage(scenario),
            "×",
            5.0,
        ));
    }
    targets.push(at_least(
        format!("AES-GCM 1 MiB throughput ≥ {peer}'s"),
        advantage("AES-GCM 1 MiB throughput"),
        "×",
        1.0,
    ));
    let ceiling = tool_at("openssl speed -evp aes-256-gcm, 1 MiB blocks (ceiling)");
    targets.push(Target {
        goal: "AES-GCM 1 MiB as a fraction of openssl speed (reported, no floor)".to_owned(),
        measured: ours_at("AES-GCM 1 MiB throughput")
            .zip(ceiling)
            .map(|(ours, ceiling)| ours / ceiling),
        unit: "of the ceiling",
        met: None,
    });
    targets.push(at_most(
        "C_Initialize + C_OpenSession at 100 000 objects ≤ 20 ms",
        ours_at("new process: C_Initialize + C_OpenSession, 100000 objects").map(|us| us / 1000.0),
        "ms",
        20.0,
    ));
    for op in [
        "C_GenerateRandom 32 B",
        "SHA-256 1 KiB",
        "AES-GCM encrypt 64 B",
        "AES-256 keygen, session object",
    ] {
        targets.push(at_least(
            format!("two threads ≥ 1.7× one: {op}"),
            ours_at(&format!("2 threads over 1: {op}")),
            "×",
            1.7,
        ));
    }
    targets.push(at_most(
        "peak RSS of a process using a 100 000-object token ≤ 150 MB",
        ours_at("new process: peak RSS after login/find/encrypt, 100000 objects")
            .map(|kib| kib / 1024.0),
        "MiB",
        150.0,
    ));
    targets.push(at_most(
        "peak RSS of the process that filled 100 000 objects ≤ 150 MB",
        ours_at("this process: peak RSS after filling 100000 objects").map(|kib| kib / 1024.0),
        "MiB",
        150.0,
    ));
    let scenario_with = |prefix: &str| {
        tool.iter()
            .find(|figure| figure.scenario.starts_with(prefix))
            .map(|figure| figure.median)
    };
    targets.push(at_least(
        "migrate keyferry → keyferry ≥ 300 keys/s, verified + journal",
        scenario_with("migrate keyferry → keyferry"),
        "keys/s",
        300.0,
    ));
    targets.push(at_most(
        "migrate time over a process making the bare calls ≤ 1.25×",
        tool_at(crate::tool::MIGRATE_OVER_BARE_PROCESS),
        "×",
        1.25,
    ));
    targets.push(Target {
        goal: "migrate time over the bare calls' loop alone (reported)".to_owned(),
        measured: tool_at(crate::tool::MIGRATE_OVER_BARE_LOOP),
        unit: "×",
        met: None,
    });
    targets.push(Target {
        goal: "migrate time over the loop with the proof's calls too (reported)".to_owned(),
        measured: tool_at(crate::tool::MIGRATE_OVER_VERIFIED_LOOP),
        unit: "×",
        met: None,
    });
    let rewraps: Vec<&Figure> = tool
        .iter()
        .filter(|figure| {
            figure.scenario.starts_with("rewrap") && !figure.scenario.ends_with("peak RSS")
        })
        .collect();
    targets.push(at_least(
        "rewrap --jobs 2 ≥ 20 000 blobs/s (the larger run)",
        rewraps.last().map(|figure| figure.median),
        "blobs/s",
        20_000.0,
    ));
    let peaks: Vec<f64> = tool
        .iter()
        .filter(|figure| figure.scenario.ends_with("peak RSS"))
        .map(|figure| figure.median)
        .collect();
    targets.push(at_most(
        "rewrap memory flat: peak RSS at N within 1.2× of at N/10",
        match peaks.as_slice() {
            [small, large] if *small > 0.0 => Some(large / small),
            _ => None,
        },
        "×",
        1.2,
    ));

    let mut out = String::from("targets\n");
    for target in targets {
        let measured = target.measured.map_or_else(
            || "not measured".to_owned(),
            |value| format!("{value:.2} {}", target.unit),
        );
        let verdict = match target.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "-",
        };
        out.push_str(&format!("{:<72}{:>22}  {verdict}\n", target.goal, measured));
    }
    out
}
