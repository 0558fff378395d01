//! Request metrics at the edge: every request counted under its route
//! template (never the raw path: ids would explode the label space), its
//! latency to headers, and its body bytes in both directions.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::OPTIONS => "OPTIONS",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Middleware: counts the request, its latency to headers, and its body
/// bytes in both directions, under the matched route template.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let bytes_in = metrics.route_bytes_in(&route);
    let request = request.map(|body| Body::new(Counted::new(body, bytes_in)));
    let response = next.run(request).await;
    metrics.request_done(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let bytes_out = metrics.route_bytes_out(&route);
    let mut response = response.map(|body| Body::new(Counted::new(body, bytes_out)));
    // Says the answer is mxmedia's, so `mxmedia selfcheck --public-url` can
    // tell which service a proxy sent a route to.
    response
        .headers_mut()
        .insert(SERVED_BY, HeaderValue::from_static("mxmedia"));
    response
}

/// The response header naming mxmedia as the responder.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// A body that adds the length of each data frame to a counter, and keeps
/// the inner body's size hint (so fixed-length bodies stay fixed-length).
pub struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: Counter) -> Self {
        Self { inner, counter }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
