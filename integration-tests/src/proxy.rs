//! A TCP proxy on loopback that a test can cut: every connection through it is closed at once,
//! as a network failure would, while new connections keep working; or hold down, refusing
//! every new connection too, until it comes back up (a device out of coverage).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy. Dropping it stops it.
pub struct CuttableProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    cuts: watch::Sender<u64>,
    down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Forwards connections on a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cuts, watch) = watch::channel(0u64);
        let (down, is_down) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *is_down.borrow() {
                    // Out of coverage: the connection closes before a byte goes through.
                    drop(client);
                    continue;
                }
                let mut cut = watch.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
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
            task,
        })
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

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
