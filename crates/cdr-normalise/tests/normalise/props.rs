//! Property: any rows, split into any number of parts, each part with its own header order,
//! BOM, line ends, quoting and an optional unconfigured column, merge back to exactly
//! those rows (and the unconfigured values land in `extra_columns`).

use cdr_normalise::{Format, Schema};
use proptest::prelude::*;

use crate::ok;

/// A value: anything, or something dense in CSV's special characters.
fn value() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,12}", "[,\"\r\n a\u{e9}\u{1F600}]{0,8}",]
}

/// Column names, distinct, including characters that need quoting in a header.
fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[A-Za-z][A-Za-z0-9_ ,\"é]{0,6}", 1..5)
        .prop_map(|set| set.into_iter().collect())
}

#[derive(Debug, Clone)]
struct Layout {
    /// Seeds for each part's header permutation and dress.
    seeds: Vec<u64>,
    /// Where the rows are cut into parts.
    cuts: Vec<usize>,
}

fn case() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>, Layout)> {
    names().prop_flat_map(|names| {
        let width = names.len();
        let rows = prop::collection::vec(prop::collection::vec(value(), width), 0..16);
        let layout = (
            prop::collection::vec(any::<u64>(), 1..6),
            prop::collection::vec(any::<prop::sample::Index>(), 5),
        );
        (Just(names), rows, layout).prop_map(|(names, rows, (seeds, cuts))| {
            let mut cuts: Vec<usize> = cuts
                .iter()
                .take(seeds.len() - 1)
                .map(|i| i.index(rows.len() + 1))
                .collect();
            cuts.sort_unstable();
            (names, rows, Layout { seeds, cuts })
        })
    })
}

/// A small deterministic generator, so a seed fully describes a part's dress.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The row ranges of each part.
fn ranges(total: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(total);
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Writes `rows` as one CSV part with its own column order; returns the part and, per row,
/// the value of its unconfigured column `Extra!` (if the part has one).
fn csv_part(names: &[String], rows: &[Vec<String>], seed: u64) -> (Vec<u8>, Vec<Option<String>>) {
    let mut rng = Lcg(seed);
    let mut order: Vec<usize> = (0..names.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.next() as usize % (i + 1));
    }
    let with_extra = rng.next() % 2 == 0;
    let extra_at = rng.next() as usize % (names.len() + 1);
    let mut bytes = Vec::new();
    if rng.next() % 2 == 0 {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut writer = csv::WriterBuilder::new()
        .terminator(if rng.next() % 2 == 0 {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .quote_style(if rng.next() % 2 == 0 {
            csv::QuoteStyle::Always
        } else {
            csv::QuoteStyle::Necessary
        })
        .from_writer(&mut bytes);
    let line = |values: Vec<String>, extra: String| -> Vec<String> {
        let mut values = values;
        if with_extra {
            values.insert(extra_at, extra);
        }
        values
    };
    let header: Vec<String> = order.iter().map(|&i| names[i].clone()).collect();
    writer.write_record(line(header, "Extra!".into())).unwrap();
    let mut extras = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let extra = format!("x{n}\n\"{}\"", seed % 7);
        writer
            .write_record(line(
                order.iter().map(|&i| row[i].clone()).collect(),
                extra.clone(),
            ))
            .unwrap();
        extras.push(with_extra.then_some(extra));
    }
    writer.flush().unwrap();
    drop(writer);
    (bytes, extras)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csv_parts_merge_back_to_exactly_the_rows((names, rows, layout) in case()) {
        let schema = Schema::new(names.clone());
        let mut parts = Vec::new();
        let mut extras = Vec::new();
        for ((start, end), seed) in ranges(rows.len(), &layout.cuts).into_iter().zip(&layout.seeds) {
            let (part, part_extras) = csv_part(&names, &rows[start..end], *seed);
            parts.push(part);
            extras.extend(part_extras);
        }
        let part_refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let (report, out) = ok(&schema, Format::Csv, &part_refs);

        let mut reader = csv::ReaderBuilder::new().from_reader(out.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
        let mut expected_header = names.clone();
        expected_header.push("extra_columns".into());
        prop_assert_eq!(header, expected_header);
        let merged: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        prop_assert_eq!(merged.len(), rows.len());
        prop_assert_eq!(report.rows, rows.len() as u64);
        for ((record, row), extra) in merged.iter().zip(&rows).zip(&extras) {
            let values: Vec<&str> = record.iter().take(names.len()).collect();
            prop_assert_eq!(values, row.iter().map(String::as_str).collect::<Vec<_>>());
            let cell = &record[names.len()];
            match extra {
                None => prop_assert_eq!(cell, ""),
                Some(extra) => {
                    let object: serde_json::Value = serde_json::from_str(cell).unwrap();
                    prop_assert_eq!(object, serde_json::json!({ "Extra!": extra }));
                }
            }
        }
    }

    #[test]
    fn json_parts_merge_back_to_exactly_the_rows((names, rows, layout) in case()) {
        let schema = Schema::new(names.clone());
        let mut parts = Vec::new();
        for ((start, end), seed) in ranges(rows.len(), &layout.cuts).into_iter().zip(&layout.seeds) {
            let objects: Vec<serde_json::Value> = rows[start..end]
                .iter()
                .map(|row| {
                    let mut object = serde_json::Map::new();
                    // Key order varies with the seed; JSON maps keys by name anyway.
                    let shift = *seed as usize % names.len();
                    for i in 0..names.len() {
                        let i = (i + shift) % names.len();
                        object.insert(names[i].clone(), row[i].clone().into());
                    }
                    object.into()
                })
                .collect();
            let part = if seed % 2 == 0 {
                serde_json::to_vec_pretty(&objects).unwrap()
            } else {
                objects.iter().map(|o| format!("{o}\n")).collect::<String>().into_bytes()
            };
            parts.push(part);
        }
        let part_refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let (report, out) = ok(&schema, Format::Json, &part_refs);
        prop_assert_eq!(report.rows, rows.len() as u64);
        let lines: Vec<&str> = out.lines().collect();
        prop_assert_eq!(lines.len(), rows.len());
        for (line, row) in lines.iter().zip(&rows) {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            for (name, value) in names.iter().zip(row) {
                prop_assert_eq!(&object[name], &serde_json::Value::from(value.clone()));
            }
            prop_assert_eq!(&object["extra_columns"], &serde_json::json!({}));
        }
    }
}
