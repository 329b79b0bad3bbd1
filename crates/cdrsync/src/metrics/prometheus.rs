//! The Prometheus text exposition format 0.0.4: [`render`] writes a [`Registry`] (HELP and
//! TYPE lines for every family of [`FAMILIES`], label values escaped, histograms as
//! cumulative `_bucket{le}`, `_sum`, `_count`), and [`parse`] reads such text back strictly
//! — the textfile's counters are carried across runs through it, and tests check the
//! output with it (besides the reference parser of PyPI's `prometheus-client`, see
//! `tests/metrics.rs`).

use super::{FAMILIES, Histogram, Kind, Labels, Registry};
use std::collections::{BTreeMap, HashSet};

/// The media type of this format (for an HTTP `GET /metrics`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry as Prometheus text: every family of [`FAMILIES`] in order, each with its
/// HELP and TYPE lines (also when it has no series yet), series sorted by labels.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    for f in FAMILIES {
        out.push_str(&format!("# HELP {} {}\n", f.name, escape_help(f.help)));
        out.push_str(&format!("# TYPE {} {}\n", f.name, f.kind.as_str()));
        if f.kind == Kind::Histogram {
            for ((name, labels), h) in &registry.histograms {
                if name != f.name {
                    continue;
                }
                let les = super::QUEUE_WAIT_BUCKETS
                    .iter()
                    .map(|le| number(*le))
                    .chain(std::iter::once("+Inf".to_string()));
                for (le, count) in les.zip(&h.buckets) {
                    let mut with_le = labels.clone();
                    with_le.push(("le".into(), le));
                    sample(&mut out, &format!("{name}_bucket"), &with_le, *count);
                }
                sample(&mut out, &format!("{name}_sum"), labels, h.sum);
                sample(&mut out, &format!("{name}_count"), labels, h.count);
            }
        } else {
            for ((name, labels), value) in &registry.values {
                if name == f.name {
                    sample(&mut out, name, labels, *value);
                }
            }
        }
    }
    out
}

fn sample(out: &mut String, name: &str, labels: &Labels, value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{k}=\"{}\"", escape_label(v)));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
}

/// A sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A label value: `\`, `"` and line feeds escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// A HELP text: `\` and line feeds escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// Reads Prometheus text strictly: every sample's family declared by a TYPE line before
/// it, HELP and TYPE at most once per family, a family's samples together, valid names,
/// properly quoted and escaped label values, numeric values, no series twice, and each
/// histogram's buckets cumulative with `+Inf` equal to `_count`. Families of
/// [`FAMILIES`] go into the registry; others are checked and left out.
pub fn parse(text: &str) -> Result<Registry, String> {
    let mut types: BTreeMap<String, Kind> = BTreeMap::new();
    let mut helps = HashSet::new();
    let mut done_families = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen = HashSet::new();
    let mut registry = Registry::default();
    // Histogram parts per series: buckets by `le`, sum, count.
    type Parts = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut hist: BTreeMap<(String, Labels), Parts> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    check_name(name).map_err(at)?;
                    let kind = match kind.trim() {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        other => return Err(at(format!("unsupported type `{other}`"))),
                    };
                    if types.insert(name.to_string(), kind).is_some() {
                        return Err(at(format!("a second TYPE line for {name}")));
                    }
                    if done_families.contains(name) || current.as_deref() == Some(name) {
                        return Err(at(format!("TYPE of {name} after its samples")));
                    }
                }
                (Some("HELP"), Some(name), _) => {
                    check_name(name).map_err(at)?;
                    if !helps.insert(name.to_string()) {
                        return Err(at(format!("a second HELP line for {name}")));
                    }
                }
                _ => {}
            }
            continue;
        }
        let (name, labels, value) = parse_sample(line).map_err(at)?;
        let (family, kind) = family_of(&name, &types)
            .ok_or_else(|| at(format!("{name} has no TYPE line before it")))?;
        if current.as_deref() != Some(family.as_str()) {
            if done_families.contains(&family) {
                return Err(at(format!("the samples of {family} are not together")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                done_families.insert(previous);
            }
        }
        if !seen.insert((name.clone(), labels.clone())) {
            return Err(at(format!("{name} has the same labels twice")));
        }
        if kind == Kind::Histogram {
            let mut labels = labels;
            let suffix = &name[family.len()..];
            let le = labels
                .iter()
                .position(|(k, _)| k == "le")
                .map(|i| labels.remove(i).1);
            let parts = hist.entry((family.clone(), labels)).or_default();
            match (suffix, le) {
                ("_bucket", Some(le)) => {
                    let bound = parse_value(&le).map_err(at)?;
                    parts.0.push((bound, value));
                }
                ("_bucket", None) => return Err(at(format!("{name} has no `le` label"))),
                ("_sum", None) => parts.1 = Some(value),
                ("_count", None) => parts.2 = Some(value),
                _ => return Err(at(format!("{name} is not a histogram sample"))),
            }
        } else if FAMILIES.iter().any(|f| f.name == family) {
            registry.values.insert((family, labels), value);
        }
    }
    for ((family, labels), (mut buckets, sum, count)) in hist {
        let what = format!("histogram {family} {labels:?}");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{what}: buckets are not cumulative"));
        }
        let inf = buckets
            .last()
            .filter(|(le, _)| le.is_infinite())
            .ok_or_else(|| format!("{what}: no le=\"+Inf\" bucket"))?
            .1;
        let (Some(sum), Some(count)) = (sum, count) else {
            return Err(format!("{what}: _sum or _count is missing"));
        };
        if count != inf {
            return Err(format!(
                "{what}: _count {count} is not the +Inf bucket {inf}"
            ));
        }
        if FAMILIES.iter().any(|f| f.name == family) {
            let h = Histogram {
                buckets: buckets.into_iter().map(|(_, v)| v).collect(),
                sum,
                count,
            };
            registry.histograms.insert((family, labels), h);
        }
    }
    Ok(registry)
}

/// The family a sample name belongs to, and its type.
fn family_of(name: &str, types: &BTreeMap<String, Kind>) -> Option<(String, Kind)> {
    if let Some(kind) = types.get(name)
        && *kind != Kind::Histogram
    {
        return Some((name.to_string(), *kind));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base) == Some(&Kind::Histogram)
        {
            return Some((base.to_string(), Kind::Histogram));
        }
    }
    None
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if ok && !name.is_empty() {
        Ok(())
    } else {
        Err(format!("`{name}` is not a metric name"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if ok && !name.is_empty() {
        Ok(())
    } else {
        Err(format!("`{name}` is not a label name"))
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("`{v}` is not a number")),
    }
}

/// `name{k="v",…} value [timestamp]`.
fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..end];
    check_name(name)?;
    let mut rest = &line[end..];
    let mut labels = Labels::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut closed = None;
        loop {
            // A label name up to `=`, or the closing brace.
            let start = match chars.peek() {
                Some((i, '}')) => {
                    closed = Some(*i);
                    break;
                }
                Some((i, _)) => *i,
                None => break,
            };
            let eq = inner[start..].find('=').ok_or("a label without `=`")? + start;
            let key = &inner[start..eq];
            check_label_name(key)?;
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("the value of label {key} is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err(format!("a bad escape in label {key}")),
                    },
                    Some((_, '"')) => break,
                    Some((_, '\n')) | None => {
                        return Err(format!("the value of label {key} is not closed"));
                    }
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("label {key} twice"));
            }
            labels.push((key.to_string(), value));
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("labels not separated by `,`".into()),
            }
        }
        let closed = closed.ok_or("labels without a closing `}`")?;
        rest = &inner[closed + 1..];
    }
    let mut fields = rest.split_whitespace();
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    let value = parse_value(fields.next().ok_or("a sample without a value")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("`{ts}` is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok((name.to_string(), labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_read_back_the_same() {
        let awkward = "a \"quoted\" back\\slash\nnew line, {braces}=";
        let mut r = Registry::default();
        let labels = vec![
            ("job".to_string(), awkward.to_string()),
            ("dataset".to_string(), "callDetailRecords".to_string()),
            ("outcome".to_string(), "published".to_string()),
        ];
        r.values
            .insert((super::super::RUNS.to_string(), labels.clone()), 3.0);
        let text = render(&r);
        assert!(
            text.contains(r#"job="a \"quoted\" back\\slash\nnew line, {braces}=""#),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), r);
    }

    #[test]
    fn every_family_has_help_and_type_and_a_conventional_name() {
        let text = render(&Registry::default());
        for f in FAMILIES {
            assert!(text.contains(&format!("# TYPE {} {}\n", f.name, f.kind.as_str())));
            assert!(text.contains(&format!("# HELP {} ", f.name)));
            assert!(f.name.starts_with("cdrsync_"));
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
        parse(&text).unwrap();
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1_764_500_000.25), "1764500000.25");
    }

    #[test]
    fn the_parser_refuses_what_prometheus_refuses() {
        let typed = "# TYPE a_total counter\n";
        for (text, why) in [
            ("a_total 1\n", "no TYPE line"),
            (
                &format!("{typed}a_total{{x=\"1\"}} 1\na_total{{x=\"1\"}} 2\n"),
                "twice",
            ),
            (&format!("{typed}a_total{{x=1}} 1\n"), "not quoted"),
            (&format!("{typed}a_total{{x=\"1}} 1\n"), "not closed"),
            (&format!("{typed}a_total{{x=\"\\q\"}} 1\n"), "bad escape"),
            (&format!("{typed}a_total one\n"), "not a number"),
            (
                &format!("{typed}a_total{{1x=\"a\"}} 1\n"),
                "not a label name",
            ),
            (&format!("{typed}{typed}"), "second TYPE"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "not cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
                "is not the +Inf bucket",
            ),
            (
                "# TYPE a_total counter\n# TYPE b gauge\na_total 1\nb 1\na_total{x=\"2\"} 1\n",
                "not together",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
