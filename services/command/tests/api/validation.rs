//! Every rejected request gets the JSON error shape, a precise status, and writes nothing.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

/// Nothing but the setup's rows: no product, order, line or event beyond what the test made itself.
async fn assert_nothing_written(app: &TestApp, products: i64, product_stock: &[(i64, i32)]) {
    assert_eq!(app.count("products").await, products);
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.count("order_items").await, 0);
    assert_eq!(app.count("outbox").await, products, "one ProductCreated per setup product, nothing else");
    for (id, stock) in product_stock {
        assert_eq!(app.stock(*id).await, *stock, "stock of product {id} changed");
    }
}

#[tokio::test]
async fn invalid_products_are_rejected_with_precise_codes_and_write_nothing() {
    let app = spawn_app().await;
    let valid = json!({"name": "Lamp", "category": "Home", "price": 49.99, "stock": 5});
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (without("name"), 400, "invalid_body"),
        (without("price"), 400, "invalid_body"),
        (with("price", json!("49.99")), 400, "invalid_body"),
        (with("stock", json!(1.5)), 400, "invalid_body"),
        (with("stock", json!("5")), 400, "invalid_body"),
        (with("name", json!(7)), 400, "invalid_body"),
        (json!([1, 2]), 400, "invalid_body"),
        // An array is not an object, though serde would read it as the fields in order.
        (json!(["Array Prod", "ArrCat", 1.5, 3]), 400, "invalid_body"),
        // A field it does not know is refused, not ignored.
        (with("colour", json!("red")), 400, "invalid_body"),
        (with("name", json!("")), 422, "validation_failed"),
        // PostgreSQL's text cannot hold NUL; no control character belongs in a name or a category.
        (with("name", json!("La\u{0}mp")), 422, "validation_failed"),
        (with("category", json!("Ho\u{0}me")), 422, "validation_failed"),
        (with("category", json!("Ho\u{7}me")), 422, "validation_failed"),
        (with("name", json!("   ")), 422, "validation_failed"),
        (with("category", json!("")), 422, "validation_failed"),
        (with("price", json!(0)), 422, "validation_failed"),
        (with("price", json!(-1.5)), 422, "validation_failed"),
        (with("price", json!(1.999)), 422, "validation_failed"),
        (with("stock", json!(-1)), 422, "validation_failed"),
    ];
    for (body, status, code) in cases {
        let (got, response) = app.post("/api/products", body.clone()).await;
        assert_eq!(got, status, "for {body}: {response}");
        assert_error(got, &response, status, code);
    }
    assert_nothing_written(&app, 0, &[]).await;
}

#[tokio::test]
async fn malformed_json_oversized_bodies_and_wrong_media_types_use_the_same_error_shape() {
    let app = spawn_app().await;
    let url = format!("{}/api/orders", app.address);
    let send = |body: String, content_type: &'static str| {
        app.client.post(&url).header("content-type", content_type).body(body).send()
    };

    let response = send("{\"customerId\": 1, \"items\": [".into(), "application/json").await.unwrap();
    let status = response.status().as_u16();
    assert_error(status, &response.json().await.unwrap(), 400, "invalid_json");

    let huge = format!("{{\"customerId\": 1, \"items\": [], \"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let response = send(huge, "application/json").await.unwrap();
    let status = response.status().as_u16();
    assert_error(status, &response.json().await.unwrap(), 413, "payload_too_large");

    let response = send("{\"customerId\": 1, \"items\": []}".into(), "text/plain").await.unwrap();
    let status = response.status().as_u16();
    assert_error(status, &response.json().await.unwrap(), 415, "unsupported_media_type");

    // A compressed body (gzip's header, then deflated bytes): the media type is right, its encoding is
    // not one the API reads.
    let gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV\xca".to_vec();
    let response = app
        .client
        .post(format!("{}/api/products", app.address))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    assert_error(status, &body, 415, "unsupported_media_type");
    assert_eq!(body["message"], r#"Content-Encoding "gzip" is not accepted; send the JSON uncompressed"#);

    assert_nothing_written(&app, 0, &[]).await;
}

#[tokio::test]
async fn invalid_orders_are_rejected_with_precise_codes_and_write_nothing() {
    let app = spawn_app().await;
    let lamp = app.create_product("Lamp", "Home", "49.99", 5).await;
    let mug = app.create_product("Mug", "Kitchen", "8.50", 1).await;
    // The dearest product there may be, in a quantity that every per-line limit allows.
    let yacht = app.create_product("Yacht", "Leisure", "9999999999.99", 1000).await;
    let order = |customer: Value, items: Value| json!({"customerId": customer, "items": items});
    let one = json!([{"productId": lamp, "quantity": 1}]);

    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (order(json!(0), one.clone()), 422, "validation_failed", Some("customerId")),
        (order(json!(-4), one.clone()), 422, "validation_failed", Some("customerId")),
        (order(json!("7"), one.clone()), 400, "invalid_body", None),
        (order(json!(1.5), one.clone()), 400, "invalid_body", None),
        (json!({"items": one.clone()}), 400, "invalid_body", None),
        (json!({"customerId": 1}), 400, "invalid_body", None),
        // An array is not an object, though serde would read it as the fields in order.
        (json!([8001, [[lamp, 1, null]]]), 400, "invalid_body", Some("object")),
        // A misspelled price guard must not place the order without the check it asks for.
        (
            order(json!(1), json!([{"productId": lamp, "quantity": 1, "prcie": 0.11}])),
            400,
            "invalid_body",
            Some("prcie"),
        ),
        (json!({"customerId": 1, "items": one.clone(), "coupon": "X"}), 400, "invalid_body", Some("coupon")),
        (order(json!(1), json!([])), 422, "validation_failed", Some("items")),
        (order(json!(1), json!([{"productId": lamp, "quantity": 0}])), 422, "validation_failed", Some("quantity")),
        (order(json!(1), json!([{"productId": lamp, "quantity": -1}])), 422, "validation_failed", Some("quantity")),
        (order(json!(1), json!([{"productId": lamp, "quantity": 1.5}])), 400, "invalid_body", None),
        (order(json!(1), json!([{"productId": lamp}])), 400, "invalid_body", None),
        (
            order(json!(1), json!([{"productId": lamp, "quantity": 1}, {"productId": lamp, "quantity": 2}])),
            422,
            "validation_failed",
            Some("appears more than once"),
        ),
        (
            order(json!(1), json!([{"productId": lamp, "quantity": 1}, {"productId": 999_999, "quantity": 1}])),
            422,
            "unknown_product",
            Some("999999"),
        ),
        (
            order(json!(1), json!([{"productId": lamp, "quantity": 1, "price": 39.99}])),
            409,
            "price_mismatch",
            Some("Lamp"),
        ),
        (order(json!(1), json!([{"productId": mug, "quantity": 2}])), 409, "insufficient_stock", Some("Mug")),
        (
            order(json!(1), json!([{"productId": yacht, "quantity": 101}])),
            422,
            "total_too_large",
            Some("1009999999998.99"),
        ),
    ];
    for (body, status, code, mentions) in cases {
        let (got, response) = app.post("/api/orders", body.clone()).await;
        let message = assert_error(got, &response, status, code);
        if let Some(text) = mentions {
            assert!(message.contains(text), "message for {body} should mention {text}: {message}");
        }
    }
    assert_nothing_written(&app, 3, &[(lamp, 5), (mug, 1), (yacht, 1000)]).await;
    // Just under the limit is fine: 100 × 9 999 999 999.99.
    let (status, _) = app.post("/api/orders", order(json!(1), json!([{"productId": yacht, "quantity": 100}]))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn ids_that_are_not_positive_integers_are_400_and_unknown_ones_404() {
    let app = spawn_app().await;
    for path in ["/api/products/abc", "/api/products/0", "/api/products/-3", "/api/orders/x", "/api/orders/0"] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, 400, "invalid_path");
    }
    for path in ["/api/products/424242", "/api/orders/424242"] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, body) = app.get("/api/nothing-here").await;
    assert_error(status, &body, 404, "not_found");
}

/// Sends `request` on a new connection and reads until the server closes it (or 5 s pass): the
/// status code and the body of the first response, and whether anything came before it.
async fn raw_exchange(address: &str, request: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept the connection open: {}", String::from_utf8_lossy(&answer));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn requests_that_do_not_parse_get_the_json_error_shape_and_a_closed_connection() {
    let app = spawn_app().await;
    let cases: [(Vec<u8>, &str, &str); 3] = [
        (b"GET /api/products/1 HTTP/1.1\r\nhost: test\r\nno colon here\r\n\r\n".to_vec(), "400", "bad_request"),
        (
            format!("GET /api/products/1 HTTP/1.1\r\nhost: test\r\nx-pad: {}\r\n\r\n", "x".repeat(80 * 1024))
                .into_bytes(),
            "431",
            "headers_too_large",
        ),
        (format!("GET /{} HTTP/1.1\r\nhost: test\r\n\r\n", "a".repeat(65_535)).into_bytes(), "414", "uri_too_long"),
    ];
    for (request, status, code) in cases {
        let (status_line, body) = raw_exchange(&app.address, &request).await;
        assert!(status_line.starts_with(&format!("HTTP/1.1 {status} ")), "{status_line}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status}: not JSON: {body:?}"));
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // The server itself is unharmed.
    let (status, _) = app.get("/api/products/999").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_oversized_body_announced_with_expect_100_continue_is_refused_before_it_is_sent() {
    let app = spawn_app().await;
    let request = format!(
        "POST /api/orders HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 1000000\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        analytics_testkit::API_TOKEN
    );
    // No body follows: a server that answers 100 Continue would wait for it until the client gives up.
    let (status_line, body) = raw_exchange(&app.address, request.as_bytes()).await;
    assert_eq!(status_line, "HTTP/1.1 413 Payload Too Large");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "payload_too_large", "{body}");
    assert_eq!(body["message"], "the body is 1000000 bytes; at most 65536 are accepted");
    assert_nothing_written(&app, 0, &[]).await;
}

/// A body that stops arriving is the client's fault: a 408 well before the request's own time limit,
/// counted in the metrics, and nothing written.
#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_and_writes_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 500\r\n\r\n",
        analytics_testkit::API_TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"customerId": "#).await.unwrap();
    let mut answer = Vec::new();
    // Generously over the body's time limit, and short of the request's.
    let limit = analytics_kit::http::BODY_READ_TIMEOUT
        + (analytics_kit::http::REQUEST_TIMEOUT - analytics_kit::http::BODY_READ_TIMEOUT) / 2;
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(read.is_ok(), "no answer within {limit:?}: {answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408 Request Timeout"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_error(408, &body, 408, "request_timeout");
    assert_nothing_written(&app, 0, &[]).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"http_requests_total{method="POST",route="/api/orders",status="408"} 1"#), "{metrics}");
}
