//! ProductCreated and ProductUpdated into the catalog replica. Either can arrive first, or twice, or
//! after a newer one: a row only moves to a higher version.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::Message;

struct ProductState<'a> {
    name: &'a str,
    category: &'a str,
    price: Decimal,
    version: i64,
}

pub async fn apply<'a>(conn: &mut PgConnection, messages: impl Iterator<Item = &'a Message>) -> sqlx::Result<()> {
    // The newest version of each product in the batch, by id.
    let mut newest: BTreeMap<i64, ProductState<'a>> = BTreeMap::new();
    for message in messages {
        let (id, state) = match message {
            Message::ProductCreated(e) => (
                e.payload.product_id,
                ProductState {
                    name: &e.payload.name,
                    category: &e.payload.category,
                    price: e.payload.price.amount(),
                    version: e.payload.version,
                },
            ),
            Message::ProductUpdated(e) => (
                e.payload.product_id,
                ProductState {
                    name: &e.payload.name,
                    category: &e.payload.category,
                    price: e.payload.price.amount(),
                    version: e.payload.version,
                },
            ),
            Message::OrderCreated(_) | Message::Watermark(_) => continue,
        };
        if newest.get(&id).is_none_or(|current| current.version < state.version) {
            newest.insert(id, state);
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = newest.keys().copied().collect();
    let names: Vec<&str> = newest.values().map(|p| p.name).collect();
    let categories: Vec<&str> = newest.values().map(|p| p.category).collect();
    let prices: Vec<Decimal> = newest.values().map(|p| p.price).collect();
    let versions: Vec<i64> = newest.values().map(|p| p.version).collect();
    sqlx::query(
        "insert into products as p (id, name, category, price, version)
         select * from unnest($1::bigint[], $2::text[], $3::text[], $4::numeric[], $5::bigint[]) order by 1
         on conflict (id) do update set
             name = excluded.name, category = excluded.category, price = excluded.price,
             version = excluded.version, updated_at = now()
         where p.version < excluded.version",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&categories)
    .bind(&prices)
    .bind(&versions)
    .execute(conn)
    .await
    .map(drop)
}
