//! The command API keeps the contract its OpenAPI document states, under schemathesis's generated and
//! hostile requests.

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_api_keeps_its_openapi_contract() {
    let app = spawn_app().await;
    // Some catalog to order from, so that orders get past "unknown product".
    for n in 1..=3 {
        app.create_product(&format!("Product {n}"), "Home", "4.99", 1_000_000).await;
    }
    analytics_testkit::check_api_contract(&app.address).await;
}
