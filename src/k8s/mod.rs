//! The Kubernetes boundary: the only module that imports `k8s_openapi`.

pub mod convert;
pub mod list;
pub mod manifests;
pub mod watch;
