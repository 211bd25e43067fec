//! Flannel integration: what kubenat reads from flannel's files.

pub mod subnet_env;
pub mod watch;
