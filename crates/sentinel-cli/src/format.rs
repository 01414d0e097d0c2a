//! Human and JSON renderings of records and events.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sentinel::{Event, Record};
use serde_json::{Value, json};

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T06:03:01.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86400).unwrap_or(0);
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{}ms", d.as_millis())
    } else if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

/// "3s ago" or "in 5s", relative to `now` (the store's clock when the record was read).
pub(crate) fn relative(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(ago) => format!("{} ago", short(ago)),
        Err(e) => format!("in {}", short(e.duration())),
    }
}

fn time_json(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// A record as one JSON object with snake_case fields.
pub(crate) fn record_json(r: &Record) -> Value {
    let result = r.result.as_ref().map_or(Value::Null, |res| {
        serde_json::from_str(&res.json).unwrap_or_else(|_| Value::String(res.json.clone()))
    });
    json!({
        "key": r.key,
        "namespace": r.namespace,
        "state": r.state.as_str(),
        "fencing_token": r.fencing_token.get(),
        "owner": r.owner.as_ref().map(ToString::to_string),
        "owner_attempt": r.owner.as_ref().map(|o| o.attempt.clone()),
        "operator": r.operator,
        "lease_expires_at": time_json(r.lease_expires_at),
        "hard_expires_at": time_json(r.hard_expires_at),
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "completed_at": time_json(r.completed_at),
        "retain_until": time_json(r.retain_until),
        "reason": r.reason.map(|x| x.as_str()),
        "result_kind": r.result.as_ref().map(|x| x.kind.as_str()),
        "result": result,
    })
}

/// An event as one JSON object.
pub(crate) fn event_json(e: &Event) -> Value {
    json!({
        "event": e.kind.as_str(),
        "fencing_token": e.fencing_token.get(),
        "owner": e.owner.as_ref().map(ToString::to_string),
        "actor": e.actor,
        "reason": e.reason,
        "at": rfc3339(e.at),
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_845_781_123);
        assert_eq!(rfc3339(t), "2026-11-28T06:03:01.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(relative(now - Duration::from_secs(3), now), "3s ago");
        assert_eq!(relative(now + Duration::from_secs(300), now), "in 5m");
    }
}
