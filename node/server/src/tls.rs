//! TLS for the node (rustls, ring provider): the server side (clients and peers), the client side (the
//! node's connections to peers), peer authentication, and reloading of the certificate files.
//!
//! One certificate per node, valid for its advertised DNS name, with both the server and the client
//! extended key usages and the peer role (see [`crate::authz`]): it serves, and it authenticates the node
//! to its peers (mutual TLS). Clients present certificates of the same CA, by default required. The Raft
//! service accepts a stream only when the connection presented a client certificate that is valid, as a
//! server certificate, for the host name in the stream's `from` address: a client certificate (client
//! usage only, no DNS name) cannot speak Raft, and a node cannot claim another node's address.
//!
//! The files are polled; when one changes, every configuration is rebuilt. New connections use the new
//! certificates; a rebuild that fails keeps the previous configuration and logs the error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use drakkar_client::tls::{self as ctls, ClientTls, TlsError};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// Reading or parsing the files, or rustls refusing them.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// rustls refused the certificate or the roots.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A verifier could not be built from the CA.
    #[error("tls verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every connection must present a certificate signed by the CA (the default).
    #[default]
    Required,
    /// Connections without a certificate are accepted and act with the client role only (see
    /// [`crate::authz`]); peers still present theirs.
    AllowAnonymous,
}

/// Where the node's TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA bundle that signs nodes and clients.
    pub ca: PathBuf,
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// Client certificate policy.
    pub client_auth: ClientAuth,
}

struct Loaded {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    peers: Arc<WebPkiServerVerifier>,
}

/// The node's TLS configurations, rebuilt when the files change.
pub struct NodeTls {
    files: TlsFiles,
    loaded: RwLock<Arc<Loaded>>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn build(files: &TlsFiles) -> Result<Loaded, TlsSetupError> {
    let ca = ctls::read_file(&files.ca)?;
    let cert = ctls::read_file(&files.cert)?;
    let key = ctls::read_file(&files.key)?;
    let roots = Arc::new(ctls::root_store(&ca)?);
    let provider = ctls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let verifier = match files.client_auth {
        ClientAuth::AllowAnonymous => verifier.allow_unauthenticated().build()?,
        ClientAuth::Required => verifier.build()?,
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            ctls::parse_certs(&cert, "node certificate")?,
            ctls::parse_key(&key, "node key")?,
        )?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let client = ctls::client_config(&ca, Some((&cert, &key)))?;
    let peers = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
    Ok(Loaded { server: Arc::new(server), client: Arc::new(client), peers })
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NodeTls {
    /// Loads the files (an error if any is missing or invalid).
    pub fn load(files: TlsFiles) -> Result<Arc<NodeTls>, TlsSetupError> {
        let loaded = build(&files)?;
        let stamps = [&files.ca, &files.cert, &files.key].iter().map(|p| stamp(p)).collect();
        Ok(Arc::new(NodeTls { files, loaded: RwLock::new(Arc::new(loaded)), stamps: Mutex::new(stamps) }))
    }

    /// Whether connections without a certificate are accepted (as clients).
    pub fn allows_anonymous(&self) -> bool {
        self.files.client_auth == ClientAuth::AllowAnonymous
    }

    /// The server configuration for a connection accepted now.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        read(&self.loaded).server.clone()
    }

    /// Rebuilds the configurations if a file changed since the last look. `Ok(true)`: reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, TlsSetupError> {
        let now: Vec<_> =
            [&self.files.ca, &self.files.cert, &self.files.key].iter().map(|p| stamp(p)).collect();
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stamps == now {
                return Ok(false);
            }
            // Recorded before building: a broken file is reported once, not on every poll.
            *stamps = now;
        }
        let loaded = build(&self.files)?;
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Polls the files every `every` until `stop`.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match this.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %this.files.cert.display(), "TLS certificates reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificates changed but do not load; keeping the old ones")
                    }
                }
            }
        });
    }

    /// Checks that `certs` (a connection's client certificates, already verified against the CA by the
    /// handshake) identify the node at `from` (`host:port`): valid as a server certificate for `host`.
    pub fn verify_peer(&self, certs: &[CertificateDer<'static>], from: &str) -> Result<(), String> {
        let Some((end, rest)) = certs.split_first() else {
            return Err("no client certificate: the Raft service needs mutual TLS".into());
        };
        let host = drakkar_client::connect::host_port(from)
            .rsplit_once(':')
            .map_or(from, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("peer address {from}: {e}"))?;
        let peers = read(&self.loaded).peers.clone();
        peers
            .verify_server_cert(end, rest, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| format!("peer certificate is not valid for {host}: {e}"))
    }
}

impl ClientTls for NodeTls {
    fn config(&self) -> Arc<rustls::ClientConfig> {
        read(&self.loaded).client.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::pem::PemObject;

    /// Writes a CA and a certificate for `names` (server + client usages, or client only) into `dir`.
    fn pki(dir: &Path, names: &[&str], node: bool) -> Vec<CertificateDer<'static>> {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.extended_key_usages = if node {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("node.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("node-key.pem"), key.serialize_pem()).unwrap();
        CertificateDer::pem_slice_iter(cert.pem().as_bytes()).collect::<Result<_, _>>().unwrap()
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
            client_auth: ClientAuth::AllowAnonymous,
        }
    }

    #[test]
    fn peers_are_checked_against_their_claimed_address() {
        let dir = tempfile::tempdir().unwrap();
        let node = pki(dir.path(), &["node-1.drakkar", "127.0.0.1"], true);
        let tls = NodeTls::load(files(dir.path())).unwrap();
        assert!(tls.verify_peer(&node, "node-1.drakkar:7000").is_ok());
        assert!(tls.verify_peer(&node, "127.0.0.1:7000").is_ok());
        assert!(tls.verify_peer(&node, "node-2.drakkar:7000").is_err(), "another node's address");
        assert!(tls.verify_peer(&[], "node-1.drakkar:7000").is_err(), "no certificate");
        // A client certificate of the same CA: no server usage, no names.
        let other = tempfile::tempdir().unwrap();
        let client = pki(other.path(), &[], false);
        let tls2 = NodeTls::load(files(dir.path())).unwrap();
        assert!(tls2.verify_peer(&client, "node-1.drakkar:7000").is_err());
    }

    #[test]
    fn changed_files_are_reloaded_and_broken_ones_keep_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let first = pki(dir.path(), &["node-1.drakkar"], true);
        let tls = NodeTls::load(files(dir.path())).unwrap();
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");
        let before = tls.server_config();
        // New CA and certificate (a rotation); mtimes may not move within the same second, sizes do.
        std::thread::sleep(Duration::from_millis(10));
        let second = pki(dir.path(), &["node-1.drakkar", "node-1.drakkar.svc"], true);
        assert!(tls.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.server_config()));
        assert!(tls.verify_peer(&second, "node-1.drakkar.svc:7000").is_ok());
        assert!(tls.verify_peer(&first, "node-1.drakkar:7000").is_err(), "the old CA is gone");
        // A broken key: reported, and the working configuration stays.
        std::fs::write(dir.path().join("node-key.pem"), "not a key").unwrap();
        assert!(tls.reload_if_changed().is_err());
        assert!(tls.verify_peer(&second, "node-1.drakkar.svc:7000").is_ok());
        assert!(NodeTls::load(files(dir.path())).is_err());
    }
}
