//! A shaped link between the clients and the servers: TCP proxies on loopback whose
//! traffic, all connections together, is paced to a fixed rate in each direction,
//! as a user's network link would be. Servers keep their own (unshaped) path to S3.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes forwarded per step: the pacing granularity.
const STEP: usize = 16 * 1024;

/// How far a sender may run ahead of the link's clock.
const SLACK: Duration = Duration::from_millis(5);

/// Paces one direction of the link: every step of `n` bytes takes `n / rate` of the
/// link's time, steps of all connections in turn.
#[derive(Debug)]
struct Pacer {
    bytes_per_s: f64,
    free_at: Mutex<Instant>,
}

impl Pacer {
    /// Waits until `n` more bytes have had their time on the link. Steps take less
    /// than the timer's millisecond at high rates, so a sender runs ahead of the
    /// link's clock by up to [`SLACK`] before it sleeps: the average rate is exact,
    /// bursts are at most `SLACK` long.
    async fn pass(&self, n: usize) {
        let now = Instant::now();
        let done = {
            let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*free_at).max(now);
            *free_at = start + Duration::from_secs_f64(n as f64 / self.bytes_per_s);
            *free_at
        };
        if done > now + SLACK {
            tokio::time::sleep_until(done - SLACK).await;
        }
    }
}

/// A link of a fixed rate each way; [`Link::proxy`] puts a server behind it.
#[derive(Debug, Clone)]
pub struct Link {
    up: Arc<Pacer>,
    down: Arc<Pacer>,
    mbit: u64,
}

/// A proxy on the link; stops when dropped.
pub struct LinkProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkProxy {
    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Link {
    /// A link of `mbit` megabits per second in each direction.
    pub fn new(mbit: u64) -> Self {
        let pacer = || {
            Arc::new(Pacer {
                bytes_per_s: mbit as f64 * 1e6 / 8.0,
                free_at: Mutex::new(Instant::now()),
            })
        };
        Link {
            up: pacer(),
            down: pacer(),
            mbit,
        }
    }

    /// Its rate, in megabits per second.
    pub fn mbit(&self) -> u64 {
        self.mbit
    }

    /// A proxy on loopback forwarding to `upstream` over this link.
    pub async fn proxy(&self, upstream: SocketAddr) -> Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a link proxy")?;
        let addr = listener.local_addr()?;
        let link = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let link = link.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, &link.up), pump(sr, cw, &link.down));
                });
            }
        });
        Ok(LinkProxy { addr, task })
    }
}

/// Copies `from` to `to` through `pacer` until `from` ends or either side fails.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    pacer: &Pacer,
) {
    let mut buf = vec![0u8; STEP];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pacer.pass(n).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `scheme://127.0.0.1:port` of `proxy` for a URL `scheme://host:port[/...]`.
pub fn rewrite_url(url: &str, proxy: &LinkProxy) -> String {
    let (scheme, _) = url.split_once("://").unwrap_or(("http", url));
    format!("{scheme}://{}", proxy.addr())
}

/// The socket address of a URL `scheme://host:port[/...]`.
pub fn url_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .parse()
        .with_context(|| format!("{url}: expected scheme://ip:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_link_paces_what_it_carries() {
        // 8 Mbit/s = 1 MB/s each way: 256 KiB up then the same back take about
        // 2 x 0.26 s through it (less the few milliseconds a sender may run ahead).
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            s.write_all(&got).await.unwrap();
        });
        let link = Link::new(8);
        let proxy = link.proxy(upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let sent = vec![7u8; 256 * 1024];
        let started = std::time::Instant::now();
        c.write_all(&sent).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        let took = started.elapsed();
        assert_eq!(back, sent);
        // Both directions paced (one alone would be ~0.26 s), and not far slower
        // than the rate (a bound loose enough for a busy machine).
        assert!(
            took >= Duration::from_millis(480),
            "{took:?}: not paced both ways"
        );
        assert!(
            took < Duration::from_secs(3),
            "{took:?}: paced far below 8 Mbit/s"
        );
        assert_eq!(
            rewrite_url("grpc://10.0.0.1:5/x", &proxy),
            format!("grpc://{}", proxy.addr())
        );
        assert_eq!(url_addr("http://127.0.0.1:9000/b").unwrap().port(), 9000);
    }
}
