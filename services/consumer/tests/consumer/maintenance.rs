//! `consumer-service verify` and `rebuild`, run as the binary against a running pipeline: verify leaves
//! out exactly the orders in flight, finds exactly the keys corrupted by hand, and a rebuild under a
//! burst of orders fixes them all, with every order counted once.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use analytics_testkit::{PrivateBroker, eventually};
use serde_json::{Value, json};

use crate::helpers::Pipeline;

/// A difference as the report names it: view, kind, key.
fn differences(report: &Value) -> BTreeSet<(String, String, String)> {
    report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["view"].as_str().unwrap().into(), d["kind"].as_str().unwrap().into(), d["key"].to_string()))
        .collect()
}

async fn order(pipeline: &Pipeline, customer: i64, products: &[i64], n: usize) -> u16 {
    let items: Vec<Value> = products
        .iter()
        .cycle()
        .skip(n % products.len())
        .take(1 + n % 3)
        .map(|id| json!({"productId": id, "quantity": 1 + n % 4}))
        .collect();
    let (status, body) = pipeline.post("/api/orders", &json!({"customerId": customer, "items": items})).await;
    assert!(status == 201, "{status} {body}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_finds_exactly_the_corrupted_keys_and_a_rebuild_under_a_burst_fixes_them_once() {
    let broker = PrivateBroker::start();
    let mut pipeline = Pipeline::start(&broker.url(), 2).await;

    // Quiet products (and categories) only the first orders buy; busy ones the burst buys as well.
    let mut quiet = Vec::new();
    for (i, category) in ["Garden", "Paper", "Garden"].iter().enumerate() {
        quiet.push(pipeline.create_product(&format!("Quiet {i}"), category, "3.25", 100_000).await);
    }
    let mut busy = Vec::new();
    for (i, category) in ["Home", "Toys", "Books", "Home", "Toys"].iter().enumerate() {
        busy.push(pipeline.create_product(&format!("Busy {i}"), category, "7.10", 100_000).await);
    }
    let everything: Vec<i64> = quiet.iter().chain(&busy).copied().collect();
    for n in 0..90 {
        order(&pipeline, 1 + (n % 30) as i64, &everything, n).await;
    }
    pipeline.wait_until_applied(Duration::from_secs(60)).await;

    let (code, report) = pipeline.maintenance("verify", &[]).await;
    assert_eq!((code, report["status"].as_str()), (0, Some("consistent")), "{report:#}");
    for view in report["views"].as_array().unwrap() {
        assert!(view["keys"].as_u64().unwrap() > 0, "an empty comparison proves nothing: {view}");
    }

    // Orders in flight: with no consumer, they wait in the queue, and the cut leaves them out.
    pipeline.kill_all_consumers();
    for n in 0..25 {
        order(&pipeline, 31 + n as i64, &everything, n).await;
    }
    eventually(Duration::from_secs(30), "the relay to publish every order", || async {
        let pending: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&pipeline.write).await.unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let (code, report) = pipeline.maintenance("verify", &[]).await;
    assert_eq!((code, report["status"].as_str()), (0, Some("consistent")), "{report:#}");
    assert_eq!(report["cut"]["inFlightOrders"], 25, "{report:#}");
    pipeline.start_consumer();
    pipeline.start_consumer();
    pipeline.wait_until_applied(Duration::from_secs(60)).await;

    // Corruption by hand, of keys the burst below leaves alone; and the customer-category view emptied,
    // as a migration that adds a view leaves it.
    let (q0, q1) = (quiet[0], quiet[1]);
    let bought: Vec<(i64, String)> = sqlx::query_as("select customer_id, category from customer_category_view")
        .fetch_all(&pipeline.read)
        .await
        .unwrap();
    assert!(bought.len() > 50, "{} customer-category rows", bought.len());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "update product_sales_view set total_revenue = total_revenue + 1 where product_id = {q0};
         update category_metrics_view set total_orders = total_orders + 1 where category = 'Paper';
         delete from customer_ltv_view where customer_id = 7;
         insert into hourly_sales_view (hour, order_count, items_sold, revenue) values ('2001-01-01T00:00:00Z', 1, 1, 1);
         update products set price = price + 1 where id = {q1};
         truncate customer_category_view;"
    )))
    .execute(&pipeline.read)
    .await
    .unwrap();
    let mut expected: BTreeSet<(String, String, String)> = [
        ("product_sales_view", "different", json!({"productId": q0})),
        ("category_metrics_view", "different", json!({"category": "Paper"})),
        ("customer_ltv_view", "missing", json!({"customerId": 7})),
        ("hourly_sales_view", "unexpected", json!({"hour": "2001-01-01T00:00:00Z"})),
        ("products", "different", json!({"productId": q1})),
    ]
    .into_iter()
    .map(|(view, kind, key)| (view.to_owned(), kind.to_owned(), key.to_string()))
    .collect();
    for (customer, category) in &bought {
        expected.insert((
            "customer_category_view".into(),
            "missing".into(),
            json!({"customerId": customer, "category": category}).to_string(),
        ));
    }
    let outcome = std::env::temp_dir().join(format!("verify-outcome-{}", uuid::Uuid::new_v4().simple()));
    let outcome_arg = outcome.to_str().unwrap();
    let (code, report) =
        pipeline.maintenance("verify", &["--max-differences", "100000", "--outcome-file", outcome_arg]).await;
    assert_eq!((code, report["status"].as_str()), (1, Some("drift")), "{report:#}");
    assert_eq!(differences(&report), expected, "{report:#}");
    assert_eq!(report["differencesOmitted"], 0);
    // The one-line outcome an orchestrator shows: how many keys differ, per view.
    let headline = std::fs::read_to_string(&outcome).unwrap();
    std::fs::remove_file(&outcome).unwrap();
    assert!(headline.starts_with(&format!("drift: {} keys differ (", expected.len())), "{headline}");
    let mut per_view = std::collections::BTreeMap::<&str, usize>::new();
    for (view, _, _) in &expected {
        *per_view.entry(view.as_str()).or_default() += 1;
    }
    for (view, count) in per_view {
        assert!(headline.contains(&format!("{view} {count}")), "{view} {count} in {headline}");
    }

    // A burst from new customers over the busy products, from before the rebuild starts until after
    // it ends: each client places five more orders once it has seen the rebuild done.
    let accepted = Arc::new(AtomicUsize::new(0));
    let rebuilt = Arc::new(AtomicBool::new(false));
    let pipeline = Arc::new(pipeline);
    let burst: Vec<_> = (0..6)
        .map(|client| {
            let (pipeline, accepted, rebuilt, busy) =
                (pipeline.clone(), accepted.clone(), rebuilt.clone(), busy.clone());
            tokio::spawn(async move {
                let (mut n, mut after) = (0, 0);
                while after < 5 {
                    order(&pipeline, 1000 + (client * 1000 + n) as i64 % 97, &busy, n).await;
                    accepted.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                    after += usize::from(rebuilt.load(Ordering::SeqCst));
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(60), "the burst to be under way", || async {
        (accepted.load(Ordering::SeqCst) >= 60).then_some(())
    })
    .await;
    // A dashboard's query holds product_sales_view for 4 s: the swap times out on it (2 s) at least once
    // and tries again, and the orders its rolled-back catch-up round had folded are folded again.
    let holder = {
        let mut tx = pipeline.read.begin().await.unwrap();
        sqlx::query("lock table product_sales_view in access share mode").execute(&mut *tx).await.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            tx.commit().await.unwrap();
        })
    };
    let rebuild = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move { pipeline.maintenance("rebuild", &[]).await })
    };
    // While it runs, a verify does not start: a swap after its snapshot would show it empty tables.
    eventually(Duration::from_secs(30), "the rebuild to hold its locks", || async {
        let held: i64 = sqlx::query_scalar(
            "select count(*) from pg_locks l join pg_stat_activity a using (pid)
              where l.locktype = 'advisory' and l.mode = 'ExclusiveLock' and a.application_name = 'consumer-service-rebuild'",
        )
        .fetch_one(&pipeline.read)
        .await
        .unwrap();
        (held >= 2).then_some(())
    })
    .await;
    let (code, said) = pipeline.maintenance_refused("verify").await;
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("a rebuild of this read database is running"), "{said}");
    let (code, report) = rebuild.await.unwrap();
    holder.await.unwrap();
    assert_eq!((code, report["status"].as_str()), (0, Some("rebuilt")), "{report:#}");
    rebuilt.store(true, Ordering::SeqCst);
    println!("rebuild under the burst: {report}");
    for client in burst {
        client.await.unwrap();
    }
    pipeline.wait_until_applied(Duration::from_secs(60)).await;

    let (code, report) = pipeline.maintenance("verify", &[]).await;
    assert_eq!((code, report["status"].as_str()), (0, Some("consistent")), "{report:#}");
    let customers = analytics_testkit::assert_read_model_matches_write_side(
        &pipeline.client,
        &pipeline.write,
        &pipeline.read,
        &pipeline.query,
    )
    .await;
    assert!(customers > 100, "the check covered {customers} customers");
    let written: i64 = sqlx::query_scalar("select count(*) from outbox_log").fetch_one(&pipeline.write).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("select count(*) from processed_events").fetch_one(&pipeline.read).await.unwrap();
    assert_eq!(applied, written, "every event applied once");
    let shadows: i64 = sqlx::query_scalar("select count(*) from pg_tables where tablename like '%\\_\\_rebuild'")
        .fetch_one(&pipeline.read)
        .await
        .unwrap();
    assert_eq!(shadows, 0, "no shadow table is left behind");
    drop(broker);
}
