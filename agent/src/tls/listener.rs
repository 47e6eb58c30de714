//! Accept loop: TCP accept, connection limit, TLS handshake with a timeout (each in its own task so
//! a slow client never blocks others), then the connection goes to tonic with its `PeerInfo`.

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
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use super::peer::{PeerInfo, RoleMap};
use super::server::ReloadableAcceptor;

/// An accepted, authenticated connection. Holds its slot of `api.max_connections` until dropped.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    _slot: OwnedSemaphorePermit,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
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
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

pub struct AcceptSettings {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// Starts accepting on `listener`; the stream ends when `token` is cancelled.
pub fn spawn_accept_loop(
    listener: TcpListener,
    acceptor: Arc<ReloadableAcceptor>,
    roles: Arc<RoleMap>,
    settings: AcceptSettings,
    token: CancellationToken,
) -> (ReceiverStream<Result<TlsConn, io::Error>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
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
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.current();
            let (tx, roles, timeout) = (tx.clone(), roles.clone(), settings.handshake_timeout);
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
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
                // The verifier demands a client certificate, so a finished handshake has one.
                let Some(leaf) = stream.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
                    return;
                };
                let info = roles.resolve(leaf.as_ref(), Some(remote));
                let _ = tx.send(Ok(TlsConn { stream, info, _slot: slot })).await;
            });
        }
    });
    (ReceiverStream::new(rx), handle)
}
