-- callgate metering schema (SQLite), fifth step. migrations/postgres/0005_call_holds.sql
-- is the same in PostgreSQL's dialect: keep the two in step.
-- A paid call holds the payer's first increment before it rings
-- (docs/calls.md): one row per call, counted in the wallet's `held` like
-- a session's hold. The call's first billed session takes it over (in the
-- transaction that places the session's own hold); a call that ends
-- unanswered releases it; recovery releases one past `expires_ms`, so a
-- node that died never keeps coins held.
CREATE TABLE call_holds (
    call_id     TEXT PRIMARY KEY REFERENCES calls (id),
    wallet      TEXT NOT NULL REFERENCES accounts (id),
    coins       BIGINT NOT NULL CHECK (coins > 0),
    placed_ms   BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX call_holds_expiry ON call_holds (expires_ms);
CREATE INDEX call_holds_wallet ON call_holds (wallet);

-- The call a billed session belongs to (NULL for a session of a room
-- joined without a call): a call's billed seconds and coins are the sums
-- over its sessions.
ALTER TABLE sessions ADD COLUMN call_id TEXT;
CREATE INDEX sessions_call ON sessions (call_id);
