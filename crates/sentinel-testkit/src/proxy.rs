//! A loopback TCP proxy for the PostgreSQL wire protocol. It counts the messages the client sends
//! (so tests count real round trips, not what the code reports) and can swallow the reply to the
//! next statement and cut the connection, after the server has committed it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Message counts seen from clients.
#[derive(Debug, Default)]
struct Counts {
    simple_query: AtomicU64,
    parse: AtomicU64,
    execute: AtomicU64,
    sync: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

/// A snapshot of the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WireCounts {
    /// Simple-protocol queries (`Q`).
    pub simple_query: u64,
    /// Statements prepared (`P`).
    pub parse: u64,
    /// Statements executed (`E`).
    pub execute: u64,
    /// Round trips of the extended protocol (`S`).
    pub sync: u64,
    /// Bytes from clients to the server.
    pub bytes_sent: u64,
    /// Bytes from the server to clients.
    pub bytes_received: u64,
}

impl WireCounts {
    /// Statements executed, by either protocol.
    pub fn statements(&self) -> u64 {
        self.simple_query + self.execute
    }
}

/// The proxy; it runs until dropped (its listener task is aborted then).
pub struct Proxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
    cut_next: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let cut_next = Arc::new(AtomicBool::new(false));
        let (c, cut) = (counts.clone(), cut_next.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (c, cut) = (c.clone(), cut.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = relay(client, server, c, cut).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            counts,
            cut_next,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts so far.
    pub fn counts(&self) -> WireCounts {
        let c = &self.counts;
        WireCounts {
            simple_query: c.simple_query.load(Ordering::SeqCst),
            parse: c.parse.load(Ordering::SeqCst),
            execute: c.execute.load(Ordering::SeqCst),
            sync: c.sync.load(Ordering::SeqCst),
            bytes_sent: c.bytes_sent.load(Ordering::SeqCst),
            bytes_received: c.bytes_received.load(Ordering::SeqCst),
        }
    }

    /// The next statement any client sends is forwarded and executed; its reply is swallowed and
    /// the connection closed, as when a network drops after the commit.
    pub fn cut_after_next_statement(&self) {
        self.cut_next.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    counts: Arc<Counts>,
    cut_next: Arc<AtomicBool>,
) -> io::Result<()> {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cut_here = Arc::new(AtomicBool::new(false));
    let cut = cut_here.clone();
    let down_counts = counts.clone();
    let upstream = async move {
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(());
            }
            counts.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
            let mut statement = false;
            for ty in parser.feed(&buf[..n]) {
                let counter = match ty {
                    b'Q' => &counts.simple_query,
                    b'P' => &counts.parse,
                    b'E' => &counts.execute,
                    b'S' => &counts.sync,
                    _ => continue,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                statement |= ty == b'Q' || ty == b'E';
            }
            if statement && cut_next.swap(false, Ordering::SeqCst) {
                cut.store(true, Ordering::SeqCst);
            }
            sw.write_all(&buf[..n]).await?;
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(());
            }
            if cut_here.load(Ordering::SeqCst) {
                // The server answered (so it executed and, in autocommit, committed): swallow
                // the answer and hang up on both sides.
                return Ok(());
            }
            down_counts
                .bytes_received
                .fetch_add(n as u64, Ordering::SeqCst);
            cw.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        r = upstream => r,
        r = downstream => r,
    }
}

/// Splits the client's byte stream into messages: the first (startup, or SSL/GSS request then
/// startup) has no type byte; every later one is a type byte and a 4-byte length.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    started: bool,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut types = Vec::new();
        loop {
            if !self.started {
                let Some(len) = read_len(&self.buf, 0) else {
                    break;
                };
                if self.buf.len() < len {
                    break;
                }
                let code = read_len(&self.buf, 4).unwrap_or(0);
                // SSLRequest / GSSENCRequest are followed by another untyped startup message.
                if code != 80_877_103 && code != 80_877_104 {
                    self.started = true;
                }
                self.buf.drain(..len);
            } else {
                if self.buf.len() < 5 {
                    break;
                }
                let Some(len) = read_len(&self.buf, 1) else {
                    break;
                };
                if self.buf.len() < 1 + len {
                    break;
                }
                types.push(self.buf[0]);
                self.buf.drain(..=len);
            }
        }
        types
    }
}

fn read_len(buf: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}
