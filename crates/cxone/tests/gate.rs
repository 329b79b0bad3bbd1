//! The request gate: every HTTP request the client makes — token grants, data calls and
//! their retries — passes the gate first, and a gate's error stops the call before it is
//! sent.

mod fake;

use async_trait::async_trait;
use cxone::{Client, CreateRequest, Error, MemoryTokenStore, RequestGate};
use fake::Fake;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
struct Counting {
    passed: AtomicU64,
    refuse: bool,
}

#[async_trait]
impl RequestGate for Counting {
    async fn acquire(&self) -> Result<(), Error> {
        if self.refuse {
            return Err(Error::Protocol {
                call: "gate".into(),
                message: "closed".into(),
            });
        }
        self.passed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn body() -> CreateRequest {
    CreateRequest {
        report_type: "callDetailRecords".into(),
        report_id: "default".into(),
        from_date: "2024-05-15T00:00:00.000Z".into(),
        to_date: "2024-05-15T23:59:59.999Z".into(),
        format: "csv".into(),
        columns: vec!["CallId".into()],
    }
}

#[tokio::test]
async fn every_request_and_retry_passes_the_gate() {
    let fake = Fake::start().await;
    let gate = Arc::new(Counting::default());
    let client = Client::new(fake.config(), Arc::new(MemoryTokenStore::new(None)))
        .unwrap()
        .with_gate(gate.clone());
    // One 503 on the token endpoint and one on the create: both retried.
    fake.with(|s| s.token_faults.push_back(503));
    fake.with(|s| s.faults.push_back((503, None)));
    let id = client.create_request("x-1", &body()).await.unwrap().id;
    client.status(&id).await.unwrap();
    let (grants, data) = fake.with(|s| (s.grants.len() as u64, s.data_calls));
    // Token: the 503 and the grant (the fake logs both); data: the 503 create, the
    // create, the status.
    assert_eq!((grants, data), (2, 3));
    assert_eq!(gate.passed.load(Ordering::SeqCst), grants + data);
}

#[tokio::test]
async fn a_gate_error_stops_the_call_before_it_is_sent() {
    let fake = Fake::start().await;
    let gate = Arc::new(Counting {
        refuse: true,
        ..Counting::default()
    });
    let client = Client::new(fake.config(), Arc::new(MemoryTokenStore::new(None)))
        .unwrap()
        .with_gate(gate);
    let err = client.create_request("x-1", &body()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol { call, .. } if call == "gate"),
        "{err}"
    );
    assert_eq!(fake.with(|s| (s.grants.len(), s.data_calls)), (0, 0));
}
