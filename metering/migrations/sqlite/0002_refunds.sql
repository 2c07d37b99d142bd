-- callgate metering schema (SQLite), second step. migrations/postgres/0002_refunds.sql
-- is the same in PostgreSQL's dialect: keep the two in step.
-- Refunds of Razorpay payments: what a payment credited, the refunds that
-- reverse it, and what a wallet still owes when the coins were spent.

-- Coins a refund could not take back because the wallet had spent them (or
-- held them for a running call). Wallets only; never below 0. A later
-- credit to the wallet repays it first; while it is above 0 the wallet
-- starts no paid call.
ALTER TABLE accounts ADD COLUMN debt BIGINT NOT NULL DEFAULT 0 CHECK (debt >= 0);

-- One row per Razorpay payment that credited a wallet, written in the
-- credit's transaction (its credit is `razorpay:<payment_id>`). An order
-- buys its coins once, whatever number of payments Razorpay reports for it.
-- `reversed_coins` is what refunds have reversed so far: taken from the
-- wallet (`refund` postings) or left as the wallet's debt.
CREATE TABLE razorpay_payments (
    payment_id      TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    wallet          TEXT NOT NULL REFERENCES accounts (id),
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    coins           BIGINT NOT NULL CHECK (coins > 0),
    reversed_coins  BIGINT NOT NULL DEFAULT 0,
    credited_ms     BIGINT NOT NULL,
    CHECK (reversed_coins >= 0 AND reversed_coins <= coins)
);
CREATE INDEX razorpay_payments_wallet ON razorpay_payments (wallet);
CREATE UNIQUE INDEX razorpay_payments_order ON razorpay_payments (order_id);

-- One row per Razorpay refund id (refund.created and payment.refunded both
-- report a refund: it is applied once). A refund may arrive before its
-- payment's credit; it waits (`coins` NULL) and is applied when the credit
-- comes. Applied: `coins` reversed = `taken` from the wallet + left as `debt`.
CREATE TABLE razorpay_refunds (
    refund_id    TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    currency     TEXT NOT NULL,
    received_ms  BIGINT NOT NULL,
    coins        BIGINT,
    taken        BIGINT,
    debt         BIGINT,
    applied_ms   BIGINT,
    CHECK ((coins IS NULL AND taken IS NULL AND debt IS NULL AND applied_ms IS NULL)
        OR (coins >= 0 AND taken >= 0 AND debt >= 0 AND coins = taken + debt
            AND applied_ms IS NOT NULL))
);
CREATE INDEX razorpay_refunds_payment ON razorpay_refunds (payment_id);

-- A `refund` posting moves coins wallet:<user> → funding: a refund's coins
-- taken back, or a debt repaid by a later credit. Only the CHECK on
-- `postings.kind` changes, which each dialect does its own way.
-- dialect: begin
-- SQLite cannot change a CHECK in place: the table is rebuilt (the meter
-- runs migrations with foreign keys off and checks them afterwards, as
-- SQLite's "generalized ALTER TABLE" procedure asks). Ids are kept.
CREATE TABLE postings_new (
    id              INTEGER PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    debit           TEXT NOT NULL REFERENCES accounts (id),
    credit          TEXT NOT NULL REFERENCES accounts (id),
    coins           BIGINT NOT NULL CHECK (coins > 0),
    kind            TEXT NOT NULL CHECK (kind IN ('credit', 'charge', 'commission', 'refund')),
    session_id      TEXT REFERENCES sessions (id),
    reference       TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    CHECK (debit <> credit)
);
INSERT INTO postings_new (id, at_ms, debit, credit, coins, kind, session_id, reference, idempotency_key)
    SELECT id, at_ms, debit, credit, coins, kind, session_id, reference, idempotency_key FROM postings;
DROP TABLE postings;
ALTER TABLE postings_new RENAME TO postings;
CREATE INDEX postings_at ON postings (at_ms);
CREATE INDEX postings_session ON postings (session_id);
CREATE INDEX postings_debit ON postings (debit);
CREATE INDEX postings_credit ON postings (credit);
-- dialect: end
