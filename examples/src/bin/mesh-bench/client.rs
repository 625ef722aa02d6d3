//! The load generator of the HTTP figures: hand-written HTTP/1.1 over keep-alive loopback
//! connections, one request in flight per connection, on one thread of its own with a
//! current-thread tokio runtime. It writes prebuilt requests and reads only the status line and
//! `Content-Length`, so it costs far less per request than the servers it measures; it still
//! shares the machine's cores with them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Prebuilt `POST /call` requests, one per id.
pub fn call_requests(ids: &[String]) -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        ids.iter()
            .map(|id| {
                let body = serde_json::json!({"module": "Counter", "id": id, "capability": "counter"})
                    .to_string();
                format!(
                    "POST /call HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            })
            .collect(),
    )
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` and reads its whole response; fails unless it is a 200.
    async fn call(&mut self, request: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let total = end + 4 + content_length(&self.buf[..end])?;
                while self.buf.len() < total {
                    self.read_more().await?;
                }
                if !self.buf.starts_with(b"HTTP/1.1 200") {
                    bail!("expected a 200: {}", String::from_utf8_lossy(&self.buf));
                }
                return Ok(());
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> anyhow::Result<usize> {
    let head = std::str::from_utf8(head)?;
    head.split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("a response without Content-Length")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Requests per second over `connections` keep-alive connections to `addr`: every connection
/// sends `requests` round-robin (connection `c` starts at `c`) for `warmup + measure`; only
/// responses completed within `measure` are counted. Blocking: run it off the System thread.
pub fn throughput(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<f64> {
    runtime()?.block_on(async move {
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            opened.push(Connection::open(addr).await?);
        }
        let start = Instant::now() + warmup;
        let end = start + measure;
        let tasks: Vec<_> = opened
            .into_iter()
            .enumerate()
            .map(|(c, mut connection)| {
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut counted = 0u64;
                    let mut next = c;
                    loop {
                        connection.call(&requests[next % requests.len()]).await?;
                        next += connections;
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        if now >= start {
                            counted += 1;
                        }
                    }
                    anyhow::Ok(counted)
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        Ok(total as f64 / measure.as_secs_f64())
    })
}

/// The median latency in microseconds of `n` sequential requests on one keep-alive connection
/// (after a short warm-up). Blocking: run it off the System thread.
pub fn sequential_p50(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    n: usize,
) -> anyhow::Result<f64> {
    runtime()?.block_on(async move {
        let mut connection = Connection::open(addr).await?;
        for i in 0..n.min(200) {
            connection.call(&requests[i % requests.len()]).await?;
        }
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let started = Instant::now();
            connection.call(&requests[i % requests.len()]).await?;
            latencies.push(started.elapsed());
        }
        Ok(crate::api::p50_us(latencies))
    })
}

/// Sends every request once, spread over `connections` keep-alive connections (connection `c`
/// sends requests `c`, `c + connections`, ...) as the throughput load does: the warm-up that
/// activates the ids, so that their first calls reach the server's workers the way the
/// measured calls will. Blocking: run it off the System thread.
pub fn each_once(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    connections: usize,
) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut tasks = Vec::with_capacity(connections);
        for c in 0..connections {
            let mut connection = Connection::open(addr).await?;
            let requests = requests.clone();
            tasks.push(tokio::spawn(async move {
                for request in requests.iter().skip(c).step_by(connections) {
                    connection.call(request).await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    })
}
