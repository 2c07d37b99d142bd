-- callgate metering schema (PostgreSQL), fourth step. migrations/sqlite/0004_calls.sql
-- is the same in SQLite's dialect: keep the two in step.
-- The call log (docs/calls.md): one row per call, one per member with its
-- ring state. A call's billed seconds and coins are its metering session's
-- (`session_id`, NULL for an unpaid call or one never answered). `node`
-- is the node that drives the call: at its start, the calls it left
-- unended are ended as failed (a restart never leaves a call ringing).
CREATE TABLE calls (
    id          TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    room        TEXT NOT NULL,
    caller      TEXT NOT NULL,
    call_type   TEXT NOT NULL CHECK (call_type IN ('audio', 'video')),
    state       TEXT NOT NULL CHECK (state IN ('ringing', 'accepted', 'ended')),
    outcome     TEXT CHECK (outcome IN ('completed', 'missed', 'rejected', 'cancelled',
                                        'busy', 'failed', 'insufficient_balance')),
    created_ms  BIGINT NOT NULL,
    answered_ms BIGINT,
    ended_ms    BIGINT,
    ended_by    TEXT,
    end_reason  TEXT,
    session_id  TEXT REFERENCES sessions (id),
    CHECK ((state = 'ended') = (outcome IS NOT NULL AND ended_ms IS NOT NULL
                                AND end_reason IS NOT NULL))
);
CREATE INDEX calls_created ON calls (created_ms, id);
CREATE INDEX calls_unended ON calls (node) WHERE state <> 'ended';

CREATE TABLE call_members (
    call_id  TEXT NOT NULL REFERENCES calls (id),
    identity TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('caller', 'callee')),
    -- A callee's ring; NULL for the caller.
    ring     TEXT CHECK (ring IN ('ringing', 'accepted', 'rejected', 'busy', 'missed',
                                  'cancelled')),
    PRIMARY KEY (call_id, identity),
    CHECK ((role = 'caller') = (ring IS NULL))
);
CREATE INDEX call_members_identity ON call_members (identity, call_id);
