//! The read model as a function of the write database's history, for `verify` and `rebuild`.
//!
//! Each [`View`] names its table, its key and figure columns, and the SQL that computes its rows from the
//! write database: the same counting rules as [`crate::projection`], stated a second time in SQL, over
//! every order but the ones the read side has not applied yet (see [`crate::cut`]). Rows come ordered by
//! key, text in byte order (`collate "C"`), on both sides, so that they can be compared as two sorted
//! streams in bounded memory.

use analytics_events::Money;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{Row, postgres::PgRow};

/// A column's type, as it is read and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Money,
    Time,
}

#[derive(Debug)]
pub struct Column {
    /// Its name in the view's table.
    pub name: &'static str,
    /// Its name in reports (camelCase, as in the API).
    pub label: &'static str,
    pub kind: Kind,
}

const fn column(name: &'static str, label: &'static str, kind: Kind) -> Column {
    Column { name, label, kind }
}

#[derive(Debug)]
pub struct View {
    pub name: &'static str,
    pub key: &'static [Column],
    pub figures: &'static [Column],
    /// The view's rows from the write database, key columns then figures, ordered by key. Orders are read
    /// from `counted` and lines from `counted_items` (see [`View::history`]).
    history: &'static str,
    /// Whether the view follows the product events (newest version wins) rather than the orders.
    pub replica: bool,
}

/// Every table of the read model that `verify` compares and `rebuild` builds.
pub static VIEWS: &[View] = &[
    View {
        name: "products",
        key: &[column("id", "productId", Kind::Int)],
        figures: &[
            column("name", "name", Kind::Text),
            column("category", "category", Kind::Text),
            column("price", "price", Kind::Money),
            column("version", "version", Kind::Int),
        ],
        history: "select id, name, category, price, version from products order by id",
        replica: true,
    },
    View {
        name: "product_sales_view",
        key: &[column("product_id", "productId", Kind::Int)],
        figures: &[
            column("product_name", "productName", Kind::Text),
            column("category", "category", Kind::Text),
            column("total_quantity_sold", "totalQuantitySold", Kind::Int),
            column("total_revenue", "totalRevenue", Kind::Money),
            column("order_count", "orderCount", Kind::Int),
        ],
        // An order names a product once (the primary key of order_items), so count(*) counts orders.
        history: "select i.product_id, p.name, p.category, sum(i.quantity)::bigint, sum(i.quantity * i.unit_price),
                         count(*)
                    from counted_items i join products p on p.id = i.product_id
                   group by i.product_id, p.name, p.category
                   order by i.product_id",
        replica: false,
    },
    View {
        name: "category_metrics_view",
        key: &[column("category", "category", Kind::Text)],
        figures: &[
            column("total_revenue", "totalRevenue", Kind::Money),
            column("total_quantity", "totalQuantity", Kind::Int),
            column("total_orders", "totalOrders", Kind::Int),
        ],
        history: r#"select p.category collate "C", sum(i.quantity * i.unit_price), sum(i.quantity)::bigint,
                           count(distinct i.order_id)
                      from counted_items i join products p on p.id = i.product_id
                     group by 1 order by 1"#,
        replica: false,
    },
    View {
        name: "customer_ltv_view",
        key: &[column("customer_id", "customerId", Kind::Int)],
        figures: &[
            column("total_spent", "totalSpent", Kind::Money),
            column("order_count", "orderCount", Kind::Int),
            column("first_order_at", "firstOrderAt", Kind::Time),
            column("last_order_at", "lastOrderAt", Kind::Time),
        ],
        history: "select customer_id, sum(total), count(*), min(created_at), max(created_at)
                    from counted group by customer_id order by customer_id",
        replica: false,
    },
    View {
        name: "hourly_sales_view",
        key: &[column("hour", "hour", Kind::Time)],
        figures: &[
            column("order_count", "orderCount", Kind::Int),
            column("items_sold", "itemsSold", Kind::Int),
            column("revenue", "revenue", Kind::Money),
        ],
        history: "select date_trunc('hour', o.created_at, 'UTC'), count(*), sum(n.items)::bigint, sum(o.total)
                    from counted o
                    join (select order_id, sum(quantity) as items from counted_items group by order_id) n
                      on n.order_id = o.id
                   group by 1 order by 1",
        replica: false,
    },
    View {
        name: "customer_category_view",
        key: &[column("customer_id", "customerId", Kind::Int), column("category", "category", Kind::Text)],
        figures: &[
            column("total_revenue", "totalRevenue", Kind::Money),
            column("total_quantity", "totalQuantity", Kind::Int),
            column("order_count", "orderCount", Kind::Int),
        ],
        history: r#"select o.customer_id, p.category collate "C", sum(i.quantity * i.unit_price),
                           sum(i.quantity)::bigint, count(distinct o.id)
                      from counted o
                      join counted_items i on i.order_id = o.id
                      join products p on p.id = i.product_id
                     group by 1, 2 order by 1, 2"#,
        replica: false,
    },
];

impl View {
    /// Every column, key first, as they are listed in the table and in [`View::history`].
    pub fn columns(&self) -> impl Iterator<Item = &'static Column> + Clone {
        self.key.iter().chain(self.figures.iter())
    }

    /// The column list, comma-separated.
    pub fn column_list(&self) -> String {
        self.columns().map(|c| c.name).collect::<Vec<_>>().join(", ")
    }

    /// The SQL of the view's rows over the write database, counting every order but `excluded` (the ids
    /// of the orders the read side has not applied yet, sorted). They are inlined as an array literal:
    /// the statement also runs inside `COPY (…) TO STDOUT`, which takes no parameters, and PostgreSQL
    /// hashes a constant `<> all (…)` array.
    pub fn history(&self, excluded: &[i64]) -> String {
        if self.replica {
            return self.history.to_owned();
        }
        let ids = excluded.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "with counted as (select * from orders where id <> all ('{{{ids}}}'::bigint[])),
                  counted_items as (select * from order_items where order_id <> all ('{{{ids}}}'::bigint[]))
             {}",
            self.history
        )
    }

    /// The SQL of the view's rows in the read database, ordered as [`View::history`] orders them.
    pub fn current(&self, table: &str) -> String {
        let order = self
            .key
            .iter()
            .map(|c| if c.kind == Kind::Text { format!(r#"{} collate "C""#, c.name) } else { c.name.to_owned() })
            .collect::<Vec<_>>()
            .join(", ");
        format!("select {} from {table} order by {order}", self.column_list())
    }

    /// A row's key and figures, decoded by the columns' kinds.
    pub fn decode(&self, row: &PgRow) -> sqlx::Result<(Vec<Value>, Vec<Value>)> {
        let value = |index: usize, kind: Kind| -> sqlx::Result<Value> {
            Ok(match kind {
                Kind::Int => Value::Int(row.try_get(index)?),
                Kind::Text => Value::Text(row.try_get(index)?),
                Kind::Money => Value::Money(row.try_get::<Decimal, _>(index)?.into()),
                Kind::Time => Value::Time(row.try_get(index)?),
            })
        };
        let key = self.key.iter().enumerate().map(|(i, c)| value(i, c.kind)).collect::<sqlx::Result<_>>()?;
        let offset = self.key.len();
        let figures =
            self.figures.iter().enumerate().map(|(i, c)| value(offset + i, c.kind)).collect::<sqlx::Result<_>>()?;
        Ok((key, figures))
    }

    /// Columns and values as a JSON object, for reports.
    pub fn object(columns: &[Column], values: &[Value]) -> serde_json::Map<String, serde_json::Value> {
        columns
            .iter()
            .zip(values)
            .map(|(c, v)| (c.label.to_owned(), serde_json::to_value(v).unwrap_or_default()))
            .collect()
    }
}

/// One value of a key or a figure. Keys are compared as the SQL orders them: integers and times by
/// value, text by its bytes (`collate "C"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Text(String),
    /// Exact, as the API writes money.
    Money(Money),
    Time(DateTime<Utc>),
}
