//! One-shot listing of what the daemon watches — Services, EndpointSlices (or core/v1
//! Endpoints) and this node's Node — into the same [`Objects`] manifests load into, for the
//! offline tools (`kubenat explain --kubeconfig`). The daemon's own watches are in `watch`.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

use super::convert::EndpointsSource;
use super::manifests::{Objects, Source, Sourced};
use super::watch::{ENDPOINTS_SELECTOR, SERVICE_SELECTOR};

/// A list request failed.
#[derive(Debug, thiserror::Error)]
#[error("listing {kind} from the API server")]
pub struct Error {
    /// What was being listed.
    pub kind: &'static str,
    /// Why it failed (retryable when the server was unreachable).
    #[source]
    pub source: kube::Error,
}

/// Where listed objects say they came from in warnings.
fn api_source() -> Source {
    Source { file: PathBuf::from("apiserver"), document: 0 }
}

fn sourced<T>(items: Vec<T>) -> Vec<Sourced<T>> {
    items.into_iter().map(|object| Sourced { source: api_source(), object }).collect()
}

/// Lists the objects a sync works from, with the daemon's label selectors; endpoints from
/// EndpointSlices unless `endpoints` says core/v1 Endpoints. The Node only when `node_name`
/// is set.
pub async fn list_objects(client: kube::Client, node_name: &str, endpoints: EndpointsSource) -> Result<Objects, Error> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default().labels(SERVICE_SELECTOR))
        .await
        .map_err(|source| Error { kind: "Services", source })?;
    let mut objects = Objects { services: sourced(services.items), ..Objects::default() };
    let endpoint_params = ListParams::default().labels(ENDPOINTS_SELECTOR);
    if endpoints == EndpointsSource::Endpoints {
        let list = Api::<Endpoints>::all(client.clone())
            .list(&endpoint_params)
            .await
            .map_err(|source| Error { kind: "Endpoints", source })?;
        objects.endpoints = sourced(list.items);
    } else {
        let list = Api::<EndpointSlice>::all(client.clone())
            .list(&endpoint_params)
            .await
            .map_err(|source| Error { kind: "EndpointSlices", source })?;
        objects.endpoint_slices = sourced(list.items);
    }
    if !node_name.is_empty() {
        let node =
            Api::<Node>::all(client).get_opt(node_name).await.map_err(|source| Error { kind: "Nodes", source })?;
        objects.nodes = sourced(node.into_iter().collect());
    }
    Ok(objects)
}
