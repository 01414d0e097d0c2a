//! The bodies the layer hands on: the request body (buffered when the request is keyed, as its
//! fingerprint needs it whole) and the response body (streamed to the client, and for a
//! stored response captured up to the cap, the completion written when it ends).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sentinel_core::{Execution, UncertainReason};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::BoxError;
use crate::stored::StoredResponse;

pin_project! {
    /// The request body the inner service receives: the buffered bytes of a keyed request, or
    /// the original body of one the layer passed through.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        kind: RequestKind<B>,
    }
}

pin_project! {
    #[project = RequestKindProj]
    #[derive(Debug)]
    enum RequestKind<B> {
        // A keyed request's body, read whole (it is fingerprinted), until it is taken.
        Buffered { data: Option<Bytes> },
        // A request the layer does not apply to, untouched.
        Streaming { #[pin] inner: B },
    }
}

/// The one frame of bytes held whole, once.
fn next_frame(data: &mut Option<Bytes>) -> Option<Result<Frame<Bytes>, BoxError>> {
    data.take().map(|d| Ok(Frame::data(d)))
}

fn exact(data: Option<&Bytes>) -> SizeHint {
    SizeHint::with_exact(data.map_or(0, |d| d.len() as u64))
}

impl<B> RequestBody<B> {
    pub(crate) fn buffered(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: RequestKind::Buffered { data },
        }
    }

    pub(crate) fn streaming(inner: B) -> Self {
        Self {
            kind: RequestKind::Streaming { inner },
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            RequestKindProj::Buffered { data } => Poll::Ready(next_frame(data)),
            RequestKindProj::Streaming { inner } => inner
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Buffered { data } => data.is_none(),
            RequestKind::Streaming { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Buffered { data } => exact(data.as_ref()),
            RequestKind::Streaming { inner } => inner.size_hint(),
        }
    }
}

/// The execution a response body finishes, and what it has captured so far.
pub(crate) struct Capture {
    execution: Option<Execution<Value, Value>>,
    status: http::StatusCode,
    headers: Vec<(String, String)>,
    data: Vec<u8>,
    cap: usize,
    overflowed: bool,
    /// Bytes seen, stored or not, and how many the response declared (`Content-Length`).
    received: u64,
    expected: Option<u64>,
    /// The inner body said it has no more frames.
    ended: bool,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("key", &self.execution.as_ref().map(Execution::key))
            .field("received", &self.received)
            .field("overflowed", &self.overflowed)
            .finish_non_exhaustive()
    }
}

impl Capture {
    pub(crate) fn new(
        execution: Execution<Value, Value>,
        status: http::StatusCode,
        headers: Vec<(String, String)>,
        cap: usize,
        expected: Option<u64>,
    ) -> Self {
        Self {
            execution: Some(execution),
            status,
            headers,
            data: Vec::new(),
            cap,
            overflowed: false,
            received: 0,
            expected,
            ended: false,
        }
    }

    fn add(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        if self.overflowed {
            return;
        }
        if self.data.len() + data.len() > self.cap {
            // Never stored truncated: the rest still streams to the client.
            self.overflowed = true;
            self.data = Vec::new();
        } else {
            self.data.extend_from_slice(data);
        }
    }

    /// Writes the outcome on a task of its own (a client going away cannot cut it short).
    pub(crate) fn finish(&mut self) -> Option<JoinHandle<()>> {
        let execution = self.execution.take()?;
        let (status, headers) = (self.status, std::mem::take(&mut self.headers));
        let (data, overflowed, cap) = (std::mem::take(&mut self.data), self.overflowed, self.cap);
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(handle.spawn(async move {
            let key = execution.key().to_owned();
            if overflowed {
                tracing::warn!(
                    key = %key,
                    cap,
                    "the response body is over the storage cap: it went to the client whole, \
                     and the key is left uncertain for an operator (it is never stored truncated)"
                );
                execution.abandon(UncertainReason::NotRecorded).await;
                return;
            }
            let stored = StoredResponse::new(status, headers, data);
            match serde_json::to_value(stored) {
                Ok(value) => {
                    if let Err(e) = execution.complete(value).await {
                        tracing::warn!(key = %key, error = %e, "the response was not stored; the key is uncertain");
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "the response could not be encoded");
                    execution.abandon(UncertainReason::NotRecorded).await;
                }
            }
        }))
    }
}

impl Drop for Capture {
    /// A body the server stopped polling once it had sent every declared byte is complete; any
    /// other body dropped part-way leaves the key uncertain (the handler ran, the client did not
    /// get the whole response), which dropping the execution does.
    fn drop(&mut self) {
        if self.ended || self.expected == Some(self.received) {
            self.finish();
        }
    }
}

pin_project! {
    /// The response body the layer returns: the inner service's body (streamed to the client,
    /// and for a response that is stored, captured up to the cap, the outcome written when it
    /// ends), or a replay or problem of the layer's own.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    #[derive(Debug)]
    enum ResponseKind<B> {
        // The inner service's body, untouched (a request the layer did not claim, or a
        // response it does not store).
        Passthrough { #[pin] inner: B },
        // A replay, or a problem the layer answered itself, until it is sent.
        Full { data: Option<Bytes> },
        // A small first response read whole and stored before its head went out: its frames,
        // then the error the body ended with, if it broke.
        Frames { frames: VecDeque<Frame<Bytes>>, error: Option<BoxError> },
        // The first response of a key: streamed, and captured up to the cap. `finishing` is
        // the completion in flight and the frame held back until it is written.
        Capturing {
            #[pin]
            inner: B,
            capture: Option<Capture>,
            finishing: Option<(JoinHandle<()>, Option<Frame<Bytes>>)>,
            done: bool,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: ResponseKind::Full { data },
        }
    }

    pub(crate) fn passthrough(inner: B) -> Self {
        Self {
            kind: ResponseKind::Passthrough { inner },
        }
    }

    /// A small first response (every byte within `limit`, which is at most the storage cap),
    /// read whole and stored before the response is handed out, so that the server writes its
    /// head and body together. Streaming it instead would send the head alone, then the body
    /// after the store's write: on a socket without `TCP_NODELAY` that second small write waits
    /// for the client's delayed ACK (about 40 ms on Linux). Larger bodies stream (`capturing`).
    pub(crate) async fn stored_first(inner: B, mut capture: Capture) -> Self
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut inner = std::pin::pin!(inner);
        let mut frames = VecDeque::new();
        let mut error = None;
        while let Some(frame) = std::future::poll_fn(|cx| inner.as_mut().poll_frame(cx)).await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        capture.add(data);
                    }
                    frames.push_back(frame);
                }
                Err(e) => {
                    error = Some(e.into());
                    break;
                }
            }
        }
        if error.is_none() {
            capture.ended = true;
            if let Some(task) = capture.finish() {
                let _ = task.await;
            }
        } else if let Some(execution) = capture.execution.take() {
            // The body broke after the handler answered: it ran, and the client will not get
            // the whole response.
            execution.abandon(UncertainReason::Failed).await;
        }
        Self {
            kind: ResponseKind::Frames { frames, error },
        }
    }

    /// Whether a first response's body is small enough for `stored_first` under `cap`.
    pub(crate) fn is_small(body: &B, cap: usize) -> bool
    where
        B: Body,
    {
        const SMALL: u64 = 64 << 10;
        body.size_hint()
            .upper()
            .is_some_and(|n| n <= SMALL.min(cap as u64))
    }

    pub(crate) fn capturing(inner: B, capture: Capture) -> Self
    where
        B: Body,
    {
        let mut capture = capture;
        capture.ended = inner.is_end_stream();
        Self {
            kind: ResponseKind::Capturing {
                inner,
                capture: Some(capture),
                finishing: None,
                done: false,
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            ResponseKindProj::Passthrough { inner } => inner
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            ResponseKindProj::Full { data } => Poll::Ready(next_frame(data)),
            ResponseKindProj::Frames { frames, error } => {
                Poll::Ready(frames.pop_front().map(Ok).or_else(|| error.take().map(Err)))
            }
            ResponseKindProj::Capturing {
                mut inner,
                capture,
                finishing,
                done,
            } => loop {
                if *done {
                    return Poll::Ready(None);
                }
                if let Some((task, held)) = finishing {
                    // The last frame goes out once the outcome is written: a client that has
                    // the whole response and retries gets the replay.
                    let _ = ready!(Pin::new(task).poll(cx));
                    let held = held.take();
                    *finishing = None;
                    *done = true;
                    return Poll::Ready(held.map(Ok));
                }
                match ready!(inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let (Some(data), Some(c)) = (frame.data_ref(), capture.as_mut()) {
                            c.add(data);
                        }
                        if !inner.is_end_stream() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        match capture.take().and_then(|mut c| c.finish()) {
                            Some(task) => *finishing = Some((task, Some(frame))),
                            None => return Poll::Ready(Some(Ok(frame))),
                        }
                    }
                    Some(Err(e)) => {
                        // The body broke after the handler answered: it ran, and what the
                        // client got is not the whole response.
                        if let Some(execution) = capture.take().and_then(|mut c| c.execution.take())
                        {
                            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                                handle.spawn(execution.abandon(UncertainReason::Failed));
                            }
                        }
                        *done = true;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    None => match capture.take().and_then(|mut c| c.finish()) {
                        Some(task) => *finishing = Some((task, None)),
                        None => {
                            *done = true;
                            return Poll::Ready(None);
                        }
                    },
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Passthrough { inner } => inner.is_end_stream(),
            ResponseKind::Full { data } => data.is_none(),
            ResponseKind::Frames { frames, error } => frames.is_empty() && error.is_none(),
            // Never before the completion is written: the server keeps polling until then.
            ResponseKind::Capturing { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Passthrough { inner } | ResponseKind::Capturing { inner, .. } => {
                inner.size_hint()
            }
            ResponseKind::Full { data } => exact(data.as_ref()),
            ResponseKind::Frames { frames, .. } => SizeHint::with_exact(
                frames
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.len() as u64)
                    .sum(),
            ),
        }
    }
}
