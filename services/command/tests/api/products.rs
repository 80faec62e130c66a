//! The catalog: create, read and change products; each write emits its event in the same transaction.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_created_product_reads_back_exactly_and_emits_product_created() {
    let app = spawn_app().await;
    let id = app.create_product("  Desk Lamp ", "Home", "49.99", 12).await;

    let (status, body) = app.get(&format!("/api/products/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": id, "name": "Desk Lamp", "category": "Home", "price": 49.99, "stock": 12}));

    let event: serde_json::Value =
        sqlx::query_scalar("select body::jsonb from outbox where aggregate_id = $1 and event_type = 'ProductCreated'")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(event["schemaVersion"], 1);
    assert_eq!(
        event["payload"],
        json!({"productId": id, "name": "Desk Lamp", "category": "Home", "price": 49.99, "stock": 12, "version": 1})
    );
}

#[tokio::test]
async fn a_patch_changes_price_and_adds_stock_and_emits_the_new_state() {
    let app = spawn_app().await;
    let id = app.create_product("Mug", "Kitchen", "8.50", 3).await;

    let (status, body) = app.patch(&format!("/api/products/{id}"), json!({"price": 7.25, "addStock": 10})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": id, "name": "Mug", "category": "Kitchen", "price": 7.25, "stock": 13}));
    let (_, read) = app.get(&format!("/api/products/{id}")).await;
    assert_eq!(read, body);

    let (status, body) = app.patch(&format!("/api/products/{id}"), json!({"addStock": 2})).await;
    assert_eq!((status, body["stock"].as_i64(), body["price"].to_string()), (200, Some(15), "7.25".to_owned()));

    let updates: Vec<serde_json::Value> = sqlx::query_scalar(
        "select body::jsonb -> 'payload' from outbox where aggregate_id = $1 and event_type = 'ProductUpdated' order by id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["version"], 2);
    assert_eq!(updates[0]["price"].to_string(), "7.25");
    assert_eq!(updates[1]["version"], 3);
    assert_eq!(updates[1]["stock"], 15);

    // An order quoting the old price is refused now.
    let (status, body) = app
        .post("/api/orders", json!({"customerId": 1, "items": [{"productId": id, "quantity": 1, "price": 8.50}]}))
        .await;
    assert_error(status, &body, 409, "price_mismatch");
}

/// `Café` typed with a combining accent is the same category as with the precomposed letter; case is
/// kept.
#[tokio::test]
async fn names_and_categories_are_stored_in_normalization_form_c() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/api/products", json!({"name": "Cre\u{300}me", "category": "Cafe\u{301}", "price": 2, "stock": 1}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, stored) = app.get(&format!("/api/products/{}", body["productId"])).await;
    assert_eq!((stored["name"].as_str(), stored["category"].as_str()), (Some("Cr\u{e8}me"), Some("Caf\u{e9}")));
    let (status, _) =
        app.post("/api/products", json!({"name": "Mug", "category": "CAF\u{c9}", "price": 2, "stock": 1})).await;
    assert_eq!(status, 201);
    let stored: Vec<String> =
        sqlx::query_scalar("select category from products order by id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(stored, ["Caf\u{e9}", "CAF\u{c9}"]);
}

#[tokio::test]
async fn invalid_patches_are_rejected_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.create_product("Mug", "Kitchen", "8.50", 3).await;
    let path = format!("/api/products/{id}");
    let cases = [
        (json!({}), 422, "validation_failed"),
        (json!({"price": 0}), 422, "validation_failed"),
        (json!({"price": 1.001}), 422, "validation_failed"),
        (json!({"addStock": 0}), 422, "validation_failed"),
        (json!({"addStock": -5}), 422, "validation_failed"),
        (json!({"addStock": 2_000_000_000}), 422, "validation_failed"),
        (json!({"stock": 100}), 400, "invalid_body"),
        (json!({"price": "9"}), 400, "invalid_body"),
        // An array is not an object, though serde would read it as the fields in order.
        (json!([4.44, null]), 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (got, response) = app.patch(&path, body.clone()).await;
        assert_error(got, &response, status, code);
    }
    // Stock is capped at 10^9, however the additions come: 422, not a 500 or a stock past the cap.
    let (got, _) = app.patch(&path, json!({"addStock": 999_999_990})).await;
    assert_eq!(got, 200);
    for add in [8, 1_000_000_000] {
        let (got, response) = app.patch(&path, json!({"addStock": add})).await;
        assert_error(got, &response, 422, "validation_failed");
        assert_eq!(response["message"], format!("stock of product {id} would exceed 1000000000"));
    }
    let (got, _) = app.patch(&path, json!({"addStock": 7})).await;
    assert_eq!((got, app.stock(id).await), (200, 1_000_000_000), "up to the cap is fine");

    let (status, body) = app.patch("/api/products/987654", json!({"addStock": 1})).await;
    assert_error(status, &body, 404, "not_found");

    let (_, product) = app.get(&path).await;
    assert_eq!(product["price"].to_string(), "8.5");
    assert_eq!(app.outbox_count("ProductUpdated").await, 2, "the two additions within the cap");
}
