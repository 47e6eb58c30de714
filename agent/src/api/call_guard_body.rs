//! A response body that holds a [`CallGuard`] until it ends, so a call, stream or not, counts as
//! open for exactly as long as its answer is being sent (see `tls::idle`).

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;

use crate::tls::idle::CallGuard;

pub struct GuardedBody {
    inner: Body,
    _call: CallGuard,
}

impl GuardedBody {
    pub fn wrap(inner: Body, call: CallGuard) -> Body {
        Body::new(GuardedBody { inner, _call: call })
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
