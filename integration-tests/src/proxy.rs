//! A TCP proxy on loopback that a test can cut: every connection through it is closed at once,
//! as a network failure would, while new connections keep working; or hold down, refusing
//! every new connection too, until it comes back up (a device out of coverage); or slow down,
//! every byte arriving a set latency after it was sent (a congested or distant link).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A running proxy. Dropping it stops it.
pub struct CuttableProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    cuts: watch::Sender<u64>,
    down: watch::Sender<bool>,
    latency: watch::Sender<Duration>,
    carried: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Forwards connections on a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cuts, watch) = watch::channel(0u64);
        let (down, is_down) = watch::channel(false);
        let (latency, delay) = watch::channel(Duration::ZERO);
        let carried = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&carried);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *is_down.borrow() {
                    // Out of coverage: the connection closes before a byte goes through.
                    drop(client);
                    continue;
                }
                let mut cut = watch.clone();
                cut.mark_unchanged();
                let delay = delay.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                carry(client_read, server_write, delay.clone(), &counted),
                                carry(server_read, client_write, delay, &counted),
                            )
                        } => {}
                        _ = cut.changed() => {}
                    }
                    // Dropping both sockets here is the cut.
                });
            }
        });
        Ok(Self {
            address,
            cuts,
            down,
            latency,
            carried,
            task,
        })
    }

    /// Bytes carried through so far, both ways: proof that traffic took this path.
    pub fn bytes_carried(&self) -> u64 {
        self.carried.load(Ordering::Relaxed)
    }

    /// From now on, every byte either way arrives `latency` after it was sent (zero: at once).
    /// Bytes keep their order, and throughput is not capped: it is latency, not a slow pipe.
    pub fn set_latency(&self, latency: Duration) {
        self.latency.send_replace(latency);
    }

    /// Closes every connection open through the proxy now.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Cuts every connection and refuses new ones until [`Self::bring_up`].
    pub fn take_down(&self) {
        self.down.send_replace(true);
        self.cut();
    }

    /// Lets connections through again.
    pub fn bring_up(&self) {
        self.down.send_replace(false);
    }
}

/// Carries one direction of a connection, each chunk written `delay` after it was read; the
/// write half is shut down once the read half ends, as a half-close would travel.
async fn carry(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: watch::Receiver<Duration>,
    carried: &AtomicU64,
) {
    // Bounded: a reader ahead of its writer by this many chunks waits (backpressure).
    let (chunks, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reading = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = Instant::now() + *delay.borrow();
                    if chunks.send((at, buffer[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writing = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            carried.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
