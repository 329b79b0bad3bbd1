//! Create idempotency and validation; status progression.

use std::time::Duration;

use cxone_sim::{Scenario, Simulator};
use serde_json::Value;

use crate::support::{Api, body, guide_columns, quick};

#[tokio::test]
async fn create_is_idempotent_per_x_request_id_and_recorded() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let b = body("csv", &guide_columns());
    let first = api.create(&token, "xid-1", &b).await;
    assert_eq!(first.status(), 201);
    let id1 = first.json::<Value>().await.unwrap()["id"].clone();
    let again = api.create(&token, "xid-1", &b).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id1);
    let other = api.create(&token, "xid-2", &b).await;
    assert_eq!(other.status(), 201);
    assert_ne!(other.json::<Value>().await.unwrap()["id"], id1);

    let c = sim.counters();
    assert_eq!((c.creates, c.creates_new), (3, 2));
    let log = sim.creates();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [201, 200, 201]
    );
    assert_eq!(log[1].x_request_id.as_deref(), Some("xid-1"));
    assert_eq!(log[0].body, b);
    assert_eq!(log[1].request_id.as_deref(), id1.as_str());
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_creates_name_the_field() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let cases: [(&str, Value, &str); 8] = [
        ("fromDate", "2024-05-15T00:00:00.000".into(), "fromDate"),
        ("fromDate", "2024-05-15".into(), "fromDate"),
        ("toDate", "2024-05-14T23:59:59.999Z".into(), "toDate"),
        ("toDate", "2024-05-16T23:59:59.999Z".into(), "toDate"),
        ("format", "xml".into(), "format"),
        ("columns", serde_json::json!([]), "columns"),
        ("reportType", "agents".into(), "reportType"),
        ("columns", serde_json::json!(["CallId", "Foo"]), "columns"),
    ];
    for (key, value, field) in cases {
        let mut b = body("csv", &guide_columns());
        b[key] = value.clone();
        let resp = api.create(&token, "xid", &b).await;
        assert_eq!(resp.status(), 400, "{key}={value}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["field"], field, "{key}={value}: {err}");
    }
    let mut b = body("csv", &guide_columns());
    b["columns"] = serde_json::json!(["CallId", "Foo"]);
    let err: Value = api.create(&token, "xid", &b).await.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("Foo"), "{err}");

    let missing_header = api
        .http
        .post(format!("{}/api/v2/data/download/requests", api.base))
        .bearer_auth(&token)
        .json(&body("csv", &guide_columns()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_header.status(), 400);
    assert_eq!(
        missing_header.json::<Value>().await.unwrap()["field"],
        "X-Request-Id"
    );
    assert_eq!(sim.counters().creates_invalid, 10);
    assert_eq!(sim.counters().creates_new, 0);
    sim.shutdown().await;
}

/// Polls every 10 ms and returns the distinct successive statuses seen.
async fn statuses(api: &Api, token: &str, id: &str, polls: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..polls {
        let s = api.status_json(token, id).await;
        let st = s["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&st) {
            seen.push(st);
        }
        if seen.last().map(String::as_str) == Some("COMPLETED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

#[tokio::test]
async fn status_goes_pending_processing_completed() {
    let sim = Simulator::start(Scenario {
        pending_ms: 150,
        processing_ms: 150,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    assert_eq!(
        statuses(&api, &token, &id, 100).await,
        ["PENDING", "PROCESSING", "COMPLETED"]
    );
    let s = api.status_json(&token, &id).await;
    assert_eq!(s["id"], id.as_str());
    assert!(s["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(s["completedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["files"].as_array().unwrap().len(), 3);
    assert!(s.get("error").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn skip_pending_never_says_pending() {
    let sim = Simulator::start(Scenario {
        pending_ms: 100,
        processing_ms: 50,
        skip_pending: true,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    assert_eq!(
        statuses(&api, &token, &id, 100).await,
        ["PROCESSING", "COMPLETED"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn completed_can_come_with_no_files_first() {
    let sim = Simulator::start(Scenario {
        processing_ms: 0,
        completed_empty_polls: 2,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    let mut listed = Vec::new();
    for _ in 0..4 {
        let s = api.status_json(&token, &id).await;
        assert_eq!(s["status"], "COMPLETED");
        listed.push(s["files"].as_array().unwrap().len());
    }
    assert_eq!(listed, [0, 0, 3, 3]);
    assert_eq!(sim.counters().status_polls, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_request_is_404() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    assert_eq!(api.status(&token, "nope").await.status(), 404);
    assert_eq!(sim.counters().not_found, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn create_can_answer_with_request_id() {
    let sim = Simulator::start(Scenario {
        faults: cxone_sim::Faults {
            create_answers_request_id: true,
            ..cxone_sim::Faults::default()
        },
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let answer: Value = api
        .create(&token, "x", &body("csv", &guide_columns()))
        .await
        .json()
        .await
        .unwrap();
    assert!(answer.get("id").is_none());
    let id = answer["requestId"].as_str().unwrap();
    assert_eq!(api.status_json(&token, id).await["id"], id);
    sim.shutdown().await;
}
