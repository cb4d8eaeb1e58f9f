//! Update timestamps. On the device `createdAt` is the only ordering key (docs/protocol.md §8.2), and
//! Android parses exactly `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`, so timestamps are whole milliseconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Millis((nanos / 1_000_000) as i64)
    }

    /// `2024-05-01T12:34:56.789Z`: JavaScript's `Date.prototype.toISOString()` form.
    pub fn to_iso(self) -> String {
        let t =
            OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    /// The UTC date of a day counted from 1970-01-01 (day 0): `2024-05-01`.
    pub fn date_of_day(day: i64) -> String {
        let t = OffsetDateTime::from_unix_timestamp(day.saturating_mul(86_400)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
    }

    /// Parses any RFC 3339 timestamp, truncating to milliseconds.
    pub fn parse_iso(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_form_has_exactly_three_fraction_digits() {
        assert_eq!(Millis(0).to_iso(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Millis(1_714_566_896_789).to_iso(), "2024-05-01T12:34:56.789Z");
        assert_eq!(Millis(1_714_566_896_007).to_iso(), "2024-05-01T12:34:56.007Z");
        assert_eq!(
            Millis::parse_iso("2024-05-01T12:34:56.789Z"),
            Some(Millis(1_714_566_896_789))
        );
        assert_eq!(Millis::parse_iso("2024-05-01"), None);
        assert_eq!(Millis::date_of_day(0), "1970-01-01");
        assert_eq!(Millis::date_of_day(1_714_566_896_789 / 86_400_000), "2024-05-01");
    }
}
