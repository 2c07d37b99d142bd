//! Razorpay payment intake: a paid order credits a wallet, a refund takes
//! the coins back, with no app code in between (docs/metering.md
//! "Razorpay intake").
//!
//! Razorpay signs each webhook with `X-Razorpay-Signature`: the hex
//! HMAC-SHA256 of the raw request body under the webhook secret set in its
//! dashboard. The signature proves the body comes from Razorpay, not that
//! every field in it is true: a payment's `notes` are set by the client at
//! checkout. So a credit trusts only what the merchant's backend set when it
//! created the order (the order's `notes.user` and `notes.coins`, and its
//! amount and currency) and what Razorpay measured (the payment's amount,
//! currency and status); payment notes are never read. The coins come from
//! the order's notes or from the configured price table keyed by amount
//! *and* currency.
//!
//! A signed event that must not credit is *refused*: answered (so Razorpay
//! stops redelivering it), logged at warn and counted in
//! `callgate_razorpay_refused_total{reason}`. Only a bad signature is an
//! error (it is not from Razorpay).

use std::fmt;

use ring::hmac;
use serde_json::Value;
use tracing::{info, warn};

use crate::error::MeterError;
use crate::ledger::MAX_COINS;
use crate::meter::{Credited, Meter, RAZORPAY_REFERENCE, check_id};
use crate::refund::{self, RefundNotice, Refunded};
use crate::webhook::unhex;

/// One entry of the price table: a payment of `amount` (smallest currency
/// unit: paise for INR, cents for USD) in `currency` buys `coins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub amount: i64,
    /// ISO 4217 code, upper case ("INR").
    pub currency: String,
    pub coins: i64,
}

#[derive(Debug, Clone)]
pub struct RazorpayConfig {
    /// The webhook secret from Razorpay's dashboard.
    pub webhook_secret: String,
    /// What a paid order whose notes carry no `coins` credits. An order
    /// whose (amount, currency) is not here and whose notes carry no coins
    /// is refused (`unknown_price`).
    pub prices: Vec<Price>,
}

impl RazorpayConfig {
    pub fn new(webhook_secret: impl Into<String>) -> RazorpayConfig {
        RazorpayConfig {
            webhook_secret: webhook_secret.into(),
            prices: Vec::new(),
        }
    }

    /// The same with one more price.
    pub fn with_price(mut self, amount: i64, currency: &str, coins: i64) -> RazorpayConfig {
        self.prices.push(Price {
            amount,
            currency: currency.into(),
            coins,
        });
        self
    }

    /// The coins `amount` of `currency` buys, if the table says.
    pub fn coins_for(&self, amount: i64, currency: &str) -> Option<i64> {
        self.prices
            .iter()
            .find(|p| p.amount == amount && p.currency == currency)
            .map(|p| p.coins)
    }

    pub(crate) fn validate(&self) -> Result<(), MeterError> {
        if self.webhook_secret.is_empty() {
            return Err(MeterError::Config(
                "razorpay webhook_secret is empty".into(),
            ));
        }
        for (i, p) in self.prices.iter().enumerate() {
            if p.amount <= 0 || p.coins <= 0 || p.coins > MAX_COINS {
                return Err(MeterError::Config(format!(
                    "razorpay price {} {} → {} coins: the amount must be positive and the coins 1..={MAX_COINS}",
                    p.amount, p.currency, p.coins
                )));
            }
            if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(MeterError::Config(format!(
                    "razorpay price currency `{}` is not an upper-case ISO 4217 code such as INR",
                    p.currency
                )));
            }
            if self.prices[..i]
                .iter()
                .any(|q| q.amount == p.amount && q.currency == p.currency)
            {
                return Err(MeterError::Config(format!(
                    "razorpay price {} {} is listed twice",
                    p.amount, p.currency
                )));
            }
        }
        Ok(())
    }
}

/// Why a signed Razorpay event was refused (the `reason` label of
/// `callgate_razorpay_refused_total` and of the webhook's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// A body that is not JSON, or lacks a field the event must carry, or
    /// carries it with the wrong type.
    Malformed,
    /// `order.paid` whose payment is not `captured`.
    NotCaptured,
    /// The payment's `order_id` is not the order's `id`.
    OrderMismatch,
    /// The payment's currency is not the order's (or a refund's is not its
    /// payment's).
    CurrencyMismatch,
    /// The payment's amount is not the order's amount (or the order's
    /// `amount_paid`).
    AmountMismatch,
    /// No `notes.coins` on the order and no price for its amount and currency.
    UnknownPrice,
    /// The order's `notes.user` or `notes.coins` cannot be used (not a
    /// valid user id; not a whole number of coins in 1..=10¹⁵).
    BadOrderNotes,
    /// The payment was credited before for other coins or another user, or
    /// the refund id was seen before with another amount or payment.
    Conflict,
    /// The payment's refunds would add up to more than was paid.
    RefundExceedsPayment,
    /// A refund event whose payment entity is not the refund's payment.
    PaymentMismatch,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 10] = [
        RefusalReason::Malformed,
        RefusalReason::NotCaptured,
        RefusalReason::OrderMismatch,
        RefusalReason::CurrencyMismatch,
        RefusalReason::AmountMismatch,
        RefusalReason::UnknownPrice,
        RefusalReason::BadOrderNotes,
        RefusalReason::Conflict,
        RefusalReason::RefundExceedsPayment,
        RefusalReason::PaymentMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::NotCaptured => "not_captured",
            RefusalReason::OrderMismatch => "order_mismatch",
            RefusalReason::CurrencyMismatch => "currency_mismatch",
            RefusalReason::AmountMismatch => "amount_mismatch",
            RefusalReason::UnknownPrice => "unknown_price",
            RefusalReason::BadOrderNotes => "bad_order_notes",
            RefusalReason::Conflict => "conflict",
            RefusalReason::RefundExceedsPayment => "refund_exceeds_payment",
            RefusalReason::PaymentMismatch => "payment_mismatch",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one Razorpay webhook did. Every variant is answered 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RazorpayOutcome {
    /// The wallet was credited (`applied: false` when this payment had
    /// been credited before: nothing changed).
    Credited(Credited),
    /// A refund reversed coins (`applied: false`: it had been applied
    /// before, nothing changed).
    Refunded(Refunded),
    /// A refund of a payment not credited (yet): recorded, and applied if
    /// and when the payment's credit comes.
    RefundPending {
        refund_id: String,
        payment_id: String,
    },
    /// A valid event that credits nothing (another event type, an order
    /// that is not a coin purchase, `payment.captured`).
    Ignored { event: String, reason: String },
    /// A signed event that must not credit: nothing changed.
    Refused {
        reason: RefusalReason,
        detail: String,
    },
}

impl RazorpayOutcome {
    /// One word for the webhook's answer: `credited`, `duplicate`,
    /// `refunded`, `refund_pending`, `ignored` or `refused`.
    pub fn status(&self) -> &'static str {
        match self {
            RazorpayOutcome::Credited(c) if c.applied => "credited",
            RazorpayOutcome::Refunded(r) if r.applied => "refunded",
            RazorpayOutcome::Credited(_) | RazorpayOutcome::Refunded(_) => "duplicate",
            RazorpayOutcome::RefundPending { .. } => "refund_pending",
            RazorpayOutcome::Ignored { .. } => "ignored",
            RazorpayOutcome::Refused { .. } => "refused",
        }
    }

    /// The refusal reason, for refusals.
    pub fn refusal(&self) -> Option<RefusalReason> {
        match self {
            RazorpayOutcome::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

impl fmt::Display for RazorpayOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RazorpayOutcome::Credited(c) if c.applied => {
                write!(
                    f,
                    "credited {} coins to {} ({})",
                    c.coins, c.user, c.reference
                )?;
                if c.debt_repaid > 0 {
                    write!(f, ", {} of them repaid a refund's debt", c.debt_repaid)?;
                }
                Ok(())
            }
            RazorpayOutcome::Credited(c) => write!(f, "already credited ({})", c.reference),
            RazorpayOutcome::Refunded(r) if r.applied => write!(
                f,
                "refund {} of {}: {} coins reversed from {} ({} taken, {} left as debt)",
                r.refund_id, r.payment_id, r.coins, r.user, r.taken, r.debt
            ),
            RazorpayOutcome::Refunded(r) => write!(f, "refund {} already applied", r.refund_id),
            RazorpayOutcome::RefundPending {
                refund_id,
                payment_id,
            } => write!(
                f,
                "refund {refund_id} recorded; payment {payment_id} is not credited here (yet)"
            ),
            RazorpayOutcome::Ignored { event, reason } => write!(f, "ignored {event}: {reason}"),
            RazorpayOutcome::Refused { reason, detail } => {
                write!(f, "refused ({reason}): {detail}")
            }
        }
    }
}

/// Checks `X-Razorpay-Signature` (hex HMAC-SHA256 of the raw body), in
/// constant time.
pub fn verify_razorpay_signature(
    secret: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), MeterError> {
    let bytes = unhex(signature.trim())
        .ok_or_else(|| MeterError::BadSignature("X-Razorpay-Signature is not hex".into()))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &bytes)
        .map_err(|_| MeterError::BadSignature("X-Razorpay-Signature does not match".into()))
}

/// A paid order, checked: what a credit may trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOrder {
    pub payment_id: String,
    pub order_id: String,
    /// From the order's notes (set by the backend), never the payment's.
    pub user: String,
    /// The order's amount, which the payment's equals.
    pub amount: i64,
    pub currency: String,
    pub coins: i64,
}

/// What a verified event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    Credit(PaidOrder),
    Refund(RefundNotice),
    Ignore {
        event: String,
        reason: String,
    },
    Refuse {
        reason: RefusalReason,
        detail: String,
    },
}

type Refusal = (RefusalReason, String);

fn malformed(detail: String) -> Refusal {
    (RefusalReason::Malformed, detail)
}

fn entity<'a>(v: &'a Value, name: &str, event: &str) -> Result<&'a Value, Refusal> {
    v.pointer(&format!("/payload/{name}/entity"))
        .filter(|e| e.is_object())
        .ok_or_else(|| malformed(format!("{event} without payload.{name}.entity")))
}

fn text<'a>(entity: &'a Value, what: &str, name: &str) -> Result<&'a str, Refusal> {
    entity
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed(format!("{what} `{name}` is missing or not a string")))
}

/// An amount in the smallest currency unit: a positive JSON integer.
fn amount(entity: &Value, what: &str, name: &str) -> Result<i64, Refusal> {
    entity
        .get(name)
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            malformed(format!(
                "{what} `{name}` is missing or not a positive integer"
            ))
        })
}

/// A note of an entity. Razorpay sends `notes: []` when there are none.
fn note<'a>(entity: &'a Value, key: &str) -> Option<&'a Value> {
    entity
        .get("notes")
        .and_then(Value::as_object)
        .and_then(|m| m.get(key))
}

fn as_coins(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|c| (1..=MAX_COINS).contains(c))
}

/// Reads a webhook body (already verified).
pub fn parse_event(config: &RazorpayConfig, body: &[u8]) -> Intake {
    match read_event(config, body) {
        Ok(intake) => intake,
        Err((reason, detail)) => Intake::Refuse { reason, detail },
    }
}

fn read_event(config: &RazorpayConfig, body: &[u8]) -> Result<Intake, Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("razorpay body is not JSON: {e}")))?;
    let event = v
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("razorpay body has no `event`".into()))?
        .to_owned();
    match event.as_str() {
        "order.paid" => read_paid_order(config, &v, event),
        "refund.created" | "payment.refunded" => read_refund(&v, &event),
        "refund.failed" => {
            let id = |field: &str| {
                v.pointer(&format!("/payload/refund/entity/{field}"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            Ok(Intake::Ignore {
                reason: format!(
                    "refund {} of {} failed: the coins it took stay taken; credit them back \
                     by hand if Razorpay does not refund again",
                    id("id"),
                    id("payment_id")
                ),
                event,
            })
        }
        "payment.captured" => Ok(Intake::Ignore {
            event,
            reason: "a payment's notes are the client's, so payment.captured credits nothing; \
                     order.paid credits the payment"
                .into(),
        }),
        _ => Ok(Intake::Ignore {
            event,
            reason: "not an event the meter acts on".into(),
        }),
    }
}

fn read_paid_order(config: &RazorpayConfig, v: &Value, event: String) -> Result<Intake, Refusal> {
    let payment = entity(v, "payment", &event)?;
    let order = entity(v, "order", &event)?;
    let payment_id = text(payment, "payment", "id")?;
    let order_id = text(order, "order", "id")?;
    let Some(user) = note(order, "user") else {
        return Ok(Intake::Ignore {
            event,
            reason: format!("order {order_id} has no notes.user: not a coin purchase"),
        });
    };
    let refuse = |reason, detail: String| Err((reason, format!("payment {payment_id}: {detail}")));
    let user = match user.as_str() {
        Some(u) if check_id("user", u).is_ok() => u,
        _ => {
            return refuse(
                RefusalReason::BadOrderNotes,
                format!("order {order_id} notes.user is not a user id"),
            );
        }
    };
    let paid_for = text(payment, "payment", "order_id")?;
    if paid_for != order_id {
        return refuse(
            RefusalReason::OrderMismatch,
            format!("paid order {paid_for}, the event's order is {order_id}"),
        );
    }
    let status = text(payment, "payment", "status")?;
    if status != "captured" {
        return refuse(
            RefusalReason::NotCaptured,
            format!("status is {status}, not captured"),
        );
    }
    let paid = amount(payment, "payment", "amount")?;
    let paid_currency = text(payment, "payment", "currency")?;
    let price = amount(order, "order", "amount")?;
    let currency = text(order, "order", "currency")?;
    if paid_currency != currency {
        return refuse(
            RefusalReason::CurrencyMismatch,
            format!("paid in {paid_currency}, order {order_id} is in {currency}"),
        );
    }
    if paid != price {
        return refuse(
            RefusalReason::AmountMismatch,
            format!("paid {paid} {currency}, order {order_id} is for {price}"),
        );
    }
    if let Some(amount_paid) = order.get("amount_paid")
        && amount_paid.as_i64() != Some(price)
    {
        return refuse(
            RefusalReason::AmountMismatch,
            format!("order {order_id} is for {price} {currency} but has amount_paid {amount_paid}"),
        );
    }
    let coins = match note(order, "coins") {
        Some(c) => match as_coins(c) {
            Some(c) => c,
            None => {
                return refuse(
                    RefusalReason::BadOrderNotes,
                    format!("order {order_id} notes.coins {c} is not 1..={MAX_COINS} coins"),
                );
            }
        },
        None => match config.coins_for(price, currency) {
            Some(c) => c,
            None => {
                return refuse(
                    RefusalReason::UnknownPrice,
                    format!(
                        "order {order_id} of {price} {currency} has no notes.coins and no price in the table"
                    ),
                );
            }
        },
    };
    let reference = format!("{RAZORPAY_REFERENCE}{payment_id}");
    if check_id("reference", &reference).is_err() {
        return Err(malformed(format!(
            "payment id of {} bytes is not an id",
            payment_id.len()
        )));
    }
    Ok(Intake::Credit(PaidOrder {
        payment_id: payment_id.into(),
        order_id: order_id.into(),
        user: user.into(),
        amount: price,
        currency: currency.into(),
        coins,
    }))
}

fn read_refund(v: &Value, event: &str) -> Result<Intake, Refusal> {
    let refund = entity(v, "refund", event)?;
    let refund_id = text(refund, "refund", "id")?;
    let payment_id = text(refund, "refund", "payment_id")?;
    if check_id("refund id", refund_id).is_err() || check_id("payment id", payment_id).is_err() {
        return Err(malformed(format!(
            "refund {refund_id} of {payment_id}: ids must be 1..=256 bytes of printable text"
        )));
    }
    let amount = amount(refund, "refund", "amount")?;
    let currency = text(refund, "refund", "currency")?;
    if let Ok(payment) = entity(v, "payment", event) {
        let id = text(payment, "payment", "id")?;
        if id != payment_id {
            return Err((
                RefusalReason::PaymentMismatch,
                format!("refund {refund_id} is of {payment_id}, the event's payment is {id}"),
            ));
        }
    }
    Ok(Intake::Refund(RefundNotice {
        refund_id: refund_id.into(),
        payment_id: payment_id.into(),
        amount,
        currency: currency.into(),
    }))
}

pub(crate) async fn handle(
    meter: &Meter,
    config: &RazorpayConfig,
    signature: &str,
    body: &[u8],
) -> Result<RazorpayOutcome, MeterError> {
    verify_razorpay_signature(&config.webhook_secret, body, signature)?;
    let outcome = match parse_event(config, body) {
        Intake::Credit(order) => credit(meter, &order).await?,
        Intake::Refund(notice) => refund::intake(&meter.inner, &notice).await?,
        Intake::Ignore { event, reason } => {
            if event == "refund.failed" {
                // Money-relevant: someone may have to credit by hand.
                warn!(%event, %reason, "razorpay refund failed");
            } else {
                info!(%event, %reason, "razorpay event ignored");
            }
            RazorpayOutcome::Ignored { event, reason }
        }
        Intake::Refuse { reason, detail } => RazorpayOutcome::Refused { reason, detail },
    };
    if let RazorpayOutcome::Refused { reason, detail } = &outcome {
        warn!(%reason, %detail, "razorpay event refused");
        meter
            .inner
            .metrics
            .razorpay_refused
            .with_label_values(&[reason.as_str()])
            .inc();
    }
    Ok(outcome)
}

async fn credit(meter: &Meter, order: &PaidOrder) -> Result<RazorpayOutcome, MeterError> {
    let credited = match meter.credit_razorpay(order).await {
        Ok(c) => c,
        Err(MeterError::Conflict {
            reference,
            existing,
        }) => {
            return Ok(RazorpayOutcome::Refused {
                reason: RefusalReason::Conflict,
                detail: format!(
                    "payment {}: {reference} was already credited {existing}",
                    order.payment_id
                ),
            });
        }
        Err(e) => return Err(e),
    };
    info!(
        payment = %order.payment_id,
        order = %order.order_id,
        user = %order.user,
        coins = order.coins,
        applied = credited.applied,
        "razorpay payment credited"
    );
    // A refund that came before this credit is applied now (and again
    // after a redelivery: applying is idempotent).
    refund::apply(&meter.inner, &order.payment_id).await?;
    Ok(RazorpayOutcome::Credited(credited))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::hmac_sha256_hex;
    use serde_json::json;

    fn order_paid(payment: Value, order: Value) -> Vec<u8> {
        json!({"entity": "event", "account_id": "acc_1", "event": "order.paid",
               "contains": ["payment", "order"],
               "payload": {"payment": {"entity": payment}, "order": {"entity": order}},
               "created_at": 1_567_674_606})
        .to_string()
        .into_bytes()
    }

    fn payment(amount: i64, currency: &str, notes: Value) -> Value {
        json!({"id": "pay_1", "entity": "payment", "amount": amount, "currency": currency,
               "status": "captured", "order_id": "order_1", "captured": true, "notes": notes})
    }

    fn order(amount: i64, currency: &str, notes: Value) -> Value {
        json!({"id": "order_1", "entity": "order", "amount": amount, "amount_paid": amount,
               "amount_due": 0, "currency": currency, "status": "paid", "notes": notes})
    }

    fn config() -> RazorpayConfig {
        RazorpayConfig::new("s")
            .with_price(49_900, "INR", 500)
            .with_price(600, "USD", 500)
    }

    fn refused(intake: Intake) -> RefusalReason {
        match intake {
            Intake::Refuse { reason, .. } => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn signature() {
        let b = order_paid(payment(100, "INR", json!([])), order(100, "INR", json!([])));
        let sig = hmac_sha256_hex(b"rzp_secret", &[&b]);
        verify_razorpay_signature("rzp_secret", &b, &sig).unwrap();
        verify_razorpay_signature("rzp_secret", &b, &sig.to_uppercase()).unwrap();
        for bad in ["", "zz", "00", &sig[2..]] {
            assert_eq!(
                verify_razorpay_signature("rzp_secret", &b, bad)
                    .unwrap_err()
                    .code(),
                "bad_signature"
            );
        }
        assert!(verify_razorpay_signature("other", &b, &sig).is_err());
        assert!(verify_razorpay_signature("rzp_secret", b"{}", &sig).is_err());
    }

    #[test]
    fn an_order_credits_what_its_backend_notes_or_the_price_table_say() {
        let c = config();
        let paid = |coins| {
            Intake::Credit(PaidOrder {
                payment_id: "pay_1".into(),
                order_id: "order_1".into(),
                user: "u1".into(),
                amount: 49_900,
                currency: "INR".into(),
                coins,
            })
        };
        // Price table by amount and currency.
        let b = order_paid(
            payment(49_900, "INR", json!([])),
            order(49_900, "INR", json!({"user": "u1"})),
        );
        assert_eq!(parse_event(&c, &b), paid(500));
        // The order's coins (the backend priced it), as text or number.
        for coins in [json!("120"), json!(120)] {
            let b = order_paid(
                payment(49_900, "INR", json!([])),
                order(49_900, "INR", json!({"user": "u1", "coins": coins})),
            );
            assert_eq!(parse_event(&c, &b), paid(120));
        }
        // The payment's notes are the client's: never read.
        let b = order_paid(
            payment(
                49_900,
                "INR",
                json!({"user": "mallory", "coins": "1000000"}),
            ),
            order(49_900, "INR", json!({"user": "u1"})),
        );
        assert_eq!(parse_event(&c, &b), paid(500));
    }

    #[test]
    fn what_the_client_controls_is_refused() {
        let c = config();
        let user = json!({"user": "u1"});
        // 100 paise whose payment notes ask for a million coins.
        let b = order_paid(
            payment(100, "INR", json!({"user": "u1", "coins": "1000000"})),
            order(100, "INR", user.clone()),
        );
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::UnknownPrice);
        // One US cent: no price of 1 USD cent.
        let b = order_paid(payment(1, "USD", json!([])), order(1, "USD", user.clone()));
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::UnknownPrice);
        // 49900 of another currency than the order's.
        let b = order_paid(
            payment(49_900, "USD", json!([])),
            order(49_900, "INR", user.clone()),
        );
        assert_eq!(
            refused(parse_event(&c, &b)),
            RefusalReason::CurrencyMismatch
        );
        // Less than the order's amount.
        let b = order_paid(
            payment(100, "INR", json!([])),
            order(49_900, "INR", user.clone()),
        );
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::AmountMismatch);
        let mut o = order(49_900, "INR", user.clone());
        o["amount_paid"] = json!(100);
        let b = order_paid(payment(49_900, "INR", json!([])), o);
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::AmountMismatch);
        // A payment of another order.
        let mut p = payment(49_900, "INR", json!([]));
        p["order_id"] = json!("order_2");
        let b = order_paid(p, order(49_900, "INR", user.clone()));
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::OrderMismatch);
        // Not captured.
        let mut p = payment(49_900, "INR", json!([]));
        p["status"] = json!("authorized");
        let b = order_paid(p, order(49_900, "INR", user.clone()));
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::NotCaptured);
        // Order notes that are no user or no coins.
        for notes in [
            json!({"user": 7}),
            json!({"user": ""}),
            json!({"user": "u1", "coins": "-5"}),
            json!({"user": "u1", "coins": "x"}),
            json!({"user": "u1", "coins": 0}),
            json!({"user": "u1", "coins": 1.5}),
            json!({"user": "u1", "coins": "1000000000000000000"}),
        ] {
            let b = order_paid(
                payment(49_900, "INR", json!([])),
                order(49_900, "INR", notes.clone()),
            );
            assert_eq!(
                refused(parse_event(&c, &b)),
                RefusalReason::BadOrderNotes,
                "{notes}"
            );
        }
        // Unreadable bodies.
        for bad in [
            &b"not json"[..],
            br#"{"no":"event"}"#,
            br#"{"event":"order.paid"}"#,
            br#"{"event":"order.paid","payload":{"payment":{"entity":{"id":"pay_1"}}}}"#,
            br#"{"event":"refund.created","payload":{}}"#,
            br#"{"event":"refund.created","payload":{"refund":{"entity":{"id":"r","payment_id":"p","amount":-1,"currency":"INR"}}}}"#,
        ] {
            assert_eq!(refused(parse_event(&c, bad)), RefusalReason::Malformed);
        }
        let b = order_paid(
            json!({"id": "pay_1", "amount": "49900", "currency": "INR", "status": "captured", "order_id": "order_1"}),
            order(49_900, "INR", user),
        );
        assert_eq!(refused(parse_event(&c, &b)), RefusalReason::Malformed);
    }

    #[test]
    fn other_events_are_ignored_and_refunds_read() {
        let c = config();
        // An order the backend did not make for coins.
        let b = order_paid(
            payment(49_900, "INR", json!({"user": "u1"})),
            order(49_900, "INR", json!([])),
        );
        assert!(matches!(parse_event(&c, &b), Intake::Ignore { .. }));
        let captured = json!({"event": "payment.captured", "payload": {"payment": {"entity":
            payment(49_900, "INR", json!({"user": "u1", "coins": 500}))}}})
        .to_string();
        assert!(matches!(
            parse_event(&c, captured.as_bytes()),
            Intake::Ignore { .. }
        ));
        assert!(matches!(
            parse_event(&c, br#"{"event":"refund.processed","payload":{}}"#),
            Intake::Ignore { .. }
        ));
        assert_eq!(
            parse_event(
                &c,
                br#"{"event":"refund.failed","payload":{"refund":{"entity":{"id":"rfnd_9","payment_id":"pay_9"}}}}"#
            ),
            Intake::Ignore {
                event: "refund.failed".into(),
                reason: "refund rfnd_9 of pay_9 failed: the coins it took stay taken; credit them \
                         back by hand if Razorpay does not refund again"
                    .into()
            }
        );
        let refund = json!({"id": "rfnd_1", "entity": "refund", "amount": 10_000, "currency": "INR",
                            "payment_id": "pay_1", "notes": [], "status": "processed"});
        for event in ["refund.created", "payment.refunded"] {
            let b = json!({"event": event, "payload": {"refund": {"entity": refund},
                "payment": {"entity": payment(49_900, "INR", json!([]))}}})
            .to_string();
            assert_eq!(
                parse_event(&c, b.as_bytes()),
                Intake::Refund(RefundNotice {
                    refund_id: "rfnd_1".into(),
                    payment_id: "pay_1".into(),
                    amount: 10_000,
                    currency: "INR".into(),
                })
            );
        }
        let mut other = payment(49_900, "INR", json!([]));
        other["id"] = json!("pay_2");
        let b = json!({"event": "refund.created", "payload": {"refund": {"entity": refund},
            "payment": {"entity": other}}})
        .to_string();
        assert_eq!(
            refused(parse_event(&c, b.as_bytes())),
            RefusalReason::PaymentMismatch
        );
    }

    #[test]
    fn price_tables_are_checked() {
        assert!(config().validate().is_ok());
        for bad in [
            RazorpayConfig::new(""),
            config().with_price(49_900, "INR", 1),
            config().with_price(0, "INR", 1),
            config().with_price(100, "INR", 0),
            config().with_price(100, "INR", MAX_COINS + 1),
            config().with_price(100, "inr", 1),
            config().with_price(100, "RUPEE", 1),
        ] {
            assert_eq!(bad.validate().unwrap_err().code(), "config", "{bad:?}");
        }
        assert_eq!(config().coins_for(600, "USD"), Some(500));
        assert_eq!(config().coins_for(600, "INR"), None);
    }
}
