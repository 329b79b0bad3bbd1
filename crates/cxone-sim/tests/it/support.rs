//! Shared helpers: a thin HTTP client for the simulator, and an RFC 4180 part reader.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;
use cxone_sim::{Scenario, Simulator};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const DAY: &str = "2024-05-15";

pub fn day() -> NaiveDate {
    NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap()
}

pub fn guide_columns() -> Vec<String> {
    [
        "CallId",
        "StartTime",
        "EndTime",
        "Duration",
        "AgentName",
        "QueueName",
        "Disposition",
        "CallDirection",
        "CustomerNumber",
        "AgentNumber",
    ]
    .map(String::from)
    .to_vec()
}

/// A fast scenario: tiny timings, a small day.
pub fn quick() -> Scenario {
    Scenario {
        pending_ms: 0,
        processing_ms: 30,
        rows_per_day: 250,
        rows_per_part: 100,
        ..Scenario::default()
    }
}

pub fn body(format: &str, columns: &[String]) -> Value {
    json!({
        "reportType": "callDetailRecords",
        "reportId": "default",
        "fromDate": format!("{DAY}T00:00:00.000Z"),
        "toDate": format!("{DAY}T23:59:59.999Z"),
        "format": format,
        "columns": columns,
    })
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token_url: String,
}

impl Api {
    pub fn new(sim: &Simulator) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            token_url: sim.token_url(),
        }
    }

    pub async fn grant(&self, form: &[(&str, &str)]) -> reqwest::Response {
        let encoded = form
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&");
        self.http
            .post(&self.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded)
            .send()
            .await
            .unwrap()
    }

    /// A bootstrap token answer (access + refresh).
    pub async fn token(&self) -> Value {
        let resp = self
            .grant(&[
                ("grant_type", "client_credentials"),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
                ("scope", "data:download:read data:download:write offline"),
            ])
            .await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn access(&self) -> String {
        self.token().await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn create(&self, token: &str, xid: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v2/data/download/requests", self.base))
            .bearer_auth(token)
            .header("x-request-id", xid)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_id(&self, token: &str, xid: &str, body: &Value) -> String {
        let resp = self.create(token, xid, body).await;
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn status(&self, token: &str, id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v2/data/download/requests/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn status_json(&self, token: &str, id: &str) -> Value {
        let resp = self.status(token, id).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Polls every 10 ms until COMPLETED with files (or FAILED); gives up after 5 s.
    pub async fn wait_done(&self, token: &str, id: &str) -> Value {
        for _ in 0..500 {
            let s = self.status_json(token, id).await;
            let files = s["files"].as_array().map_or(0, Vec::len);
            if (s["status"] == "COMPLETED" && files > 0) || s["status"] == "FAILED" {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("request {id} never completed");
    }

    /// Resolves a `downloadUrl` against the base (RFC 3986 for the absolute-path case).
    pub fn url(&self, download_url: &str) -> String {
        if download_url.starts_with("http") {
            download_url.to_owned()
        } else {
            format!("{}{download_url}", self.base)
        }
    }

    pub async fn get_file(&self, token: Option<&str>, download_url: &str) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.url(download_url))
            .header("accept", "application/octet-stream");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// Downloads a part completely; panics on a transport error.
    pub async fn download(
        &self,
        token: &str,
        download_url: &str,
    ) -> (reqwest::header::HeaderMap, Vec<u8>) {
        let resp = self.get_file(Some(token), download_url).await;
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        (headers, resp.bytes().await.unwrap().to_vec())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses one CSV part (BOM tolerated) into header → value rows.
pub fn csv_rows(bytes: &[u8]) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// JSON values as `expected_rows` renders them: strings bare, numbers and booleans literal.
pub fn json_row(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Runs the whole create → poll → download of a CSV day and returns each part's bytes.
pub async fn fetch_day(api: &Api, format: &str, columns: &[String]) -> (Value, Vec<Vec<u8>>) {
    let token = api.access().await;
    let id = api
        .create_id(&token, "xid-fetch", &body(format, columns))
        .await;
    let status = api.wait_done(&token, &id).await;
    let mut parts = Vec::new();
    for f in status["files"].as_array().unwrap() {
        let (_, bytes) = api
            .download(&token, f["downloadUrl"].as_str().unwrap())
            .await;
        parts.push(bytes);
    }
    (status, parts)
}
