//! A user-space TCP proxy per link, for delay and jitter (the kernel here has no `tc netem`).
//!
//! The proxy for link A→B lives in A's network namespace: its listening socket and the
//! sockets it opens to B are made there, so B sees A's own address (the partition rules,
//! which match source addresses, treat proxied traffic as A's). An nftables rule in A's
//! namespace sends A's connections to B's gRPC port to the proxy instead; the proxy's own
//! sockets carry a mark that rule skips. Each chunk read is held until `delay` plus a random
//! share of `jitter` has passed, never overtaking the chunk before it (TCP's order is kept).
//!
//! Unlike a real link, a connection to a host that refuses it is accepted, then closed, and a
//! reset from the far end arrives as an orderly close.

use anyhow::{anyhow, Context, Result};
use rand::Rng;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The mark on the proxy's own sockets, which the redirect rule leaves alone.
pub const MARK: u32 = 0x4a50;

/// A link's delay and jitter, in milliseconds; changed while connections are open.
#[derive(Default, Debug)]
pub struct Delay {
    pub ms: AtomicU64,
    pub jitter_ms: AtomicU64,
}

impl Delay {
    pub fn set(&self, ms: u64, jitter_ms: u64) {
        self.ms.store(ms, Ordering::Relaxed);
        self.jitter_ms.store(jitter_ms, Ordering::Relaxed);
    }

    fn sample(&self) -> Duration {
        let (ms, jitter) = (
            self.ms.load(Ordering::Relaxed),
            self.jitter_ms.load(Ordering::Relaxed),
        );
        let extra = if jitter == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=jitter)
        };
        Duration::from_millis(ms + extra)
    }
}

/// Runs `f` on a thread inside network namespace `netns` (sockets made there stay there).
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// One link's proxy: listening in `netns` on `listen` (its port chosen there), forwarding
/// to `target` with `delay`.
pub struct Proxy {
    pub listen: SocketAddr,
    pub delay: Arc<Delay>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(netns: &str, listen_ip: &str, target: SocketAddr) -> Result<Proxy> {
        let ip: std::net::IpAddr = listen_ip.parse().context("proxy address")?;
        let std_listener = in_netns(netns, move || {
            let l = std::net::TcpListener::bind((ip, 0))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .with_context(|| format!("a proxy listener in {netns}"))?;
        let listen = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener)?;
        let delay = Arc::new(Delay::default());
        let (ns, d) = (netns.to_string(), delay.clone());
        let task = tokio::spawn(async move {
            // The connections live as long as the proxy: aborting this task drops them.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let inbound = match listener.accept().await {
                    Ok((s, _)) => s,
                    // Out of descriptors, a reset before accept: the link stays up.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while conns.try_join_next().is_some() {}
                let (ns, d) = (ns.clone(), d.clone());
                conns.spawn(async move {
                    if let Ok(outbound) = connect(&ns, target).await {
                        pipe(inbound, outbound, d).await;
                    }
                });
            }
        });
        Ok(Proxy {
            listen,
            delay,
            task,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A marked connection to `target` made from inside `netns`.
async fn connect(netns: &str, target: SocketAddr) -> Result<TcpStream> {
    let ns = netns.to_string();
    let stream = tokio::task::spawn_blocking(move || {
        in_netns(&ns, move || {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(target),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_mark(MARK)?;
            s.set_tcp_nodelay(true)?;
            s.connect_timeout(&target.into(), Duration::from_secs(2))?;
            s.set_nonblocking(true)?;
            Ok(std::net::TcpStream::from(s))
        })
    })
    .await
    .map_err(|e| anyhow!("{e}"))??;
    Ok(TcpStream::from_std(stream)?)
}

/// Both directions, each delayed, until both sides close.
async fn pipe(a: TcpStream, b: TcpStream, delay: Arc<Delay>) {
    let _ = a.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::join!(delayed(ar, bw, delay.clone()), delayed(br, aw, delay));
}

/// Copies `from` to `to`, each chunk released `delay` after it arrived, in order.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<Delay>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = (Instant::now() + delay.sample()).max(last);
                last = at;
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
