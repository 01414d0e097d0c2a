//! How records, events and times are written out, shared by every tool that prints or serves
//! them (the CLI, the operator console): the JSON shape (snake_case fields, times in RFC 3339
//! UTC with milliseconds, the stored result inlined as JSON) and short durations for people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{Event, Record};

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T06:03:01.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
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

/// A duration in its largest sensible unit, rounded down: `850ms`, `42s`, `5m`, `3h`, `4d`.
pub fn short_duration(d: Duration) -> String {
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

/// `t` relative to `now` (the store's clock when the record was read): "3s ago", "in 5m".
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(ago) => format!("{} ago", short_duration(ago)),
        Err(e) => format!("in {}", short_duration(e.duration())),
    }
}

/// A time as a JSON string, or `null`.
pub fn time_json(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// A record as one JSON object. The result is inlined as the JSON it is (a string when the
/// stored text does not parse, which no store accepts).
pub fn record_json(r: &Record) -> Value {
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
pub fn event_json(e: &Event) -> Value {
    json!({
        "event": e.kind.as_str(),
        "fencing_token": e.fencing_token.get(),
        "owner": e.owner.as_ref().map(ToString::to_string),
        "actor": e.actor,
        "reason": e.reason,
        "at": rfc3339(e.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_shortly() {
        assert_eq!(short_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(short_duration(Duration::from_secs(119)), "119s");
        assert_eq!(short_duration(Duration::from_secs(300)), "5m");
        assert_eq!(short_duration(Duration::from_secs(3 * 86400)), "3d");
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(relative(now - Duration::from_secs(3), now), "3s ago");
        assert_eq!(relative(now + Duration::from_secs(300), now), "in 5m");
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_845_781_123);
        assert_eq!(rfc3339(t), "2026-11-28T06:03:01.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
