//! The public listener: accepts connections up to a cap and serves HTTP/1.1
//! on each with two clocks a client cannot stop. A request's head must
//! arrive within `header_timeout` of its first byte, and a connection with
//! no request in progress closes after `idle_timeout`. Once a request is
//! being handled, the handler's own limits apply (upload rate and deadline,
//! download waits), so long transfers are never cut by these clocks.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
    time::Instant,
};

/// The listener's limits (from `config.connections`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` turns true, then lets open
/// connections finish their requests. Aborting the returned future's task
/// closes every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's
        // backlog instead of costing us a task and buffers each.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next() => continue,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of
                // spinning, then go on accepting.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            // Without it a response written as headers then body waits for
            // the client's delayed ACK (Nagle): slower, not wrong.
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            connection(tcp, peer, router, limits, stop).await;
            drop(permit);
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Reading a request head.
    Head,
    /// A request is being handled or answered.
    Busy,
}

struct Activity {
    state: Mutex<(Phase, Instant)>,
    /// Wakes the watchdog when the phase changes to one with a clock.
    changed: Notify,
    /// Set while hyper reads, so a read that brings bytes while idle starts
    /// the head clock without taking the lock on every read.
    idle: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new((Phase::Idle, Instant::now())),
            changed: Notify::new(),
            idle: AtomicBool::new(true),
        }
    }

    fn set(&self, phase: Phase) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (phase, Instant::now());
        self.idle.store(phase == Phase::Idle, Ordering::Release);
        self.changed.notify_one();
    }

    fn get(&self) -> (Phase, Instant) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            activity.set(Phase::Busy);
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            let activity = Arc::clone(&activity);
            async move {
                let response = tower::Service::call(&mut router, request.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(EndsCycle {
                        inner: body,
                        activity: Some(activity),
                    })
                }))
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let (phase, since) = activity.get();
        let deadline = match phase {
            Phase::Idle => since + limits.idle_timeout,
            Phase::Head => since + limits.header_timeout,
            // No clock of ours while a request is handled; look again later.
            Phase::Busy => Instant::now() + limits.idle_timeout,
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !shutting_down => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let (now_phase, now_since) = activity.get();
                if (now_phase, now_since) == (phase, since) && phase != Phase::Busy {
                    tracing::debug!(client = %peer, ?phase, "closing a connection that sent nothing in time");
                    return;
                }
            }
        }
    }
}

/// The socket, noticing the first byte of each request.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.activity.idle.load(Ordering::Acquire) {
            self.activity.set(Phase::Head);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that puts the connection back to idle when it has been
/// sent (or dropped: HEAD, errors), starting the keep-alive clock.
struct EndsCycle {
    inner: Body,
    activity: Option<Arc<Activity>>,
}

impl EndsCycle {
    fn end(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.set(Phase::Idle);
        }
    }
}

impl Drop for EndsCycle {
    fn drop(&mut self) {
        self.end();
    }
}

impl http_body::Body for EndsCycle {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.end();
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
