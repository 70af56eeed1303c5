//! The accept loops: what a slow, idle or too numerous client may hold of the
//! servers. HTTP runs on hyper's HTTP/1.1 connection with a timer (axum's `serve`
//! has none, so it cannot time out a client that never finishes its headers), an
//! idle timeout, and a cap on open connections beyond which new ones are answered
//! `503` and closed rather than queued. gRPC gets an accept stream that survives
//! running out of file descriptors and sets TCP keep-alive.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use futures::Stream;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::ServerLimits;

/// What a connection beyond `HTTP_MAX_CONNECTIONS` is told before it is closed:
/// 503 with `Retry-After` and grpc-gateway's body (`OVERLOADED`, with `RetryInfo`).
fn shed_response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| {
        use crate::api::error::{self, Reason};
        let body = error::ApiError::refused(
            Reason::Overloaded,
            "service unavailable: the server has as many connections as it serves (HTTP_MAX_CONNECTIONS)",
        )
        .http_body()
        .to_string();
        let retry = Reason::Overloaded
            .retry_after()
            .map_or(1, error::retry_after_seconds);
        let mut response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body.as_bytes());
        response
    })
}

/// How long a shed connection may take to close its side after our answer. Until
/// then we read and discard what it sent: closing a socket with unread data makes
/// the kernel send a reset, which can destroy the `503` before the client reads it.
const SHED_LINGER: Duration = Duration::from_secs(1);

/// Shed connections lingering at once; beyond this they are dropped without a word.
const SHED_MAX: usize = 1024;

/// Pause after an accept error such as EMFILE, which would otherwise repeat at once
/// (the pending connection stays in the backlog) and spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` over HTTP/1.1 on `listener` until `stop` fires, then stops
/// accepting, lets every connection finish its current request and returns when
/// all are closed (the caller bounds that wait).
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: ServerLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    let mut shedding = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = shedding.join_next(), if !shedding.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        accept_failed(&error, "http").await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                if connections.len() >= limits.http_max_connections {
                    tracing::debug!(open = connections.len(), "http connection shed");
                    if shedding.len() < SHED_MAX {
                        shedding.spawn(shed(stream));
                    }
                    continue;
                }
                connections.spawn(serve_connection(stream, router.clone(), limits, stop.clone()));
            }
        }
    }
    // Closing the listening socket at once: new clients are refused instead of
    // waiting in the backlog until their own timeout.
    drop(listener);
    shedding.shutdown().await;
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Accepted sockets for tonic: TCP keep-alive set (dead peers of long streams are
/// found), accept errors logged and paused on instead of ending the server or
/// spinning.
pub(crate) fn grpc_incoming(listener: TcpListener, keepalive: Duration) -> GrpcIncoming {
    GrpcIncoming {
        listener,
        keepalive,
        pause: None,
    }
}

/// See [`grpc_incoming`].
pub struct GrpcIncoming {
    listener: TcpListener,
    keepalive: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for GrpcIncoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                std::task::ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match std::task::ready!(self.listener.poll_accept(cx)) {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    set_tcp_keepalive(&stream, self.keepalive);
                    return Poll::Ready(Some(Ok(stream)));
                }
                Err(error) => {
                    if accept_error_is_ours(&error, "grpc") {
                        self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                    }
                }
            }
        }
    }
}

/// Logs an accept error; pauses when it is about this process (out of file
/// descriptors, memory) rather than one connection that went away.
async fn accept_failed(error: &io::Error, server: &'static str) {
    if accept_error_is_ours(error, server) {
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    }
}

/// Logs an accept error; true when it is about this process (out of file
/// descriptors, memory), which calls for a pause, rather than about one
/// connection that went away.
fn accept_error_is_ours(error: &io::Error, server: &'static str) -> bool {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        tracing::debug!(%error, server, "accept failed for one connection");
        return false;
    }
    tracing::warn!(%error, server, pause_ms = ACCEPT_ERROR_PAUSE.as_millis() as u64, "accept failed");
    true
}

fn set_tcp_keepalive(stream: &TcpStream, idle: Duration) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: `fd` is an open socket for the duration of the call and the
        // option value is a c_int of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    let idle_secs = idle.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    if set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1) != 0
        || set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs) != 0
    {
        tracing::debug!(error = %io::Error::last_os_error(), "setting TCP keep-alive failed");
    }
}

/// Answers `503` with `Retry-After` and an `OVERLOADED` body and closes, without serving anything.
async fn shed(mut stream: TcpStream) {
    // A fresh socket's send buffer is empty: the few bytes go out without waiting.
    let _ = stream.try_write(shed_response());
    let _ = tokio::time::timeout(SHED_LINGER, async {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        let mut discard = [0u8; 1024];
        while matches!(stream.read(&mut discard).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One HTTP/1.1 connection: hyper's header-read timeout (which also runs while the
/// connection waits for its next request), closed after `http_idle_timeout`
/// without traffic, and closed after its current request when `stop` fires.
async fn serve_connection(
    stream: TcpStream,
    router: axum::Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::now());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = TowerToHyperService::new(
        router.map_request(|request: http::Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_until = activity.last() + limits.http_idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "http connection ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep_until(idle_until.into()), if !closing => {
                if activity.last() + limits.http_idle_timeout <= Instant::now() {
                    // Ends an idle connection now, a busy one after its answer.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stop.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// When a connection last read or wrote a byte.
struct Activity(AtomicU64);

impl Activity {
    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn now() -> Activity {
        let activity = Activity(AtomicU64::new(0));
        activity.touch();
        activity
    }

    fn touch(&self) {
        let micros = Activity::epoch().elapsed().as_micros() as u64;
        self.0.store(micros, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        Activity::epoch() + Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

/// A socket that records its traffic in an [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
