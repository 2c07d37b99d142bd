-- callgate metering schema (SQLite). migrations/postgres/0001_ledger.sql is
-- the same schema in PostgreSQL's dialect: keep the two in step.
-- Coins are integers (BIGINT), times are unix milliseconds (BIGINT), ids
-- are text, except the ledger's own posting ids.

-- One row per account. `balance` is the sum of the account's postings
-- (credits in minus debits out), kept in the same transaction as each
-- posting; `held` is what open holds reserve (wallets only).
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('wallet', 'earnings', 'platform', 'funding')),
    balance     BIGINT NOT NULL DEFAULT 0,
    held        BIGINT NOT NULL DEFAULT 0,
    version     BIGINT NOT NULL DEFAULT 0,
    created_ms  BIGINT NOT NULL,
    CHECK (kind <> 'wallet' OR (balance >= 0 AND held >= 0 AND held <= balance)),
    CHECK (kind = 'wallet' OR held = 0)
);
INSERT INTO accounts (id, kind, created_ms) VALUES ('platform', 'platform', 0);
INSERT INTO accounts (id, kind, created_ms) VALUES ('funding', 'funding', 0);

-- One row per billed session. While `state` is 'open' the ledger columns
-- say what is captured so far and what the current hold covers.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    node            TEXT NOT NULL,
    instance        TEXT NOT NULL,
    room            TEXT NOT NULL,
    payer           TEXT NOT NULL,
    payee           TEXT,
    call_type       TEXT NOT NULL CHECK (call_type IN ('audio', 'video')),
    rate_per_minute BIGINT NOT NULL CHECK (rate_per_minute > 0),
    incr_initial    BIGINT NOT NULL CHECK (incr_initial > 0),
    incr_next       BIGINT NOT NULL CHECK (incr_next > 0),
    commission_bps  BIGINT NOT NULL CHECK (commission_bps BETWEEN 0 AND 10000),
    state           TEXT NOT NULL CHECK (state IN ('open', 'ended')),
    started_ms      BIGINT NOT NULL,
    checkpoint_ms   BIGINT NOT NULL,
    block_start_ms  BIGINT NOT NULL,
    block_end_ms    BIGINT NOT NULL,
    limit_coins     BIGINT,
    captures        BIGINT NOT NULL DEFAULT 0,
    coins           BIGINT NOT NULL DEFAULT 0,
    payee_coins     BIGINT NOT NULL DEFAULT 0,
    platform_coins  BIGINT NOT NULL DEFAULT 0,
    ended_ms        BIGINT,
    duration_ms     BIGINT,
    billed_seconds  BIGINT,
    end_reason      TEXT,
    CHECK (coins = payee_coins + platform_coins AND payee_coins >= 0 AND platform_coins >= 0),
    CHECK (state = 'open' OR (ended_ms IS NOT NULL AND duration_ms IS NOT NULL
                              AND billed_seconds IS NOT NULL AND end_reason IS NOT NULL))
);
CREATE INDEX sessions_open ON sessions (instance) WHERE state = 'open';
CREATE INDEX sessions_ended ON sessions (ended_ms);
CREATE INDEX sessions_payer ON sessions (payer);
CREATE INDEX sessions_payee ON sessions (payee);

-- At most one hold per open session: coins reserved from the payer's
-- wallet for the current block. Released (deleted) when the session ends.
CREATE TABLE holds (
    session_id  TEXT PRIMARY KEY REFERENCES sessions (id),
    wallet      TEXT NOT NULL REFERENCES accounts (id),
    coins       BIGINT NOT NULL CHECK (coins >= 0),
    placed_ms   BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX holds_expiry ON holds (expires_ms);
CREATE INDEX holds_wallet ON holds (wallet);

-- The ledger: every coin movement, debit account → credit account.
-- `idempotency_key` makes a retried write unable to post twice.
CREATE TABLE postings (
    id              INTEGER PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    debit           TEXT NOT NULL REFERENCES accounts (id),
    credit          TEXT NOT NULL REFERENCES accounts (id),
    coins           BIGINT NOT NULL CHECK (coins > 0),
    kind            TEXT NOT NULL CHECK (kind IN ('credit', 'charge', 'commission')),
    session_id      TEXT REFERENCES sessions (id),
    reference       TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    CHECK (debit <> credit)
);
CREATE INDEX postings_at ON postings (at_ms);
CREATE INDEX postings_session ON postings (session_id);
CREATE INDEX postings_debit ON postings (debit);
CREATE INDEX postings_credit ON postings (credit);

-- Credits by their payment reference (idempotency of `credit`).
CREATE TABLE credits (
    reference   TEXT PRIMARY KEY,
    wallet      TEXT NOT NULL REFERENCES accounts (id),
    coins       BIGINT NOT NULL CHECK (coins > 0),
    posting_id  BIGINT NOT NULL REFERENCES postings (id),
    at_ms       BIGINT NOT NULL
);

-- Participant media time, paid or not (the `usage` export).
CREATE TABLE participant_usage (
    id          INTEGER PRIMARY KEY,
    room        TEXT NOT NULL,
    identity    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('audio', 'video')),
    started_ms  BIGINT NOT NULL,
    ended_ms    BIGINT NOT NULL,
    CHECK (ended_ms >= started_ms)
);
CREATE INDEX usage_ended ON participant_usage (ended_ms);
CREATE INDEX usage_identity ON participant_usage (identity);

-- Webhook events, written in the transaction of the change they report.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    delivered_ms    BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms) WHERE status = 'pending';
