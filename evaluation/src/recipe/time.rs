//! Interaction times as an app stores them: integer or real seconds, or ISO-8601 text
//! (`2024-03-01`, `2024-03-01 14:05:09`, `2024-03-01T14:05:09.250Z`), all turned into seconds
//! since 1970 in UTC. Only their order matters to the protocol.

/// Seconds since 1970-01-01 of an ISO-8601 date or date-time in UTC; `None` if `text` is not
/// one (time-zone offsets other than `Z` are refused rather than guessed).
pub fn parse_iso(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.find(['T', ' ']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = number(parts.next()?, 4)?;
    let month: i64 = number(parts.next()?, 2)?;
    let day: i64 = number(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    if let Some(time) = time {
        let time = time.split('.').next()?;
        let mut fields = time.split(':');
        let hour: i64 = number(fields.next()?, 2)?;
        let minute: i64 = number(fields.next()?, 2)?;
        let second: i64 = match fields.next() {
            Some(s) => number(s, 2)?,
            None => 0,
        };
        if fields.next().is_some() || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        seconds += hour * 3600 + minute * 60 + second;
    }
    Some(seconds)
}

fn number(text: &str, digits: usize) -> Option<i64> {
    if text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_and_times_become_unix_seconds() {
        assert_eq!(parse_iso("1970-01-01"), Some(0));
        assert_eq!(parse_iso("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_iso("2024-02-29 23:59:59"), Some(1_709_251_199));
        assert_eq!(parse_iso("2024-02-29T23:59:59.750"), Some(1_709_251_199));
        assert_eq!(parse_iso("2024-02-29 23:59"), Some(1_709_251_140));
        assert_eq!(parse_iso("1969-12-31 23:59:59"), Some(-1));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-1-1",
            "2024-01-01 25:00:00",
            "2024-01-01T10:00:00+02:00",
            "1710000000",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
