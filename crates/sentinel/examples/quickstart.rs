//! The library quickstart: run a function at most once per key, then see the replay.
//!
//! `cargo run --example quickstart`

use std::time::Duration;

use sentinel::{MemoryStore, Outcome, Sentinel};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sentinel = Sentinel::builder(MemoryStore::new()).build()?;
    for attempt in 1..=2 {
        let outcome = sentinel
            .once("hello")
            .ttl(Duration::from_secs(3))
            .run(|ctx| async move {
                println!(
                    "attempt {attempt}: running under fencing token {}",
                    ctx.fencing_token()
                );
                Ok::<_, String>("hello, once".to_string())
            })
            .await?;
        match outcome {
            Outcome::Completed {
                value,
                replayed,
                token,
                ..
            } => {
                println!("attempt {attempt}: {value:?} (replayed: {replayed}, token {token})");
            }
            other => println!("attempt {attempt}: {other:?}"),
        }
    }
    Ok(())
}
