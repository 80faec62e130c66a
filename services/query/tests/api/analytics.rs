//! The analytics API: each endpoint's response shape, the figures' definitions, zeros and errors.

use analytics_testkit::assert_error;
use consumer_service::projection::Stream;
use serde_json::json;

use crate::helpers::{order, product, spawn_app};

const LAMP: (i64, &str, &str, &str) = (1, "Lamp", "Home", "10.00");
const RUG: (i64, &str, &str, &str) = (2, "Rug", "Home", "5.00");
const STICKER: (i64, &str, &str, &str) = (3, "Sticker", "Paper", "0.10");

#[tokio::test]
async fn the_figures_follow_their_definitions() {
    let app = spawn_app().await;
    app.apply(
        Stream::Products,
        &[
            product(1, "Lamp", "Home", "10.00"),
            product(2, "Rug", "Home", "5.00"),
            product(3, "Sticker", "Paper", "0.10"),
        ],
    )
    .await;
    let line = |(id, name, category, price): (i64, &'static str, &'static str, &'static str), quantity| {
        (id, name, category, price, quantity)
    };
    app.apply(
        Stream::Orders,
        &[
            // Two items of one category: the order counts once for Home.
            order(100, 7, "2026-11-24T10:15:00.000Z", &[line(LAMP, 2), line(RUG, 1)]),
            order(101, 7, "2026-11-24T11:45:30.250Z", &[line(LAMP, 1)]),
            order(102, 8, "2026-11-24T11:50:00.000Z", &[line(STICKER, 3)]),
        ],
    )
    .await;

    let (status, lamp) = app.get("/api/analytics/products/1/sales").await;
    assert_eq!(status, 200);
    assert_eq!(lamp, json!({"productId": 1, "totalQuantitySold": 3, "totalRevenue": 30, "orderCount": 2}));

    let (_, home) = app.get("/api/analytics/categories/Home/revenue").await;
    assert_eq!(home, json!({"category": "Home", "totalRevenue": 35, "totalOrders": 2}));
    let text = app.get_text("/api/analytics/categories/Paper/revenue").await;
    assert_eq!(text, r#"{"category":"Paper","totalRevenue":0.3,"totalOrders":1}"#, "three at 0.10 is exactly 0.3");

    let (_, customer) = app.get("/api/analytics/customers/7/lifetime-value").await;
    assert_eq!(
        customer,
        json!({"customerId": 7, "totalSpent": 35, "orderCount": 2, "lastOrderDate": "2026-11-24T11:45:30.250Z"})
    );

    let (_, hours) = app.get("/api/analytics/sales/hourly?from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z").await;
    assert_eq!(
        hours,
        json!([
            {"hour": "2026-11-24T10:00:00.000Z", "orderCount": 1, "itemsSold": 3, "revenue": 25},
            {"hour": "2026-11-24T11:00:00.000Z", "orderCount": 2, "itemsSold": 4, "revenue": 10.3},
        ])
    );
    let (_, later) = app.get("/api/analytics/sales/hourly?from=2026-11-24T11:00:00Z&to=2026-11-24T12:00:00Z").await;
    assert_eq!(later.as_array().unwrap().len(), 1);

    let (_, top) = app.get("/api/analytics/products/top?by=revenue&limit=2").await;
    let ids: Vec<_> = top.as_array().unwrap().iter().map(|p| p["productId"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        top[0],
        json!({"productId": 1, "productName": "Lamp", "category": "Home", "totalQuantitySold": 3, "totalRevenue": 30, "orderCount": 2})
    );
    let (_, top) = app.get("/api/analytics/products/top?by=quantity").await;
    let ids: Vec<_> = top.as_array().unwrap().iter().map(|p| p["productId"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 3, 2], "3 lamps, 3 stickers (lower id first on ties), 1 rug");

    let (_, categories) = app.get("/api/analytics/categories").await;
    assert_eq!(
        categories,
        json!([
            {"category": "Home", "totalRevenue": 35, "totalOrders": 2, "totalQuantity": 4},
            {"category": "Paper", "totalRevenue": 0.3, "totalOrders": 1, "totalQuantity": 3},
        ])
    );
}

/// A customer's categories: revenue and quantity summed over the customer's items in each, an order counted
/// once per category it touches, largest revenue first (ties by name); nothing bought is an empty list.
#[tokio::test]
async fn a_customers_categories_are_by_revenue_with_an_order_counted_once_in_each() {
    let app = spawn_app().await;
    app.apply(
        Stream::Products,
        &[
            product(1, "Lamp", "Home", "10.00"),
            product(2, "Rug", "Home", "5.00"),
            product(3, "Sticker", "Paper", "0.10"),
            product(4, "Pen", "Office", "0.30"),
        ],
    )
    .await;
    let line = |(id, name, category, price): (i64, &'static str, &'static str, &'static str), quantity| {
        (id, name, category, price, quantity)
    };
    const PEN: (i64, &str, &str, &str) = (4, "Pen", "Office", "0.30");
    app.apply(
        Stream::Orders,
        &[
            order(100, 7, "2026-11-24T10:15:00.000Z", &[line(LAMP, 2), line(RUG, 1), line(STICKER, 3)]),
            order(101, 7, "2026-11-24T11:45:30.250Z", &[line(STICKER, 2), line(PEN, 1)]),
            order(102, 8, "2026-11-24T11:50:00.000Z", &[line(RUG, 4)]),
        ],
    )
    .await;

    let (status, body) = app.get("/api/analytics/customers/7/categories").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"customerId": 7, "categories": [
            {"category": "Home", "totalRevenue": 25, "totalQuantity": 3, "orderCount": 1},
            {"category": "Paper", "totalRevenue": 0.5, "totalQuantity": 5, "orderCount": 2},
            {"category": "Office", "totalRevenue": 0.3, "totalQuantity": 1, "orderCount": 1},
        ]})
    );
    let (_, body) = app.get("/api/analytics/customers/8/categories").await;
    assert_eq!(
        body,
        json!({"customerId": 8, "categories": [
            {"category": "Home", "totalRevenue": 20, "totalQuantity": 4, "orderCount": 1},
        ]})
    );
    let (status, body) = app.get("/api/analytics/customers/12345/categories").await;
    assert_eq!((status, body), (200, json!({"customerId": 12345, "categories": []})));
}

#[tokio::test]
async fn known_things_without_sales_are_zeros_and_unknown_ones_404() {
    let app = spawn_app().await;
    app.apply(Stream::Products, &[product(5, "Vase", "Decor", "12.00")]).await;
    app.apply(Stream::Products, &[product(7, "Rake", "Garden", "9.00"), product(8, "Bowl", "Decor", "4.00")]).await;

    let (status, body) = app.get("/api/analytics/products/5/sales").await;
    assert_eq!(
        (status, body),
        (200, json!({"productId": 5, "totalQuantitySold": 0, "totalRevenue": 0, "orderCount": 0}))
    );
    let (status, body) = app.get("/api/analytics/categories/Decor/revenue").await;
    assert_eq!((status, body), (200, json!({"category": "Decor", "totalRevenue": 0, "totalOrders": 0})));
    let (status, body) = app.get("/api/analytics/customers/12345/lifetime-value").await;
    assert_eq!(
        (status, body),
        (200, json!({"customerId": 12345, "totalSpent": 0, "orderCount": 0, "lastOrderDate": null}))
    );
    // Every category the catalog holds, once, however many products it has.
    let (_, categories) = app.get("/api/analytics/categories").await;
    assert_eq!(
        categories,
        json!([
            {"category": "Decor", "totalRevenue": 0, "totalOrders": 0, "totalQuantity": 0},
            {"category": "Garden", "totalRevenue": 0, "totalOrders": 0, "totalQuantity": 0},
        ])
    );

    let (status, body) = app.get("/api/analytics/products/6/sales").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get("/api/analytics/categories/Nothing/revenue").await;
    assert_error(status, &body, 404, "not_found");
    // A long unknown name is quoted in part.
    let (status, body) = app.get(&format!("/api/analytics/categories/{}/revenue", "x".repeat(60_000))).await;
    assert_error(status, &body, 404, "not_found");
    assert!(body["message"].as_str().unwrap().len() < 400, "{body}");

    // Names are stored in normalization form C (the command API's doing); a path that spells the accent
    // as a combining character finds the category, and its case still matters.
    app.apply(Stream::Products, &[product(9, "Cup", "Caf\u{e9}", "3.00")]).await;
    let (status, body) = app.get("/api/analytics/categories/Cafe%CC%81/revenue").await;
    assert_eq!((status, body["category"].as_str()), (200, Some("Caf\u{e9}")), "{body}");
    let (status, body) = app.get("/api/analytics/categories/CAFE%CC%81/revenue").await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn malformed_ids_and_parameters_are_400_in_the_common_error_shape() {
    let app = spawn_app().await;
    for path in [
        "/api/analytics/products/abc/sales",
        "/api/analytics/products/0/sales",
        "/api/analytics/products/-2/sales",
        "/api/analytics/customers/x/lifetime-value",
        "/api/analytics/customers/0/lifetime-value",
        "/api/analytics/customers/x/categories",
        "/api/analytics/customers/-1/categories",
        "/api/analytics/customers/99999999999999999999/categories",
    ] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, 400, "invalid_path");
    }
    for path in [
        "/api/analytics/products/top?by=price",
        "/api/analytics/products/top?limit=0",
        "/api/analytics/products/top?limit=101",
        "/api/analytics/sales/hourly?from=yesterday",
        "/api/analytics/sales/hourly?from=2026-11-24T12:00:00Z&to=2026-11-24T11:00:00Z",
        "/api/analytics/sales/hourly?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        // Near chrono's limits (arithmetic there used to panic) and before PostgreSQL's 4713 BC (a 500).
        "/api/analytics/sales/hourly?to=-262143-01-01T00:00:00Z",
        "/api/analytics/sales/hourly?from=2026-11-24T11:00:00Z&to=-262143-01-01T00:00:00Z",
        "/api/analytics/sales/hourly?from=-4714-01-01T00:00:00Z&to=-4714-01-02T00:00:00Z",
        "/api/analytics/sales/hourly?from=0000-06-01T00:00:00Z&to=0000-06-02T00:00:00Z",
        "/api/analytics/sales/hourly?from=+10000-01-01T00:00:00Z&to=+10000-01-02T00:00:00Z",
        // No category holds a control character, and PostgreSQL's text cannot hold NUL.
        "/api/analytics/categories/Ho%00me/revenue",
        "/api/analytics/categories/Ho%07me/revenue",
    ] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, 400, "invalid_query");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_analytics_route() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/analytics/products/{id}/sales",
        "/api/analytics/products/top",
        "/api/analytics/categories/{category}/revenue",
        "/api/analytics/categories",
        "/api/analytics/customers/{id}/lifetime-value",
        "/api/analytics/customers/{id}/categories",
        "/api/analytics/sales/hourly",
        "/api/analytics/sync-status",
    ] {
        assert!(doc["paths"][path]["get"]["responses"]["200"].is_object(), "{path} is documented");
        assert!(doc["paths"][path]["get"]["responses"]["401"].is_object(), "{path} documents its 401");
    }
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
}

/// The read API takes its own tokens: without one, every analytics route, sync-status included, is a
/// JSON 401 naming the query realm; the operational endpoints stay open.
#[tokio::test]
async fn every_analytics_route_needs_a_read_token() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    for path in [
        "/api/analytics/products/1/sales",
        "/api/analytics/products/top",
        "/api/analytics/categories/Home/revenue",
        "/api/analytics/categories",
        "/api/analytics/customers/1/lifetime-value",
        "/api/analytics/customers/1/categories",
        "/api/analytics/sales/hourly",
        "/api/analytics/sync-status",
    ] {
        let response = anonymous.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"query\"", "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        analytics_testkit::assert_error(401, &body, 401, "unauthorized");
    }
    analytics_testkit::assert_open_endpoints(&app.address, &app.admin).await;
    assert_eq!(app.get("/api/analytics/sync-status").await.0, 200, "with the token");
}
