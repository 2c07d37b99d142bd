//! callgate's money: wallets, rating, holds, a double-entry ledger, cut-off
//! timers, exports for finance and billing hooks (docs/metering.md).
//!
//! ```text
//! Meter::open(config, clock)          migrate, recover dead sessions, start ticker/webhooks
//!   .credit(user, coins, reference)   funding → wallet:<user>, once per reference
//!   .start_session(SessionStart)      hold the first block → SessionHandle
//!        (actor: block boundary → capture + next hold; last stretch → cut)
//!   SessionHandle::end(reason)        capture the used part, release the rest
//!   .events()                         SecondsLeft, Warning, Cut, Ended
//!   .export(kind, range, format, w)   sessions | ledger | usage | calls as CSV / JSON lines
//!   .razorpay_webhook(sig, body)      order.paid → credit; refund.created → reverse
//! ```
//!
//! The crate depends on no other callgate crate.

mod audit;
mod call_log;
mod clock;
mod db;
mod error;
mod export;
mod feed;
mod ledger;
mod meter;
mod metrics;
mod razorpay;
mod refund;
mod session;
mod terms;
mod webhook;

#[doc(hidden)]
pub mod bench_support;

pub use call_log::{
    CallCursor, CallHold, CallMember, CallRecord, CallWebhook, MAX_PAGE as MAX_CALLS_PAGE,
};
pub use clock::Clock;
pub use db::{Backend, redact as redact_url, sqlite_url};
pub use error::MeterError;
pub use export::{ExportFormat, ExportKind, TimeRange, format_time, parse_time};
pub use ledger::{AuditReport, FUNDING, MAX_COINS, PLATFORM, earnings_id, wallet_id};
pub(crate) use meter::check_id;
pub use meter::{Credited, Meter, MeterConfig, MeterEvent, UsageKind, UsageRecord, WalletView};
pub use razorpay::{
    Intake as RazorpayIntake, PaidOrder, Price, RazorpayConfig, RazorpayOutcome, RefusalReason,
    parse_event as parse_razorpay_event, verify_razorpay_signature,
};
pub use refund::{RefundNotice, Refunded, reversed_coins};
pub use session::{EndReason, SessionHandle, SessionStart, SessionSummary};
pub use terms::{
    BillingTerms, CallType, FULL_BPS, MAX_INCREMENT, MAX_RATE_PER_MINUTE, Split, parse_commission,
    parse_increments,
};
pub use webhook::{
    WebhookConfig, events as webhook_events, sign as sign_webhook, verify_signature,
};
