//! The Kubernetes API client: from `--kubeconfig` (or the in-cluster configuration) and
//! `--master`, rate-limited like client-go by `clientConnection.qps` / `burst`.

use std::time::Duration;

use crate::config::DaemonConfig;

/// Why no API client could be built; each names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or parsed.
    #[error("--kubeconfig {path}: cannot read it")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig was read but is not usable (no current context, bad credentials …).
    #[error("--kubeconfig {path}: not usable")]
    Unusable {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and this is not a pod.
    #[error("no --kubeconfig and no in-cluster configuration")]
    Infer(#[source] kube::config::InferConfigError),
    /// `--master` is not a URL.
    #[error("--master {0:?} is not a URL")]
    Master(String),
    /// The client could not be built from the configuration (TLS, proxy settings).
    #[error("building the API client")]
    Build(#[source] kube::Error),
}

/// The API client the daemon watches with.
pub async fn client(config: &DaemonConfig) -> Result<kube::Client, Error> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let name = path.display().to_string();
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| Error::Read { path: name.clone(), source })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| Error::Unusable { path: name, source })?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    if let Some(url) = &config.master {
        kube_config.cluster_url = url.parse().map_err(|_| Error::Master(url.clone()))?;
    }
    // clientConnection.qps / burst, as client-go's token bucket: at most `burst` requests in
    // any window of burst/qps seconds (qps 0 after defaulting cannot happen; guard anyway).
    let limits = &config.effective.config.client_connection;
    let burst = u64::try_from(limits.burst.max(1)).unwrap_or(1);
    let window = Duration::from_secs_f64(burst as f64 / f64::from(limits.qps.max(0.001)));
    let builder = kube::client::ClientBuilder::try_from(kube_config).map_err(Error::Build)?;
    Ok(builder.with_layer(&tower::limit::RateLimitLayer::new(burst, window)).build())
}
