//! The counting proxy as a process, for benchmarks that count statements on the wire between a
//! server in another process (or language) and PostgreSQL.
//!
//! ```text
//! cargo run --release -p sentinel-testkit --example count-proxy -- 127.0.0.1:5432
//! ```
//!
//! It prints `listening on ADDR` once, then answers every line read on stdin with the counts so far
//! as one JSON line (`{"statements":…,"execute":…,"simple_query":…,"parse":…,"sync":…}`), and
//! exits when stdin closes.

use std::io::BufRead as _;
use std::net::SocketAddr;

use sentinel_testkit::proxy::Proxy;

#[tokio::main]
async fn main() {
    let upstream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let upstream: SocketAddr = match upstream.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("count-proxy: {upstream:?} is not HOST:PORT: {e}");
            std::process::exit(2);
        }
    };
    let proxy = match Proxy::start(upstream).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("count-proxy: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", proxy.addr());
    // The proxy's connections run on the other worker threads while this one waits on stdin.
    tokio::task::block_in_place(|| {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
            let c = proxy.counts();
            println!(
                r#"{{"statements":{},"execute":{},"simple_query":{},"parse":{},"sync":{}}}"#,
                c.statements(),
                c.execute,
                c.simple_query,
                c.parse,
                c.sync
            );
        }
    });
}
