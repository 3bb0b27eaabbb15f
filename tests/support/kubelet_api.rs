//! The stand-in kubelet's API: the one route the apiserver calls for
//! `kubectl logs` (`GET /containerLogs/{namespace}/{pod}/{container}`,
//! `?follow=true` streaming until the container ends), over TLS, as a
//! kubelet serves it. The apiserver reaches it through the Node the
//! stand-in registers, which names this address and port.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

/// The output of the containers this kubelet ran.
pub struct Logs {
    dir: tempfile::TempDir,
    ended: Mutex<HashSet<String>>,
}

impl Logs {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            dir: tempfile::tempdir().expect("a log directory"),
            ended: Mutex::default(),
        })
    }

    /// Where pod `pod`'s agent container writes its output.
    pub fn path(&self, pod: &str) -> PathBuf {
        self.dir.path().join(format!("{pod}.log"))
    }

    /// The container of `pod` ended: a follower stops after its last bytes.
    pub fn ended(&self, pod: &str) {
        self.ended
            .lock()
            .expect("the ended pods")
            .insert(pod.to_owned());
    }

    fn has_ended(&self, pod: &str) -> bool {
        self.ended.lock().expect("the ended pods").contains(pod)
    }
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

async fn container_logs(
    State(logs): State<Arc<Logs>>,
    Path((_namespace, pod, _container)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let path = logs.path(&pod);
    if !query.follow {
        return match tokio::fs::read(&path).await {
            Ok(bytes) => bytes.into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let stream = futures::stream::unfold(0usize, move |sent| {
        let (logs, path, pod) = (logs.clone(), path.clone(), pod.clone());
        async move {
            loop {
                // Ended is read first: output written before the end is
                // then still sent by the read below.
                let ended = logs.has_ended(&pod);
                let bytes = tokio::fs::read(&path).await.unwrap_or_default();
                if bytes.len() > sent {
                    let fresh = bytes[sent..].to_vec();
                    return Some((Ok::<_, std::io::Error>(fresh), bytes.len()));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    Body::from_stream(stream).into_response()
}

/// TCP with a TLS handshake per connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(stream) = self.tls.accept(tcp).await {
                return (stream, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves the kubelet API for `logs` on a loopback port (a self-signed
/// certificate: the test apiserver does not verify kubelets); its port.
pub async fn serve(logs: Arc<Logs>) -> u16 {
    smolpaws::tls::install_default_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("a self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("a TLS configuration");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = tcp.local_addr().expect("an address").port();
    let listener = TlsListener {
        tcp,
        tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let router = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(logs);
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the kubelet API serves");
    });
    port
}
