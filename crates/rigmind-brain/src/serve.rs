//! `--metrics-addr HOST:PORT`: a small HTTP/1 server (hyper) answering
//! `GET /metrics` (the Prometheus text the brain also writes to
//! `metrics/rigmind.prom`) and `GET /health` (a JSON summary), from the last
//! render of the brain's loop; it never reads the root itself.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

/// What the server answers, replaced by the loop at each render.
#[derive(Debug, Default, Clone)]
pub struct Served {
    pub metrics: String,
    pub health: String,
}

/// The shared answers.
pub type Shared = Arc<Mutex<Served>>;

/// Binds `addr` (an error names it) and serves until the runtime ends.
pub fn start(addr: std::net::SocketAddr, shared: Shared) -> std::io::Result<std::net::SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let listener = TcpListener::from_std(std_listener)?;
    tokio::spawn(accept_loop(listener, shared));
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&req, &shared)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let served = shared.lock().map(|s| s.clone()).unwrap_or_default();
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            served.metrics,
        ),
        (&Method::GET, "/health") => (StatusCode::OK, "application/json", served.health),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /health\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}
