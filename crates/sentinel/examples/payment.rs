//! The README's library example, compiled and run: a payment charged at most once, then replayed.
//!
//! `cargo run -p sentinel --example payment [DATABASE_URL]` (default `memory:`). The block
//! between the README markers is the README's text; a test keeps the two identical.

use sentinel::FencingToken;

struct Order {
    id: u64,
    cents: u64,
}

/// Stands in for the payment provider: the fencing token lets it refuse a stale writer.
async fn charge(order: &Order, token: FencingToken) -> Result<String, String> {
    Ok(format!(
        "charged {} cents for order {} under token {token}",
        order.cents, order.id
    ))
}

async fn pay(url: &str, order: &Order) -> Result<(), sentinel::Error> {
    // README-BEGIN
    use sentinel::{FailurePolicy, Outcome};
    use std::time::Duration;

    let sentinel = sentinel::connect(url).await?; // "postgres://…", "sqlite:///var/lib/app/sentinel.db", "memory:"
    sentinel.migrate().await?; // idempotent
    let outcome = sentinel
        .once(format!("payment-order-{}", order.id))
        .namespace("payments")
        .ttl(Duration::from_secs(3)) // lease, renewed every ttl/3 by the heartbeat
        .hard_ttl(Duration::from_secs(30)) // absolute ceiling from the claim
        .on_failure(FailurePolicy::Uncertain) // default; or Release / Record
        .run(|ctx| async move { charge(order, ctx.fencing_token()).await })
        .await?;
    match outcome {
        Outcome::Completed {
            value, replayed, ..
        } => println!("{value} (replayed: {replayed})"),
        Outcome::Failed {
            error, disposition, ..
        } => println!("failed: {error}; key {disposition:?}"),
        Outcome::Running { owner, .. } => println!("another worker holds it: {owner:?}"),
        Outcome::Uncertain { reason, .. } => println!("an operator must reconcile it: {reason}"),
        other => println!("{other:?}"), // e.g. resolved by an operator without a result
    }
    // README-END
    sentinel.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory:".to_owned());
    let order = Order {
        id: 789,
        cents: 4_200,
    };
    pay(&url, &order).await?;
    Ok(())
}
