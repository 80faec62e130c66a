//! Money is an exact decimal from the request to the response and the event.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn prices_and_totals_are_printed_exactly_without_float_noise() {
    let app = spawn_app().await;
    let dime = app.create_product("Sticker", "Paper", "0.10", 100).await;
    let odd = app.create_product("Odd", "Paper", "49.99", 100).await;

    let (_, text) = app.get_text(&format!("/api/products/{odd}")).await;
    assert!(text.contains("\"price\":49.99,"), "{text}");

    let (status, body) =
        app.post("/api/orders", json!({"customerId": 3, "items": [{"productId": dime, "quantity": 3}]})).await;
    assert_eq!(status, 201);
    let (_, text) = app.get_text(&format!("/api/orders/{}", body["orderId"])).await;
    assert!(text.contains("\"total\":0.3,"), "three at 0.10 is 0.3: {text}");

    let (status, body) =
        app.post("/api/orders", json!({"customerId": 3, "items": [{"productId": odd, "quantity": 7}]})).await;
    assert_eq!(status, 201);
    let (_, text) = app.get_text(&format!("/api/orders/{}", body["orderId"])).await;
    assert!(text.contains("\"total\":349.93,"), "{text}");
    let stored: String = sqlx::query_scalar("select total::text from orders where id = $1")
        .bind(body["orderId"].as_i64().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, "349.93");
}
