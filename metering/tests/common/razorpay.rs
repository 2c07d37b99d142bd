//! Razorpay webhook bodies shaped like the ones Razorpay sends (its
//! "Orders" and "Refunds" webhook sample payloads: `order.paid` carries
//! `payload.payment.entity` and `payload.order.entity`; `refund.created`
//! carries `payload.refund.entity` and the payment), signed with the test
//! secret; and a snapshot of everything a refused event must not change.

use callgate_metering::{
    ExportFormat, ExportKind, Meter, MeterConfig, RazorpayConfig, RazorpayOutcome, WalletView,
};
use serde_json::{Value, json};

use super::{TestDb, export_string};

pub const RZP_SECRET: &str = "rzp_whsec";

/// Hex HMAC-SHA256 of the body under the webhook secret, as Razorpay signs.
pub fn rzp_sign(body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, RZP_SECRET.as_bytes());
    ring::hmac::sign(&key, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The meter's config with the intake on: 49900 INR paise and 600 USD
/// cents each buy 500 coins.
pub fn razorpay_config(db: &TestDb) -> MeterConfig {
    let mut c = db.config();
    c.razorpay = Some(
        RazorpayConfig::new(RZP_SECRET)
            .with_price(49_900, "INR", 500)
            .with_price(600, "USD", 500),
    );
    c
}

/// `order.paid` of order `order_<payment id>` for `amount` `currency`,
/// whose backend notes are `order_notes`, paid in full by a captured
/// payment whose (client) notes are empty.
pub fn order_paid(payment_id: &str, amount: i64, currency: &str, order_notes: Value) -> Value {
    let order_id = format!("order_{payment_id}");
    json!({
        "entity": "event",
        "account_id": "acc_BFQ7uQEaa7j2z7",
        "event": "order.paid",
        "contains": ["payment", "order"],
        "payload": {
            "payment": {"entity": {
                "id": payment_id, "entity": "payment", "amount": amount, "currency": currency,
                "status": "captured", "order_id": order_id, "invoice_id": null,
                "international": false, "method": "upi", "amount_refunded": 0,
                "refund_status": null, "captured": true, "description": "coins",
                "email": "gaurav.kumar@example.com", "contact": "+919876543210",
                "notes": [], "fee": 2, "tax": 0, "created_at": 1_567_674_599
            }},
            "order": {"entity": {
                "id": order_id, "entity": "order", "amount": amount, "amount_paid": amount,
                "amount_due": 0, "currency": currency, "receipt": "rcpt_1", "offer_id": null,
                "status": "paid", "attempts": 1, "notes": order_notes,
                "created_at": 1_567_674_581
            }}
        },
        "created_at": 1_567_674_606
    })
}

/// The payment entity of an `order.paid` or refund body.
pub fn payment_of(body: &mut Value) -> &mut Value {
    &mut body["payload"]["payment"]["entity"]
}

/// The order entity of an `order.paid` body.
pub fn order_of(body: &mut Value) -> &mut Value {
    &mut body["payload"]["order"]["entity"]
}

/// `payment.captured`: the payment alone, with the client's notes.
pub fn payment_captured(payment_id: &str, amount: i64, currency: &str, notes: Value) -> Value {
    let mut body = order_paid(payment_id, amount, currency, json!([]));
    body["event"] = json!("payment.captured");
    body["contains"] = json!(["payment"]);
    body["payload"]["order"].take();
    body["payload"] = json!({"payment": body["payload"]["payment"].take()});
    payment_of(&mut body)["notes"] = notes;
    body
}

/// `refund.created` or `payment.refunded` of `amount` of a payment of
/// `paid` `currency`, carrying the refund and the payment.
pub fn refund(
    event: &str,
    refund_id: &str,
    payment_id: &str,
    amount: i64,
    paid: i64,
    currency: &str,
) -> Value {
    json!({
        "entity": "event",
        "account_id": "acc_E7OQJcEANmBHTC",
        "event": event,
        "contains": ["refund", "payment"],
        "payload": {
            "refund": {"entity": {
                "id": refund_id, "entity": "refund", "amount": amount, "currency": currency,
                "payment_id": payment_id, "notes": {"comment": "changed my mind"},
                "receipt": null, "acquirer_data": {"arn": null}, "created_at": 1_597_734_071,
                "batch_id": null, "status": "processed", "speed_processed": "normal",
                "speed_requested": "optimum"
            }},
            "payment": {"entity": {
                "id": payment_id, "entity": "payment", "amount": paid, "currency": currency,
                "status": "refunded", "order_id": format!("order_{payment_id}"),
                "amount_refunded": amount, "refund_status": "partial", "captured": true,
                "notes": [], "created_at": 1_597_734_000
            }}
        },
        "created_at": 1_597_734_071
    })
}

/// Posts a signed body to the intake.
pub async fn hook(meter: &Meter, body: &Value) -> RazorpayOutcome {
    let text = body.to_string();
    meter
        .razorpay_webhook(&rzp_sign(&text), text.as_bytes())
        .await
        .expect("a signed event is answered")
}

/// Everything a refused event must leave alone.
#[derive(Debug, PartialEq, Eq)]
pub struct Books {
    pub ledger: String,
    pub wallets: Vec<WalletView>,
    pub funding: i64,
    pub platform: i64,
    /// Rows of credits, razorpay_payments, razorpay_refunds, sessions,
    /// holds, outbox.
    pub rows: Vec<i64>,
}

pub async fn books(meter: &Meter, users: &[&str]) -> Books {
    let mut wallets = Vec::new();
    for user in users {
        wallets.push(meter.wallet(user).await.unwrap());
    }
    let mut rows = Vec::new();
    for table in [
        "credits",
        "razorpay_payments",
        "razorpay_refunds",
        "sessions",
        "holds",
        "outbox",
    ] {
        rows.push(meter.count(table).await.unwrap());
    }
    Books {
        ledger: export_string(meter, ExportKind::Ledger, ExportFormat::JsonLines).await,
        wallets,
        funding: meter.account("funding").await.unwrap(),
        platform: meter.account("platform").await.unwrap(),
        rows,
    }
}

/// `callgate_razorpay_refused_total{reason}` as `/metrics` shows it.
pub fn refused_total(registry: &prometheus::Registry, reason: &str) -> u64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let series = format!("callgate_razorpay_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}
