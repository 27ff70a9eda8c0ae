//! TLS for the client side (rustls with the ring provider): trust a cluster CA, optionally present a
//! client certificate. [`ClientTls`] lets a caller swap the configuration while connections are made
//! (the node reloads its certificate files; see `drakkar_server::tls`).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setup failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file or buffer did not hold what was expected.
    #[error("{what}: {message}")]
    Pem {
        /// What was being read.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Supplies the client TLS configuration for each new connection.
pub trait ClientTls: Send + Sync {
    /// The configuration to use for a connection made now.
    fn config(&self) -> Arc<rustls::ClientConfig>;
}

impl ClientTls for Arc<rustls::ClientConfig> {
    fn config(&self) -> Arc<rustls::ClientConfig> {
        self.clone()
    }
}

/// The ring crypto provider (never aws-lc: one TLS stack in the workspace).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM buffer (at least one).
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: what.into(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what: what.into(), message: "no certificate found".into() });
    }
    Ok(certs)
}

/// The first private key in a PEM buffer.
pub fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| TlsError::Pem { what: what.into(), message: e.to_string() })
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

/// A root store holding every certificate of a CA bundle.
pub fn root_store(ca_pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in parse_certs(ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// A client configuration trusting `ca_pem`, presenting `identity` (certificate chain PEM, key PEM) if
/// given, speaking HTTP/2 (ALPN `h2`).
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?);
    let mut cfg = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(parse_certs(cert, "client certificate")?, parse_key(key, "client key")?)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// [`client_config`] from files.
pub fn client_config_from_files(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let ca = read_file(ca)?;
    match identity {
        Some((c, k)) => client_config(&ca, Some((&read_file(c)?, &read_file(k)?))),
        None => client_config(&ca, None),
    }
}
