//! Accept loop: TCP accept, connection limit, handshake limits (in total and per source address),
//! TLS handshake with a timeout (each in its own task so a slow client never blocks others), then
//! the connection is registered (so a reload can close it) and goes to tonic with its `PeerInfo`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

use super::handshake_limit::{HandshakeLimits, HandshakeRefusal};
use super::idle::close_when_idle;
use super::peer::PeerInfo;
use super::server::{ReloadableAcceptor, SessionGuard};
use super::sessions::SessionCert;

/// An accepted, authenticated connection. Holds its slot of `api.max_connections` and its
/// registration until dropped. Once `closed` fires (its certificate was revoked by a reload, or it
/// was idle), every read and write fails, so the HTTP/2 connection and all its streams end.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Cancels the close token when the connection ends, which stops its idle watcher.
    _ended: DropGuard,
    _session: SessionGuard,
    _slot: OwnedSemaphorePermit,
}

impl TlsConn {
    /// Registers the waker with the close token too, so a connection waiting for the client wakes
    /// up when it is closed.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.closed.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the agent: certificate no longer accepted",
            )
        })
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(closed) = this.poll_closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(closed) = this.poll_closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(closed) = this.poll_closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

pub struct AcceptSettings {
    pub max_connections: usize,
    pub max_pending_handshakes: u32,
    pub max_handshakes_per_address: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Starts accepting on `listener`; the stream ends when `token` is cancelled.
pub fn spawn_accept_loop(
    listener: TcpListener,
    acceptor: Arc<ReloadableAcceptor>,
    settings: AcceptSettings,
    token: CancellationToken,
) -> (ReceiverStream<Result<TlsConn, io::Error>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let handshakes = HandshakeLimits::new(settings.max_pending_handshakes, settings.max_handshakes_per_address);
    let handle = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = token.cancelled() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "refuse connection: api.max_connections ({}) reached", settings.max_connections);
                continue;
            };
            let handshake = match handshakes.try_begin(remote.ip()) {
                Ok(h) => h,
                Err(HandshakeRefusal::Total) => {
                    tracing::warn!(%remote, "refuse connection: api.max_pending_handshakes ({}) in progress", settings.max_pending_handshakes);
                    continue;
                }
                Err(HandshakeRefusal::Address) => {
                    // Debug: one host flooding us must not flood the log as well.
                    tracing::debug!(%remote, "refuse connection: api.max_handshakes_per_address reached for this address");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let snapshot = acceptor.current();
            let (tx, acceptor, timeout) = (tx.clone(), acceptor.clone(), settings.handshake_timeout);
            let idle_timeout = settings.idle_timeout;
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(timeout, snapshot.acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%remote, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "TLS handshake timed out after {timeout:?}");
                        return;
                    }
                };
                drop(handshake);
                // The verifier demands a client certificate, so a finished handshake has one.
                let Some(chain) = stream.get_ref().1.peer_certificates().filter(|c| !c.is_empty()) else {
                    return;
                };
                let chain: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
                let info = snapshot.roles.resolve(&chain, Some(remote));
                let cert = SessionCert { chain, role: info.role.clone(), identity: info.identity.clone(), remote };
                let close = CancellationToken::new();
                let Some(session) = acceptor.register(&snapshot, cert, close.clone()) else {
                    return;
                };
                tokio::spawn(close_when_idle(info.activity.clone(), idle_timeout, close.clone()));
                let closed = Box::pin(close.clone().cancelled_owned());
                let conn = TlsConn { stream, info, closed, _ended: close.drop_guard(), _session: session, _slot: slot };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    (ReceiverStream::new(rx), handle)
}
