//! The serve loop every stand-in runs on: hyper HTTP/1.1 on a loopback
//! listener, with two powers axum's own `serve` does not give:
//!
//! - a handler can **reset its connection** ([`Conn::reset`]): the socket gets
//!   `SO_LINGER 0` and is closed, so the client sees a TCP RST with no
//!   response, exactly like a dropped connection in the wild;
//! - the whole server can be **down** for a while ([`DownSwitch`]): every
//!   connection accepted in that time is reset at once.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// One accepted connection, handed to every request on it as a request
/// extension (`Extension<Conn>` in a handler).
#[derive(Clone, Debug, Default)]
pub struct Conn {
    reset: CancellationToken,
}

impl Conn {
    /// Drop this connection with a TCP reset and no response. The handler that
    /// calls this should then never return (await [`Conn::reset_and_hang`]).
    pub fn reset(&self) {
        self.reset.cancel();
    }

    /// Reset the connection and wait forever (the connection task drops the
    /// handler's future when it closes the socket).
    pub async fn reset_and_hang(&self) -> ! {
        self.reset();
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes")
    }
}

/// Makes a server refuse service (reset every new connection) until a moment.
#[derive(Clone, Debug, Default)]
pub struct DownSwitch {
    until: Arc<Mutex<Option<Instant>>>,
}

impl DownSwitch {
    /// Reset every connection accepted during the next `d`.
    pub fn down_for(&self, d: Duration) {
        *lock(&self.until) = Some(Instant::now() + d);
    }

    /// Serve normally again.
    pub fn up(&self) {
        *lock(&self.until) = None;
    }

    /// Whether new connections are refused now.
    pub fn is_down(&self) -> bool {
        lock(&self.until).is_some_and(|t| Instant::now() < t)
    }
}

/// A running server; dropping it stops the accept loop and open connections.
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Served {
    /// The bound address (always 127.0.0.1 unless the caller chose otherwise).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting and close every connection, then wait for the loop to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Bind `addr` (use `127.0.0.1:0` for a free port) and serve `router` on it.
pub async fn serve(addr: SocketAddr, router: Router, down: DownSwitch) -> std::io::Result<Served> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, router, down, stop.clone()));
    Ok(Served { addr, stop, task: Some(task) })
}

async fn accept_loop(listener: TcpListener, router: Router, down: DownSwitch, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _peer)) = accepted else {
            // EMFILE and friends: back off a little instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if down.is_down() {
            reset_now(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_conn(stream, router.clone(), stop.clone()));
    }
}

/// Close `stream` with a TCP reset.
fn reset_now(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve_conn(stream: TcpStream, router: Router, stop: CancellationToken) {
    // A second descriptor of the same socket, so SO_LINGER 0 can be set after
    // hyper owns the stream; the reset happens when both are closed.
    let dup = stream.as_fd().try_clone_to_owned().ok().map(socket2::Socket::from);
    let conn = Conn::default();
    let per_conn = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(per_conn.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let http = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = http => {}
        _ = conn.reset.cancelled() => {
            if let Some(dup) = &dup {
                let _ = dup.set_linger(Some(Duration::ZERO));
            }
        }
        _ = stop.cancelled() => {}
    }
    // `http` (owning the stream) is dropped when select! returns; `dup` last.
    drop(dup);
}

/// Lock a mutex, ignoring poisoning (a panicked test thread must not wedge the
/// stand-in for the others).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock Unix time in milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Wall-clock Unix time in seconds.
pub fn unix_secs() -> i64 {
    unix_ms().div_euclid(1000)
}
