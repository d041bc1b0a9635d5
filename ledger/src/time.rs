//! Calendar times without a clock: unix milliseconds as RFC 3339 UTC date-times and
//! `YYYY-MM-DD` dates, and back (proleptic Gregorian, H. Hinnant's civil-date algorithms).
//! One implementation for everything that writes or reads times for people or for other
//! systems: EPCIS documents, the CLI, the consumer page, the devnet demo.

/// The last millisecond an RFC 3339 date-time can name: 9999-12-31T23:59:59.999Z.
pub const TIME_MS_MAX: u64 = 253_402_300_799_999;
/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (`civil_from_days`), for `days >= 0`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// `time_ms` (unix ms) as an RFC 3339 UTC date-time with milliseconds,
/// `2026-01-10T08:00:00.000Z`. Times after the year 9999, which RFC 3339 cannot write, are
/// written as its last millisecond.
pub fn format_time(time_ms: u64) -> String {
    let ms = time_ms.min(TIME_MS_MAX);
    let (y, m, d) = civil_from_days((ms / DAY_MS) as i64);
    let t = ms % DAY_MS;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", t / 3_600_000, t / 60_000 % 60, t / 1000 % 60, t % 1000)
}

/// An RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`) as unix ms; digits
/// of the fraction past milliseconds are dropped. Times before 1970 are refused.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.sss](Z|+HH:MM|-HH:MM))");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = s.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit())).ok_or_else(bad)?;
        part.parse().map_err(|_| bad())
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac: String = s[start..i].chars().chain("00".chars()).take(3).collect();
        ms = frac.parse::<i64>().map_err(|_| bad())?;
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(b[i], b'+' | b'-') && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            (oh * 60 + om) * if b[i] == b'-' { -1 } else { 1 }
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59 {
        return Err(bad());
    }
    let total = (((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms - offset_min * 60_000;
    u64::try_from(total).map_err(|_| format!("{s:?} is before 1970"))
}

/// `time_ms` (unix ms) as its UTC date, `YYYY-MM-DD`.
pub fn format_date(time_ms: u64) -> String {
    format_time(time_ms)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::T0_MS;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_time(T0_MS), "2026-01-01T00:00:00.000Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_time(TIME_MS_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_time(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_time("9999-12-31T23:59:59.999Z").unwrap(), TIME_MS_MAX);
        assert_eq!(parse_time("2013-06-08T14:58:56.591Z").unwrap(), 1_370_703_536_591);
        // The offset counts; digits past milliseconds are dropped.
        assert_eq!(parse_time("2005-04-04T20:33:31.116-06:00").unwrap(), 1_112_668_411_116);
        assert_eq!(parse_time("2005-04-03T20:33:31.116000-06:00").unwrap(), 1_112_668_411_116 - 86_400_000);
        assert_eq!(parse_time("2026-01-01t08:00:00+08:00").unwrap(), T0_MS);
        assert_eq!(parse_time("2005-07-11T11:30:47.0Z").unwrap() % 1000, 0);
        for ms in [0, 1, T0_MS, 1_709_251_199_999, 951_782_400_000, TIME_MS_MAX] {
            assert_eq!(parse_time(&format_time(ms)).unwrap(), ms, "{ms}");
        }
        for bad in [
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0800",
            "2026-01-01 00:00:00Z",
            "２026-01-01T00:00:00Z",
        ] {
            assert!(parse_time(bad).unwrap_err().contains("RFC 3339"), "{bad}");
        }
        assert!(parse_time("1969-12-31T23:59:59Z").unwrap_err().contains("before 1970"));
    }

    #[test]
    fn dates_are_the_utc_day() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(1_709_251_199_999), "2024-02-29");
        assert_eq!(format_date(1_709_251_200_000), "2024-03-01");
        assert_eq!(format_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_time(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
