//! The Snowflake connectors' protocol, the part the sink needs (verified against
//! fakesnow's server mode; the rest follows the connectors' behaviour and Snowflake docs):
//!
//! - `POST /session/v1/login-request?databaseName=…&schemaName=…&warehouse=…&roleName=…`
//!   with `LOGIN_NAME`, `ACCOUNT_NAME` and either `PASSWORD` or, for key-pair login,
//!   `AUTHENTICATOR = SNOWFLAKE_JWT` and the JWT in `TOKEN`, plus session parameters
//!   (`QUERY_TAG`); the answer's `data.token` is the session token.
//! - `POST /queries/v1/query-request` with `Authorization: Snowflake Token="…"` and
//!   `{"sqlText": …}`. DML answers `rowset` (JSON); queries answer `rowset` or an Arrow
//!   stream in `rowsetBase64` ([`super::arrow`]); a query still running (`333333`,
//!   `333334`) is polled at `data.getResultUrl` (docs only: fakesnow answers at once).
//! - `PUT 'file://…' @stage` answers an upload location; the sink uploads the file there
//!   itself: to S3 with the answer's temporary credentials, client-side encrypted when
//!   it carries `encryptionMaterial` ([`super::stage`], a real account's answer), or to
//!   a presigned URL (GCS, encrypted as the connector does when the answer carries
//!   material; fakesnow's answer has none). An AZURE stage, or a GCS one with an access
//!   token instead of a presigned URL, is refused with a message naming the location type.
//! - `POST /session?delete=true` logs out (which rolls back an open transaction).
//!
//! Errors carry a [`FailureKind`]: unreachable or 5xx → Unavailable, a refused login or a
//! missing privilege → Refused, an object that does not exist → Config. They hold the
//! server's message and the statement's first words, never a password, key or token.

use super::arrow;
use super::jwt::KeyPairAuth;
use super::stage;
use crate::exit::FailureKind;
use base64::Engine;
use cxone::Secret;
use serde_json::{Value, json};
use std::time::Duration;

/// How the client logs in.
pub enum Credential {
    Password(Secret),
    KeyPair(Box<KeyPairAuth>),
}

/// A client failure: what went wrong, and the kind deciding the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub kind: FailureKind,
    pub message: String,
}

impl ClientError {
    fn new(kind: FailureKind, message: impl Into<String>) -> ClientError {
        ClientError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where and as whom to log in.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    account: String,
    user: String,
    credential: Credential,
    database: String,
    schema: String,
    warehouse: Option<String>,
    role: Option<String>,
}

/// A logged-in session.
#[derive(Debug)]
pub struct Session {
    token: String,
}

/// A statement's result rows (text cells).
pub type Rows = Vec<Vec<Option<String>>>;

/// Login failure codes that mean the credentials were refused (wrong password, bad JWT,
/// locked or disabled user, a network policy).
const REFUSED_LOGIN_CODES: [&str; 6] = ["390100", "390144", "390101", "390102", "390422", "394304"];

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoint: &str,
        account: &str,
        user: &str,
        credential: Credential,
        database: &str,
        schema: &str,
        warehouse: Option<&str>,
        role: Option<&str>,
    ) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| ClientError::new(FailureKind::Config, format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            account: account.to_string(),
            user: user.to_string(),
            credential,
            database: database.to_string(),
            schema: schema.to_string(),
            warehouse: warehouse.map(str::to_string),
            role: role.map(str::to_string),
        })
    }

    /// The service root.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Logs in and returns the session.
    pub async fn login(&self) -> Result<Session, ClientError> {
        let mut data = json!({
            "ACCOUNT_NAME": self.account.to_uppercase(),
            "LOGIN_NAME": self.user,
            "CLIENT_APP_ID": "cdrsync",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "SESSION_PARAMETERS": {
                "QUERY_TAG": "cdrsync",
                "AUTOCOMMIT": true,
                "TIMEZONE": "UTC",
            },
        });
        match &self.credential {
            Credential::Password(p) => data["PASSWORD"] = json!(p.expose()),
            Credential::KeyPair(key) => {
                let now = chrono::Utc::now().timestamp();
                let token = key
                    .token(&self.account, &self.user, now)
                    .map_err(|m| ClientError::new(FailureKind::Config, m))?;
                data["AUTHENTICATOR"] = json!("SNOWFLAKE_JWT");
                data["TOKEN"] = json!(token);
            }
        }
        let mut url = url::Url::parse(&format!("{}/session/v1/login-request", self.endpoint))
            .map_err(|e| ClientError::new(FailureKind::Config, format!("endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("databaseName", &self.database);
            q.append_pair("schemaName", &self.schema);
            if let Some(w) = &self.warehouse {
                q.append_pair("warehouse", w);
            }
            if let Some(r) = &self.role {
                q.append_pair("roleName", r);
            }
            q.append_pair("requestId", &uuid_v4());
        }
        let answer = self
            .post(url.as_str(), None, &json!({ "data": data }), "login")
            .await?;
        if !success(&answer) {
            let code = code(&answer);
            let kind = if REFUSED_LOGIN_CODES.contains(&code.as_str()) {
                FailureKind::Refused
            } else {
                FailureKind::Unavailable
            };
            return Err(ClientError::new(
                kind,
                format!(
                    "login as {} refused ({code}): {}",
                    self.user,
                    server_message(&answer)
                ),
            ));
        }
        let token = answer["data"]["token"].as_str().ok_or_else(|| {
            ClientError::new(FailureKind::Other, "login answered no session token")
        })?;
        Ok(Session {
            token: token.to_string(),
        })
    }

    /// Runs one statement in `session` and returns its rows (DML: the counts).
    pub async fn query(&self, session: &Session, sql: &str) -> Result<Rows, ClientError> {
        self.query_bound(session, sql, &[]).await
    }

    /// Runs one statement whose result is not needed (DDL, COPY, transaction control).
    pub async fn execute(&self, session: &Session, sql: &str) -> Result<(), ClientError> {
        self.execute_bound(session, sql, &[]).await
    }

    /// [`Client::execute`] with `?` placeholders taking `binds` (as text, in order).
    pub async fn execute_bound(
        &self,
        session: &Session,
        sql: &str,
        binds: &[&str],
    ) -> Result<(), ClientError> {
        self.query_data(session, sql, binds).await.map(drop)
    }

    /// Runs one statement whose `?` placeholders take `binds` (as text, in order).
    pub async fn query_bound(
        &self,
        session: &Session,
        sql: &str,
        binds: &[&str],
    ) -> Result<Rows, ClientError> {
        let data = self.query_data(session, sql, binds).await?;
        rows_of(&data)
            .map_err(|m| ClientError::new(FailureKind::Other, format!("{}: {m}", what(sql))))
    }

    /// Runs `PUT 'file://local' @stage` and uploads `local` where the answer says.
    pub async fn put(
        &self,
        session: &Session,
        local: &std::path::Path,
        stage: &str,
    ) -> Result<(), ClientError> {
        let path = local.to_string_lossy().replace('\'', "\\'");
        let sql = format!("PUT 'file://{path}' {stage} AUTO_COMPRESS=FALSE OVERWRITE=TRUE");
        let data = self.query_data(session, &sql, &[]).await?;
        let info = &data["stageInfo"];
        let location_type = info["locationType"].as_str().unwrap_or("?").to_string();
        let material = stage::Material::of(&data)
            .map_err(|m| ClientError::new(FailureKind::Other, format!("PUT to {stage}: {m}")))?;
        if location_type.eq_ignore_ascii_case("S3") {
            return stage::upload_s3(info, material.as_ref(), local, stage).await;
        }
        let gcs = location_type.eq_ignore_ascii_case("GCS");
        let presigned = info["presignedUrl"].as_str().filter(|u| !u.is_empty());
        if material.is_some() && !(gcs && presigned.is_some()) {
            return Err(ClientError::new(
                FailureKind::Config,
                format!(
                    "PUT to {stage}: the stage is on {location_type} with client-side encryption, which this cdrsync does not implement yet (only S3 stages and GCS presigned URLs)"
                ),
            ));
        }
        let Some(url) = presigned else {
            return Err(ClientError::new(
                FailureKind::Config,
                format!(
                    "PUT to {stage}: the stage is on {location_type} without a presigned URL, which this cdrsync cannot upload to yet (only S3 stages and GCS presigned URLs)"
                ),
            ));
        };
        let body = tokio::fs::read(local).await.map_err(|e| {
            ClientError::new(
                FailureKind::Other,
                format!("cannot read {}: {e}", local.display()),
            )
        })?;
        let mut headers: Vec<(&str, String)> = Vec::new();
        if gcs {
            headers.push(("x-goog-meta-sfc-digest", stage::digest(&body)));
        }
        let body = match &material {
            Some(m) => {
                let (encrypted, meta) = stage::encrypt_all(m, &body)
                    .map_err(|m| ClientError::new(FailureKind::Other, m))?;
                headers.extend(stage::gcs_encryption_headers(&meta));
                encrypted
            }
            None => body,
        };
        let mut request = self.http.put(url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport("uploading the day's file to the stage", &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ClientError::new(
                status_kind(status),
                format!("uploading the day's file to {stage}: HTTP {status}"),
            ));
        }
        Ok(())
    }

    /// Logs out (best effort): Snowflake rolls back an open transaction of the session.
    pub async fn logout(&self, session: &Session) {
        let url = format!("{}/session?delete=true", self.endpoint);
        let _ = self.post(&url, Some(session), &json!({}), "logout").await;
    }

    async fn query_data(
        &self,
        session: &Session,
        sql: &str,
        binds: &[&str],
    ) -> Result<Value, ClientError> {
        let url = format!(
            "{}/queries/v1/query-request?requestId={}",
            self.endpoint,
            uuid_v4()
        );
        let mut body = json!({ "sqlText": sql, "sequenceId": 1, "asyncExec": false });
        if !binds.is_empty() {
            let bindings: serde_json::Map<String, Value> = binds
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1).to_string(), json!({"type": "TEXT", "value": v})))
                .collect();
            body["bindings"] = Value::Object(bindings);
        }
        let mut answer = self.post(&url, Some(session), &body, what(sql)).await?;
        // A statement still running is polled at its result URL (Snowflake answers so
        // after about 45 s).
        let mut waited = 0u32;
        while matches!(code(&answer).as_str(), "333333" | "333334") {
            let Some(result_url) = answer["data"]["getResultUrl"].as_str() else {
                break;
            };
            tokio::time::sleep(Duration::from_millis(500 * u64::from(waited.min(10) + 1))).await;
            waited += 1;
            answer = self
                .send(
                    self.http
                        .get(format!("{}{result_url}", self.endpoint))
                        .header("Authorization", auth_header(session)),
                    what(sql),
                )
                .await?;
        }
        if !success(&answer) {
            let code = code(&answer);
            return Err(ClientError::new(
                sql_error_kind(&code),
                format!("{} failed ({code}): {}", what(sql), server_message(&answer)),
            ));
        }
        Ok(answer["data"].clone())
    }

    async fn post(
        &self,
        url: &str,
        session: Option<&Session>,
        body: &Value,
        what: &str,
    ) -> Result<Value, ClientError> {
        let mut request = self.http.post(url).json(body);
        if let Some(s) = session {
            request = request.header("Authorization", auth_header(s));
        }
        self.send(request, what).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, ClientError> {
        let response = request
            .header("Accept", "application/snowflake")
            .send()
            .await
            .map_err(|e| transport(what, &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transport(what, &e))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        match parsed {
            // A JSON answer says why itself, whatever the status.
            Some(v) if v.get("success").is_some() => Ok(v),
            _ if !status.is_success() => Err(ClientError::new(
                status_kind(status),
                format!("{what}: {} answered HTTP {status}", self.endpoint),
            )),
            _ => Err(ClientError::new(
                FailureKind::Other,
                format!(
                    "{what}: {} answered something that is not Snowflake's JSON",
                    self.endpoint
                ),
            )),
        }
    }
}

/// The statement's first words, for messages (`COPY INTO CDRSYNC_STAGE`).
fn what(sql: &str) -> &str {
    let end = sql
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .nth(2)
        .map_or(sql.len(), |(i, _)| i);
    &sql[..end]
}

fn auth_header(session: &Session) -> String {
    format!("Snowflake Token=\"{}\"", session.token)
}

fn success(answer: &Value) -> bool {
    answer["success"].as_bool() == Some(true)
}

fn code(answer: &Value) -> String {
    match &answer["code"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => format!("{n:0>6}"),
        _ => String::new(),
    }
}

/// The server's message on one line, at most 400 characters (an emulator may echo the
/// whole statement and its bound values).
fn server_message(answer: &Value) -> String {
    let message = answer["message"]
        .as_str()
        .unwrap_or("no message")
        .lines()
        .collect::<Vec<_>>()
        .join(" ");
    match message.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message,
    }
}

/// The kind of a failed statement's error code.
fn sql_error_kind(code: &str) -> FailureKind {
    match code {
        // Session expired or gone.
        "390104" | "390112" | "390114" => FailureKind::Unavailable,
        // Does not exist or not authorised; a warehouse that is missing or suspended.
        "002003" | "002043" | "000606" => FailureKind::Config,
        // Insufficient privileges.
        "003001" | "003011" => FailureKind::Refused,
        // A lock wait that timed out: another load holds the table.
        "000625" | "000630" => FailureKind::Busy,
        _ => FailureKind::Other,
    }
}

fn status_kind(status: reqwest::StatusCode) -> FailureKind {
    match status.as_u16() {
        401 | 403 => FailureKind::Refused,
        404 => FailureKind::Config,
        _ => FailureKind::Unavailable,
    }
}

fn transport(what: &str, e: &reqwest::Error) -> ClientError {
    // reqwest's message names the URL, which holds no secret here (presigned URLs are
    // left out: without_url).
    let e = format!("{}", StripUrl(e));
    ClientError::new(FailureKind::Unavailable, format!("{what}: {e}"))
}

/// A reqwest error shown without its URL (a presigned upload URL is a credential).
struct StripUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for StripUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.0.is_connect() {
            "cannot connect"
        } else if self.0.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        let mut source = std::error::Error::source(self.0);
        let mut detail = String::new();
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        if detail.is_empty() {
            f.write_str(kind)
        } else {
            write!(f, "{kind} ({detail})")
        }
    }
}

/// The rows of a query answer's `data`: `rowset` (JSON) or `rowsetBase64` (Arrow).
pub fn rows_of(data: &Value) -> Result<Rows, String> {
    if data["chunks"].as_array().is_some_and(|c| !c.is_empty()) {
        return Err("the result came in chunks, which the sink does not read".into());
    }
    if let Some(b64) = data["rowsetBase64"].as_str().filter(|s| !s.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "rowsetBase64 is not base64".to_string())?;
        return arrow::read_text_rows(&bytes);
    }
    let Some(rowset) = data["rowset"].as_array() else {
        return Ok(Vec::new());
    };
    rowset
        .iter()
        .map(|row| {
            row.as_array()
                .ok_or_else(|| "a rowset row that is not an array".to_string())
                .map(|cells| {
                    cells
                        .iter()
                        .map(|c| match c {
                            Value::Null => None,
                            Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        })
                        .collect()
                })
        })
        .collect()
}

fn uuid_v4() -> String {
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rowsets_read_as_text_cells() {
        let data = json!({"queryResultFormat": "json", "rowset": [["3", null], ["x", "y"]]});
        assert_eq!(
            rows_of(&data).unwrap(),
            vec![
                vec![Some("3".to_string()), None],
                vec![Some("x".to_string()), Some("y".to_string())]
            ]
        );
        assert!(rows_of(&json!({"rowset": [], "chunks": [{"url": "x"}]})).is_err());
    }

    #[test]
    fn error_codes_map_to_exit_kinds() {
        assert_eq!(sql_error_kind("002003"), FailureKind::Config);
        assert_eq!(sql_error_kind("003001"), FailureKind::Refused);
        assert_eq!(sql_error_kind("000625"), FailureKind::Busy);
        assert_eq!(sql_error_kind("390112"), FailureKind::Unavailable);
        assert_eq!(sql_error_kind("100038"), FailureKind::Other);
        assert_eq!(code(&json!({"code": 390100})), "390100");
        assert_eq!(
            what("COPY INTO CDRSYNC_STAGE FROM @x"),
            "COPY INTO CDRSYNC_STAGE"
        );
    }
}
