//! The live connections, each with its client certificate and a way to close it. A reload of the
//! TLS files checks every one against the new configuration: a connection whose certificate is
//! now revoked (or expired, or no longer trusted, or no longer of the same role) is closed, with
//! the streams it carries. Certificates are only checked at the handshake otherwise, so without
//! this a revoked orchestrator would keep its open connection for as long as it likes.

use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use super::peer::{NoRole, Role};

/// What a connection was admitted with.
#[derive(Debug, Clone)]
pub struct SessionCert {
    /// Leaf first, then the intermediates the client sent.
    pub chain: Vec<CertificateDer<'static>>,
    pub role: Result<Role, NoRole>,
    pub identity: String,
    pub remote: SocketAddr,
}

struct Session {
    cert: SessionCert,
    /// Cancelled to close the connection (`listener::TlsConn` watches it).
    close: CancellationToken,
}

#[derive(Default)]
pub struct Sessions {
    next_id: u64,
    live: HashMap<u64, Session>,
}

impl Sessions {
    pub fn insert(&mut self, cert: SessionCert, close: CancellationToken) -> u64 {
        self.next_id += 1;
        self.live.insert(self.next_id, Session { cert, close });
        self.next_id
    }

    pub fn remove(&mut self, id: u64) {
        self.live.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Closes every session `refusal` finds a reason to refuse, logging who and why; returns how
    /// many were closed.
    pub fn close_refused(&mut self, refusal: impl Fn(&SessionCert) -> Option<String>) -> usize {
        let mut closed = 0;
        self.live.retain(|_, session| match refusal(&session.cert) {
            None => true,
            Some(why) => {
                tracing::warn!(
                    remote = %session.cert.remote,
                    identity = %session.cert.identity,
                    "closing connection after the TLS reload: {why}"
                );
                session.close.cancel();
                closed += 1;
                false
            }
        });
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(identity: &str) -> SessionCert {
        SessionCert {
            chain: Vec::new(),
            role: Ok(Role::Monitor),
            identity: identity.into(),
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    #[test]
    fn close_refused_cancels_exactly_the_refused_sessions() {
        let mut sessions = Sessions::default();
        let (revoked, kept) = (CancellationToken::new(), CancellationToken::new());
        sessions.insert(cert("revoked"), revoked.clone());
        let kept_id = sessions.insert(cert("kept"), kept.clone());
        let closed = sessions.close_refused(|c| (c.identity == "revoked").then(|| "revoked".to_owned()));
        assert_eq!(closed, 1);
        assert!(revoked.is_cancelled());
        assert!(!kept.is_cancelled(), "the other session stays open");
        assert_eq!(sessions.len(), 1);
        sessions.remove(kept_id);
        assert!(sessions.is_empty());
    }
}
