//! HTTPS on the listener: rustls, TLS 1.3 and 1.2, HTTP/2 offered through
//! ALPN, optional client certificates (mutual TLS), and certificates read
//! again when their files change, so a rotation needs no restart and drops
//! no open connection.
//!
//! Handshakes run on tasks of their own and only finished ones reach the
//! HTTP server: a client that stalls in its handshake holds up nobody.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::listener::{Accept, Connection, Limits, Slots, accept_tcp};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

/// Where the listener's certificate, key and client CA live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client must present a certificate.
    pub client_certificate_required: bool,
    /// How long a client gets to finish its handshake.
    pub handshake_timeout: Duration,
}

/// Why the TLS settings could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or not the PEM it should be.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The files are readable but do not make a usable configuration (a
    /// key that does not match the certificate).
    #[error("{0}")]
    Config(String),
    /// The listening socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The rustls server configuration the files describe.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots.add(certificate).map_err(|e| file_error(path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_certificate_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| file_error(path, format!("cannot verify clients with it: {e}")))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verified certificate a client presented: the service it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The DNS names in its subject alternative names.
    pub dns_names: Vec<String>,
    /// SHA-256 of the certificate, hex: names it when it has no DNS name.
    pub fingerprint: String,
}

impl ClientCertificate {
    /// Reads the names of an already verified certificate.
    pub fn from_der(der: &CertificateDer<'_>) -> Self {
        let dns_names = webpki::EndEntityCert::try_from(der)
            .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
            .unwrap_or_default();
        Self {
            dns_names,
            fingerprint: hex::encode(Sha256::digest(der.as_ref())),
        }
    }

    /// The name the service goes by: its first DNS name, else its
    /// fingerprint.
    pub fn name(&self) -> &str {
        self.dns_names.first().unwrap_or(&self.fingerprint)
    }
}

/// What a request knows of its TLS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The name of the client certificate verified in the handshake.
    pub client_certificate: Option<Arc<str>>,
}

impl TlsPeer {
    fn of(connection: &TlsStream<TcpStream>, remote: SocketAddr) -> Self {
        let client_certificate = connection
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .map(|der| Arc::from(ClientCertificate::from_der(der).name()));
        if let Some(name) = &client_certificate {
            debug!(%remote, client = &**name, "client certificate accepted");
        }
        Self { client_certificate }
    }
}

/// A listener that hands the HTTP server finished TLS connections.
pub struct TlsListener {
    ready: mpsc::Receiver<Connection<TlsStream<TcpStream>>>,
}

impl TlsListener {
    /// Serves TLS on `tcp` with `files`, which are watched for changes from
    /// then on, holding at most `limits.max_connections` connections
    /// (handshakes in progress included). Fails when the files do not make
    /// a usable configuration.
    pub fn new(tcp: TcpListener, files: TlsFiles, limits: &Limits) -> Result<Self, TlsError> {
        let current = Arc::new(RwLock::new(server_config(&files)?));
        // Room for a burst of finished handshakes while the server is busy.
        let (tx, ready) = mpsc::channel(256);
        let slots = Slots::new(limits.max_connections);
        tokio::spawn(accept(
            tcp,
            slots,
            current.clone(),
            tx.clone(),
            files.handshake_timeout,
        ));
        tokio::spawn(reload_on_change(files, current, tx));
        Ok(Self { ready })
    }
}

impl Accept for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn accept(&mut self) -> Option<Connection<Self::Io>> {
        self.ready.recv().await
    }
}

type Current = Arc<RwLock<Arc<ServerConfig>>>;

fn in_force(current: &Current) -> Arc<ServerConfig> {
    current
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Accepts TCP connections and runs each handshake on a task of its own
/// until the listener is dropped.
async fn accept(
    tcp: TcpListener,
    slots: Arc<Slots>,
    current: Current,
    ready: mpsc::Sender<Connection<TlsStream<TcpStream>>>,
    handshake_timeout: Duration,
) {
    loop {
        let accepted = tokio::select! {
            accepted = accept_tcp(&tcp, &slots) => accepted,
            () = ready.closed() => return,
        };
        let Some((stream, remote, slot)) = accepted else {
            return;
        };
        let acceptor = TlsAcceptor::from(in_force(&current));
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(io)) => {
                    let peer = Some(TlsPeer::of(&io, remote));
                    let connection = Connection {
                        io,
                        remote,
                        slot,
                        peer,
                    };
                    let _ = ready.send(connection).await;
                }
                Ok(Err(error)) => debug!(%remote, %error, "TLS handshake failed"),
                Err(_) => debug!(%remote, "TLS handshake timed out"),
            }
        });
    }
}

/// The files' identities, for change detection.
fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    })
    .collect()
}

/// Rereads the files once a second when they changed. A configuration
/// that does not load (a key written before its certificate) keeps the
/// one in force and is tried again when the files change once more. The
/// files are looked at on the blocking pool, never on the runtime.
async fn reload_on_change<T>(files: TlsFiles, current: Current, alive: mpsc::Sender<T>) {
    let files = Arc::new(files);
    let watched = files.clone();
    let Ok(mut seen) = tokio::task::spawn_blocking(move || stamps(&watched)).await else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = alive.closed() => return,
        }
        let watched = files.clone();
        let last = seen.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let now = stamps(&watched);
            let loaded = (now != last).then(|| server_config(&watched));
            (now, loaded)
        })
        .await;
        let (now, loaded) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                warn!(%error, "TLS reload failed");
                continue;
            }
        };
        seen = now;
        match loaded {
            None => {}
            Some(Ok(config)) => {
                *current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                info!("TLS certificate reloaded; new connections use it");
            }
            Some(Err(error)) => {
                warn!(%error, "TLS files changed but do not load; keeping the ones in force")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_is_named() {
        let files = TlsFiles {
            cert: PathBuf::from("/nonexistent/cert.pem"),
            key: PathBuf::from("/nonexistent/key.pem"),
            client_ca: None,
            client_certificate_required: false,
            handshake_timeout: Duration::from_secs(1),
        };
        let error = server_config(&files).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: cert,
            client_ca: None,
            client_certificate_required: false,
            handshake_timeout: Duration::from_secs(1),
        };
        let error = server_config(&files).unwrap_err().to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
