//! ProductCreated and ProductUpdated into the catalog replica. Either can arrive first, or twice, or
//! after a newer one: a row only moves to a higher version.

use std::collections::BTreeMap;

use analytics_events::ProductState;
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::Message;

pub async fn apply<'a>(conn: &mut PgConnection, messages: impl Iterator<Item = &'a Message>) -> sqlx::Result<()> {
    // The newest version of each product in the batch, by id.
    let mut newest: BTreeMap<i64, &'a ProductState> = BTreeMap::new();
    for message in messages {
        let Message::Product(event) = message else { continue };
        let state = &event.payload;
        if newest.get(&state.product_id).is_none_or(|current| current.version < state.version) {
            newest.insert(state.product_id, state);
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = newest.keys().copied().collect();
    let names: Vec<&str> = newest.values().map(|p| p.name.as_str()).collect();
    let categories: Vec<&str> = newest.values().map(|p| p.category.as_str()).collect();
    let prices: Vec<Decimal> = newest.values().map(|p| p.price.amount()).collect();
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
