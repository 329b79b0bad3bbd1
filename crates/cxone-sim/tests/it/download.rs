//! Part downloads: bytes match the manifest, rows match the ground truth, big days stream.

use base64::Engine as _;
use cxone_sim::{Scenario, Simulator};
use futures_util::StreamExt as _;
use serde_json::Value;

use crate::support::{
    Api, body, csv_rows, day, fetch_day, guide_columns, json_row, quick, sha256_hex,
};

#[tokio::test]
async fn csv_parts_match_manifest_headers_and_expected_rows() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    let status = api.wait_done(&token, &id).await;
    let files = status["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "250 rows at 100 per part");
    let mut urls = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for (n, f) in files.iter().enumerate() {
        let part = n + 1;
        assert_eq!(
            f["fileName"],
            format!("cdr_export_20240515_part{part:03}.csv")
        );
        let url = f["downloadUrl"].as_str().unwrap();
        assert!(urls.insert(url.to_owned()), "distinct URLs");
        let (headers, bytes) = api.download(&token, url).await;
        assert_eq!(bytes.len() as u64, f["fileSize"].as_u64().unwrap());
        assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
        assert_eq!(sha256_hex(&bytes), f["sha256"].as_str().unwrap());
        let digest = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(f["sha256"].as_str().unwrap()).unwrap());
        assert_eq!(
            headers["content-digest"],
            format!("sha-256=:{digest}:").as_str()
        );
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        assert_eq!(
            headers["content-disposition"],
            format!("attachment; filename=\"part{part:03}.csv\"").as_str()
        );
        let (header, part_rows) = csv_rows(&bytes);
        assert_eq!(header, guide_columns());
        rows.extend(part_rows);
    }
    let expected = sim.expected_rows(day(), &guide_columns());
    assert_eq!(rows.len(), 250);
    assert_eq!(rows, expected);
    assert_eq!(sim.row_count(day()), 250);

    // The data exercises CSV: quotes, commas, line breaks, non-ASCII, empty fields.
    let all: Vec<&String> = rows.iter().flat_map(|r| r.values()).collect();
    assert!(all.iter().any(|v| v.contains('\n')));
    assert!(all.iter().any(|v| v.contains('"')));
    assert!(all.iter().any(|v| v.contains(',')));
    assert!(all.iter().any(|v| !v.is_ascii()));
    assert!(all.iter().any(|v| v.is_empty()));
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| &r["CallId"]).collect();
    assert_eq!(ids.len(), rows.len());
    for r in &rows {
        assert!(r["StartTime"].starts_with("2024-05-15T") && r["StartTime"].ends_with('Z'));
        assert!(r["EndTime"].starts_with("2024-05-15T"));
        r["Duration"].parse::<u32>().unwrap();
        assert!(["Inbound", "Outbound"].contains(&r["CallDirection"].as_str()));
    }
    let c = sim.counters();
    assert_eq!(c.downloads_total, 3);
    assert_eq!(c.downloads_per_part.values().sum::<u64>(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn json_array_parts_match_expected_rows() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let (status, parts) = fetch_day(&api, "json", &guide_columns()).await;
    assert!(
        status["files"][0]["fileName"]
            .as_str()
            .unwrap()
            .ends_with(".json")
    );
    let mut rows = Vec::new();
    for bytes in parts {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        rows.extend(v.as_array().unwrap().iter().map(json_row));
    }
    assert_eq!(rows, sim.expected_rows(day(), &guide_columns()));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_partial_window_holds_only_its_rows() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let mut b = body("csv", &guide_columns());
    b["fromDate"] = "2024-05-15T12:00:00.000Z".into();
    let id = api.create_id(&token, "x", &b).await;
    let status = api.wait_done(&token, &id).await;
    let mut rows = Vec::new();
    for f in status["files"].as_array().unwrap() {
        let (_, bytes) = api
            .download(&token, f["downloadUrl"].as_str().unwrap())
            .await;
        rows.extend(csv_rows(&bytes).1);
    }
    let expected: Vec<_> = sim
        .expected_rows(day(), &guide_columns())
        .into_iter()
        .filter(|r| r["StartTime"].as_str() >= "2024-05-15T12:00:00Z")
        .collect();
    assert!(!expected.is_empty() && expected.len() < 250);
    assert_eq!(rows, expected);
    sim.shutdown().await;
}

#[tokio::test]
async fn downloading_before_the_manifest_lists_a_part_is_404() {
    let sim = Simulator::start(Scenario {
        processing_ms: 10_000,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    let url = format!("/api/v2/data/download/requests/{id}/files/1");
    assert_eq!(api.get_file(Some(&token), &url).await.status(), 404);
    let c = sim.counters();
    assert_eq!((c.downloads_before_manifest, c.downloads_total), (1, 0));
    sim.shutdown().await;
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_row_day_streams_without_buffering() {
    let sim = Simulator::start(Scenario {
        rows_per_day: 2_000_000,
        rows_per_part: 1_000_000,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    let status = api.wait_done(&token, &id).await;
    let files = status["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let size = files[0]["fileSize"].as_u64().unwrap();
    assert!(size > 100_000_000, "{size}");
    let before = rss_kib();
    let resp = api
        .get_file(Some(&token), files[0]["downloadUrl"].as_str().unwrap())
        .await;
    let mut stream = resp.bytes_stream();
    let (mut n, mut peak) = (0u64, before);
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len() as u64;
        peak = peak.max(rss_kib());
    }
    assert_eq!(n, size);
    if before > 0 {
        // The part is >100 MB; streaming must keep the process far below that.
        assert!(peak - before < 64 * 1024, "rss grew {} KiB", peak - before);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn parts_served_from_memory_are_the_encoded_bytes_ranges_and_damage_included() {
    let plain = Simulator::start(quick()).await.unwrap();
    let (plain_status, plain_parts) = fetch_day(&Api::new(&plain), "csv", &guide_columns()).await;
    let flip = cxone_sim::PartFault {
        part: 2,
        kind: cxone_sim::PartFaultKind::Flip,
        attempts: 1,
        at_byte: Some(10),
    };
    let mut scenario = quick();
    scenario.serve_from_memory = true;
    scenario.faults.parts.push(flip);
    let sim = Simulator::start(scenario).await.unwrap();
    let api = Api::new(&sim);
    let (status, parts) = fetch_day(&api, "csv", &guide_columns()).await;
    for (a, b) in status["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(plain_status["files"].as_array().unwrap())
    {
        assert_eq!(
            (&a["fileSize"], &a["sha256"]),
            (&b["fileSize"], &b["sha256"])
        );
    }
    assert_eq!(parts[0], plain_parts[0]);
    assert_eq!(parts[2], plain_parts[2]);
    let mut damaged = plain_parts[1].clone();
    damaged[10] ^= 1;
    assert_eq!(parts[1], damaged, "the flip applies to kept bytes too");
    // A second request for the same window shares the kept bytes; a Range is honoured.
    let token = api.access().await;
    let id = api
        .create_id(&token, "xid-second", &body("csv", &guide_columns()))
        .await;
    let second = api.wait_done(&token, &id).await;
    let url = api.url(second["files"][0]["downloadUrl"].as_str().unwrap());
    let resp = api
        .http
        .get(url)
        .bearer_auth(&token)
        .header("range", "bytes=5-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), plain_parts[0][5..]);
    plain.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_held_part_sends_nothing_until_released() {
    let sim = Simulator::start(quick()).await.unwrap();
    sim.control().hold_part(2);
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "xid-held", &body("csv", &guide_columns()))
        .await;
    let status = api.wait_done(&token, &id).await;
    let url = |n: usize| {
        status["files"][n]["downloadUrl"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let held = tokio::spawn({
        let (api, token, url) = (Api::new(&sim), token.clone(), url(1));
        async move { api.download(&token, &url).await.1 }
    });
    // Part 1 and 3 come while part 2 is held; part 2 has not answered meanwhile.
    api.download(&token, &url(0)).await;
    api.download(&token, &url(2)).await;
    assert!(!held.is_finished(), "a held part must not answer");
    sim.control().release_part(2);
    let bytes = held.await.unwrap();
    assert_eq!(
        bytes.len() as u64,
        status["files"][1]["fileSize"].as_u64().unwrap()
    );
    sim.shutdown().await;
}

/// Late data (`Control::add_late_rows`): a request created after the change exports the day
/// with the late rows; one created before still serves what it had.
#[tokio::test]
async fn late_rows_change_the_day_for_requests_created_afterwards() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let csv_of =
        |parts: Vec<Vec<u8>>| -> Vec<_> { parts.iter().flat_map(|p| csv_rows(p).1).collect() };
    let before_id = api
        .create_id(&token, "x-before", &body("csv", &guide_columns()))
        .await;
    let before = sim.expected_rows(day(), &guide_columns());
    assert_eq!(before.len(), 250);

    sim.control().add_late_rows(day(), 30);
    assert_eq!(sim.row_count(day()), 280);
    let after = sim.expected_rows(day(), &guide_columns());
    assert_eq!(after.len(), 280);
    assert_ne!(
        before[..],
        after[..250],
        "the day is regenerated, not only appended to"
    );

    let status = api.wait_done(&token, &before_id).await;
    let mut old = Vec::new();
    for f in status["files"].as_array().unwrap() {
        let (_, bytes) = api
            .download(&token, f["downloadUrl"].as_str().unwrap())
            .await;
        old.push(bytes);
    }
    assert_eq!(csv_of(old), before, "the earlier request keeps its rows");
    let (_, new) = fetch_day(&api, "csv", &guide_columns()).await;
    assert_eq!(csv_of(new), after, "a new request has the late rows");
}
