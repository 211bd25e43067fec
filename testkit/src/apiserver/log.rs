//! The request log: what each client asked for and what it got, for assertions such as "the
//! watcher relisted" or "the watch resumed from resourceVersion 42". Bounded.

use std::collections::VecDeque;
use std::fmt;

/// At most this many requests are kept (the oldest are forgotten).
const MAX_RECORDS: usize = 10_000;

/// What a request did, in the apiserver's audit vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// A collection read without `watch`.
    List,
    /// A collection read with `watch=true` / `watch=1`.
    Watch,
    /// One object.
    Get,
    /// `/api`, `/apis`, `/version`, health and other discovery documents.
    Discovery,
    /// Anything else (unknown paths, unsupported methods).
    Other,
}

/// One request as the server answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method (`GET`).
    pub method: String,
    /// Path without the query (`/api/v1/services`).
    pub path: String,
    /// Raw query string, `""` when absent.
    pub query: String,
    /// Decoded query parameters, in order.
    pub params: Vec<(String, String)>,
    /// What the request did.
    pub verb: Verb,
    /// HTTP status of the response (for a watch: of its start, normally 200).
    pub status: u16,
    /// When the response started.
    pub at: std::time::Instant,
}

impl RequestRecord {
    /// The decoded value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// A list request on `path`.
    pub fn is_list_of(&self, path: &str) -> bool {
        self.verb == Verb::List && self.path == path
    }

    /// A watch request on `path`.
    pub fn is_watch_of(&self, path: &str) -> bool {
        self.verb == Verb::Watch && self.path == path
    }
}

impl fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if self.query.is_empty() { "" } else { "?" };
        write!(f, "{} {}{separator}{} -> {} ({:?})", self.method, self.path, self.query, self.status, self.verb)
    }
}

/// The bounded log.
#[derive(Debug, Default)]
pub struct RequestLog {
    records: VecDeque<RequestRecord>,
}

impl RequestLog {
    /// Appends, forgetting the oldest record when full.
    pub fn push(&mut self, record: RequestRecord) {
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// A copy of every kept record, oldest first.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }
}
