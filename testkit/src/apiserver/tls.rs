//! TLS for the test API server, as a real cluster serves it: a throwaway CA (its PEM is what a
//! kubeconfig's `certificate-authority` points at) and a server certificate for 127.0.0.1 and
//! `localhost`; a listener that completes the TLS handshake before a connection is served.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::gate::{GatedListener, GatedStream};

/// A CA and a server identity signed by it.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl TlsIdentity {
    /// A fresh CA and a server certificate for 127.0.0.1 / localhost.
    pub fn generate() -> io::Result<TlsIdentity> {
        let ca_key = KeyPair::generate().map_err(other)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "kubenat test CA");
        let ca = ca_params.self_signed(&ca_key).map_err(other)?;
        let key = KeyPair::generate().map_err(other)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(other)?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(other)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity { ca_pem: ca.pem(), acceptor: TlsAcceptor::from(Arc::new(config)) })
    }
}

/// A [`GatedListener`] whose connections are served over TLS (failed handshakes are dropped).
pub struct TlsListener {
    inner: GatedListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// Wraps `inner`.
    pub fn new(inner: GatedListener, identity: &TlsIdentity) -> TlsListener {
        TlsListener { inner, acceptor: identity.acceptor.clone() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<GatedStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = self.inner.accept().await;
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, addr),
                Err(error) => eprintln!("test apiserver: TLS handshake from {addr} failed: {error}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
