//! Schema knobs: what is emitted departs from what was asked, and `expected_rows` follows.

use std::collections::BTreeMap;

use cxone_sim::{JsonLayout, Scenario, SchemaDrift, Simulator};
use serde_json::Value;

use crate::support::{Api, csv_rows, day, fetch_day, guide_columns, json_row, quick};

fn with_schema(schema: SchemaDrift) -> Scenario {
    Scenario { schema, ..quick() }
}

fn drift() -> SchemaDrift {
    SchemaDrift {
        extra_columns: vec!["SkillName".into(), "WemScore".into()],
        drop_columns: vec!["AgentNumber".into()],
        rename_columns: BTreeMap::from([("AgentName".into(), "Agent_Name".into())]),
        shuffle_header: true,
        duration_as_decimal_ms: true,
        ..SchemaDrift::default()
    }
}

/// Downloads a CSV day, returning each part's header and all rows.
async fn csv_day(sim: &Simulator) -> (Vec<Vec<String>>, Vec<BTreeMap<String, String>>) {
    let api = Api::new(sim);
    let (_, parts) = fetch_day(&api, "csv", &guide_columns()).await;
    let mut headers = Vec::new();
    let mut rows = Vec::new();
    for bytes in parts {
        let (h, r) = csv_rows(&bytes);
        headers.push(h);
        rows.extend(r);
    }
    (headers, rows)
}

#[tokio::test]
async fn drifted_columns_are_emitted_and_published_as_truth() {
    let sim = Simulator::start(with_schema(drift())).await.unwrap();
    let (headers, rows) = csv_day(&sim).await;
    let expected_headers = sim.expected_headers(day(), &guide_columns());
    assert_eq!(headers, expected_headers);
    let h = &headers[0];
    assert!(h.contains(&"Agent_Name".to_owned()) && !h.contains(&"AgentName".to_owned()));
    assert!(!h.contains(&"AgentNumber".to_owned()));
    assert!(h.contains(&"WemScore".to_owned()) && h.contains(&"SkillName".to_owned()));
    let mut sorted = h.clone();
    sorted.sort();
    assert_ne!(h, &sorted, "shuffled");
    assert_ne!(
        h[..9],
        [
            "CallId",
            "StartTime",
            "EndTime",
            "Duration",
            "Agent_Name",
            "QueueName",
            "Disposition",
            "CallDirection",
            "CustomerNumber"
        ]
    );
    assert_eq!(rows, sim.expected_rows(day(), &guide_columns()));
    assert!(
        rows.iter().all(|r| r["Duration"].contains('.')),
        "decimal milliseconds"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn drift_can_start_mid_export() {
    let sim = Simulator::start(with_schema(SchemaDrift {
        drift_from_part: Some(2),
        ..drift()
    }))
    .await
    .unwrap();
    let (headers, rows) = csv_day(&sim).await;
    assert_eq!(headers[0], guide_columns());
    assert_ne!(headers[1], guide_columns());
    assert_eq!(headers[1], headers[2]);
    assert_eq!(headers, sim.expected_headers(day(), &guide_columns()));
    assert_eq!(rows, sim.expected_rows(day(), &guide_columns()));
    assert!(!rows[0]["Duration"].contains('.'));
    assert!(rows[100]["Duration"].contains('.'));
    sim.shutdown().await;
}

#[tokio::test]
async fn bom_and_crlf_frame_every_csv_part() {
    let sim = Simulator::start(with_schema(SchemaDrift {
        bom: true,
        crlf: true,
        ..SchemaDrift::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let (_, parts) = fetch_day(&api, "csv", &guide_columns()).await;
    let mut rows = Vec::new();
    for bytes in &parts {
        assert!(bytes.starts_with("\u{feff}CallId,".as_bytes()));
        assert!(bytes.ends_with(b"\r\n"));
        let header_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        assert!(!bytes[..header_end].contains(&b'\n'));
        rows.extend(csv_rows(bytes).1);
    }
    assert_eq!(rows, sim.expected_rows(day(), &guide_columns()));
    sim.shutdown().await;
}

#[tokio::test]
async fn json_can_be_ndjson() {
    let sim = Simulator::start(with_schema(SchemaDrift {
        json_layout: JsonLayout::Ndjson,
        ..SchemaDrift::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let (status, parts) = fetch_day(&api, "json", &guide_columns()).await;
    assert!(
        status["files"][0]["fileName"]
            .as_str()
            .unwrap()
            .ends_with(".ndjson")
    );
    let rows: Vec<_> = parts
        .iter()
        .flat_map(|p| {
            std::str::from_utf8(p)
                .unwrap()
                .lines()
                .map(|l| json_row(&serde_json::from_str::<Value>(l).unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rows, sim.expected_rows(day(), &guide_columns()));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_empty_day_is_one_header_only_part() {
    let mut scenario = quick();
    scenario.rows_per_date.insert(day(), 0);
    let sim = Simulator::start(scenario).await.unwrap();
    let api = Api::new(&sim);
    let (status, parts) = fetch_day(&api, "csv", &guide_columns()).await;
    assert_eq!(status["files"].as_array().unwrap().len(), 1);
    assert_eq!(
        parts[0],
        format!("{}\n", guide_columns().join(",")).as_bytes()
    );
    assert!(sim.expected_rows(day(), &guide_columns()).is_empty());
    assert_eq!(sim.row_count(day()), 0);

    let token = api.access().await;
    let id = api
        .create_id(
            &token,
            "json-day",
            &crate::support::body("json", &guide_columns()),
        )
        .await;
    let status = api.wait_done(&token, &id).await;
    let (_, bytes) = api
        .download(&token, status["files"][0]["downloadUrl"].as_str().unwrap())
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        serde_json::json!([])
    );
    sim.shutdown().await;
}
