//! Pricing an order against the catalog: the business rules of `POST /api/orders`, with no I/O.
//!
//! The handler locks the order's catalog rows and hands them here. Every line must name a product that
//! exists, match its catalog price if the client stated one, and fit in its stock; the total must fit its
//! column. The priced lines come out in product id order, each at its catalog price, with the order total.

use analytics_events::{Money, OrderCreated, OrderLine};
use chrono::{DateTime, Utc};

use super::NewOrder;

/// A catalog row as the order transaction locked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub price: Money,
    pub stock: i32,
}

/// An order the catalog accepts: lines in product id order at catalog prices, and their total.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedOrder {
    pub customer_id: i64,
    pub lines: Vec<OrderLine>,
    /// Σ quantity × unit price over the lines.
    pub total: Money,
}

impl PricedOrder {
    /// The OrderCreated payload of this order once stored as `order_id`.
    pub fn created(self, order_id: i64, ordered_at: DateTime<Utc>) -> OrderCreated {
        OrderCreated { order_id, customer_id: self.customer_id, ordered_at, total: self.total, items: self.lines }
    }
}

/// Why the catalog refuses an order as it stands now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown product ids: {}", join(.0))]
    UnknownProducts(Vec<i64>),
    #[error("price {given} for \"{name}\" (product {product_id}) differs from the catalog price {catalog}")]
    PriceMismatch { product_id: i64, name: String, given: Money, catalog: Money },
    #[error("not enough stock for \"{name}\" (product {product_id}): {available} available, {requested} requested")]
    InsufficientStock { product_id: i64, name: String, available: i32, requested: i32 },
    #[error("the order total {total} exceeds the largest total an order may have, {}", max_total())]
    TotalTooLarge { total: Money },
}

/// Totals are stored as `numeric(14, 2)`: below 10^12.
pub fn max_total() -> Money {
    Money::new(rust_decimal::Decimal::new(99_999_999_999_999, 2))
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Prices `order` against `catalog`, the locked rows of its products (in any order). Refuses the whole
/// order for every unknown product, or for the first line (by product id) whose price or stock fails.
pub fn price(order: NewOrder, catalog: &[CatalogEntry]) -> Result<PricedOrder, Refusal> {
    let mut requested = order.lines;
    requested.sort_by_key(|line| line.product_id);
    let entry = |id: i64| catalog.iter().find(|entry| entry.id == id);

    let missing: Vec<i64> =
        requested.iter().map(|line| line.product_id.get()).filter(|id| entry(*id).is_none()).collect();
    if !missing.is_empty() {
        return Err(Refusal::UnknownProducts(missing));
    }

    let mut lines = Vec::with_capacity(requested.len());
    for line in requested {
        let product = entry(line.product_id.get()).expect("every product was found above");
        if let Some(given) = line.expected_price.filter(|given| *given != product.price) {
            return Err(Refusal::PriceMismatch {
                product_id: product.id,
                name: product.name.clone(),
                given,
                catalog: product.price,
            });
        }
        let quantity = line.quantity.get();
        if product.stock < quantity {
            return Err(Refusal::InsufficientStock {
                product_id: product.id,
                name: product.name.clone(),
                available: product.stock,
                requested: quantity,
            });
        }
        lines.push(OrderLine {
            product_id: product.id,
            product_name: product.name.clone(),
            category: product.category.clone(),
            unit_price: product.price,
            quantity: quantity.into(),
        });
    }
    let total: Money = lines.iter().map(|line| line.unit_price * line.quantity).sum();
    if total > max_total() {
        return Err(Refusal::TotalTooLarge { total });
    }
    Ok(PricedOrder { customer_id: order.customer_id.get(), lines, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderLineRequest, OrderRequest};

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    fn catalog() -> Vec<CatalogEntry> {
        let entry = |id: i64, name: &str, category: &str, price: &str, stock: i32| CatalogEntry {
            id,
            name: name.into(),
            category: category.into(),
            price: money(price),
            stock,
        };
        vec![entry(7, "Desk", "Home", "120.00", 2), entry(3, "Pen", "Office", "1.25", 500)]
    }

    fn order(lines: &[(i64, i64, Option<&str>)]) -> NewOrder {
        let items = lines
            .iter()
            .map(|(product_id, quantity, price)| OrderLineRequest {
                product_id: *product_id,
                quantity: *quantity,
                price: price.map(money),
            })
            .collect();
        NewOrder::try_from(OrderRequest { customer_id: 42, items }).unwrap()
    }

    #[test]
    fn a_total_beyond_its_column_is_refused_and_the_largest_one_is_not() {
        let yacht = CatalogEntry {
            id: 1,
            name: "Yacht".into(),
            category: "Leisure".into(),
            price: money("9999999999.99"),
            stock: 1000,
        };
        let refused = price(order(&[(1, 101, None)]), std::slice::from_ref(&yacht)).unwrap_err();
        assert_eq!(refused, Refusal::TotalTooLarge { total: money("1009999999998.99") });
        assert_eq!(price(order(&[(1, 100, None)]), &[yacht]).unwrap().total, money("999999999999.00"));
        assert_eq!(max_total(), money("999999999999.99"));
    }

    #[test]
    fn lines_are_priced_from_the_catalog_in_product_id_order_with_their_total() {
        let priced = price(order(&[(7, 2, None), (3, 3, Some("1.25"))]), &catalog()).unwrap();
        assert_eq!(priced.customer_id, 42);
        let lines: Vec<_> = priced
            .lines
            .iter()
            .map(|l| (l.product_id, l.product_name.as_str(), l.category.as_str(), l.unit_price, l.quantity))
            .collect();
        assert_eq!(lines, [(3, "Pen", "Office", money("1.25"), 3), (7, "Desk", "Home", money("120.00"), 2)]);
        assert_eq!(priced.total, money("243.75"), "3 × 1.25 + 2 × 120.00");
    }

    #[test]
    fn a_stated_price_must_equal_the_catalog_price_to_the_cent() {
        let refusal = price(order(&[(3, 1, Some("1.24"))]), &catalog()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::PriceMismatch { product_id: 3, name: "Pen".into(), given: money("1.24"), catalog: money("1.25") }
        );
        assert_eq!(refusal.to_string(), "price 1.24 for \"Pen\" (product 3) differs from the catalog price 1.25");
        assert!(price(order(&[(3, 1, Some("1.250"))]), &catalog()).is_ok(), "equal amounts at another scale match");
    }

    #[test]
    fn an_order_may_take_the_whole_stock_but_not_one_unit_more() {
        assert!(price(order(&[(7, 2, None)]), &catalog()).is_ok());
        let refusal = price(order(&[(7, 3, None)]), &catalog()).unwrap_err();
        assert_eq!(refusal.to_string(), "not enough stock for \"Desk\" (product 7): 2 available, 3 requested");
    }

    #[test]
    fn every_unknown_product_is_named_in_id_order() {
        let refusal = price(order(&[(9, 1, None), (3, 1, None), (5, 1, None)]), &catalog()).unwrap_err();
        assert_eq!(refusal, Refusal::UnknownProducts(vec![5, 9]));
        assert_eq!(refusal.to_string(), "unknown product ids: 5, 9");
    }

    #[test]
    fn the_first_failing_line_by_product_id_decides_the_refusal() {
        // Both lines fail; the one with the lower id is reported, whatever the request order.
        let refusal = price(order(&[(7, 5, None), (3, 1, Some("9.99"))]), &catalog()).unwrap_err();
        assert!(matches!(refusal, Refusal::PriceMismatch { product_id: 3, .. }), "{refusal:?}");
    }

    #[test]
    fn the_event_payload_carries_the_priced_lines_and_total() {
        let at = Utc::now();
        let created = price(order(&[(3, 2, None)]), &catalog()).unwrap().created(11, at);
        assert_eq!((created.order_id, created.customer_id, created.ordered_at), (11, 42, at));
        assert_eq!(created.total, money("2.50"));
        assert_eq!(created.items.len(), 1);
    }
}
