//! Durations on the command line: `500ms`, `3s`, `10m`, `2h`, `1d`.

use std::time::Duration;

/// Parses a positive duration with a unit.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 500ms, 3s, 10m, 2h or 1d"))?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write e.g. 500ms, 3s, 10m, 2h or 1d"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m, h or d"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}` must be positive"));
    }
    if seconds > 400.0 * 86400.0 {
        return Err(format!("`{text}` is too long"));
    }
    // Below a nanosecond it would round to nothing.
    let d = Duration::from_secs_f64(seconds);
    if d.is_zero() {
        return Err(format!("`{text}` must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "3",
            "s",
            "0s",
            "-1s",
            "3 parsecs",
            "1y",
            "1e9d",
            "abc",
            "0.0000000001s",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    use sentinel_testkit::proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any text: a duration or an error message, never a panic.
        #[test]
        fn any_text_is_a_duration_or_an_error(text in "\\PC{0,24}|[0-9.eE+-]{0,30}(ms|s|m|h|d)?|0\\.0{3,14}[1-9](ms|s)") {
            if let Ok(d) = parse(&text) {
                prop_assert!(!d.is_zero() && d <= Duration::from_secs(400 * 86400));
            }
        }

        /// Whole numbers with a unit parse to exactly that many units.
        #[test]
        fn whole_numbers_with_a_unit_parse_exactly(n in 1u64..100_000, unit in 0usize..5) {
            let (suffix, millis) = [("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)][unit];
            let expected = Duration::from_millis(n * millis);
            match parse(&format!("{n}{suffix}")) {
                Ok(d) => prop_assert_eq!(d, expected),
                Err(e) => prop_assert!(expected > Duration::from_secs(400 * 86400), "{}", e),
            }
        }
    }
}
