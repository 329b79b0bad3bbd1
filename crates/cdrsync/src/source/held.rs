//! Answers a Reporting API source read in this process (an inline `datadownload` CSV, a
//! `contacts/completed` page read by the count), kept by key until the downloader stages
//! them, so a part is not fetched twice in one run. A new process holds nothing: the
//! source then reads the part again.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Held(Mutex<HashMap<String, Bytes>>);

impl Held {
    pub(super) fn put(&self, key: String, body: Bytes) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, body);
    }

    /// The answer kept for `key`, no longer kept.
    pub(super) fn take(&self, key: &str) -> Option<Bytes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
}
