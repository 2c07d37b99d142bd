-- callgate metering schema (SQLite), third step. migrations/postgres/0003_pauses.sql
-- is the same in PostgreSQL's dialect: keep the two in step.
-- A billed session is paused while its payer or payee is reconnecting
-- (docs/metering.md "Reconnecting"): its billed clock stops, so the time
-- paused is not charged. `paused_ms` is the time spent paused before the
-- current pause; `paused_at_ms` (unix ms) is where the current pause began,
-- NULL while the session runs. Recovery closes a session at its last
-- checkpoint (never past a pause point) less the time paused, so a crash
-- charges no paused time either. `end_reason` is TEXT without a list of
-- reasons: `connection_lost` needs no change.
ALTER TABLE sessions ADD COLUMN paused_ms BIGINT NOT NULL DEFAULT 0 CHECK (paused_ms >= 0);
ALTER TABLE sessions ADD COLUMN paused_at_ms BIGINT;
