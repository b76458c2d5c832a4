//! HTTPS on the listener, against the stand-in upstream: certificates made
//! by the test with the `openssl` command (a CA, a server certificate,
//! client certificates from the CA and from another one), HTTP/2 through
//! ALPN, TLS 1.2 beside 1.3, mutual TLS refused at the handshake, and a
//! certificate rotated on disk while a connection stays open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Server, recording_standin, run_check_with, standin_model};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A folder of certificates made for one test.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `NAME.pem` and `NAME.key`: a self-signed CA.
    #[rustfmt::skip]
    fn ca(&self, name: &str) {
        self.openssl(&[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", &format!("{name}.key"), "-out", &format!("{name}.pem"), "-days", "2",
            "-subj", &format!("/CN={name}"),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// `NAME.pem` and `NAME.key`: a certificate for `san` signed by `ca`,
    /// for a server or a client (`usage`: serverAuth or clientAuth).
    #[rustfmt::skip]
    fn leaf(&self, ca: &str, name: &str, san: &str, usage: &str, serial: u32) {
        std::fs::write(
            self.path(&format!("{name}.ext")),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        self.openssl(&[
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"),
            "-subj", &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.pem"),
            "-CAkey", &format!("{ca}.key"), "-set_serial", &serial.to_string(), "-days", "2",
            "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.pem"),
        ]);
    }

    /// Certificate and key in one PEM, as reqwest takes an identity.
    fn identity(&self, name: &str) -> reqwest::Identity {
        let mut pem = std::fs::read(self.path(&format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(self.path(&format!("{name}.key"))).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    }

    /// The CA `clients` and the certificate of the billing service from it.
    fn with_billing_client(self) -> Self {
        self.ca("clients");
        self.leaf(
            "clients",
            "billing",
            "DNS:billing.internal",
            "clientAuth",
            2,
        );
        self
    }

    /// The CA `ca` and a server certificate from it for 127.0.0.1.
    fn with_server(ca: &str) -> Self {
        let pki = Self::new();
        pki.ca(ca);
        pki.leaf(ca, "server", "DNS:localhost,IP:127.0.0.1", "serverAuth", 1);
        pki
    }
}

fn tls_config(pki: &Pki, upstream: &switchyard_standin::RunningStandin, extra: &str) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n{}",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        standin_model("chat", upstream, ""),
    )
}

/// A client trusting only the test CA `ca`, with `identity` if given.
fn https_client(pki: &Pki, ca: &str, identity: Option<&str>) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(pki.path(&format!("{ca}.pem"))).unwrap())
            .unwrap();
    let builder = reqwest::Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(30));
    match identity {
        Some(name) => builder.identity(pki.identity(name)),
        None => builder,
    }
}

async fn ask(
    client: &reqwest::Client,
    server: &Server,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(format!("{}/chat/completions", server.v1()))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
}

/// A raw TLS connection to the server (HTTP/1.1, no ALPN), trusting `ca`.
async fn raw_tls(
    server: &Server,
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = server.url.strip_prefix("https://").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// `GET /healthz` over an open HTTP/1.1 connection, kept alive.
async fn healthz(connection: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    connection
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = connection.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http2_by_alpn_http1_tls_1_2_and_the_official_sdks_against_standin() {
    let upstream = recording_standin().await;
    let pki = Pki::with_server("ca");
    let server = Server::start(&tls_config(&pki, &upstream, ""));
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // HTTP/2 when the client offers it, HTTP/1.1 when it offers only that.
    let h2 = https_client(&pki, "ca", None).build().unwrap();
    let answer = ask(&h2, &server).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    let body: Value = answer.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());
    let h1 = https_client(&pki, "ca", None).http1_only().build().unwrap();
    let answer = ask(&h1, &server).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_11);

    // A TLS 1.2-only client is served; the default is TLS 1.3.
    let mut old = raw_tls(&server, &pki.path("ca.pem"), &[&rustls::version::TLS12]).await;
    assert_eq!(
        old.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(healthz(&mut old).await.starts_with("HTTP/1.1 200"));
    let new = raw_tls(&server, &pki.path("ca.pem"), &[&rustls::version::TLS13]).await;
    assert_eq!(
        new.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // A client that does not trust the CA gets no answer.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stranger = reqwest::Client::builder().build().unwrap();
    assert!(ask(&stranger, &server).await.is_err());

    let ca = pki.path("ca.pem");
    // The script blocks; the stand-in answering it runs on this runtime.
    tokio::task::block_in_place(|| {
        run_check_with(
            &server,
            "tls_sdk_check.py",
            &[&server.url, ca.to_str().unwrap()],
            "tls sdk check passed",
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca() {
    let upstream = recording_standin().await;
    let pki = Pki::with_server("ca").with_billing_client();
    pki.ca("elsewhere");
    pki.leaf(
        "elsewhere",
        "intruder",
        "DNS:billing.internal",
        "clientAuth",
        3,
    );
    let client_ca = format!("client_ca = \"{}\"", pki.path("clients.pem").display());

    let server = Server::start(&tls_config(&pki, &upstream, &client_ca));
    let served = https_client(&pki, "ca", Some("billing")).build().unwrap();
    assert_eq!(ask(&served, &server).await.unwrap().status(), 200);
    let bare = https_client(&pki, "ca", None).build().unwrap();
    assert!(ask(&bare, &server).await.is_err(), "no certificate");
    let intruder = https_client(&pki, "ca", Some("intruder")).build().unwrap();
    assert!(
        ask(&intruder, &server).await.is_err(),
        "another CA's certificate"
    );
    // Nothing refused reached the upstream.
    assert_eq!(upstream.requests().len(), 1);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("billing.pem"),
        pki.path("billing.key"),
    );
    tokio::task::block_in_place(|| {
        run_check_with(
            &server,
            "tls_sdk_check.py",
            &[
                &server.url,
                ca.to_str().unwrap(),
                cert.to_str().unwrap(),
                key.to_str().unwrap(),
            ],
            "tls sdk check passed",
        );
    });
    drop(server);

    // Optional: a client may show no certificate, but one it shows must
    // be from the client CA.
    let server = Server::start(&tls_config(
        &pki,
        &upstream,
        &format!("{client_ca}\nclient_auth = \"optional\""),
    ));
    assert_eq!(ask(&bare, &server).await.unwrap().status(), 200);
    assert_eq!(ask(&served, &server).await.unwrap().status(), 200);
    assert!(ask(&intruder, &server).await.is_err());
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_reaches_new_connections_while_open_ones_go_on() {
    let upstream = recording_standin().await;
    let pki = Pki::with_server("ca");
    let server = Server::start(&tls_config(&pki, &upstream, ""));
    let ca = pki.path("ca.pem");
    let mut open = raw_tls(&server, &ca, &[&rustls::version::TLS13]).await;
    let first = open.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert!(healthz(&mut open).await.starts_with("HTTP/1.1 200"));

    // A new certificate from the same CA, moved into place as a
    // deployment tool would (key first, then certificate).
    pki.leaf("ca", "next", "DNS:localhost,IP:127.0.0.1", "serverAuth", 9);
    std::fs::rename(pki.path("next.key"), pki.path("server.key")).unwrap();
    std::fs::rename(pki.path("next.pem"), pki.path("server.pem")).unwrap();
    server
        .wait_for_log(&["TLS certificate reloaded"], Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no reload; logs:\n{}", server.logs()));

    let next = CertificateDer::from_pem_file(pki.path("server.pem")).unwrap();
    assert_ne!(first, next);
    let fresh = raw_tls(&server, &ca, &[&rustls::version::TLS13]).await;
    assert_eq!(fresh.get_ref().1.peer_certificates().unwrap()[0], next);
    // The connection opened before the rotation is still served.
    assert!(healthz(&mut open).await.starts_with("HTTP/1.1 200"));

    // Files that do not load keep the certificate in force.
    std::fs::write(pki.path("server.pem"), "garbage").unwrap();
    server
        .wait_for_log(&["do not load"], Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no refusal; logs:\n{}", server.logs()));
    let still = raw_tls(&server, &ca, &[&rustls::version::TLS13]).await;
    assert_eq!(still.get_ref().1.peer_certificates().unwrap()[0], next);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_and_holds_up_nobody() {
    let upstream = recording_standin().await;
    let pki = Pki::with_server("ca");
    let server = Server::start(&tls_config(&pki, &upstream, "handshake_timeout_secs = 1"));
    let addr = server.url.strip_prefix("https://").unwrap().to_owned();
    // Connections that say nothing, and one that stops mid-hello.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut halfway = TcpStream::connect(&addr).await.unwrap();
    halfway
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();

    // Meanwhile a real client is served.
    let client = https_client(&pki, "ca", None).build().unwrap();
    assert_eq!(ask(&client, &server).await.unwrap().status(), 200);

    // After the timeout the server has closed them all.
    for stream in silent.iter_mut().chain([&mut halfway]) {
        let mut buf = [0; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server closes a stalled handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

const MASTER: &str = "sy-master-for-tls-tests";

/// `METHOD path` with `body`, as `client` with the master key.
async fn as_master(
    client: &reqwest::Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(MASTER);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_certificate_stands_for_the_key_it_was_given_to_in_the_audit_trail() {
    let upstream = recording_standin().await;
    let pki = Pki::with_server("ca").with_billing_client();
    pki.leaf(
        "clients",
        "stranger",
        "DNS:stranger.internal",
        "clientAuth",
        3,
    );
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"\n\n[governance]\nauth = true\nmaster_key = \"{MASTER}\"\nledger_flush_ms = 100\n",
        pki.path("clients.pem").display()
    );
    let server = Server::start(&tls_config(&pki, &upstream, &extra));
    let bare = https_client(&pki, "ca", None).build().unwrap();
    let billing = https_client(&pki, "ca", Some("billing")).build().unwrap();
    let stranger = https_client(&pki, "ca", Some("stranger")).build().unwrap();

    let (status, tenant) = as_master(
        &bare,
        &server,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let key_body = json!({"tenant_id": tenant_id, "name": "billing service", "client_certificate": "billing.internal"});
    let (status, key) = as_master(
        &bare,
        &server,
        reqwest::Method::POST,
        "/admin/keys",
        Some(key_body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["client_certificate"], "billing.internal");
    let key_id = key["id"].as_str().unwrap().to_owned();
    // One certificate names one key.
    let (status, refused) = as_master(
        &bare,
        &server,
        reqwest::Method::POST,
        "/admin/keys",
        Some(key_body),
    )
    .await;
    assert_eq!(status, 400, "{refused}");

    // The certificate alone is the key: no Authorization header.
    let answer = billing
        .post(format!("{}/chat/completions", server.v1()))
        .header("x-request-id", "by-certificate")
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // No certificate and no key, or a certificate given to no key: 401.
    let refused = ask(&bare, &server).await.unwrap();
    assert_eq!(refused.status(), 401);
    let refused = ask(&stranger, &server).await.unwrap();
    assert_eq!(refused.status(), 401);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stranger.internal"),
        "{error}"
    );

    // The audit trail names the key, its tenant and the certificate.
    let mut record = Value::Null;
    for _ in 0..100 {
        let (_, audit) = as_master(
            &bare,
            &server,
            reqwest::Method::GET,
            "/admin/audit?request_id=by-certificate",
            None,
        )
        .await;
        record = audit["data"][0].clone();
        if !record.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record["key_id"], key_id.as_str(), "{record}");
    assert_eq!(record["tenant_id"], tenant_id.as_str());
    let caller = record["decisions"][0]["as"]
        .as_str()
        .unwrap_or_else(|| panic!("{record}"));
    assert!(
        caller.contains("by client certificate billing.internal"),
        "{caller}"
    );

    // A key sent over the same connection decides over the certificate.
    let (status, _) = as_master(
        &billing,
        &server,
        reqwest::Method::GET,
        "/admin/tenants",
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Revoking the key stops its certificate at once.
    let (status, _) = as_master(
        &bare,
        &server,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{key_id}"),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ask(&billing, &server).await.unwrap().status(), 401);
}

#[tokio::test]
async fn an_upstream_that_requires_a_client_certificate_is_reached_by_its_own_ca_and_name() {
    let upstream = recording_standin().await;
    // The upstream: a Switchyard under mutual TLS whose certificate names
    // models.internal only, reached by IP address.
    let pki = Pki::new();
    pki.ca("internal");
    pki.leaf("internal", "inner", "DNS:models.internal", "serverAuth", 5);
    pki.ca("gateways");
    pki.leaf(
        "gateways",
        "gateway",
        "DNS:gateway.internal",
        "clientAuth",
        6,
    );
    let inner = Server::start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n{}",
        pki.path("inner.pem").display(),
        pki.path("inner.key").display(),
        pki.path("gateways.pem").display(),
        standin_model("chat", &upstream, ""),
    ));
    let address = inner.url.strip_prefix("https://").unwrap();
    let deployment = |extra: &str| {
        format!(
            "[models.inner]\nbackend = \"openai\"\nbase_url = \"https://{address}/v1\"\nupstream_model = \"chat\"\n\
             tls_ca = \"{}\"\ntls_server_name = \"models.internal\"\n{extra}\n",
            pki.path("internal.pem").display(),
        )
    };
    let identity = format!(
        "tls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
        pki.path("gateway.pem").display(),
        pki.path("gateway.key").display()
    );
    let outer = Server::start(&deployment(&identity));
    let answer = outer
        .post_chat(&json!({"model": "inner", "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert_eq!(answer.status(), 200, "{}", outer.logs());
    let body: Value = answer.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert_eq!(upstream.requests().len(), 1);

    // Without the client certificate the upstream refuses the handshake,
    // and the client gets a gateway error, not a hang.
    let bare = Server::start(&deployment(""));
    let refused = bare
        .post_chat(&json!({"model": "inner", "messages": [{"role": "user", "content": "Hello"}]}))
        .await;
    assert!(refused.status().is_server_error(), "{}", refused.status());
    assert_eq!(upstream.requests().len(), 1);
}
