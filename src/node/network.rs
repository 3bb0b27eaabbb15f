//! The node's network namespace, reached from the host's.
//!
//! A socket belongs to the network namespace of the thread that made it, for
//! its whole life, whichever thread uses it later. So a process on the host
//! can serve pods (a listener made inside the node's namespace, on
//! [`super::NODE_IP`]) and reach the node's loopback-only apiserver (a
//! forward from the host's loopback whose outgoing sockets are made inside)
//! while its own threads, and every other socket of it, stay on the host.
//! Each socket is made on a short-lived thread that joins the namespace and
//! ends, so no thread of a runtime's pool is ever moved.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Moves the calling thread into the network namespace at `namespace` (a
/// `/proc/<pid>/ns/net` path).
pub fn enter(namespace: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(namespace)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `make` on a thread of its own inside `namespace` and hands back
/// what it made.
fn inside<T: Send>(
    namespace: &Path,
    make: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(namespace)?;
                make()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("a namespace thread panicked")))
    })
}

/// A listener on `address` inside `namespace`, served by the caller's
/// runtime.
pub fn bind(namespace: &Path, address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = inside(namespace, || {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    TcpListener::from_std(listener)
}

/// Whether something inside `namespace` accepts connections on `address`.
pub fn reachable(namespace: &Path, address: SocketAddr) -> bool {
    inside(namespace, || std::net::TcpStream::connect(address)).is_ok()
}

/// A connection to `address` inside `namespace` (on its loopback, the
/// connect completes at once).
async fn connect(namespace: PathBuf, address: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::task::spawn_blocking(move || {
        inside(&namespace, || {
            let stream = std::net::TcpStream::connect(address)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    TcpStream::from_std(stream)
}

/// Forwards each connection to `listener` (on the host) to `target` inside
/// `namespace`, byte for byte (TLS passes through untouched), until `stop`.
pub async fn forward(
    listener: TcpListener,
    namespace: PathBuf,
    target: SocketAddr,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        let namespace = namespace.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut server = match connect(namespace, target).await {
                Ok(server) => server,
                Err(error) => {
                    debug!(%error, %target, "the forward's target refused a connection");
                    return;
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                // Either side closing ends the connection: nothing to report.
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}
