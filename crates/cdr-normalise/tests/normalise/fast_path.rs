//! The CSV fast path (a part whose header is the configured columns in order) against the
//! general path: for any parts, the same output bytes and the same report, or the same halt.

use cdr_normalise::{ColumnType, Format, MergeReport, Merger, PartInput, Schema};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const COLUMNS: [&str; 4] = ["CallId", "StartTime", "Duration", "Agent"];

fn schema(critical: bool) -> Schema {
    let schema = Schema::new(COLUMNS)
        .with_type("CallId", ColumnType::Int)
        .with_type("StartTime", ColumnType::Timestamp)
        .with_type("Duration", ColumnType::Int)
        .with_type("Agent", ColumnType::String);
    if critical {
        schema.with_critical(["CallId"])
    } else {
        schema.with_critical(Vec::<String>::new())
    }
}

/// [`schema`] with only `typed` leading columns typed: the fast path counts the fields after
/// the last typed one by their commas (0: from the second field on).
fn schema_typed(critical: bool, typed: usize) -> Schema {
    let types = [
        ColumnType::Int,
        ColumnType::Timestamp,
        ColumnType::Int,
        ColumnType::String,
    ];
    let mut schema = Schema::new(COLUMNS);
    for (column, ty) in COLUMNS.iter().zip(types).take(typed) {
        schema = schema.with_type(*column, ty);
    }
    if critical {
        schema.with_critical(["CallId"])
    } else {
        schema.with_critical(Vec::<String>::new())
    }
}

/// How [`run`] hands the parts over.
#[derive(Clone, Copy, Debug, PartialEq)]
enum How {
    /// As readers, the fast path off.
    General,
    /// As readers (copied into the fast path's buffer).
    Fast,
    /// As files (mapped by the fast path, a window of `chunk` bytes at a time).
    Mapped,
}

/// Merges `parts` through a [`Merger`], handed over `how`.
fn run(
    schema: &Schema,
    parts: &[Vec<u8>],
    how: How,
    chunk: usize,
) -> Result<(MergeReport, Vec<u8>), String> {
    run_counted(schema, parts, how, chunk).0
}

/// [`run`], and how many rows took the fast path.
fn run_counted(
    schema: &Schema,
    parts: &[Vec<u8>],
    how: How,
    chunk: usize,
) -> (Result<(MergeReport, Vec<u8>), String>, u64) {
    let mut merger = Merger::new(schema, Format::Csv, Vec::new()).unwrap();
    if how == How::General {
        merger = merger.general_path_only();
    }
    merger = merger.read_chunk(chunk);
    for (i, part) in parts.iter().enumerate() {
        let name = format!("part {}", i + 1);
        let input = match how {
            How::Mapped => PartInput::file(name, part_file(part)),
            _ => PartInput::new(name, &part[..]),
        };
        if let Err(halt) = merger.push(input) {
            return (Err(halt.to_string()), merger.fast_rows());
        }
    }
    let fast_rows = merger.fast_rows();
    (merger.finish().map_err(|halt| halt.to_string()), fast_rows)
}

/// `bytes` as an open file (already unlinked: it lives as long as the handle).
fn part_file(bytes: &[u8]) -> std::fs::File {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "cdr-normalise-part-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.write_all(bytes).unwrap();
    file
}

/// The fast path, reading and mapping, gives the general path's outcome (and both fast
/// variants take the fast path for the same rows).
fn assert_same(schema: &Schema, parts: &[Vec<u8>], chunk: usize) {
    let general = run(schema, parts, How::General, chunk);
    let (fast, read_rows) = run_counted(schema, parts, How::Fast, chunk);
    let (mapped, mapped_rows) = run_counted(schema, parts, How::Mapped, chunk);
    assert_eq!(
        read_rows, mapped_rows,
        "fast rows differ when mapped, for {parts:?}"
    );
    assert_outcome(&fast, &general, parts);
    assert_outcome(&mapped, &general, parts);
}

/// The same output and report, or the same halt.
fn assert_outcome(
    fast: &Result<(MergeReport, Vec<u8>), String>,
    general: &Result<(MergeReport, Vec<u8>), String>,
    parts: &[Vec<u8>],
) {
    match (fast, general) {
        (Ok((fr, fo)), Ok((gr, go))) => {
            assert_eq!(
                String::from_utf8_lossy(fo),
                String::from_utf8_lossy(go),
                "output differs for {parts:?}"
            );
            assert_eq!(fr, gr, "report differs for {parts:?}");
        }
        _ => assert_eq!(fast, general, "outcome differs for {parts:?}"),
    }
}

/// A cell's value: valid and invalid ints and timestamps, and text dense in CSV specials.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,6}",
        "-?[0-9]{1,3}\\.[0-9]",
        "2024-05-1[0-9]T1[0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{3})?Z",
        "2024-05-15 10:00:00",
        "",
        "[,\"\r\n a\u{e9}]{0,6}",
        "(?s).{0,6}",
    ]
}

/// How a cell is written.
#[derive(Debug, Clone, Copy)]
enum Quote {
    /// Quoted only when CSV requires it.
    Necessary,
    Always,
    /// Written as is, even when that breaks the CSV.
    Never,
    /// Quoted, with text after the closing quote.
    Trailing,
}

fn quote() -> impl Strategy<Value = Quote> {
    prop_oneof![
        40 => Just(Quote::Necessary),
        20 => Just(Quote::Always),
        1 => Just(Quote::Never),
        1 => Just(Quote::Trailing),
    ]
}

fn cell(out: &mut Vec<u8>, value: &str, how: Quote) {
    let needs = value.contains([',', '"', '\r', '\n']);
    let quoted = format!("\"{}\"", value.replace('"', "\"\""));
    out.extend_from_slice(match how {
        Quote::Necessary if needs => quoted.as_bytes(),
        Quote::Necessary | Quote::Never => value.as_bytes(),
        Quote::Always => quoted.as_bytes(),
        Quote::Trailing => return out.extend_from_slice(format!("{quoted}x").as_bytes()),
    });
}

#[derive(Debug, Clone)]
struct Row {
    cells: Vec<(String, Quote)>,
    /// 0: LF, 1: CRLF, 2: CR, 3: LF then a blank line, 4: CRLF then a blank CRLF line.
    end: u8,
    /// Drop the last cell (a ragged row) or add one.
    ragged: Option<bool>,
    /// Put an invalid UTF-8 byte in the first cell.
    bad_utf8: bool,
}

fn row() -> impl Strategy<Value = Row> {
    row_with(value())
}

/// A row of cells drawn from `value`.
fn row_with(value: impl Strategy<Value = String>) -> impl Strategy<Value = Row> {
    (
        prop::collection::vec((value, quote()), 4),
        prop_oneof![40 => Just(0u8), 20 => Just(1), 1 => Just(2), 3 => Just(3), 3 => Just(4)],
        prop_oneof![100 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
        prop::bool::weighted(0.005),
    )
        .prop_map(|(cells, end, ragged, bad_utf8)| Row {
            cells,
            end,
            ragged,
            bad_utf8,
        })
}

#[derive(Debug, Clone)]
struct Part {
    /// 0..=5: the configured header (as is, quoted, CRLF); 6: reordered; 7: an extra column;
    /// 8: a renamed column.
    header: u8,
    bom: bool,
    rows: Vec<Row>,
    final_newline: bool,
}

fn part() -> impl Strategy<Value = Part> {
    part_with(row())
}

/// A part of rows drawn from `row`.
fn part_with(row: impl Strategy<Value = Row>) -> impl Strategy<Value = Part> {
    (
        0u8..9,
        prop::bool::weighted(0.2),
        prop::collection::vec(row, 0..12),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(header, bom, rows, final_newline)| Part {
            header,
            bom,
            rows,
            final_newline,
        })
}

fn render(part: &Part) -> Vec<u8> {
    let mut out = Vec::new();
    if part.bom {
        out.extend_from_slice("\u{feff}".as_bytes());
    }
    let mut names: Vec<&str> = COLUMNS.to_vec();
    let mut order: Vec<usize> = (0..4).collect();
    match part.header {
        6 => order.rotate_left(1),
        7 => names.push("Extra"),
        8 => names[3] = "AgentName",
        _ => {}
    }
    let header: Vec<String> = order
        .iter()
        .map(|&i| names[i].to_owned())
        .chain(names.get(4).map(|n| n.to_string()))
        .collect();
    let quoted = part.header == 1;
    let text: Vec<String> = header
        .iter()
        .map(|n| {
            if quoted {
                format!("\"{n}\"")
            } else {
                n.clone()
            }
        })
        .collect();
    out.extend_from_slice(text.join(",").as_bytes());
    out.extend_from_slice(if part.header == 2 { b"\r\n" } else { b"\n" });
    for (r, row) in part.rows.iter().enumerate() {
        let mut cells: Vec<(String, Quote)> = order.iter().map(|&i| row.cells[i].clone()).collect();
        if names.len() == 5 {
            cells.push(("extra".into(), Quote::Necessary));
        }
        match row.ragged {
            Some(true) => {
                cells.pop();
            }
            Some(false) => cells.push(("7".into(), Quote::Necessary)),
            None => {}
        }
        for (i, (value, how)) in cells.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if i == 0 && row.bad_utf8 {
                out.push(0xff);
            }
            cell(&mut out, value, *how);
        }
        if r + 1 == part.rows.len() && !part.final_newline {
            break;
        }
        out.extend_from_slice(match row.end {
            0 => &b"\n"[..],
            1 => b"\r\n",
            2 => b"\r",
            3 => b"\n\n",
            _ => b"\r\n\r\n",
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn fast_path_equals_general_path(
        parts in prop::collection::vec(part(), 1..4),
        critical in any::<bool>(),
        chunk in prop_oneof![Just(256 * 1024), 8usize..400],
    ) {
        let parts: Vec<Vec<u8>> = parts.iter().map(render).collect();
        assert_same(&schema(critical), &parts, chunk);
    }

    /// Untyped trailing columns: their fields are counted by commas, not walked.
    #[test]
    fn counted_fields_fast_path_equals_general_path(
        parts in prop::collection::vec(part(), 1..4),
        critical in any::<bool>(),
        typed in 0usize..4,
        chunk in prop_oneof![Just(256 * 1024), 8usize..400],
    ) {
        let parts: Vec<Vec<u8>> = parts.iter().map(render).collect();
        assert_same(&schema_typed(critical, typed), &parts, chunk);
    }

    /// The same with fields longer than a block and than the read buffer.
    #[test]
    fn counted_long_fields_fast_path_equals_general_path(
        parts in prop::collection::vec(part_with(row_with(long_value())), 1..3),
        typed in 0usize..4,
        chunk in prop_oneof![Just(256 * 1024), 8usize..200],
    ) {
        let parts: Vec<Vec<u8>> = parts.iter().map(render).collect();
        assert_same(&schema_typed(true, typed), &parts, chunk);
    }

    /// Rows and fields longer than a 64-byte block and than the read buffer.
    #[test]
    fn long_fields_fast_path_equals_general_path(
        parts in prop::collection::vec(part_with(row_with(long_value())), 1..3),
        critical in any::<bool>(),
        chunk in prop_oneof![Just(256 * 1024), 8usize..200],
    ) {
        let parts: Vec<Vec<u8>> = parts.iter().map(render).collect();
        assert_same(&schema(critical), &parts, chunk);
    }
}

/// The property above is only worth something if the fast path does take most rows.
#[test]
fn most_generated_rows_take_the_fast_path() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(part(), 1..4);
    let (mut fast, mut all) = (0, 0);
    for _ in 0..300 {
        let parts = strategy.new_tree(&mut runner).unwrap().current();
        let parts: Vec<Vec<u8>> = parts.iter().map(render).collect();
        let (result, fast_rows) = run_counted(&schema(false), &parts, How::Fast, 256 * 1024);
        if let Ok((report, _)) = result {
            fast += fast_rows;
            all += report.rows;
        }
    }
    // A third of the generated parts have a drifted header; a few rows are odd.
    assert!(
        fast * 2 > all,
        "only {fast} of {all} rows took the fast path"
    );
}

/// The cases the fast path must take itself (and the general path must agree on).
#[test]
fn quoted_separators_crlf_bom_and_no_final_newline_match_the_general_path() {
    let parts = [
        b"\xEF\xBB\xBFCallId,StartTime,Duration,Agent\r\n\
          1,2024-05-15T10:00:00Z,60,\"Smith, \"\"Jo\"\"\r\nnext\"\r\n\
          \r\n\
          2,\"2024-05-15T10:00:01Z\",61.5,\"plain\"\r\n\
          3,,,"
            .to_vec(),
        b"CallId,StartTime,Duration,Agent\n4,x,\"1\"\"\",\n".to_vec(),
    ];
    for chunk in [256 * 1024, 10, 33] {
        assert_same(&schema(true), &parts, chunk);
    }
    let (result, fast_rows) = run_counted(&schema(true), &parts, How::Fast, 256 * 1024);
    let (report, out) = result.unwrap();
    assert_eq!(fast_rows, 4, "every row takes the fast path");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "CallId,StartTime,Duration,Agent,extra_columns\n\
         1,2024-05-15T10:00:00Z,60,\"Smith, \"\"Jo\"\"\r\nnext\",\n\
         2,2024-05-15T10:00:01Z,61.5,plain,\n\
         3,,,,\n\
         4,x,\"1\"\"\",,\n"
    );
    assert_eq!(report.rows, 4);
    assert_eq!(report.type_violations["Duration"], 2);
    assert_eq!(report.type_violations["StartTime"], 1);
    assert!(
        // `csv` counts a CRLF record's line from its previous record's CR: line 3, not 5.
        report
            .warnings
            .iter()
            .any(|w| w.contains("part 1, line 3: `61.5`")),
        "{:?}",
        report.warnings
    );
}

/// Merges NDJSON `parts`; the fast path unless `general`.
fn run_json(
    schema: &Schema,
    parts: &[Vec<u8>],
    general: bool,
) -> Result<(MergeReport, Vec<u8>), String> {
    let mut merger = Merger::new(schema, Format::Json, Vec::new()).unwrap();
    if general {
        merger = merger.general_path_only();
    }
    for (i, part) in parts.iter().enumerate() {
        merger
            .push(PartInput::new(format!("part {}", i + 1), &part[..]))
            .map_err(|halt| halt.to_string())?;
    }
    merger.finish().map_err(|halt| halt.to_string())
}

fn assert_same_json(schema: &Schema, parts: &[Vec<u8>]) {
    let fast = run_json(schema, parts, false);
    let general = run_json(schema, parts, true);
    assert_outcome(&fast, &general, parts);
}

/// A JSON value as source text: numbers, strings (escaped or not), literals, nested values
/// (some pretty-printed over lines), and the odd broken one.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,6}".prop_map(|v| v),
        2 => "-?[0-9]{1,3}\\.[0-9](e[0-9])?",
        4 => "2024-05-1[0-9]T1[0-9]:[0-5][0-9]:[0-5][0-9]Z".prop_map(|v| format!("\"{v}\"")),
        4 => "(?s).{0,8}".prop_map(|v| serde_json::to_string(&v).unwrap()),
        1 => Just("\"\\u0041\\n\"".to_owned()),
        1 => Just("null".to_owned()),
        1 => Just("true".to_owned()),
        1 => Just("{\"a\": [1,\n 2]}".to_owned()),
        1 => Just("[ ]".to_owned()),
        1 => Just("\"open".to_owned()),
        1 => Just("01".to_owned()),
        1 => prop::sample::select(vec!["-", "1.", "1e+", "-0", "1.5E-3", "tru", "nul", "\"a\tb\"", "-01", "2.e1"])
            .prop_map(str::to_owned),
    ]
}

/// One NDJSON part: records of configured and unconfigured keys, dressed in various ways.
fn json_part() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop::collection::vec((0usize..7, json_value()), 0..6),
        // 0: LF, 1: CRLF, 2: blank line after, 3: pretty (one key per line), 4: no line
        // break before the next record, 5: invalid UTF-8, 6: whitespace line after, 7:
        // spaces and tabs around every token.
        prop_oneof![30 => Just(0u8), 8 => Just(1), 2 => Just(2), 1 => Just(3), 1 => Just(4), 1 => Just(5), 1 => Just(6), 2 => Just(7)],
    );
    (
        prop::bool::weighted(0.1),
        prop::collection::vec(record, 0..10),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(bom, records, final_newline)| {
            // The last is `CallId` spelt with an escape.
            const KEYS: [&str; 7] = [
                "CallId",
                "StartTime",
                "Duration",
                "Agent",
                "Extra",
                "Other",
                "Call\\u0049d",
            ];
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice("\u{feff}".as_bytes());
            }
            let n = records.len();
            for (r, (fields, dress)) in records.into_iter().enumerate() {
                let sep = match dress {
                    3 => ",\n  ",
                    7 => " ,\t",
                    _ => ",",
                };
                let colon = if dress == 7 { " :\t " } else { ":" };
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("\"{}\"{colon}{v}", KEYS[*k]))
                    .collect();
                let (open, close) = if dress == 7 {
                    ("\t{ ", " }\r ")
                } else {
                    ("{", "}")
                };
                out.extend_from_slice(format!("{open}{}{close}", body.join(sep)).as_bytes());
                if dress == 5 {
                    out.push(0xff);
                }
                if r + 1 == n && !final_newline {
                    break;
                }
                out.extend_from_slice(match dress {
                    1 => &b"\r\n"[..],
                    2 => b"\n\n",
                    4 => b" ",
                    6 => b"\n \t\n",
                    _ => b"\n",
                });
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn ndjson_fast_path_equals_general_path(
        parts in prop::collection::vec(json_part(), 1..4),
        critical in any::<bool>(),
    ) {
        assert_same_json(&schema(critical), &parts);
    }
    /// Parts whose lines mostly share one key order: the NDJSON shape check.
    #[test]
    fn ndjson_shape_check_equals_general_path(
        parts in prop::collection::vec(shaped_json_part(), 1..4),
        critical in any::<bool>(),
    ) {
        assert_same_json(&schema(critical), &parts);
    }
}

#[test]
fn ndjson_fast_path_keeps_values_and_messages() {
    let parts = [
        b"\xEF\xBB\xBF{\"CallId\":1,\"Duration\":61.5,\"Extra\":{\"a\":\n1}}\r\n\n\
          {\"Agent\":\"A\\\"b\",\"CallId\":\"2\"}\n"
            .to_vec(),
        b"{\"CallId\":3}\n{\"CallId\":4,\n\"Duration\":5}\n{\"CallId\":5}".to_vec(),
    ];
    assert_same_json(&schema(true), &parts);
    let (report, out) = run_json(&schema(true), &parts, false).unwrap();
    assert_eq!(report.rows, 5);
    assert_eq!(
        String::from_utf8(out).unwrap().lines().next().unwrap(),
        "{\"CallId\":1,\"StartTime\":null,\"Duration\":61.5,\"Agent\":null,\"extra_columns\":{\"Extra\":{\"a\": 1}}}"
    );
    // A malformed record after fast-path records: the same message, serde's line included.
    let parts = [b"{\"CallId\":1}\n\n{\"CallId\":2}\n{\"CallId\":}\n".to_vec()];
    assert_same_json(&schema(true), &parts);
    let halt = run_json(&schema(true), &parts, false).unwrap_err();
    assert!(
        halt.contains("line 3: invalid JSON record") && halt.contains("line 4 column 11"),
        "{halt}"
    );
}

// The CSV fast path finds `,` `"` LF and CR 64 bytes at a time: the edges below are the
// 64-byte blocks, the read buffer's refills, and fields longer than either.

/// A long cell: runs of plain text with the odd CSV special, so that blocks with no
/// special byte at all, and specials on every side of a block edge, both occur.
fn long_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9 ]{0,150}",
        2 => "[a-z ]{0,70}[,\"\r\n][a-z ]{0,70}",
        1 => "[a-z,\"\r\n\u{e9}\u{1F600} ]{0,130}",
        1 => value(),
    ]
}

/// Every record of this part takes the fast path whatever the buffer size, and the output
/// is exact: a quoted field across 64-byte blocks and across refills (its `""` split
/// between two reads), a CRLF whose CR ends a block or a read, a row longer than the
/// buffer, a field of only quotes, and no final newline.
#[test]
fn block_and_buffer_edges_take_the_fast_path() {
    let long = "x".repeat(150);
    let mut part = b"CallId,StartTime,Duration,Agent\r\n".to_vec();
    // Pad so that the CRLF's CR is the 64th byte of the part.
    let pad = 64 - part.len() - "1,,60,".len() - 1;
    part.extend_from_slice(format!("1,,60,{}\r\n", "p".repeat(pad)).as_bytes());
    part.extend_from_slice(
        format!("2,2024-05-15T10:00:00Z,61,\"{long}, \"\"quoted\"\"\r\n{long}\"\r\n").as_bytes(),
    );
    part.extend_from_slice(format!("3,,62,\"{long}\"\n").as_bytes());
    part.extend_from_slice(b"4,,63,\"\"\"\"\n");
    part.extend_from_slice(format!("5,,64,{long}").as_bytes());
    assert_eq!(part[63], b'\r');
    let expected = format!(
        "CallId,StartTime,Duration,Agent,extra_columns\n\
         1,,60,{},\n\
         2,2024-05-15T10:00:00Z,61,\"{long}, \"\"quoted\"\"\r\n{long}\",\n\
         3,,62,{long},\n\
         4,,63,\"\"\"\",\n\
         5,,64,{long},\n",
        "p".repeat(pad)
    );
    // From the first size whose first read holds the whole header.
    for chunk in (35..=70).chain([127, 128, 129, 255, 256 * 1024]) {
        let (result, fast_rows) =
            run_counted(&schema(true), std::slice::from_ref(&part), How::Fast, chunk);
        let (report, out) = result.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected, "chunk {chunk}");
        assert_eq!((fast_rows, report.rows), (5, 5), "chunk {chunk}");
        assert_same(&schema(true), std::slice::from_ref(&part), chunk);
    }
}

/// A lone CR at the end of a read, a quote inside an unquoted field, text after a closing
/// quote and an unterminated quote at the end of the part: the fast path hands each to the
/// general path, which decides exactly as it would alone.
#[test]
fn odd_records_at_block_and_buffer_edges_match_the_general_path() {
    let header = "CallId,StartTime,Duration,Agent\n";
    let odd = [
        "1,,2,a\rb\n3,,4,c\n",
        "1,,2,a\"b\n3,,4,c\n",
        "1,,2,\"a\"b\n3,,4,c\n",
        "1,,2,\"abc\n",
        "1,,2,abc\r",
        "1,,2,\"a\"\r3,,4,c\n",
    ];
    for odd in odd {
        for pad in [0, 30, 57, 63] {
            let part = format!("{header}0,,1,{}\n{odd}", "z".repeat(pad)).into_bytes();
            for chunk in [1, 7, 40, 63, 64, 65, 100, 256 * 1024] {
                assert_same(&schema(true), std::slice::from_ref(&part), chunk);
            }
        }
    }
}

/// [`run_json`], and how many rows took the NDJSON shape check.
fn run_json_counted(schema: &Schema, parts: &[Vec<u8>]) -> (Result<MergeReport, String>, u64) {
    let mut merger = Merger::new(schema, Format::Json, Vec::new()).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if let Err(halt) = merger.push(PartInput::new(format!("part {}", i + 1), &part[..])) {
            return (Err(halt.to_string()), merger.fast_rows());
        }
    }
    let shaped = merger.fast_rows();
    (
        merger.finish().map(|(r, _)| r).map_err(|h| h.to_string()),
        shaped,
    )
}

/// Mostly valid values (a broken one halts the whole merge), some not of their column's type.
fn shaped_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,6}",
        1 => "-?[0-9]{1,3}\\.[0-9]",
        4 => "2024-05-1[0-9]T1[0-9]:[0-5][0-9]:[0-5][0-9]Z".prop_map(|v| format!("\"{v}\"")),
        4 => "[a-z ,\u{e9}]{0,12}".prop_map(|v| format!("\"{v}\"")),
        1 => Just("null".to_owned()),
        1 => json_value(),
    ]
}

/// One NDJSON part whose records mostly share one key order (compact, some CRLF), as an
/// exporter writes them, with the odd record keyed or dressed differently.
fn shaped_json_part() -> impl Strategy<Value = Vec<u8>> {
    const KEYS: [&str; 6] = ["CallId", "StartTime", "Duration", "Agent", "Extra", "Other"];
    let record = (
        prop::collection::vec(shaped_value(), 6),
        // 0: the part's keys, compact; 1: CRLF; 2: one key fewer; 3: a space after a
        // colon; 4: the keys rotated; 5: a blank line before.
        prop_oneof![30 => Just(0u8), 5 => Just(1), 1 => Just(2), 1 => Just(3), 1 => Just(4), 1 => Just(5)],
    );
    (
        prop::sample::subsequence((0..6).collect::<Vec<usize>>(), 1..=5).prop_shuffle(),
        prop::collection::vec(record, 0..12),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(keys, records, final_newline)| {
            let mut out = Vec::new();
            let n = records.len();
            for (r, (values, dress)) in records.into_iter().enumerate() {
                let mut keys = keys.clone();
                match dress {
                    2 if keys.len() > 1 => {
                        keys.pop();
                    }
                    4 => keys.rotate_left(1),
                    5 => out.push(b'\n'),
                    _ => {}
                }
                let colon = if dress == 3 { ": " } else { ":" };
                let body: Vec<String> = keys
                    .iter()
                    .map(|&k| format!("\"{}\"{colon}{}", KEYS[k], values[k]))
                    .collect();
                out.extend_from_slice(format!("{{{}}}", body.join(",")).as_bytes());
                if r + 1 == n && !final_newline {
                    break;
                }
                out.extend_from_slice(if dress == 1 { b"\r\n" } else { b"\n" });
            }
            out
        })
}

/// The property above is only worth something if the shape check does take rows.
#[test]
fn most_shaped_json_rows_take_the_shape_check() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(shaped_json_part(), 1..4);
    let (mut shaped, mut all) = (0, 0);
    for _ in 0..300 {
        let parts = strategy.new_tree(&mut runner).unwrap().current();
        let (result, rows) = run_json_counted(&schema(false), &parts);
        if let Ok(report) = result {
            shaped += rows;
            all += report.rows;
        }
    }
    // Most generated values fail their column's type, which the shape check leaves to the
    // general line path: a fifth of the rows is still thousands of shaped rows.
    assert!(shaped * 5 > all, "only {shaped} of {all} rows were shaped");
}

/// Keys in another order than the configured one, a configured key absent (null), CRLF,
/// and type violations on shaped lines: counted (line numbers included), or halting with
/// the general path's message when the column is critical.
#[test]
fn ndjson_shape_check_keeps_values_violations_and_halts() {
    let line = |id: &str, duration: &str| {
        format!("{{\"Duration\":{duration},\"CallId\":{id},\"Agent\":\"A, b\"}}\r\n")
    };
    let part: String = [
        line("1", "60"),
        line("2", "61"),
        line("3", "6.5"),
        line("4", "62"),
    ]
    .concat();
    let parts = [part.into_bytes()];
    assert_same_json(&schema(true), &parts);
    let (result, shaped) = run_json_counted(&schema(true), &parts);
    let report = result.unwrap();
    assert_eq!(
        (report.rows, shaped),
        (4, 2),
        "rows 2 and 4 match row 1's shape"
    );
    assert_eq!(report.type_violations["Duration"], 1);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("part 1, line 3: `6.5`")),
        "{:?}",
        report.warnings
    );
    let (_, out) = run_json(&schema(true), &parts, false).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap().lines().nth(1).unwrap(),
        "{\"CallId\":2,\"StartTime\":null,\"Duration\":61,\"Agent\":\"A, b\",\"extra_columns\":{}}"
    );
    // A critical violation on a line that matches the shape.
    let part: String = [line("1", "60"), line("2", "61"), line("\"x\"", "62")].concat();
    let parts = [part.into_bytes()];
    assert_same_json(&schema(true), &parts);
    let halt = run_json(&schema(true), &parts, false).unwrap_err();
    assert!(halt.contains("CallId") && halt.contains("line 3"), "{halt}");
}

/// Untyped trailing fields counted by their commas: plain ones up to an LF, a CRLF, a CRLF
/// split by a refill and the end of the part; a quote, a lone CR or a ragged row there
/// sends the record back to the field-by-field walk (or the general path), and non-ASCII
/// text (valid or not) is still checked as UTF-8.
#[test]
fn counted_trailing_fields_at_edges_match_the_general_path() {
    let header = "CallId,StartTime,Duration,Agent\n";
    let rows = [
        "1,2024-05-15T10:00:00Z,60,a\n2,,61,b\r\n3,,,\n",
        "1,,60,\"a,b\"\n2,,61,\"plain\"\r\n",
        "1,\"x,y\",60,a\n2,\"\",\"6\"\"1\",\"b\r\nc\"\r\n3,,\"\",\n",
        "1,,6\"0,a\n2,,\"61\"x,b\n",
        "1,,60,\"a\",b\n",
        "1,\"x\"\n",
        "1,,60,a\rb\n2,,61,c\n",
        "1,,60,a,b\n2,,61,c\n",
        "1,,60\n2,,61,c\n",
        "1,,60,caf\u{e9}\n2,,61,\u{1F600}\n",
        "1,,60,a\"b\n",
        "1,,60,abc",
        "1,,60,abc\r",
    ];
    for rows in rows {
        for pad in [0, 30, 57, 62, 63] {
            let part = format!("{header}0,,1,{}\n{rows}", "z".repeat(pad)).into_bytes();
            for typed in 0..4 {
                for chunk in [1, 7, 40, 63, 64, 65, 100, 256 * 1024] {
                    assert_same(
                        &schema_typed(true, typed),
                        std::slice::from_ref(&part),
                        chunk,
                    );
                }
            }
        }
    }
    let mut bad = format!("{header}1,,60,ok\n2,,61,x").into_bytes();
    bad.push(0xff);
    bad.extend_from_slice(b"\n");
    for chunk in [7, 256 * 1024] {
        assert_same(&schema_typed(true, 1), std::slice::from_ref(&bad), chunk);
    }
    // Plain and quoted trailing fields stay on the fast path, whatever their text.
    let part = format!(
        "{header}1,2024-05-15T10:00:00Z,60,caf\u{e9}\r\n2,,61,b\n\
         4,,\"6,2\",\"a,b\"\n5,,\"63\",\"x\"\"y\"\n3,,,"
    )
    .into_bytes();
    let (result, fast_rows) = run_counted(&schema_typed(true, 2), &[part], How::Fast, 256 * 1024);
    let (report, out) = result.unwrap();
    assert_eq!((fast_rows, report.rows), (5, 5));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "CallId,StartTime,Duration,Agent,extra_columns\n\
         1,2024-05-15T10:00:00Z,60,caf\u{e9},\n\
         2,,61,b,\n\
         4,,\"6,2\",\"a,b\",\n\
         5,,63,\"x\"\"y\",\n\
         3,,,,\n"
    );
}

/// The read buffer is reused, never cleared: a short part after a long one (and a refill
/// shorter than the last) sees only its own bytes, never the earlier part's behind them.
#[test]
fn a_short_part_after_a_long_one_reads_only_its_own_bytes() {
    let header = "CallId,StartTime,Duration,Agent\n";
    let long = format!("{header}{}", "9,,9,\"z,z\"\n".repeat(200)).into_bytes();
    let short = format!("{header}1,,2,a").into_bytes();
    let quoted_end = format!("{header}3,,4,\"b").into_bytes();
    // From the first size whose first read holds the whole header.
    for chunk in [40, 64, 100, 256 * 1024] {
        for typed in [2, 4] {
            let schema = schema_typed(true, typed);
            let parts = [long.clone(), short.clone()];
            assert_same(&schema, &parts, chunk);
            let (result, fast_rows) = run_counted(&schema, &parts, How::Fast, chunk);
            let (report, out) = result.unwrap();
            assert_eq!((fast_rows, report.rows), (201, 201), "chunk {chunk}");
            assert!(
                String::from_utf8(out)
                    .unwrap()
                    .ends_with("\"z,z\",\n1,,2,a,\n"),
                "chunk {chunk}"
            );
            assert_same(&schema, &[long.clone(), quoted_end.clone()], chunk);
            assert_same(&schema, &parts, 7);
        }
    }
}

/// A mapped part is mapped a window at a time from the page holding the first unfinished
/// byte: windows that start past the first pages, at, just before and just after a page
/// edge, a record longer than a window (doubled), a quoted field and a CRLF across windows,
/// and an odd record at the end — each with the exact output, every row on the fast path.
#[test]
fn a_mapped_part_windows_across_page_edges() {
    let header = "CallId,StartTime,Duration,Agent\r\n";
    let mut part = header.as_bytes().to_vec();
    let mut expected = "CallId,StartTime,Duration,Agent,extra_columns\n".to_string();
    for i in 0..700u32 {
        // Rows of varying length (some quoted, one long), so that windows end everywhere.
        let agent = match i % 7 {
            0 => format!("\"a, {i}\""),
            3 => "q".repeat(usize::try_from(i).unwrap() % 97),
            _ => format!("agent{i}"),
        };
        let agent = if i == 350 { "L".repeat(9000) } else { agent };
        part.extend_from_slice(format!("{i},2024-05-15T10:00:00Z,{i},{agent}\r\n").as_bytes());
        let shown = if i % 7 == 0 && i != 350 {
            agent
        } else {
            agent.trim_matches('"').to_string()
        };
        expected.push_str(&format!("{i},2024-05-15T10:00:00Z,{i},{shown},\n"));
    }
    assert!(part.len() > 5 * 4096, "the part spans pages");
    for chunk in [4000, 4095, 4096, 4097, 5000, 8192, 1 << 20] {
        let (result, fast_rows) = run_counted(
            &schema(true),
            std::slice::from_ref(&part),
            How::Mapped,
            chunk,
        );
        let (report, out) = result.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected, "chunk {chunk}");
        assert_eq!((fast_rows, report.rows), (700, 700), "chunk {chunk}");
        assert_same(&schema(true), std::slice::from_ref(&part), chunk);
    }
    // The general path takes over in a later window, from the right byte.
    let mut odd = part.clone();
    odd.extend_from_slice(b"700,,1,a\"b\r\n701,,2,c\r\n");
    for chunk in [4096, 5000] {
        assert_same(&schema(true), std::slice::from_ref(&odd), chunk);
    }
}

/// An empty file, a file of only a header, and a file whose header does not match (the
/// general path reads the mapped file from its start) give what a reader of the same bytes
/// gives.
#[test]
fn mapped_empty_header_only_and_other_header_parts_match_readers() {
    let reordered = b"StartTime,CallId,Duration,Agent\n,1,2,a\n".to_vec();
    let header_only = b"CallId,StartTime,Duration,Agent\n".to_vec();
    for parts in [
        vec![Vec::new()],
        vec![header_only.clone()],
        vec![reordered.clone(), header_only],
        vec![
            b"\xEF\xBB\xBFCallId,StartTime,Duration,Agent\n1,,2,a\n".to_vec(),
            reordered,
        ],
    ] {
        for chunk in [40, 1 << 20] {
            assert_same(&schema(true), &parts, chunk);
        }
    }
}

/// A part told to stop fails at its next window with an I/O halt naming it, mapped or read.
#[test]
fn a_stopped_part_halts_at_its_next_window() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let part = format!(
        "CallId,StartTime,Duration,Agent\n{}",
        "1,,2,a\n".repeat(10_000)
    )
    .into_bytes();
    for mapped in [false, true] {
        let stop = Arc::new(AtomicBool::new(true));
        let input = if mapped {
            PartInput::file("part 1", part_file(&part))
        } else {
            PartInput::new("part 1", &part[..])
        };
        let mut merger = Merger::new(&schema(true), Format::Csv, Vec::new())
            .unwrap()
            .read_chunk(4096);
        let halt = merger.push(input.stop_when(stop)).unwrap_err().to_string();
        assert!(
            halt.contains("part 1") && halt.contains("stopped"),
            "{halt}"
        );
        // Not stopped: the same part merges whole.
        let input = PartInput::file("part 1", part_file(&part)).stop_when(Arc::default());
        let mut merger = Merger::new(&schema(true), Format::Csv, Vec::new()).unwrap();
        merger.push(input).unwrap();
        assert_eq!(merger.finish().unwrap().0.rows, 10_000);
    }
}

/// A file that is not a regular file (a pipe: `cdrsync schema check /dev/stdin`) is read,
/// not mapped: its rows are all there.
#[cfg(unix)]
#[test]
fn a_pipe_given_as_a_file_is_read_whole() {
    use std::os::fd::OwnedFd;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .args([
            "-c",
            "printf 'CallId,StartTime,Duration,Agent\\n1,,2,a\\n3,,4,b\\n'",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = std::fs::File::from(OwnedFd::from(child.stdout.take().unwrap()));
    let mut merger = Merger::new(&schema(true), Format::Csv, Vec::new()).unwrap();
    merger.push(PartInput::file("stdin", pipe)).unwrap();
    let (report, out) = merger.finish().unwrap();
    child.wait().unwrap();
    assert_eq!(report.rows, 2);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "CallId,StartTime,Duration,Agent,extra_columns\n1,,2,a,\n3,,4,b,\n"
    );
}

/// NDJSON parts longer than the fast path's 256 KiB buffer: lines across refills, a line
/// longer than the buffer (which doubles it), and a bad line past the first refill (the
/// rest streams, its messages counting lines from the part's start) — the general path's
/// outcome every time, and the shape check taking the good lines.
#[test]
fn ndjson_lines_across_refills_match_the_general_path() {
    let line = |i: usize, agent: &str| {
        format!(
            "{{\"CallId\":{i},\"StartTime\":\"2024-05-15T10:00:00Z\",\"Duration\":{},\"Agent\":\"{agent}\"}}\n",
            i % 60
        )
    };
    let mut part = String::new();
    for i in 0..4000 {
        let agent = if i == 2500 {
            "L".repeat(600_000)
        } else {
            format!("a{i}")
        };
        part.push_str(&line(i, &agent));
    }
    assert!(part.len() > 3 * 256 * 1024);
    let good = part.clone().into_bytes();
    assert_same_json(&schema(true), std::slice::from_ref(&good));
    let (report, shaped) = run_json_counted(&schema(true), &[good]);
    assert_eq!(report.unwrap().rows, 4000);
    assert!(shaped > 3900, "{shaped} lines took the shape check");
    for bad in ["{\"CallId\":\"x\"}\n", "{\"CallId\":1,\n", "not json\n"] {
        let mut odd = part.clone();
        odd.push_str(bad);
        odd.push_str(&line(4001, "after"));
        assert_same_json(&schema(true), &[odd.into_bytes()]);
    }
}
