//! `orders`: prices orders, with typed streams.
//!
//! It reads `orders`, whose values are [`Order`]s as JSON:
//!
//! ```json
//! {"id": "o-1", "customer": "c-7", "lines": [{"sku": "tea", "qty": 2, "unit_price_cents": 450}]}
//! ```
//!
//! and emits to `orders.priced`, keyed by the order's id, a [`PricedOrder`]:
//!
//! ```json
//! {"id": "o-1", "customer": "c-7", "total_cents": 900, "items": 2}
//! ```
//!
//! where `items` is the number of items (the sum of the lines' `qty`). A
//! tombstone of an order becomes a tombstone of its priced order. A value
//! that is not an `Order` (or whose total overflows) fails with an error
//! naming the event: the deployment's error policy then applies.
//!
//! The streams are declared with [`leat_sdk::streams!`], so
//! `leat build guest-examples/orders --schemas` writes their JSON Schemas to
//! `out/schemas/orders.json` and `out/schemas/orders.priced.json`, for
//! `leat schema set`.

use leat_sdk::{Config, Context, Error, Event, JsonSchema, Output, Processor};
use serde::{Deserialize, Serialize};

/// An order, as the `orders` stream holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "leat_sdk::schemars")]
pub struct Order {
    /// The order's id.
    pub id: String,
    /// The customer's id.
    pub customer: String,
    /// What was ordered.
    pub lines: Vec<Line>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "leat_sdk::schemars")]
pub struct Line {
    /// The product.
    pub sku: String,
    /// How many.
    pub qty: u32,
    /// The price of one, in cents.
    pub unit_price_cents: u64,
}

/// An order with its total, as `orders.priced` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "leat_sdk::schemars")]
pub struct PricedOrder {
    /// The order's id.
    pub id: String,
    /// The customer's id.
    pub customer: String,
    /// The sum of the lines' `qty * unit_price_cents`.
    pub total_cents: u64,
    /// The number of items: the sum of the lines' `qty`.
    pub items: u32,
}

leat_sdk::streams! {
    /// The orders to price.
    pub ORDERS: Order = "orders";
    /// The priced orders, keyed by order id.
    pub PRICED: PricedOrder = "orders.priced";
}

/// `order` priced; an error when a sum overflows.
pub fn price(order: Order) -> Result<PricedOrder, Error> {
    let mut total_cents = 0u64;
    let mut items = 0u32;
    for line in &order.lines {
        let overflow = || Error::new(format!("order {}: the total overflows", order.id));
        let cost = line
            .unit_price_cents
            .checked_mul(u64::from(line.qty))
            .ok_or_else(overflow)?;
        total_cents = total_cents.checked_add(cost).ok_or_else(overflow)?;
        items = items.checked_add(line.qty).ok_or_else(overflow)?;
    }
    Ok(PricedOrder {
        id: order.id,
        customer: order.customer,
        total_cents,
        items,
    })
}

/// The processor (no configuration).
pub struct Orders;

impl Processor for Orders {
    fn init(config: &Config) -> Result<Self, Error> {
        if !config.outputs().iter().any(|o| o == PRICED.name()) {
            return Err(Error::new(format!(
                "orders writes to the stream `{0}`: deploy it with --output {0}",
                PRICED.name()
            )));
        }
        Ok(Orders)
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        if event.is_tombstone() {
            let Some(key) = event.key() else {
                return Ok(());
            };
            return ctx.emit(Output::to(PRICED.name()).key(key).tombstone());
        }
        let order = ORDERS.decode(event)?;
        let priced = price(order).map_err(|e| e.context(format!("event {event}")))?;
        let key = priced.id.clone();
        ctx.emit(PRICED.output_from(event, &priced)?.key(key))
    }
}

leat_sdk::export!(Orders);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;
    use serde_json::json;

    fn host() -> TestHost {
        TestHost::new()
            .with_inputs(["orders"])
            .with_outputs(["orders.priced"])
    }

    fn order_event(offset: u64, value: serde_json::Value) -> Event {
        Event::new("orders")
            .with_key(value["id"].as_str().unwrap_or("?"))
            .with_value(value.to_string())
            .with_position(0, offset)
    }

    #[test]
    fn prices_each_order() {
        let mut host = host();
        let mut p: Orders = host.init(&[]).unwrap();
        let out = host
            .run(
                &mut p,
                &[
                    order_event(
                        0,
                        json!({"id": "o-1", "customer": "c-7", "lines": [
                            {"sku": "tea", "qty": 2, "unit_price_cents": 450},
                            {"sku": "cup", "qty": 1, "unit_price_cents": 1200}]}),
                    ),
                    order_event(1, json!({"id": "o-2", "customer": "c-8", "lines": []})),
                ],
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].stream(), "orders.priced");
        assert_eq!(out[0].key_str(), Some("o-1"));
        assert_eq!(
            out[0].read_json::<PricedOrder>().unwrap(),
            PricedOrder {
                id: "o-1".into(),
                customer: "c-7".into(),
                total_cents: 2100,
                items: 3
            }
        );
        assert_eq!(
            out[1].read_json::<serde_json::Value>().unwrap(),
            json!({"id": "o-2", "customer": "c-8", "total_cents": 0, "items": 0})
        );
    }

    #[test]
    fn an_event_that_is_not_an_order_fails_naming_it() {
        let mut host = host();
        let mut p: Orders = host.init(&[]).unwrap();
        let good = order_event(0, json!({"id": "o-1", "customer": "c", "lines": []}));
        let bad = order_event(
            1,
            json!({"id": "o-2", "customer": "c", "lines": [{"sku": "x", "qty": -1, "unit_price_cents": 1}]}),
        );
        let failure = host.run(&mut p, &[good.clone(), bad]).unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert!(
            failure
                .message
                .starts_with("event orders/0@1 is not a valid Order (stream `orders`)"),
            "{failure:?}"
        );
        let not_json = Event::new("orders").with_value("hello").with_position(2, 5);
        let failure = host.run(&mut p, &[not_json]).unwrap_err();
        assert!(failure.message.contains("orders/2@5"), "{failure:?}");
    }

    #[test]
    fn an_overflowing_total_fails_naming_the_event() {
        let mut host = host();
        let mut p: Orders = host.init(&[]).unwrap();
        let huge = order_event(
            3,
            json!({"id": "o-9", "customer": "c", "lines": [{"sku": "x", "qty": 2, "unit_price_cents": u64::MAX}]}),
        );
        let failure = host.run(&mut p, &[huge]).unwrap_err();
        assert_eq!(
            failure.message,
            "event orders/0@3: order o-9: the total overflows"
        );
    }

    #[test]
    fn a_tombstone_deletes_the_priced_order() {
        let mut host = host();
        let mut p: Orders = host.init(&[]).unwrap();
        let out = host
            .run(
                &mut p,
                &[Event::new("orders").with_key("o-1"), Event::new("orders")],
            )
            .unwrap();
        assert_eq!(out.len(), 1, "an unkeyed tombstone deletes nothing");
        assert!(out[0].is_tombstone());
        assert_eq!(
            (out[0].stream(), out[0].key_str()),
            ("orders.priced", Some("o-1"))
        );
    }

    #[test]
    fn needs_its_output() {
        let err = TestHost::new()
            .with_outputs(["elsewhere"])
            .init::<Orders>(&[])
            .err()
            .unwrap();
        assert!(err.message().contains("--output orders.priced"), "{err}");
    }

    #[test]
    fn the_schemas_describe_the_json() {
        let orders = ORDERS.json_schema();
        assert_eq!(orders["title"], "Order");
        assert_eq!(orders["required"], json!(["id", "customer", "lines"]));
        assert_eq!(
            orders["$defs"]["Line"]["properties"]["qty"]["format"],
            "uint32"
        );
        let priced = PRICED.json_schema();
        assert_eq!(
            priced["required"],
            json!(["id", "customer", "total_cents", "items"])
        );
    }
}
