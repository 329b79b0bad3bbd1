//! Shared by the CSV and JSON paths: deciding which configured columns a part lacks (and
//! whether that halts the day), guessing the rename behind a missing critical column, and
//! writing JSON string literals for `extra_columns`.

use crate::halt::Halt;
use crate::report::Tally;
use crate::schema::Resolved;

/// Reports the configured columns for which `present(pos)` is false: a critical one halts
/// (with a rename hint taken from `unknown`, the part's unconfigured columns), a
/// non-critical one is published empty and reported.
pub(crate) fn check_missing(
    schema: &Resolved,
    present: impl Fn(usize) -> bool,
    unknown: &[&str],
    part: &str,
    tally: &mut Tally,
) -> Result<(), Halt> {
    // Critical columns first, so a halting part does not also leave warnings behind.
    for (pos, column) in schema.columns.iter().enumerate() {
        if schema.critical[pos] && !present(pos) {
            return Err(Halt::MissingCriticalColumn {
                column: column.clone(),
                part: part.to_owned(),
                closest: closest_rename(column, unknown.iter().copied()),
            });
        }
    }
    for (pos, column) in schema.columns.iter().enumerate() {
        if !present(pos) {
            tally.missing(column, part);
        }
    }
    Ok(())
}

/// The candidate that most plausibly is `column` renamed, if any is close enough.
///
/// A rename shows up as "configured column missing" plus "unknown column added", so only
/// unconfigured names are candidates. Names are compared ignoring case and every
/// non-alphanumeric character (`Agent_Name`, `agent name` and `AgentName` are equal), then by
/// edit distance, accepting at most one edit per three characters of the configured name.
/// Ties go to the first candidate in header order.
pub(crate) fn closest_rename<'a>(
    column: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let target = fold(column);
    let budget = (target.len() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = levenshtein(&target, &fold(candidate));
        if distance <= budget && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, name)| name.to_owned())
}

fn fold(name: &str) -> Vec<char> {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Edit distance between two names (insertions, deletions, substitutions of characters).
/// Also used by the config loader to suggest the key a typo meant.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    levenshtein(&a, &b)
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Appends `s` as a JSON string literal. Infallible, unlike going through `serde_json`'s
/// writer, and the hot path (no escapes needed) is a single copy.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `"name":` as JSON bytes, computed once per part for each output key.
pub(crate) fn json_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 3);
    push_json_str(&mut key, name);
    key.push(b':');
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_hint_ignores_case_and_separators() {
        let headers = ["CallId", "Agent_Name", "Queue"];
        assert_eq!(
            closest_rename("AgentName", headers.into_iter()),
            Some("Agent_Name".into())
        );
        assert_eq!(
            closest_rename("StartTime", ["start time utc", "StartTme"].into_iter()),
            Some("StartTme".into())
        );
        assert_eq!(
            closest_rename("Duration", ["DurationMs"].into_iter()),
            Some("DurationMs".into())
        );
        assert_eq!(
            closest_rename("CallId", ["ContactId", "Skill"].into_iter()),
            None
        );
        assert_eq!(closest_rename("A", std::iter::empty()), None);
    }

    #[test]
    fn json_strings_round_trip_through_serde_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\r\nbreak",
            "\u{1}\u{1f}\t",
            "é😀",
        ] {
            let mut out = Vec::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
