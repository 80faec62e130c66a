//! Orders as the client may place them: a customer, and distinct products in positive quantities.

use std::collections::HashSet;

use analytics_events::Money;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Invalid, ProductId, positive};

const MAX_QUANTITY: i64 = 1_000_000;
const MAX_LINES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerId(i64);

impl CustomerId {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        positive(raw, "customerId").map(Self)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        match i32::try_from(raw) {
            Ok(units) if (1..=MAX_QUANTITY).contains(&raw) => Ok(Self(units)),
            _ => Err(Invalid::new(format!("quantity must be an integer from 1 to {MAX_QUANTITY}, got {raw}"))),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// `POST /api/orders`. A field it does not know is refused: a misspelled `price` must not place an order
/// without the check it asked for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRequest {
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "super::integer::deserialize")]
    pub customer_id: i64,
    /// Distinct products.
    #[schema(min_items = 1, max_items = 500)]
    pub items: Vec<OrderLineRequest>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderLineRequest {
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "super::integer::deserialize")]
    pub product_id: i64,
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::integer::deserialize")]
    pub quantity: i64,
    /// Optional. When given it must equal the catalog price; revenue always uses the catalog price.
    #[schema(schema_with = super::product::optional_price_schema)]
    pub price: Option<Money>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub lines: Vec<NewOrderLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewOrderLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    /// The price the client expects to pay, if it said.
    pub expected_price: Option<Money>,
}

impl TryFrom<OrderRequest> for NewOrder {
    type Error = Invalid;

    fn try_from(request: OrderRequest) -> Result<Self, Invalid> {
        let customer_id = CustomerId::parse(request.customer_id)?;
        if request.items.is_empty() {
            return Err(Invalid::new("items must not be empty"));
        }
        if request.items.len() > MAX_LINES {
            return Err(Invalid::new(format!("an order has at most {MAX_LINES} items")));
        }
        let mut seen = HashSet::new();
        let lines = request
            .items
            .into_iter()
            .map(|line| {
                let product_id = ProductId::parse(line.product_id)?;
                if !seen.insert(product_id) {
                    return Err(Invalid::new(format!(
                        "productId {} appears more than once; list each product once with its total quantity",
                        product_id.get()
                    )));
                }
                Ok(NewOrderLine { product_id, quantity: Quantity::parse(line.quantity)?, expected_price: line.price })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { customer_id, lines })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: i64, quantity: i64) -> OrderLineRequest {
        OrderLineRequest { product_id, quantity, price: None }
    }

    #[test]
    fn a_valid_order_keeps_its_lines_in_request_order() {
        let order = NewOrder::try_from(OrderRequest { customer_id: 9, items: vec![line(2, 1), line(1, 3)] }).unwrap();
        assert_eq!(order.customer_id.get(), 9);
        let ids: Vec<_> = order.lines.iter().map(|l| l.product_id.get()).collect();
        assert_eq!(ids, [2, 1]);
    }

    #[test]
    fn invalid_orders_are_refused_with_the_reason() {
        let cases = [
            (OrderRequest { customer_id: 0, items: vec![line(1, 1)] }, "customerId"),
            (OrderRequest { customer_id: -3, items: vec![line(1, 1)] }, "customerId"),
            (OrderRequest { customer_id: 1, items: vec![] }, "items"),
            (OrderRequest { customer_id: 1, items: vec![line(1, 0)] }, "quantity"),
            (OrderRequest { customer_id: 1, items: vec![line(1, -2)] }, "quantity"),
            (OrderRequest { customer_id: 1, items: vec![line(0, 1)] }, "productId"),
            (OrderRequest { customer_id: 1, items: vec![line(1, 1), line(1, 2)] }, "productId"),
        ];
        for (case, reason) in cases {
            let error = NewOrder::try_from(case).unwrap_err();
            assert!(error.0.starts_with(reason), "{error} should start with {reason}");
        }
    }
}
