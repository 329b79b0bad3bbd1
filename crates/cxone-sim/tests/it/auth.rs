//! Token grants, refresh rotation, and bearer checks.

use std::time::Duration;

use cxone_sim::{Scenario, Simulator};
use serde_json::Value;

use crate::support::{Api, body, guide_columns, quick};

#[tokio::test]
async fn bootstrap_grants_check_credentials() {
    let sim = Simulator::start(Scenario {
        username: Some("svc".into()),
        password: Some("pw".into()),
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let t = api.token().await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert!(t["refresh_token"].as_str().unwrap().len() > 10);
    assert!(t["scope"].as_str().unwrap().contains("offline"));

    let pw = api
        .grant(&[
            ("grant_type", "password"),
            ("username", "svc"),
            ("password", "pw"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ])
        .await;
    assert_eq!(pw.status(), 200);
    let bad_pw = api
        .grant(&[
            ("grant_type", "password"),
            ("username", "svc"),
            ("password", "nope"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ])
        .await;
    assert_eq!(bad_pw.status(), 400);
    assert_eq!(
        bad_pw.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let bad_secret = api
        .grant(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "wrong"),
        ])
        .await;
    assert_eq!(bad_secret.status(), 401);
    assert_eq!(
        bad_secret.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let c = sim.counters();
    assert_eq!(
        (
            c.token_grants,
            c.grants_client_credentials,
            c.grants_password,
            c.token_rejections
        ),
        (2, 1, 1, 2)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_counted() {
    let sim = Simulator::start(quick()).await.unwrap();
    let api = Api::new(&sim);
    let first = api.token().await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let r1 = refresh(first.clone()).await;
    assert_eq!(r1.status(), 200);
    let second = r1.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first);
    let reuse = refresh(first).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(refresh(second).await.status(), 200);
    let c = sim.counters();
    assert_eq!((c.grants_refresh, c.refresh_reuses), (2, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_missing_and_unknown_bearers_get_401() {
    let sim = Simulator::start(Scenario {
        access_ttl_secs: 1.0,
        ..quick()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let t = api.token().await;
    assert_eq!(t["expires_in"], 1);
    let token = t["access_token"].as_str().unwrap().to_owned();
    let body = body("csv", &guide_columns());
    assert_eq!(api.create(&token, "x1", &body).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = api.create(&token, "x2", &body).await;
    assert_eq!(expired.status(), 401);
    assert!(expired.headers().contains_key("www-authenticate"));
    assert_eq!(api.create("made-up", "x3", &body).await.status(), 401);
    let no_bearer = api
        .http
        .get(format!("{}/api/v2/data/download/requests/any", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_bearer.status(), 401);
    assert_eq!(sim.counters().unauthorized, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_credentials_can_be_disabled() {
    let sim = Simulator::start(Scenario {
        allow_client_credentials: false,
        ..quick()
    })
    .await
    .unwrap();
    let resp = Api::new(&sim)
        .grant(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ])
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    sim.shutdown().await;
}
