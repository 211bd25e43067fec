//! `Reflector`: a kube-rs reflector (`watcher(..).default_backoff().reflect(..)`) running on the
//! test's runtime, with bounded waits for "the store now holds exactly these objects". For
//! tests that check what a real kube client sees from the test API server.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A running reflector; its task is aborted on drop.
pub struct Reflector<K: Resource<DynamicType = ()> + Clone + 'static> {
    reader: Store<K>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Reflector<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Spawns the reflector on the current tokio runtime (watcher errors are recorded, and the
    /// watcher's default backoff applies, as in the daemon).
    pub fn start(api: Api<K>, config: watcher::Config) -> Reflector<K> {
        let (reader, writer) = reflector::store();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let stream = watcher(api, config).default_backoff().reflect(writer);
        let task = tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(item) = stream.next().await {
                if let Err(error) = item {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(error.to_string());
                }
            }
        });
        Reflector { reader, errors, task }
    }

    /// `namespace/name` → resourceVersion of everything in the store.
    pub fn view(&self) -> BTreeMap<String, String> {
        self.reader
            .state()
            .iter()
            .map(|o| {
                (
                    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits (polling, at most `timeout`) until the store holds exactly `expected` (objects as
    /// `ApiServer::apply` returned them) at their resourceVersions; panics with both views if not.
    pub async fn converges_to(&self, expected: &[&Value], timeout: Duration) {
        let want = versions(expected.iter().copied());
        let deadline = Instant::now() + timeout;
        while self.view() != want {
            assert!(
                Instant::now() < deadline,
                "store did not converge within {timeout:?}\n got: {:?}\nwant: {want:?}\nwatcher errors: {:?}",
                self.view(),
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every error the watcher stream reported so far (`Display` form).
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Drop for Reflector<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `namespace/name` → resourceVersion of each JSON object.
pub fn versions<'a>(objects: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, String> {
    objects
        .into_iter()
        .map(|o| {
            let meta = &o["metadata"];
            let key = format!("{}/{}", meta["namespace"].as_str().unwrap_or(""), meta["name"].as_str().unwrap_or(""));
            (key, meta["resourceVersion"].as_str().unwrap_or("").to_string())
        })
        .collect()
}
