//! Retention that keeps up: one pass of pruning removes every expired row, however many (one fixed
//! batch per tick removed at most 50 000 hashes every ten minutes, 83 a second, less than a busy
//! pipeline adds). The figures are printed, not asserted.

use std::time::{Duration, Instant};

use consumer_service::consume::prune_expired_hashes;

#[tokio::test]
async fn one_pass_prunes_every_expired_hash_and_keeps_the_fresh_ones() {
    let url = analytics_testkit::fresh_database(&consumer_service::MIGRATOR).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "insert into processed_events (hash, event_type, processed_at)
         select sha256(n::text::bytea), 'OrderCreated', now() - interval '2 days' from generate_series(1, 65000) n;
         insert into processed_events (hash, event_type)
         select sha256(('fresh' || n)::bytea), 'OrderCreated' from generate_series(1, 10) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    let started = Instant::now();
    let pruned = prune_expired_hashes(&pool, Duration::from_secs(24 * 3600)).await;
    println!(
        "pruned {pruned} hashes in {:?} ({:.0}/s)",
        started.elapsed(),
        pruned as f64 / started.elapsed().as_secs_f64()
    );
    assert_eq!(pruned, 65_000);
    let left: i64 = sqlx::query_scalar("select count(*) from processed_events").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 10, "the fresh hashes stay");
}
