//! Every fault knob, each observed over real HTTP.

use std::time::{Duration, Instant};

use cxone_sim::{
    Endpoint, Faults, HttpFault, PartFault, PartFaultKind, Scenario, Simulator, Stage,
};
use futures_util::StreamExt as _;
use serde_json::Value;

use crate::support::{Api, body, guide_columns, quick, sha256_hex};

fn with_faults(faults: Faults) -> Scenario {
    Scenario { faults, ..quick() }
}

/// Creates a request and waits for its manifest.
async fn ready(api: &Api, token: &str) -> (String, Vec<Value>) {
    let id = api
        .create_id(token, "x", &body("csv", &guide_columns()))
        .await;
    let status = api.wait_done(token, &id).await;
    (id, status["files"].as_array().unwrap().clone())
}

/// A simulator on `scenario`, a client for it, an access token, and the files of one
/// finished request.
async fn ready_on(scenario: Scenario) -> (Simulator, Api, String, Vec<Value>) {
    let sim = Simulator::start(scenario).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let (_, files) = ready(&api, &token).await;
    (sim, api, token, files)
}

/// The quick scenario with one fault on part `part` for its first `attempts` downloads.
fn part_fault(part: u32, kind: PartFaultKind, attempts: u64, at_byte: Option<u64>) -> Scenario {
    with_faults(Faults {
        parts: vec![PartFault {
            part,
            kind,
            attempts,
            at_byte,
        }],
        ..Faults::default()
    })
}

/// Reads a body to its end; `Err` carries the bytes received before the transport failed.
async fn read_all(resp: reqwest::Response) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(_) => return Err(out),
        }
    }
    Ok(out)
}

#[tokio::test]
async fn status_429_with_and_without_retry_after() {
    let sim = Simulator::start(with_faults(Faults {
        http: vec![
            HttpFault {
                endpoint: Endpoint::Status,
                status: 429,
                first: 1,
                after: 0,
                retry_after_secs: Some(7),
            },
            HttpFault {
                endpoint: Endpoint::Status,
                status: 429,
                first: 1,
                after: 1,
                retry_after_secs: None,
            },
        ],
        ..Faults::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    let first = api.status(&token, &id).await;
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after"], "7");
    let second = api.status(&token, &id).await;
    assert_eq!(second.status(), 429);
    assert!(!second.headers().contains_key("retry-after"));
    assert_eq!(api.status(&token, &id).await.status(), 200);
    assert_eq!(sim.counters().injected_http[&429], 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn bursts_of_5xx_hit_the_first_calls_of_an_endpoint() {
    let burst = |status| HttpFault {
        endpoint: Endpoint::Create,
        status,
        first: 1,
        after: 0,
        retry_after_secs: None,
    };
    let sim = Simulator::start(with_faults(Faults {
        http: vec![
            burst(500),
            HttpFault {
                after: 1,
                ..burst(502)
            },
            HttpFault {
                after: 2,
                retry_after_secs: Some(1),
                ..burst(503)
            },
            HttpFault {
                endpoint: Endpoint::Token,
                ..burst(503)
            },
        ],
        ..Faults::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let first_token = api
        .grant(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ])
        .await;
    assert_eq!(first_token.status(), 503);
    let token = api.access().await;
    let b = body("csv", &guide_columns());
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(api.create(&token, "x", &b).await.status().as_u16());
    }
    assert_eq!(codes, [500, 502, 503, 201]);
    let c = sim.counters();
    assert_eq!(c.injected_http[&503], 2);
    assert_eq!(c.creates_new, 1);
    assert_eq!(
        sim.creates().iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 502, 503, 201]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reset_part_fails_its_first_attempt_then_downloads_whole() {
    let (sim, api, token, files) =
        ready_on(part_fault(2, PartFaultKind::Reset, 1, Some(1000))).await;
    let url = files[1]["downloadUrl"].as_str().unwrap();
    let got = read_all(api.get_file(Some(&token), url).await).await;
    let partial = got.expect_err("the connection must drop mid-body");
    assert!(partial.len() <= 1000);
    let whole = read_all(api.get_file(Some(&token), url).await)
        .await
        .unwrap();
    assert_eq!(sha256_hex(&whole), files[1]["sha256"].as_str().unwrap());
    let c = sim.counters();
    assert_eq!((c.injected_resets, c.downloads_per_part[&2]), (1, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_short_body_ends_before_content_length() {
    let (sim, api, token, files) =
        ready_on(part_fault(1, PartFaultKind::Short, 2, Some(500))).await;
    let url = files[0]["downloadUrl"].as_str().unwrap();
    for _ in 0..2 {
        let resp = api.get_file(Some(&token), url).await;
        assert_eq!(resp.content_length(), files[0]["fileSize"].as_u64());
        let partial = read_all(resp)
            .await
            .expect_err("body shorter than Content-Length");
        assert_eq!(partial.len(), 500);
    }
    let whole = read_all(api.get_file(Some(&token), url).await)
        .await
        .unwrap();
    assert_eq!(sha256_hex(&whole), files[0]["sha256"].as_str().unwrap());
    assert_eq!(sim.counters().injected_short_bodies, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_flipped_byte_breaks_the_digest_on_the_first_attempt_only() {
    let (sim, api, token, files) = ready_on(part_fault(3, PartFaultKind::Flip, 1, None)).await;
    let url = files[2]["downloadUrl"].as_str().unwrap();
    let (headers, bad) = api.download(&token, url).await;
    assert_eq!(bad.len() as u64, files[2]["fileSize"].as_u64().unwrap());
    assert_ne!(sha256_hex(&bad), files[2]["sha256"].as_str().unwrap());
    assert!(headers.contains_key("content-digest"));
    let (_, good) = api.download(&token, url).await;
    assert_eq!(sha256_hex(&good), files[2]["sha256"].as_str().unwrap());
    assert_eq!(bad.iter().zip(&good).filter(|(a, b)| a != b).count(), 1);
    assert_eq!(sim.counters().injected_flips, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn stuck_requests_stay_put_until_released() {
    for stage in [Stage::Pending, Stage::Processing] {
        let sim = Simulator::start(with_faults(Faults {
            stuck: Some(stage),
            ..Faults::default()
        }))
        .await
        .unwrap();
        let api = Api::new(&sim);
        let token = api.access().await;
        let id = api
            .create_id(&token, "x", &body("csv", &guide_columns()))
            .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let want = if stage == Stage::Pending {
            "PENDING"
        } else {
            "PROCESSING"
        };
        for _ in 0..3 {
            assert_eq!(api.status_json(&token, &id).await["status"], want);
        }
        sim.control().set_stuck(false);
        assert_eq!(api.status_json(&token, &id).await["status"], "COMPLETED");
        sim.control().set_stuck(true);
        assert_eq!(api.status_json(&token, &id).await["status"], want);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn the_first_generations_of_a_day_fail() {
    let sim = Simulator::start(with_faults(Faults {
        failed_generations: 1,
        ..Faults::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let b = body("csv", &guide_columns());
    let g1 = api.create_id(&token, "gen-1", &b).await;
    let s1 = api.wait_done(&token, &g1).await;
    assert_eq!(s1["status"], "FAILED");
    assert_eq!(s1["error"]["code"], "INTERNAL_SERVER_ERROR");
    assert!(s1["files"].as_array().unwrap().is_empty());
    let g2 = api.create_id(&token, "gen-2", &b).await;
    assert_eq!(api.wait_done(&token, &g2).await["status"], "COMPLETED");
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_expire_by_retention_and_by_control() {
    let sim = Simulator::start(Scenario {
        retention_secs: 1.0,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let (id, files) = ready(&api, &token).await;
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(api.status(&token, &id).await.status(), 404);
    let url = files[0]["downloadUrl"].as_str().unwrap();
    assert_eq!(api.get_file(Some(&token), url).await.status(), 404);
    // The same X-Request-Id after expiry makes a new request.
    let again = api
        .create(&token, "x", &body("csv", &guide_columns()))
        .await;
    assert_eq!(again.status(), 201);
    sim.shutdown().await;

    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let (id, _) = ready(&api, &token).await;
    sim.control().expire_all_requests();
    assert_eq!(api.status(&token, &id).await.status(), 404);
    assert_eq!(sim.counters().not_found, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn access_tokens_are_revoked_after_n_data_calls_and_by_control() {
    let sim = Simulator::start(with_faults(Faults {
        revoke_access_after_data_calls: Some(2),
        ..Faults::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    assert_eq!(api.status(&token, &id).await.status(), 200);
    assert_eq!(api.status(&token, &id).await.status(), 401);
    let fresh = api.access().await;
    assert_eq!(api.status(&fresh, &id).await.status(), 200);
    sim.control().revoke_access_tokens();
    assert_eq!(api.status(&fresh, &id).await.status(), 401);
    let c = sim.counters();
    assert_eq!((c.access_revocations, c.unauthorized), (2, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_are_invalidated_after_n_data_calls_and_by_control() {
    let sim = Simulator::start(with_faults(Faults {
        invalidate_refresh_after_data_calls: Some(1),
        ..Faults::default()
    }))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let t = api.token().await;
    let (access, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let refresh = |rt: String| {
        let api = &api;
        async move {
            api.grant(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
            ])
            .await
        }
    };
    api.create_id(access, "x", &body("csv", &guide_columns()))
        .await;
    api.status(access, "any").await;
    let refused = refresh(rt.to_owned()).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let rt2 = api.token().await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.control().invalidate_refresh_tokens();
    assert_eq!(refresh(rt2).await.status(), 400);
    let c = sim.counters();
    assert_eq!((c.refresh_invalidations, c.refresh_reuses), (2, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_manifest_grows_between_polls() {
    let sim = Simulator::start(Scenario {
        processing_ms: 0,
        completed_empty_polls: 1,
        faults: Faults {
            grow_manifest: true,
            ..Faults::default()
        },
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
    for _ in 0..5 {
        listed.push(
            api.status_json(&token, &id).await["files"]
                .as_array()
                .unwrap()
                .len(),
        );
    }
    assert_eq!(listed, [0, 1, 2, 3, 3]);
    sim.shutdown().await;

    // A part not listed yet is not downloadable yet.
    let sim = Simulator::start(Scenario {
        processing_ms: 0,
        faults: Faults {
            grow_manifest: true,
            ..Faults::default()
        },
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let token = api.access().await;
    let id = api
        .create_id(&token, "x", &body("csv", &guide_columns()))
        .await;
    let first = api.status_json(&token, &id).await;
    assert_eq!(first["files"].as_array().unwrap().len(), 1);
    let url2 = format!("/api/v2/data/download/requests/{id}/files/2");
    assert_eq!(api.get_file(Some(&token), &url2).await.status(), 404);
    assert_eq!(sim.counters().downloads_before_manifest, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn parts_can_live_on_another_origin_behind_presigned_urls() {
    let (sim, api, token, files) = ready_on(with_faults(Faults {
        other_origin: true,
        ..Faults::default()
    }))
    .await;
    let url = files[0]["downloadUrl"].as_str().unwrap();
    let other = sim.other_origin_url().unwrap();
    assert!(url.starts_with(&other) && url.contains("?sig="), "{url}");
    assert_ne!(other, sim.base_url());

    let plain = read_all(api.get_file(None, url).await).await.unwrap();
    assert_eq!(sha256_hex(&plain), files[0]["sha256"].as_str().unwrap());
    // A client that leaks its bearer is served too, but counted.
    assert_eq!(api.get_file(Some(&token), url).await.status(), 200);
    let forged = url.replace("?sig=", "?sig=0");
    assert_eq!(api.get_file(None, &forged).await.status(), 403);
    let c = sim.counters();
    assert_eq!(
        (
            c.other_origin_requests,
            c.other_origin_with_auth,
            c.other_origin_bad_signature
        ),
        (3, 1, 1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn file_names_can_carry_path_traversal() {
    let (sim, _, _, files) = ready_on(with_faults(Faults {
        traversal_file_names: true,
        ..Faults::default()
    }))
    .await;
    assert!(files[0]["fileName"].as_str().unwrap().starts_with("../"));
    sim.shutdown().await;
}

#[tokio::test]
async fn bandwidth_is_capped_per_response() {
    let (sim, api, token, files) = ready_on(Scenario {
        rows_per_day: 40,
        faults: Faults {
            bandwidth_bytes_per_sec: Some(20_000),
            ..Faults::default()
        },
        ..quick()
    })
    .await;
    let size = files[0]["fileSize"].as_u64().unwrap();
    assert!(size > 4000, "{size}");
    let started = Instant::now();
    let (_, bytes) = api
        .download(&token, files[0]["downloadUrl"].as_str().unwrap())
        .await;
    let floor = Duration::from_secs_f64(size as f64 / 20_000.0 * 0.9);
    assert_eq!(bytes.len() as u64, size);
    assert!(
        started.elapsed() >= floor,
        "{:?} < {floor:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ranges_resume_a_part_unless_disabled() {
    for range_support in [true, false] {
        let (sim, api, token, files) = ready_on(with_faults(Faults {
            range_support,
            ..Faults::default()
        }))
        .await;
        let url = api.url(files[0]["downloadUrl"].as_str().unwrap());
        let (_, whole) = api
            .download(&token, files[0]["downloadUrl"].as_str().unwrap())
            .await;
        let resp = api
            .http
            .get(&url)
            .bearer_auth(&token)
            .header("range", "bytes=100-")
            .send()
            .await
            .unwrap();
        if range_support {
            assert_eq!(resp.status(), 206);
            assert_eq!(
                resp.headers()["content-range"],
                format!("bytes 100-{}/{}", whole.len() - 1, whole.len()).as_str()
            );
            assert_eq!(resp.bytes().await.unwrap(), &whole[100..]);
            let beyond = api
                .http
                .get(&url)
                .bearer_auth(&token)
                .header("range", format!("bytes={}-", whole.len()))
                .send()
                .await
                .unwrap();
            assert_eq!(beyond.status(), 416);
        } else {
            assert_eq!(resp.status(), 200);
            assert!(!resp.headers().contains_key("accept-ranges"));
            assert_eq!(resp.bytes().await.unwrap(), whole);
        }
        sim.shutdown().await;
    }
}
