//! The incremental [`Merger`]: parts pushed one at a time give exactly what [`merge`] gives,
//! and `finish` hands the output back.

use cdr_normalise::{merge, ColumnType, Format, Merger, PartInput, Schema};

fn schema() -> Schema {
    Schema::new(["CallId", "AgentName", "Duration"])
        .with_critical(["CallId"])
        .with_type("Duration", ColumnType::Int)
}

const CSV: [&[u8]; 3] = [
    b"CallId,AgentName,Duration\n1,Ann,10\n",
    b"",
    b"Duration,CallId,Extra\r\nx,2,\"e,1\"\r\n",
];
const JSON: [&[u8]; 3] = [
    b"{\"CallId\":1,\"AgentName\":\"Ann\",\"Duration\":10}\n",
    b"",
    b"[{\"Duration\":\"x\",\"CallId\":2,\"Extra\":1}]",
];

#[test]
fn pushing_parts_one_at_a_time_equals_merge() {
    for (format, parts) in [(Format::Csv, CSV), (Format::Json, JSON)] {
        let mut whole = Vec::new();
        let inputs = parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartInput::new(format!("part {}", i + 1), *p))
            .collect();
        let expected = merge(&schema(), format, inputs, &mut whole).unwrap();

        let mut merger = Merger::new(&schema(), format, Vec::new()).unwrap();
        for (i, p) in parts.iter().enumerate() {
            merger
                .push(PartInput::new(format!("part {}", i + 1), *p))
                .unwrap();
        }
        let (report, out) = merger.finish().unwrap();
        assert_eq!(report, expected, "{format:?}");
        assert_eq!(out, whole, "{format:?}");
        assert_eq!(report.rows, 2);
        assert_eq!(report.type_violations["Duration"], 1);
    }
}

#[test]
fn finish_without_parts_writes_only_the_csv_header() {
    let merger = Merger::new(&schema(), Format::Csv, Vec::new()).unwrap();
    let (report, out) = merger.finish().unwrap();
    assert_eq!(out, b"CallId,AgentName,Duration,extra_columns\n");
    assert_eq!(report.rows, 0);
    let merger = Merger::new(&schema(), Format::Json, Vec::new()).unwrap();
    assert_eq!(merger.finish().unwrap().1, b"");
}

#[test]
fn merger_is_send_for_a_send_output() {
    fn send<T: Send>(_: &T) {}
    let merger = Merger::new(&schema(), Format::Csv, std::io::sink()).unwrap();
    send(&merger);
    // A merger can be moved to another thread and finished there.
    let report = std::thread::spawn(move || {
        let mut merger = merger;
        merger
            .push(PartInput::new("part 1", &b"CallId\n7\n"[..]))
            .unwrap();
        merger.finish().unwrap().0
    })
    .join()
    .unwrap();
    assert_eq!(report.rows, 1);
}
