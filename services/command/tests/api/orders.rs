//! Placing orders: stock is exact under concurrency, nothing deadlocks, and a failed order leaves no trace.

use std::collections::HashMap;

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn an_order_reads_back_with_catalog_prices_items_and_its_utc_time() {
    let app = spawn_app().await;
    let lamp = app.create_product("Lamp", "Home", "49.99", 10).await;
    let mug = app.create_product("Mug", "Kitchen", "8.50", 10).await;

    let (status, body) = app
        .post(
            "/api/orders",
            json!({"customerId": 42, "items": [{"productId": mug, "quantity": 3}, {"productId": lamp, "quantity": 2, "price": 49.99}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let order_id = body["orderId"].as_i64().unwrap();

    let (status, order) = app.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(order["orderId"], order_id);
    assert_eq!(order["customerId"], 42);
    assert_eq!(order["total"].to_string(), "125.48");
    assert_eq!(
        order["items"],
        json!([
            {"productId": lamp, "productName": "Lamp", "category": "Home", "quantity": 2, "unitPrice": 49.99},
            {"productId": mug, "productName": "Mug", "category": "Kitchen", "quantity": 3, "unitPrice": 8.5},
        ])
    );
    let created_at = order["createdAt"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && created_at.len() == 24, "ISO-8601 UTC with milliseconds: {created_at}");
    assert_eq!((app.stock(lamp).await, app.stock(mug).await), (8, 7));

    // The event carries everything the read side needs, at the same instant as the order.
    let event: serde_json::Value =
        sqlx::query_scalar("select body::jsonb from outbox where event_type = 'OrderCreated' and aggregate_id = $1")
            .bind(order_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(event["aggregateId"], order_id);
    assert_eq!(event["occurredAt"], created_at);
    assert_eq!(event["payload"]["orderedAt"], created_at);
    assert_eq!(event["payload"]["customerId"], 42);
    assert_eq!(event["payload"]["total"].to_string(), "125.48");
    assert_eq!(
        event["payload"]["items"][0],
        json!({"productId": lamp, "productName": "Lamp", "category": "Home", "unitPrice": 49.99, "quantity": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_concurrent_orders_for_the_last_25_units_give_exactly_25_successes() {
    let app = spawn_app().await;
    let product = app.create_product("Last Units", "Scarce", "5.00", 25).await;

    let requests = (0..60).map(|customer| {
        app.post("/api/orders", json!({"customerId": customer + 1, "items": [{"productId": product, "quantity": 1}]}))
    });
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for (status, body) in join_all(requests).await {
        if status == 409 {
            let message = assert_error(status, &body, 409, "insufficient_stock");
            assert!(message.contains("Last Units"), "{message}");
        }
        *by_status.entry(status).or_default() += 1;
    }
    assert_eq!(by_status, HashMap::from([(201, 25), (409, 35)]));
    assert_eq!(app.stock(product).await, 0);
    assert_eq!(app.count("orders").await, 25);
    assert_eq!(app.outbox_count("OrderCreated").await, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_listing_the_same_products_in_different_orders_never_deadlock() {
    let app = spawn_app().await;
    let ids = [
        app.create_product("A", "Cat", "1.00", 10_000).await,
        app.create_product("B", "Cat", "2.00", 10_000).await,
        app.create_product("C", "Cat", "3.00", 10_000).await,
    ];
    let orders = (0..150).map(|i| {
        let mut items: Vec<_> = ids.iter().map(|id| json!({"productId": id, "quantity": 1})).collect();
        items.rotate_left(i % 3);
        if i % 2 == 0 {
            items.reverse();
        }
        app.post("/api/orders", json!({"customerId": 1, "items": items}))
    });
    let statuses: Vec<u16> = join_all(orders).await.into_iter().map(|(status, _)| status).collect();
    assert!(statuses.iter().all(|s| *s == 201), "every order succeeds: {statuses:?}");
    for id in ids {
        assert_eq!(app.stock(id).await, 10_000 - 150);
    }
}

#[tokio::test]
async fn a_multi_item_order_that_fails_on_one_item_leaves_no_row_no_stock_change_and_no_event() {
    let app = spawn_app().await;
    let plenty = app.create_product("Plenty", "Cat", "1.00", 100).await;
    let scarce = app.create_product("Scarce", "Cat", "1.00", 1).await;

    let (status, body) = app
        .post(
            "/api/orders",
            json!({"customerId": 1, "items": [{"productId": plenty, "quantity": 5}, {"productId": scarce, "quantity": 2}]}),
        )
        .await;
    let message = assert_error(status, &body, 409, "insufficient_stock");
    assert!(message.contains("Scarce") && message.contains("1 available"), "{message}");
    assert_eq!((app.stock(plenty).await, app.stock(scarce).await), (100, 1));
    assert_eq!((app.count("orders").await, app.count("order_items").await), (0, 0));
    assert_eq!(app.outbox_count("OrderCreated").await, 0);
}
