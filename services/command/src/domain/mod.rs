//! Request bodies become these types through `TryFrom`; nothing reaches SQL unparsed. [`price`] holds
//! the rules an order must meet against the catalog.

mod order;
mod pricing;
mod product;

pub use order::{CustomerId, NewOrder, NewOrderLine, OrderLineRequest, OrderRequest, Quantity};
pub use pricing::{CatalogEntry, PricedOrder, Refusal, price};
pub use product::{NewProduct, Price, ProductChange, ProductId, ProductPatchRequest, ProductRequest, Stock};

/// Why a well-formed request cannot be accepted (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// `raw` if it is a positive integer; otherwise why `field` is refused.
fn positive(raw: i64, field: &str) -> Result<i64, Invalid> {
    if raw > 0 { Ok(raw) } else { Err(Invalid::new(format!("{field} must be a positive integer, got {raw}"))) }
}
