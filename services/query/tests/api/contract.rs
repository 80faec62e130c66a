//! The query API keeps the contract its OpenAPI document states, under schemathesis's generated and
//! hostile requests.

use analytics_events::Stream;

use crate::helpers::{order, product, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_keeps_its_openapi_contract() {
    let app = spawn_app().await;
    // A read model with something in it, so that lookups get past "not found".
    app.apply(Stream::Products, &[product(1, "Lamp", "Home", "4.99"), product(2, "Pan", "Kitchen", "12.50")]).await;
    app.apply(
        Stream::Orders,
        &[order(
            1,
            1,
            "2026-11-24T05:53:46.123Z",
            &[(1, "Lamp", "Home", "4.99", 2), (2, "Pan", "Kitchen", "12.50", 1)],
        )],
    )
    .await;
    analytics_testkit::check_api_contract(&app.address).await;
}
