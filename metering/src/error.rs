//! One error type for the whole crate, each with a stable code.

/// Everything the meter can refuse or fail with. Bad input is refused
/// before anything is written: an `Err` from a call that takes input means
/// the ledger did not change. [`MeterError::code`] is stable (it goes into
/// API responses and docs/metering.md "Error codes").
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// Coins that are zero, negative or too large.
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// A credit reference already used with other coins or another user.
    #[error("conflict: reference `{reference}` was already used {existing}")]
    Conflict { reference: String, existing: String },
    /// An account name that is not `wallet:<user>`, `earnings:<user>`,
    /// `platform` or `funding`, or a user the meter has never seen.
    #[error("unknown account: {0}")]
    UnknownAccount(String),
    /// An empty or unprintable user id, room or reference.
    #[error("invalid identifier: {0}")]
    InvalidIdentifier(String),
    /// The payer's wallet cannot fund any call time.
    #[error("insufficient balance: {0}")]
    InsufficientBalance(String),
    /// Billing terms no call can be rated with.
    #[error("invalid billing terms: {0}")]
    InvalidTerms(String),
    /// A named rate plan that is not configured.
    #[error("unknown rate plan `{0}`")]
    UnknownPlan(String),
    /// A webhook or payment signature that does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A request body or value that cannot be read.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A time range whose `from` is not before its `to`, or unreadable.
    #[error("invalid range: {0}")]
    InvalidRange(String),
    /// A feature used without its configuration (e.g. Razorpay intake).
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    /// An invalid [`crate::MeterConfig`].
    #[error("invalid metering config: {0}")]
    Config(String),
    /// The meter is shutting down.
    #[error("the meter is shutting down")]
    ShuttingDown,
    /// The database failed; nothing was committed by the failed call.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at open.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Writing an export failed.
    #[error("writing: {0}")]
    Io(#[from] std::io::Error),
    /// A broken internal invariant (a bug); nothing was committed.
    #[error("internal: {0}")]
    Internal(String),
}

impl MeterError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            MeterError::InvalidAmount(_) => "invalid_amount",
            MeterError::Conflict { .. } => "conflict",
            MeterError::UnknownAccount(_) => "unknown_account",
            MeterError::InvalidIdentifier(_) => "invalid_identifier",
            MeterError::InsufficientBalance(_) => "insufficient_balance",
            MeterError::InvalidTerms(_) => "invalid_terms",
            MeterError::UnknownPlan(_) => "unknown_plan",
            MeterError::BadSignature(_) => "bad_signature",
            MeterError::Malformed(_) => "malformed",
            MeterError::InvalidRange(_) => "invalid_range",
            MeterError::NotConfigured(_) => "not_configured",
            MeterError::Config(_) => "config",
            MeterError::ShuttingDown => "shutting_down",
            MeterError::Database(_) | MeterError::Migrate(_) => "database",
            MeterError::Io(_) => "io",
            MeterError::Internal(_) => "internal",
        }
    }

    /// The HTTP status an API should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            MeterError::InvalidAmount(_)
            | MeterError::InvalidIdentifier(_)
            | MeterError::InvalidTerms(_)
            | MeterError::Malformed(_)
            | MeterError::InvalidRange(_) => 400,
            MeterError::BadSignature(_) => 401,
            MeterError::InsufficientBalance(_) => 402,
            MeterError::UnknownAccount(_) | MeterError::UnknownPlan(_) => 404,
            MeterError::NotConfigured(_) => 404,
            MeterError::Conflict { .. } => 409,
            MeterError::ShuttingDown => 503,
            MeterError::Config(_)
            | MeterError::Database(_)
            | MeterError::Migrate(_)
            | MeterError::Io(_)
            | MeterError::Internal(_) => 500,
        }
    }

    /// True for failures of the database or the process (worth a retry),
    /// false for refusals of bad input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MeterError::Database(_) | MeterError::Io(_) | MeterError::ShuttingDown
        )
    }
}
