//! Bodies: read up to a cap for the hooks, or stream through unchanged past it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The body type the proxy sends both ways.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A whole body in memory.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A body as the hooks get it.
#[derive(Debug)]
pub enum Captured {
    /// The whole body, within the cap.
    Full(Bytes),
    /// Larger than the cap: the part already read, then the rest, passed on unchanged.
    Streamed(Prefixed),
}

impl Captured {
    /// Into a body to send on.
    pub fn into_body(self) -> ProxyBody {
        match self {
            Captured::Full(b) => full(b),
            Captured::Streamed(p) => p.boxed(),
        }
    }
}

/// A body of some chunks already read followed by the rest of an incoming body.
#[derive(Debug)]
pub struct Prefixed {
    prefix: VecDeque<Bytes>,
    rest: Incoming,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(b) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let pre: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        let r = self.rest.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(r.lower() + pre);
        if let Some(u) = r.upper() {
            h.set_upper(u + pre);
        }
        h
    }
}

/// Reads `body` while it stays within `cap` bytes. A body declared (Content-Length) or found to
/// be larger is not buffered further: it streams through, prefix first.
pub async fn capture(mut body: Incoming, cap: usize) -> Result<Captured, hyper::Error> {
    if body.size_hint().lower() > cap as u64 {
        return Ok(Captured::Streamed(Prefixed { prefix: VecDeque::new(), rest: body }));
    }
    let mut chunks = VecDeque::new();
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            size += data.len();
            chunks.push_back(data);
            if size > cap {
                return Ok(Captured::Streamed(Prefixed { prefix: chunks, rest: body }));
            }
        }
    }
    let mut all = BytesMut::with_capacity(size);
    for c in chunks {
        all.extend_from_slice(&c);
    }
    Ok(Captured::Full(all.freeze()))
}

/// An incoming body passed on as it is.
pub fn prefixed(rest: Incoming) -> Prefixed {
    Prefixed { prefix: VecDeque::new(), rest }
}

impl Prefixed {
    /// Boxed.
    pub fn into_boxed(self) -> ProxyBody {
        self.boxed()
    }
}

/// A [`Prefixed`] body boxed.
pub fn boxed(p: Prefixed) -> ProxyBody {
    p.boxed()
}
