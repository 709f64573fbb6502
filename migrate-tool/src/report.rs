//! Reports: a line per object and a summary, as a table on stdout or as JSON Lines in
//! ripgrep's envelope (`{"type":"object","data":{…}}`, then `{"type":"summary","data":{…}}`).

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::inventory::Object;
use crate::names;
use crate::plan::{Entry, Matrix};
use crate::transport::Transport;

/// One object's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectReport {
    /// "secret AES \"kek\" id 01".
    pub object: String,
    /// "secret", "private", ...
    pub class: String,
    /// "AES", "RSA", ... for keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID, hex.
    pub id: String,
    /// Size in bits, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<u64>,
    /// The plan's action.
    pub action: String,
    /// The outcome: planned, moved, copied, present, done-earlier, conflict, refused, failed,
    /// not-attempted, verified, missing, mismatch.
    pub status: String,
    /// The transport used (moves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Source check value with its method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kcv: Option<String>,
    /// How equality with the destination copy was proved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// Attributes preserved, changed, dropped.
    pub attributes: Matrix,
    /// The attribute to blame (refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<String>,
    /// Why (skip, conflict, refuse, mismatch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    /// The error (failed), with the PKCS#11 function and return code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Source CKA_UNIQUE_ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_unique_id: Option<String>,
    /// Destination CKA_UNIQUE_ID (the new one, mapped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_unique_id: Option<String>,
}

impl ObjectReport {
    /// A report line for an object, before anything happened to it.
    pub fn of(object: &Object, action: &str) -> Self {
        Self {
            object: object.identity().describe(),
            class: names::class(object.class),
            key_type: object.key_type().map(names::key_type),
            label: object.label(),
            id: hex::encode(object.id()),
            bits: object.bits(),
            action: action.to_owned(),
            status: "planned".to_owned(),
            transport: None,
            kcv: None,
            proof: None,
            attributes: Matrix::default(),
            blame: None,
            reason: None,
            remedy: None,
            error: None,
            source_unique_id: object
                .bytes(cryptoki_sys::CKA_UNIQUE_ID)
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
            destination_unique_id: None,
        }
    }

    /// The plan's line for an entry.
    pub fn planned(entry: &Entry, transport: Option<&Transport>) -> Self {
        let mut report = Self::of(&entry.object, entry.action.name());
        report.kcv = entry.kcv.as_ref().map(ToString::to_string);
        report.attributes = entry.matrix.clone();
        report.blame = entry.blame.clone();
        report.reason = entry.reason.clone();
        report.remedy = entry.remedy.clone();
        report.transport = match entry.action {
            crate::plan::Action::Move => match &entry.direct {
                Some(hash) => Some(format!("rsa-oaep({hash}) direct, exact length")),
                None => transport.map(Transport::describe),
            },
            crate::plan::Action::Copy => Some("create (public attributes)".to_owned()),
            _ => None,
        };
        report
    }
}

/// Counts by status.
pub fn summary(reports: &[ObjectReport]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for report in reports {
        *counts.entry(report.status.clone()).or_insert(0) += 1;
    }
    counts
}

/// Writes the reports as JSON Lines: objects, then the summary with `extra` merged in.
pub fn write_json(
    out: &mut impl Write,
    reports: &[ObjectReport],
    extra: serde_json::Value,
) -> std::io::Result<()> {
    /// `{"type":"object","data":…}`, serialised straight from the report.
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        data: &'a ObjectReport,
    }
    let mut out = std::io::BufWriter::new(out);
    for report in reports {
        serde_json::to_writer(
            &mut out,
            &Line {
                kind: "object",
                data: report,
            },
        )?;
        out.write_all(b"\n")?;
    }
    let mut data = serde_json::json!({"total": reports.len(), "counts": summary(reports)});
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    writeln!(
        out,
        "{}",
        serde_json::json!({"type": "summary", "data": data})
    )?;
    out.flush()
}

/// Writes the reports as a table, with details under lines that need them.
pub fn write_table(
    out: &mut impl Write,
    reports: &[ObjectReport],
    verbose: bool,
) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|report| {
            [
                report.status.clone(),
                report.object.clone(),
                report
                    .bits
                    .map(|bits| bits.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                report.kcv.clone().unwrap_or_else(|| "-".to_owned()),
                report.transport.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["STATUS", "OBJECT", "BITS", "CHECK VALUE", "TRANSPORT"];
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| -> String {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        text.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&header))?;
    for (row, report) in rows.iter().zip(reports) {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
        if let Some(reason) = &report.reason {
            match &report.blame {
                Some(blame) => writeln!(out, "    {blame}: {reason}")?,
                None => writeln!(out, "    {reason}")?,
            }
        }
        if let Some(error) = &report.error {
            writeln!(out, "    error: {error}")?;
        }
        if let Some(remedy) = &report.remedy {
            writeln!(out, "    remedy: {remedy}")?;
        }
        if let Some(proof) = &report.proof
            && verbose
        {
            writeln!(out, "    proof: {proof}")?;
        }
        if verbose {
            for changed in &report.attributes.changed {
                writeln!(out, "    changed: {changed}")?;
            }
            for dropped in &report.attributes.dropped {
                writeln!(out, "    dropped: {dropped}")?;
            }
        }
        if verbose && !report.attributes.preserved.is_empty() {
            writeln!(
                out,
                "    preserved: {}",
                report.attributes.preserved.join(" ")
            )?;
        }
        if verbose && let Some(unique) = &report.destination_unique_id {
            writeln!(
                out,
                "    unique id: {} → {unique}",
                report.source_unique_id.as_deref().unwrap_or("-")
            )?;
        }
    }
    let counts = summary(reports);
    let parts: Vec<String> = counts
        .iter()
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    writeln!(out, "\n{} objects: {}", reports.len(), parts.join(", "))
}
