//! The lifecycle of a call, the way a paid-call app starts one: the caller
//! rings one or more callees, who accept or decline, or nobody answers; an
//! answered call runs in its room until its members leave.
//!
//! [`Call`] is a state machine with no I/O and no clock, in the style of
//! quinn-proto: the signaling layer and the server API feed it inputs with
//! the time, read the next deadline from [`Call::poll_timeout`], and poll
//! what happened out of [`Call::poll_event`] (messages to members,
//! webhooks, the call log).

mod call;

pub use call::{
    CONNECT_TIMEOUT, Call, CallError, CallEvent, CallState, CallType, EndReason, MAX_CALLEES,
    Outcome, RejectReason, RingState,
};
