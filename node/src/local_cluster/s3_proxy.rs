//! A TCP proxy in front of the S3 server of a local cluster that can be told to fail:
//! pass traffic through, answer every request with `503 Service Unavailable`, or
//! accept connections and never answer (the nodes' S3 timeouts fire). What the
//! cluster tests use to prove that S3 outages never lose an acknowledged upload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the proxy treats S3 traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Fault {
    /// Traffic passes.
    None,
    /// Every request gets `503 Service Unavailable`.
    Unavailable,
    /// Connections are accepted and never answered.
    Hang,
}

impl S3Fault {
    fn to_u8(self) -> u8 {
        match self {
            S3Fault::None => 0,
            S3Fault::Unavailable => 1,
            S3Fault::Hang => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => S3Fault::Unavailable,
            2 => S3Fault::Hang,
            _ => S3Fault::None,
        }
    }
}

/// Longest a hung connection is held.
const MAX_HANG: Duration = Duration::from_secs(120);

/// The proxy; stops when dropped.
pub struct S3Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

impl S3Proxy {
    /// Listens on `bind` (port 0: a free one) and forwards to `upstream`.
    pub async fn start(bind: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(S3Fault::None.to_u8()));
        let m = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let m = m.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, &m).await;
                });
            }
        });
        Ok(S3Proxy { addr, mode, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets how traffic is treated from now on (a fault also cuts the connections
    /// already open).
    pub fn set(&self, fault: S3Fault) {
        self.mode.store(fault.to_u8(), Ordering::SeqCst);
    }

    /// How traffic is treated now.
    pub fn fault(&self) -> S3Fault {
        S3Fault::from_u8(self.mode.load(Ordering::SeqCst))
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, upstream: SocketAddr, mode: &AtomicU8) -> std::io::Result<()> {
    match S3Fault::from_u8(mode.load(Ordering::SeqCst)) {
        S3Fault::None => {
            let mut up = TcpStream::connect(upstream).await?;
            // A fault cuts the connections already open too (clients keep theirs
            // alive): they are dropped once the mode changes.
            let faulted = async {
                while S3Fault::from_u8(mode.load(Ordering::SeqCst)) == S3Fault::None {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut conn, &mut up) => { r?; }
                _ = faulted => {}
            }
        }
        S3Fault::Unavailable => {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
            conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            conn.shutdown().await?;
        }
        S3Fault::Hang => {
            // Hold the connection until the fault is lifted (bounded), answering nothing.
            let deadline = tokio::time::Instant::now() + MAX_HANG;
            while S3Fault::from_u8(mode.load(Ordering::SeqCst)) == S3Fault::Hang
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}
