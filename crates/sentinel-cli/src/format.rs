//! Human renderings of records and events (the JSON shape is `sentinel::json`).

use std::time::SystemTime;

pub(crate) use sentinel::format::relative;
use sentinel::format::rfc3339;
use sentinel::{Event, Record};

/// The lines `inspect` prints.
pub(crate) fn record_text(r: &Record) -> String {
    let now = r.observed_at;
    let mut lines = vec![
        ("key", r.key.clone()),
        ("namespace", r.namespace.clone()),
        ("state", r.state.to_string()),
        ("fencing token", r.fencing_token.to_string()),
    ];
    if let Some(reason) = r.reason {
        lines.push(("reason", reason.to_string()));
    }
    if let Some(o) = &r.owner {
        lines.push(("owner", format!("{o} (attempt {})", o.attempt)));
    }
    if let Some(op) = &r.operator {
        lines.push(("operator", op.clone()));
    }
    let leased = matches!(
        r.state,
        sentinel::State::Running | sentinel::State::Uncertain
    );
    if let Some(l) = r.lease_expires_at.filter(|_| leased) {
        let verb = if l > now { "expires" } else { "expired" };
        lines.push((
            "lease",
            format!("{verb} {} ({})", relative(l, now), rfc3339(l)),
        ));
    }
    if let Some(h) = r.hard_expires_at {
        lines.push(("ceiling", format!("{} ({})", relative(h, now), rfc3339(h))));
    }
    lines.push((
        "created",
        format!(
            "{} ({})",
            relative(r.created_at, now),
            rfc3339(r.created_at)
        ),
    ));
    lines.push((
        "updated",
        format!(
            "{} ({})",
            relative(r.updated_at, now),
            rfc3339(r.updated_at)
        ),
    ));
    if let Some(c) = r.completed_at {
        lines.push((
            "completed",
            format!("{} ({})", relative(c, now), rfc3339(c)),
        ));
    }
    if let Some(t) = r.retain_until {
        lines.push(("retained until", rfc3339(t)));
    }
    if let Some(res) = &r.result {
        let mut text = res.json.clone();
        if text.len() > 200 {
            let mut cut = 200;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        lines.push(("result", format!("{} {text}", res.kind.as_str())));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// Aligned columns; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The table `history` prints.
pub(crate) fn events_table(events: &[Event]) -> String {
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                rfc3339(e.at),
                format!("({})", relative(e.at, now)),
                e.kind.to_string(),
                e.fencing_token.to_string(),
                e.owner
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                e.actor.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["AT", "", "EVENT", "TOKEN", "OWNER", "BY", "WHY"], &rows)
}

/// The table `list` prints.
pub(crate) fn records_table(records: &[Record]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.state.to_string(),
                r.fencing_token.to_string(),
                r.owner
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                format!("updated {}", relative(r.updated_at, r.observed_at)),
                r.reason.map(|x| x.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["KEY", "STATE", "TOKEN", "OWNER", "UPDATED", "REASON"],
        &rows,
    )
}
