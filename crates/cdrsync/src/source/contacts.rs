//! The Reporting API's `GET /contacts/completed` as a [`Source`] (`[cxone] api =
//! "reporting"`, `reporting_call = "contacts-completed"`): the UTC day's completed contacts
//! (`startDate`/`endDate`, `orderBy=contactId asc`), one part per page (`skip`/`top`).
//!
//! Why the watcher counts first and the downloader fetches by page (and not a part list
//! that grows): the [`Watch::poll`] of a generation reads the first page only — its
//! `totalRecords` fixes how many pages the day has and how many contacts each must hold —
//! and answers with every page as a part. The job saves that list (each page's `skip`,
//! `top` and row count in its `downloadUrl`, in the job record's `files_json`) before any
//! page is downloaded, so the trait, `job.rs` and the downloader stay as they are: a page
//! is verified and marked like any part (its SHA-256 recorded, its contacts counted), a run
//! killed after page k finds pages 1..k verified in staging and fetches k+1.. only, and the
//! day is published once, after every page. Without `totalRecords` the watcher pages
//! through to the 204 counting (and keeps the pages it read, so none is fetched twice in
//! one run).
//!
//! The 204 ends the day; a 204 on the first page is a zero-row day (one empty part, `[]`),
//! which the completeness rule then halts unless accepted. A page that no longer holds the
//! contacts counted (the day changed while it was read, so `skip` would now shift rows
//! into a neighbour or out of the day) fails the whole generation: the next one counts and
//! pages the day again, and nothing of the old one is published — never a duplicate row.
//!
//! A page is staged as a JSON array of its contacts (`[job] format = "json"`).

use super::datadownload::day_of;
use super::held::Held;
use super::{
    FileEntry, Observation, PartResponse, Poll, Readiness, Requested, Source, SourceError, Watch,
};
use crate::source::reporting::{ReportingSetup, ReportingSource};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::NaiveDate;
use cxone::reporting::{ContactsPage, Window};
use std::collections::HashMap;
use std::sync::Arc;

/// `downloadUrl` scheme of a page: `contacts:{date}?skip=…&top=…&rows=…`.
const SCHEME: &str = "contacts:";

/// `contacts/completed` for one configured job.
pub struct ContactsSource {
    shared: Arc<Shared>,
}

struct Shared {
    reporting: ReportingSource,
    page_size: u64,
    /// Pages the watcher read in this process, by `downloadUrl`, until they are staged.
    read: Held,
}

impl ContactsSource {
    pub fn new(setup: ReportingSetup, page_size: u32) -> Self {
        ContactsSource {
            shared: Arc::new(Shared {
                reporting: ReportingSource::new(setup),
                page_size: u64::from(page_size.max(1)),
                read: Held::default(),
            }),
        }
    }
}

/// One page of a day, as its part names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Page {
    date: NaiveDate,
    skip: u64,
    top: u64,
    /// The contacts it must hold (what the count said).
    rows: u64,
}

impl Page {
    fn url(&self) -> String {
        format!(
            "{SCHEME}{}?skip={}&top={}&rows={}",
            self.date, self.skip, self.top, self.rows
        )
    }

    fn parse(url: &str) -> Option<Page> {
        let (date, query) = url.strip_prefix(SCHEME)?.split_once('?')?;
        let mut num = HashMap::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=')?;
            num.insert(k, v.parse::<u64>().ok()?);
        }
        Some(Page {
            date: date.parse().ok()?,
            skip: *num.get("skip")?,
            top: *num.get("top")?,
            rows: *num.get("rows")?,
        })
    }

    fn part(&self) -> FileEntry {
        FileEntry {
            file_name: format!(
                "contacts-completed-{}-p{:05}.json",
                self.date,
                self.skip / self.top.max(1) + 1
            ),
            file_size: None,
            download_url: self.url(),
            sha256: None,
        }
    }
}

/// What a page stages: its contacts as a JSON array (`[]` for a 204).
fn staged(page: Option<&ContactsPage>) -> Bytes {
    match page {
        Some(p) => Bytes::from(serde_json::to_vec(&p.contacts).expect("contacts serialise")),
        None => Bytes::from_static(b"[]"),
    }
}

/// The pages of a day of `total` contacts, `top` a page (one empty page for none).
fn pages(date: NaiveDate, total: u64, top: u64) -> Vec<Page> {
    let n = total.div_ceil(top).max(1);
    (0..n)
        .map(|k| Page {
            date,
            skip: k * top,
            top,
            rows: total.saturating_sub(k * top).min(top),
        })
        .collect()
}

/// A page that does not hold what was counted: the generation is gone (a 404 for the job,
/// which then asks [`Source::confirm_gone`]).
fn changed(page: &Page, got: usize) -> SourceError {
    SourceError::from(cxone::Error::Rejected {
        call: format!(
            "GET contacts/completed for {} (skip {})",
            page.date, page.skip
        ),
        status: 404,
        body: format!(
            "the page holds {got} contacts where {} were counted: the day changed while it was read",
            page.rows
        ),
    })
}

#[async_trait]
impl Source for ContactsSource {
    fn idempotency_key(&self, _date: NaiveDate, _generation: u32) -> Option<String> {
        None
    }

    async fn request(
        &self,
        date: NaiveDate,
        generation: u32,
        _key: Option<&str>,
    ) -> Result<Requested, SourceError> {
        // A read: nothing is asked of CXone until the watcher counts.
        Ok(Requested {
            request_id: format!("{date}/contacts-completed-g{generation}"),
            new: true,
        })
    }

    fn watch(&self, request_id: &str) -> Box<dyn Watch> {
        Box::new(PageWatch {
            shared: self.shared.clone(),
            request_id: request_id.to_string(),
        })
    }

    async fn open_part(&self, part: &FileEntry, _offset: u64) -> Result<PartResponse, SourceError> {
        let page = Page::parse(&part.download_url).ok_or_else(|| {
            SourceError::from(cxone::Error::BadUrl {
                message: format!("{:?} is not a contacts/completed page", part.file_name),
            })
        })?;
        let body = match self.shared.read.take(&part.download_url) {
            Some(body) => body,
            None => {
                let client = self.shared.reporting.client().await?;
                let window = Window::utc_day(&page.date.to_string())?;
                let got = client
                    .contacts_completed(&window, page.skip, page.top)
                    .await?;
                let count = got.as_ref().map_or(0, |p| p.contacts.len());
                if count as u64 != page.rows {
                    return Err(changed(&page, count));
                }
                staged(got.as_ref())
            }
        };
        // Always the whole page (offset 0): a page is small and fetched again whole.
        Ok(PartResponse::in_memory(part.download_url.clone(), body))
    }

    async fn list_parts(&self, _request_id: &str) -> Result<Option<Vec<FileEntry>>, SourceError> {
        // Pages have no URLs that expire.
        Ok(None)
    }

    async fn confirm_gone(&self, request_id: &str) -> Option<String> {
        Some(format!(
            "contacts/completed for {request_id} changed while it was paged; counting it again"
        ))
    }
}

/// Counts one generation's pages.
struct PageWatch {
    shared: Arc<Shared>,
    request_id: String,
}

impl PageWatch {
    /// Without `totalRecords`: every page to the 204, kept for the downloader.
    async fn page_through(
        &self,
        client: &cxone::reporting::ReportingClient,
        window: &Window,
        date: NaiveDate,
        first: ContactsPage,
    ) -> Result<Vec<Page>, SourceError> {
        let top = self.shared.page_size;
        let mut pages = Vec::new();
        let mut next = Some(first);
        let mut skip = 0;
        while let Some(got) = next {
            let page = Page {
                date,
                skip,
                top,
                rows: got.contacts.len() as u64,
            };
            self.shared.read.put(page.url(), staged(Some(&got)));
            pages.push(page);
            skip += top;
            next = client.contacts_completed(window, skip, top).await?;
        }
        Ok(pages)
    }
}

#[async_trait]
impl Watch for PageWatch {
    async fn poll(&mut self) -> Result<Poll, SourceError> {
        let date = day_of(&self.request_id)?;
        let window = Window::utc_day(&date.to_string())?;
        let client = self.shared.reporting.client().await?;
        let top = self.shared.page_size;
        let pages = match client.contacts_completed(&window, 0, top).await? {
            // The 204 on the first page: a zero-row day, its one page already read.
            None => {
                let pages = pages(date, 0, top);
                self.shared.read.put(pages[0].url(), staged(None));
                pages
            }
            Some(first) => match first.total_records {
                Some(total) => {
                    let pages = pages(date, total, top);
                    let count = first.contacts.len();
                    if count as u64 != pages[0].rows {
                        return Err(changed(&pages[0], count));
                    }
                    self.shared.read.put(pages[0].url(), staged(Some(&first)));
                    pages
                }
                None => self.page_through(&client, &window, date, first).await?,
            },
        };
        let parts: Vec<FileEntry> = pages.iter().map(Page::part).collect();
        Ok(Poll::Seen(Observation {
            status: "COUNTED".into(),
            listed: parts.clone(),
            completed: true,
            readiness: Readiness::Ready(parts),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 5, 15).unwrap()
    }

    #[test]
    fn a_day_is_cut_into_pages_that_hold_what_was_counted() {
        let p = pages(date(), 2_050, 1_000);
        let got: Vec<(u64, u64)> = p.iter().map(|p| (p.skip, p.rows)).collect();
        assert_eq!(got, vec![(0, 1_000), (1_000, 1_000), (2_000, 50)]);
        assert_eq!(pages(date(), 2_000, 1_000).len(), 2);
        let empty = pages(date(), 0, 1_000);
        assert_eq!((empty.len(), empty[0].rows), (1, 0), "one empty page");
    }

    #[test]
    fn a_page_round_trips_through_its_url_and_names_its_number() {
        let page = Page {
            date: date(),
            skip: 2_000,
            top: 1_000,
            rows: 50,
        };
        assert_eq!(Page::parse(&page.url()), Some(page.clone()));
        assert_eq!(
            page.part().file_name,
            "contacts-completed-2024-05-15-p00003.json"
        );
        for bad in [
            "",
            "contacts:2024-05-15",
            "contacts:x?skip=1&top=1&rows=1",
            "https://h/",
        ] {
            assert_eq!(Page::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_empty_page_stages_an_empty_array() {
        assert_eq!(&staged(None)[..], b"[]");
    }
}
