//! Razorpay payment intake: a captured payment credits a wallet with no
//! app code in between.
//!
//! Razorpay signs each webhook with `X-Razorpay-Signature`: the hex
//! HMAC-SHA256 of the raw request body under the webhook secret set in its
//! dashboard. On `payment.captured` (or `order.paid`) the payment's (or
//! order's) `notes` name the user (`notes.user`) and the coins
//! (`notes.coins`); without `notes.coins`, the configured price table maps
//! the amount (in paise) to coins. The credit's reference is
//! `razorpay:<payment id>`, so a redelivered event credits once.

use std::collections::BTreeMap;
use std::fmt;

use ring::hmac;
use serde_json::Value;
use tracing::{info, warn};

use crate::error::MeterError;
use crate::meter::{Credited, Meter};
use crate::webhook::unhex;

#[derive(Debug, Clone)]
pub struct RazorpayConfig {
    /// The webhook secret from Razorpay's dashboard.
    pub webhook_secret: String,
    /// Amount in the smallest currency unit (paise) → coins, for payments
    /// whose notes carry no `coins`.
    pub prices: BTreeMap<i64, i64>,
    /// The currency `prices` are in. Default "INR".
    pub currency: String,
}

impl RazorpayConfig {
    pub fn new(webhook_secret: impl Into<String>) -> RazorpayConfig {
        RazorpayConfig {
            webhook_secret: webhook_secret.into(),
            prices: BTreeMap::new(),
            currency: "INR".into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), MeterError> {
        if self.webhook_secret.is_empty() {
            return Err(MeterError::Config(
                "razorpay webhook_secret is empty".into(),
            ));
        }
        for (amount, coins) in &self.prices {
            if *amount <= 0 || *coins <= 0 {
                return Err(MeterError::Config(format!(
                    "razorpay price {amount} → {coins} coins: both must be positive"
                )));
            }
        }
        Ok(())
    }
}

/// What one Razorpay webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RazorpayOutcome {
    /// The wallet was credited (`applied: false` when this payment had
    /// been credited before: nothing changed).
    Credited(Credited),
    /// A valid event that credits nothing (another event type, a payment
    /// not captured, a payment that is not a coin purchase).
    Ignored { event: String, reason: String },
}

impl fmt::Display for RazorpayOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RazorpayOutcome::Credited(c) if c.applied => write!(
                f,
                "credited {} coins to {} ({})",
                c.coins, c.user, c.reference
            ),
            RazorpayOutcome::Credited(c) => write!(f, "already credited ({})", c.reference),
            RazorpayOutcome::Ignored { event, reason } => write!(f, "ignored {event}: {reason}"),
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

/// What a verified event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    Credit {
        payment_id: String,
        user: String,
        coins: i64,
    },
    Ignore {
        event: String,
        reason: String,
    },
}

fn note<'a>(notes: &'a Value, key: &str) -> Option<&'a Value> {
    // Razorpay sends `notes: []` when there are none.
    notes.as_object().and_then(|m| m.get(key))
}

fn as_coins(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a webhook body (already verified).
pub fn parse_event(config: &RazorpayConfig, body: &[u8]) -> Result<Intake, MeterError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| MeterError::Malformed(format!("razorpay body is not JSON: {e}")))?;
    let event = v
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| MeterError::Malformed("razorpay body has no `event`".into()))?
        .to_owned();
    if event != "payment.captured" && event != "order.paid" {
        return Ok(Intake::Ignore {
            event,
            reason: "not a payment capture".into(),
        });
    }
    let payment = v
        .pointer("/payload/payment/entity")
        .ok_or_else(|| MeterError::Malformed(format!("{event} without payload.payment.entity")))?;
    let field = |name: &str| {
        payment
            .get(name)
            .ok_or_else(|| MeterError::Malformed(format!("payment without `{name}`")))
    };
    let payment_id = field("id")?
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MeterError::Malformed("payment id is not a string".into()))?
        .to_owned();
    let status = field("status")?.as_str().unwrap_or_default();
    if status != "captured" {
        return Ok(Intake::Ignore {
            event,
            reason: format!("payment {payment_id} is {status}, not captured"),
        });
    }
    let amount = field("amount")?
        .as_i64()
        .ok_or_else(|| MeterError::Malformed("payment amount is not an integer".into()))?;
    let currency = field("currency")?.as_str().unwrap_or_default().to_owned();
    let empty = Value::Null;
    let payment_notes = payment.get("notes").unwrap_or(&empty);
    let order_notes = v.pointer("/payload/order/entity/notes").unwrap_or(&empty);
    let lookup = |key: &str| note(payment_notes, key).or_else(|| note(order_notes, key));
    let Some(user) = lookup("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return Ok(Intake::Ignore {
            event,
            reason: format!("payment {payment_id} has no notes.user: not a coin purchase"),
        });
    };
    let coins = match lookup("coins") {
        Some(c) => as_coins(c).filter(|c| *c > 0).ok_or_else(|| {
            MeterError::Malformed(format!(
                "payment {payment_id}: notes.coins is not a positive integer"
            ))
        })?,
        None if currency == config.currency => {
            *config.prices.get(&amount).ok_or_else(|| {
                MeterError::Malformed(format!(
                    "payment {payment_id} of {amount} {currency} has no notes.coins and no price in the table"
                ))
            })?
        }
        None => {
            return Err(MeterError::Malformed(format!(
                "payment {payment_id} is in {currency}, prices are in {}",
                config.currency
            )));
        }
    };
    Ok(Intake::Credit {
        payment_id,
        user: user.to_owned(),
        coins,
    })
}

pub(crate) async fn handle(
    meter: &Meter,
    config: &RazorpayConfig,
    signature: &str,
    body: &[u8],
) -> Result<RazorpayOutcome, MeterError> {
    verify_razorpay_signature(&config.webhook_secret, body, signature)?;
    match parse_event(config, body) {
        Ok(Intake::Credit {
            payment_id,
            user,
            coins,
        }) => {
            let credited = meter
                .credit(&user, coins, &format!("razorpay:{payment_id}"))
                .await?;
            info!(payment = %payment_id, %user, coins, applied = credited.applied, "razorpay payment credited");
            Ok(RazorpayOutcome::Credited(credited))
        }
        Ok(Intake::Ignore { event, reason }) => Ok(RazorpayOutcome::Ignored { event, reason }),
        Err(e) => {
            warn!(error = %e, "razorpay webhook refused");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::hmac_sha256_hex;

    fn body(notes: &str, amount: i64, status: &str) -> String {
        format!(
            r#"{{"entity":"event","account_id":"acc_1","event":"payment.captured","contains":["payment"],
            "payload":{{"payment":{{"entity":{{"id":"pay_29QQoUBi66xm2f","entity":"payment","amount":{amount},
            "currency":"INR","status":"{status}","order_id":"order_9A33XWu170gUtm","notes":{notes}}}}}}},
            "created_at":1567674606}}"#
        )
    }

    #[test]
    fn signature() {
        let b = body("[]", 100, "captured");
        let sig = hmac_sha256_hex(b"rzp_secret", &[b.as_bytes()]);
        verify_razorpay_signature("rzp_secret", b.as_bytes(), &sig).unwrap();
        verify_razorpay_signature("rzp_secret", b.as_bytes(), &sig.to_uppercase()).unwrap();
        for bad in ["", "zz", "00", &sig[2..]] {
            assert_eq!(
                verify_razorpay_signature("rzp_secret", b.as_bytes(), bad)
                    .unwrap_err()
                    .code(),
                "bad_signature"
            );
        }
        assert!(verify_razorpay_signature("other", b.as_bytes(), &sig).is_err());
        assert!(verify_razorpay_signature("rzp_secret", b"{}", &sig).is_err());
    }

    #[test]
    fn events() {
        let mut c = RazorpayConfig::new("s");
        c.prices.insert(49_900, 500);
        let credit = |payment_id: &str, user: &str, coins| Intake::Credit {
            payment_id: payment_id.into(),
            user: user.into(),
            coins,
        };
        assert_eq!(
            parse_event(
                &c,
                body(r#"{"user":"u1","coins":"120"}"#, 100, "captured").as_bytes()
            )
            .unwrap(),
            credit("pay_29QQoUBi66xm2f", "u1", 120)
        );
        assert_eq!(
            parse_event(
                &c,
                body(r#"{"user":"u1","coins":7}"#, 100, "captured").as_bytes()
            )
            .unwrap(),
            credit("pay_29QQoUBi66xm2f", "u1", 7)
        );
        assert_eq!(
            parse_event(&c, body(r#"{"user":"u1"}"#, 49_900, "captured").as_bytes()).unwrap(),
            credit("pay_29QQoUBi66xm2f", "u1", 500)
        );
        // No user: not ours. Not captured: nothing yet.
        assert!(matches!(
            parse_event(&c, body("[]", 49_900, "captured").as_bytes()).unwrap(),
            Intake::Ignore { .. }
        ));
        assert!(matches!(
            parse_event(
                &c,
                body(r#"{"user":"u1"}"#, 49_900, "authorized").as_bytes()
            )
            .unwrap(),
            Intake::Ignore { .. }
        ));
        assert!(matches!(
            parse_event(&c, br#"{"event":"refund.created","payload":{}}"#).unwrap(),
            Intake::Ignore { .. }
        ));
        // A user's payment that maps to no coins is an error someone must see.
        for (notes, amount) in [
            (r#"{"user":"u1"}"#, 100),
            (r#"{"user":"u1","coins":"-5"}"#, 100),
            (r#"{"user":"u1","coins":"x"}"#, 100),
        ] {
            assert_eq!(
                parse_event(&c, body(notes, amount, "captured").as_bytes())
                    .unwrap_err()
                    .code(),
                "malformed"
            );
        }
        for bad in [
            &b"not json"[..],
            br#"{"no":"event"}"#,
            br#"{"event":"payment.captured"}"#,
        ] {
            assert_eq!(parse_event(&c, bad).unwrap_err().code(), "malformed");
        }
        // order.paid carries the order's notes too.
        let order = r#"{"event":"order.paid","payload":{
            "payment":{"entity":{"id":"pay_1","amount":100,"currency":"INR","status":"captured","notes":[]}},
            "order":{"entity":{"id":"order_1","notes":{"user":"u2","coins":"30"}}}}}"#;
        assert_eq!(
            parse_event(&c, order.as_bytes()).unwrap(),
            credit("pay_1", "u2", 30)
        );
    }
}
