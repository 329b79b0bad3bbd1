//! What each [`ColumnType`] accepts, checked on raw bytes in the hot loop (no allocation,
//! no `str` conversion: every accepted form is ASCII).
//!
//! The rules are deliberately narrow: they exist to catch CXone changing a column's meaning
//! (the guide's Duration "int seconds → decimal milliseconds"), not to be generous parsers.
//! Surrounding whitespace is never accepted. Empty values are nulls and are handled by the
//! callers before these functions are reached.

use crate::schema::ColumnType;

/// Whether a non-empty CSV value (or the content of a JSON string) conforms to `ty`.
#[inline]
pub(crate) fn conforms(ty: ColumnType, value: &[u8]) -> bool {
    match ty {
        ColumnType::Int => is_int(value),
        ColumnType::Decimal => is_decimal(value),
        ColumnType::Bool => is_bool(value),
        ColumnType::Date => is_date(value),
        ColumnType::Timestamp => is_timestamp(value),
        ColumnType::String => true,
    }
}

/// [`conforms`], remembering the last valid date: the rows of a day share it, so a
/// timestamp's date is then one comparison instead of a calendar check.
#[derive(Default)]
pub(crate) struct Conformer {
    date: Option<[u8; 10]>,
    /// The `YYYY-MM-DDTHH:MM` of the last valid timestamp: a record's time mostly shares it
    /// with the record before (a day's exports run in time order), so only `:SS…` is checked.
    minute: Option<[u8; 16]>,
}

impl Conformer {
    /// Exactly [`conforms`].
    #[inline]
    pub fn conforms(&mut self, ty: ColumnType, value: &[u8]) -> bool {
        match ty {
            ColumnType::Timestamp => {
                if value.len() < 20 {
                    return false;
                }
                if self
                    .minute
                    .as_ref()
                    .is_some_and(|known| known[..] == value[..16])
                {
                    return timestamp_seconds(&value[16..]);
                }
                let valid = self.full_date(&value[..10]) && timestamp_time(value);
                if valid {
                    self.minute = value[..16].try_into().ok();
                }
                valid
            }
            ColumnType::Date => value.len() == 10 && self.full_date(value),
            _ => conforms(ty, value),
        }
    }

    /// Exactly [`json_conforms`].
    pub fn json_conforms(&mut self, ty: ColumnType, raw: &str) -> bool {
        json_conforms_with(ty, raw, |ty, content| self.conforms(ty, content))
    }

    fn full_date(&mut self, date: &[u8]) -> bool {
        if self.date.as_ref().is_some_and(|known| known[..] == *date) {
            return true;
        }
        let valid = full_date(date);
        if valid {
            self.date = date.try_into().ok();
        }
        valid
    }
}

/// Whether a JSON value, given as its exact source text, conforms to `ty`.
///
/// `null` and `""` are nulls. A string is checked by its content with the CSV rules, so
/// `"42"` is an int. A bare number is checked by its literal: `42` is an int, `42.0` and
/// `4e1` are not (they are decimals). `true`/`false` are bools, and so are the numbers
/// `1`/`0`. Objects and arrays are only strings (a string column accepts anything).
#[cfg(test)]
pub(crate) fn json_conforms(ty: ColumnType, raw: &str) -> bool {
    json_conforms_with(ty, raw, conforms)
}

/// [`json_conforms`], checking string contents with `conforms`.
fn json_conforms_with(
    ty: ColumnType,
    raw: &str,
    mut conforms: impl FnMut(ColumnType, &[u8]) -> bool,
) -> bool {
    if ty == ColumnType::String {
        return true;
    }
    match raw.as_bytes().first() {
        Some(b'n') => true,
        Some(b'"') => match json_string_content(raw) {
            Some(content) => content.is_empty() || conforms(ty, content.as_bytes()),
            None => false,
        },
        Some(b't' | b'f') => ty == ColumnType::Bool,
        Some(b'-' | b'0'..=b'9') => match ty {
            ColumnType::Int | ColumnType::Bool => conforms(ty, raw.as_bytes()),
            // Every JSON number literal matches the decimal grammar.
            ColumnType::Decimal => true,
            _ => false,
        },
        _ => false,
    }
}

/// The decoded content of a JSON string literal (borrowed when it has no escapes).
fn json_string_content(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    // Without a backslash, the content is exactly what is between the quotes (`raw` is a
    // string literal `serde_json` has already parsed).
    if raw.len() >= 2 && raw.ends_with('"') && !raw.contains('\\') {
        return Some(raw[1..raw.len() - 1].into());
    }
    if let Ok(s) = serde_json::from_str::<&str>(raw) {
        return Some(s.into());
    }
    serde_json::from_str::<String>(raw).ok().map(Into::into)
}

/// Optional sign and digits, within `i64`.
fn is_int(v: &[u8]) -> bool {
    let (negative, digits) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, v),
    };
    if digits.is_empty() {
        return false;
    }
    // Up to 18 digits cannot leave i64 (either sign): digits are all there is to check.
    if digits.len() <= 18 {
        return digits.iter().all(u8::is_ascii_digit);
    }
    let mut magnitude: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return false;
        }
        magnitude = match magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
        {
            Some(m) => m,
            None => return false,
        };
    }
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    magnitude <= limit
}

/// `[+-]? digits ( . digits )? ( [eE] [+-]? digits )?`
fn is_decimal(v: &[u8]) -> bool {
    let mut rest = match v.first() {
        Some(b'-' | b'+') => &v[1..],
        _ => v,
    };
    let int_len = leading_digits(rest);
    if int_len == 0 {
        return false;
    }
    rest = &rest[int_len..];
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = leading_digits(fraction);
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    if let Some((b'e' | b'E', exponent)) = rest.split_first() {
        let exponent = match exponent.first() {
            Some(b'-' | b'+') => &exponent[1..],
            _ => exponent,
        };
        let n = leading_digits(exponent);
        if n == 0 {
            return false;
        }
        rest = &exponent[n..];
    }
    rest.is_empty()
}

fn leading_digits(v: &[u8]) -> usize {
    v.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `true`/`false` in any case, `1`/`0`.
fn is_bool(v: &[u8]) -> bool {
    v == b"1" || v == b"0" || v.eq_ignore_ascii_case(b"true") || v.eq_ignore_ascii_case(b"false")
}

/// `YYYY-MM-DD`, a real calendar date.
fn is_date(v: &[u8]) -> bool {
    v.len() == 10 && full_date(v)
}

/// RFC 3339 `date-time`: `YYYY-MM-DD[Tt ]HH:MM:SS[.frac](Z|z|±HH:MM)`.
///
/// The space separator is allowed by RFC 3339 §5.6's note. The offset is mandatory: a
/// time without one is not an instant, and loading it as local time is exactly the
/// guide's time-zone trap (Edge Case 2).
fn is_timestamp(v: &[u8]) -> bool {
    v.len() >= 20 && full_date(&v[..10]) && timestamp_time(v)
}

/// [`is_timestamp`] past its date (`v` is at least 20 bytes long).
#[inline]
fn timestamp_time(v: &[u8]) -> bool {
    if !matches!(v[10], b'T' | b't' | b' ') {
        return false;
    }
    let time = &v[11..];
    if !(two_digits(&time[0..2]).is_some_and(|h| h <= 23)
        && time[2] == b':'
        && two_digits(&time[3..5]).is_some_and(|m| m <= 59)
        && time[5] == b':'
        // 60 allows a leap second, as RFC 3339 does.
        && two_digits(&time[6..8]).is_some_and(|s| s <= 60))
    {
        return false;
    }
    timestamp_zone(&time[8..])
}

/// `:SS`, an optional fraction and the zone: a timestamp's end after `YYYY-MM-DDTHH:MM`
/// (known valid).
fn timestamp_seconds(v: &[u8]) -> bool {
    v.len() >= 3
        && v[0] == b':'
        && two_digits(&v[1..3]).is_some_and(|s| s <= 60)
        && timestamp_zone(&v[3..])
}

/// An optional `.fraction`, then `Z` or `±HH:MM`.
fn timestamp_zone(v: &[u8]) -> bool {
    let mut rest = v;
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = leading_digits(fraction);
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            two_digits(&[*h1, *h2]).is_some_and(|h| h <= 23)
                && two_digits(&[*m1, *m2]).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// `YYYY-MM-DD` at the start of a slice of at least 10 bytes.
fn full_date(v: &[u8]) -> bool {
    if v[4] != b'-' || v[7] != b'-' {
        return false;
    }
    let (Some(century), Some(yy), Some(month), Some(day)) = (
        two_digits(&v[0..2]),
        two_digits(&v[2..4]),
        two_digits(&v[5..7]),
        two_digits(&v[8..10]),
    ) else {
        return false;
    };
    let year = u32::from(century) * 100 + u32::from(yy);
    (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

fn days_in_month(year: u32, month: u8) -> u8 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn two_digits(v: &[u8]) -> Option<u8> {
    match v {
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some((a - b'0') * 10 + (b - b'0')),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    /// The remembered date and minute never change a verdict: every value, checked in a
    /// sequence where it shares the previous (valid) value's date or minute, gets exactly
    /// `conforms`'s answer.
    #[test]
    fn the_conformer_remembers_nothing_that_changes_a_verdict() {
        let mut conformer = Conformer::default();
        let ends = [
            ":00Z",
            ":59.5Z",
            ":60Z",
            ":61Z",
            ":5Z",
            ":aaZ",
            "",
            ":00",
            ":00+01:00",
            ":00+24:00",
            ":00.Z",
            ":00.123456789z",
            "-00Z",
            ":00 Z",
        ];
        for minute in [
            "2024-05-15T10:00",
            "2024-02-29T23:59",
            "2023-02-29T00:00",
            "2024-05-15 10:00",
        ] {
            for (ty, cut) in [(Timestamp, 0), (Date, 6)] {
                for end in ends {
                    let v = format!("{minute}{end}");
                    let v = &v[..v.len() - cut.min(v.len())];
                    for value in [v, &minute[..10], minute] {
                        assert_eq!(
                            conformer.conforms(ty, value.as_bytes()),
                            conforms(ty, value.as_bytes()),
                            "{ty:?} {value:?}"
                        );
                    }
                }
            }
        }
    }

    fn ok(ty: ColumnType, v: &str) -> bool {
        conforms(ty, v.as_bytes())
    }

    #[test]
    fn int_is_sign_and_digits_within_i64() {
        for v in [
            "0",
            "42",
            "-7",
            "+7",
            "007",
            "9223372036854775807",
            "-9223372036854775808",
            "999999999999999999",
            "-999999999999999999",
            "000000000000000000009223372036854775807",
        ] {
            assert!(ok(Int, v), "{v}");
        }
        for v in [
            "61234.5",
            "1e3",
            "",
            "-",
            "+",
            " 1",
            "1 ",
            "1_000",
            "9223372036854775808",
            "99999999999999999a",
            "+99999999999999999-",
            "99999999999999999999",
            "0x10",
            "١",
        ] {
            assert!(!ok(Int, v), "{v}");
        }
    }

    #[test]
    fn decimal_allows_fraction_and_exponent() {
        for v in ["0", "61234.5", "-0.25", "+1.0", "1e3", "1.5E-7", "2e+10"] {
            assert!(ok(Decimal, v), "{v}");
        }
        for v in [
            ".5", "5.", "1e", "1.2.3", "NaN", "inf", "1,5", " 1", "--1", "1e3.5",
        ] {
            assert!(!ok(Decimal, v), "{v}");
        }
    }

    #[test]
    fn bool_is_true_false_any_case_or_one_zero() {
        for v in ["true", "FALSE", "True", "1", "0"] {
            assert!(ok(Bool, v), "{v}");
        }
        for v in ["yes", "t", "2", "truee", " true"] {
            assert!(!ok(Bool, v), "{v}");
        }
    }

    #[test]
    fn date_is_a_real_calendar_day() {
        for v in ["2024-05-15", "2024-02-29", "2000-02-29", "1999-12-31"] {
            assert!(ok(Date, v), "{v}");
        }
        for v in [
            "2023-02-29",
            "1900-02-29",
            "2024-13-01",
            "2024-04-31",
            "2024-00-10",
            "2024-5-15",
            "2024/05/15",
            "2024-05-15T00:00:00Z",
        ] {
            assert!(!ok(Date, v), "{v}");
        }
    }

    #[test]
    fn timestamp_is_rfc3339_with_mandatory_offset() {
        for v in [
            "2024-05-15T13:45:00Z",
            "2024-05-15T13:45:00.123Z",
            "2024-05-15t13:45:00z",
            "2024-05-15 13:45:00Z",
            "2024-05-15T13:45:00+02:00",
            "2024-05-15T13:45:00.5-05:30",
            "2016-12-31T23:59:60Z",
        ] {
            assert!(ok(Timestamp, v), "{v}");
        }
        for v in [
            "2024-05-15 13:45:00",
            "2024-05-15T13:45Z",
            "2024-05-15T24:00:00Z",
            "2024-05-15T13:45:00.Z",
            "2024-05-15T13:45:00+0200",
            "2024-02-30T00:00:00Z",
            "5/15/2024 1:45:00 PM",
            "2024-05-15",
        ] {
            assert!(!ok(Timestamp, v), "{v}");
        }
    }

    #[test]
    fn json_values_are_checked_by_their_literal() {
        assert!(json_conforms(Int, "42"));
        assert!(json_conforms(Int, "\"42\""));
        assert!(json_conforms(Int, "null"));
        assert!(json_conforms(Int, "\"\""));
        assert!(!json_conforms(Int, "61234.5"));
        assert!(!json_conforms(Int, "4e1"));
        assert!(!json_conforms(Int, "true"));
        assert!(!json_conforms(Int, "[1]"));
        assert!(json_conforms(Decimal, "1.5e3"));
        assert!(json_conforms(Bool, "false"));
        assert!(json_conforms(Bool, "1"));
        assert!(!json_conforms(Bool, "2"));
        assert!(json_conforms(Date, "\"2024-05-15\""));
        assert!(!json_conforms(Date, "20240515"));
        assert!(json_conforms(Timestamp, "\"2024-05-15T13:45:00\\u005a\""));
        assert!(json_conforms(String, "{\"a\":1}"));
    }
}
