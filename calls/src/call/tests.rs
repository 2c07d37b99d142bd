use super::*;

const RING: Duration = Duration::from_secs(45);

fn call(callees: &[&str], t0: Instant) -> Call {
    Call::new(
        "CA_1".into(),
        "room-1".into(),
        "alice".into(),
        callees.iter().map(|c| c.to_string()).collect(),
        CallType::Video,
        RING,
        t0,
    )
    .expect("a valid call")
}

fn events(call: &mut Call) -> Vec<CallEvent> {
    std::iter::from_fn(|| call.poll_event()).collect()
}

fn state(state: CallState, by: Option<&str>) -> CallEvent {
    CallEvent::State {
        state,
        by: by.map(str::to_owned),
    }
}

fn ring_ended(callee: &str, state: RingState) -> CallEvent {
    CallEvent::RingEnded {
        callee: callee.into(),
        state,
    }
}

#[test]
fn a_new_call_rings_every_callee_and_is_ringing_until_the_ring_timeout() {
    let t0 = Instant::now();
    let mut c = call(&["host1", "host2"], t0);
    assert_eq!(
        events(&mut c),
        vec![
            CallEvent::Ring {
                callee: "host1".into()
            },
            CallEvent::Ring {
                callee: "host2".into()
            },
            state(CallState::Ringing, Some("alice")),
        ]
    );
    assert_eq!(c.state(), CallState::Ringing);
    assert_eq!(c.poll_timeout(), Some(t0 + RING));
    assert_eq!(c.state().wire_name(), "ringing");
}

#[test]
fn accept_answers_the_call_and_a_second_accept_of_the_same_callee_is_refused() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    events(&mut c);
    let t1 = t0 + Duration::from_secs(3);
    c.accept(t1, "host1").unwrap();
    assert_eq!(
        events(&mut c),
        vec![
            ring_ended("host1", RingState::Accepted),
            state(CallState::Accepted, Some("host1")),
        ]
    );
    assert_eq!(c.answered_at(), Some(t1));
    assert_eq!(
        c.poll_timeout(),
        Some(t1 + CONNECT_TIMEOUT),
        "nothing rings; the members have a minute to meet in the room"
    );
    // Another device of host1 answering too: answered elsewhere.
    assert_eq!(c.accept(t1, "host1"), Err(CallError::AlreadyAnswered));
    assert_eq!(
        c.reject(t1, "host1", RejectReason::Decline),
        Err(CallError::AlreadyAnswered)
    );
    assert!(events(&mut c).is_empty(), "a refused input changes nothing");
    assert_eq!(c.state(), CallState::Accepted);
}

#[test]
fn joining_the_room_answers_a_ringing_callee() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    events(&mut c);
    c.joined(t0, "alice").unwrap();
    assert!(
        events(&mut c).is_empty(),
        "the caller joining answers nothing"
    );
    c.joined(t0 + Duration::from_secs(2), "host1").unwrap();
    assert_eq!(c.state(), CallState::Accepted);
    assert_eq!(c.answered_at(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(
        events(&mut c),
        vec![
            ring_ended("host1", RingState::Accepted),
            state(CallState::Accepted, Some("host1")),
        ]
    );
}

#[test]
fn an_answered_call_ends_completed_when_fewer_than_two_members_are_left_and_records_its_length() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    c.joined(t0, "alice").unwrap();
    c.accept(t0 + Duration::from_secs(5), "host1").unwrap();
    c.joined(t0 + Duration::from_secs(6), "host1").unwrap();
    events(&mut c);
    let end = t0 + Duration::from_secs(65);
    c.left(end, "host1").unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Completed));
    assert_eq!(c.state().wire_name(), "ended");
    assert_eq!(c.ended_by(), Some("host1"));
    assert_eq!(c.end_reason(), Some(EndReason::HungUp));
    assert_eq!(c.duration(), Some(Duration::from_secs(60)));
    assert_eq!(
        events(&mut c),
        vec![state(CallState::Ended(Outcome::Completed), Some("host1"))]
    );
    // Ended: every input is refused.
    assert_eq!(c.left(end, "alice"), Err(CallError::CallEnded));
    assert_eq!(c.accept(end, "host1"), Err(CallError::CallEnded));
    assert_eq!(
        c.end(end, EndReason::Failed, None),
        Err(CallError::CallEnded)
    );
}

#[test]
fn a_decline_ends_a_one_callee_call_as_rejected_and_busy_as_busy() {
    let t0 = Instant::now();
    for (reason, outcome) in [
        (RejectReason::Decline, Outcome::Rejected),
        (RejectReason::Busy, Outcome::Busy),
    ] {
        let mut c = call(&["host1"], t0);
        events(&mut c);
        c.reject(t0, "host1", reason).unwrap();
        assert_eq!(c.state(), CallState::Ended(outcome));
        assert_eq!(c.state().wire_name(), "rejected");
        assert_eq!(c.ended_by(), Some("host1"));
        assert_eq!(
            events(&mut c),
            vec![
                ring_ended("host1", RingState::Rejected(reason)),
                state(CallState::Ended(outcome), Some("host1")),
            ]
        );
        assert_eq!(c.duration(), None, "never answered");
        assert_eq!(c.accept(t0, "host1"), Err(CallError::CallEnded));
    }
}

#[test]
fn a_group_call_rings_on_until_every_callee_declined_and_a_later_accept_answers_it() {
    let t0 = Instant::now();
    let mut c = call(&["h1", "h2", "h3"], t0);
    events(&mut c);
    c.reject(t0, "h1", RejectReason::Busy).unwrap();
    c.reject(t0, "h2", RejectReason::Decline).unwrap();
    assert_eq!(c.state(), CallState::Ringing);
    assert_eq!(
        c.reject(t0, "h1", RejectReason::Decline),
        Err(CallError::NotRinging)
    );
    c.accept(t0, "h3").unwrap();
    assert_eq!(c.state(), CallState::Accepted);

    // All three decline: busy, since one was.
    let mut c = call(&["h1", "h2", "h3"], t0);
    for h in ["h1", "h2"] {
        c.reject(t0, h, RejectReason::Decline).unwrap();
    }
    c.reject(t0, "h3", RejectReason::Busy).unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Busy));
}

#[test]
fn in_an_answered_group_call_the_others_ring_on_and_are_missed_at_the_timeout() {
    let t0 = Instant::now();
    let mut c = call(&["h1", "h2"], t0);
    c.accept(t0, "h1").unwrap();
    c.joined(t0, "alice").unwrap();
    c.joined(t0, "h1").unwrap();
    events(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + RING), "h2 still rings");
    c.handle_timeout(t0 + RING - Duration::from_millis(1));
    assert!(events(&mut c).is_empty(), "not yet");
    c.handle_timeout(t0 + RING);
    assert_eq!(events(&mut c), vec![ring_ended("h2", RingState::Missed)]);
    assert_eq!(c.state(), CallState::Accepted, "the call goes on");
    assert_eq!(c.poll_timeout(), None);
    // h2 may still join the call it missed.
    c.joined(t0 + RING + Duration::from_secs(1), "h2").unwrap();
    assert_eq!(
        c.callees().collect::<Vec<_>>(),
        vec![("h1", RingState::Accepted), ("h2", RingState::Accepted)]
    );
    assert_eq!(c.answered_at(), Some(t0), "answered when h1 accepted");
}

#[test]
fn nobody_answering_within_the_ring_timeout_ends_the_call_as_missed() {
    let t0 = Instant::now();
    let mut c = call(&["h1", "h2"], t0);
    events(&mut c);
    c.handle_timeout(t0 + RING);
    assert_eq!(c.state(), CallState::Ended(Outcome::Missed));
    assert_eq!(c.state().wire_name(), "missed");
    assert_eq!(c.end_reason(), Some(EndReason::NoAnswer));
    assert_eq!(c.ended_by(), None);
    assert_eq!(
        events(&mut c),
        vec![
            ring_ended("h1", RingState::Missed),
            ring_ended("h2", RingState::Missed),
            state(CallState::Ended(Outcome::Missed), None),
        ]
    );
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t0 + RING * 2);
    assert!(events(&mut c).is_empty(), "once only");
    assert_eq!(c.accept(t0 + RING, "h1"), Err(CallError::CallEnded));
}

#[test]
fn the_caller_cancels_a_ringing_call_and_only_the_caller_may() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    events(&mut c);
    assert_eq!(c.cancel(t0, "host1"), Err(CallError::NotCaller));
    assert_eq!(c.cancel(t0, "mallory"), Err(CallError::NotInvited));
    c.cancel(t0, "alice").unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Cancelled));
    assert_eq!(c.state().wire_name(), "cancelled");
    assert_eq!(
        events(&mut c),
        vec![
            ring_ended("host1", RingState::Cancelled),
            state(CallState::Ended(Outcome::Cancelled), Some("alice")),
        ]
    );
    // Accepting a cancelled call: refused.
    assert_eq!(c.accept(t0, "host1"), Err(CallError::CallEnded));
}

#[test]
fn an_answered_call_cannot_be_cancelled_and_a_caller_leaving_a_ringing_call_cancels_it() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    c.accept(t0, "host1").unwrap();
    assert_eq!(c.cancel(t0, "alice"), Err(CallError::AlreadyAccepted));
    assert_eq!(c.state(), CallState::Accepted);

    let mut c = call(&["host1"], t0);
    c.joined(t0, "alice").unwrap();
    c.left(t0 + Duration::from_secs(1), "alice").unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Cancelled));
    assert_eq!(c.ended_by(), Some("alice"));
}

#[test]
fn the_server_ends_a_call_for_its_own_reasons_answered_or_not() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    c.end(t0, EndReason::InsufficientBalance, None).unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::InsufficientBalance));

    let mut c = call(&["host1"], t0);
    c.end(t0, EndReason::Failed, None).unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Failed));
    assert_eq!(c.callees().next(), Some(("host1", RingState::Cancelled)));

    // Answered, then the wallet ran dry: it was a completed call.
    let mut c = call(&["host1"], t0);
    c.accept(t0, "host1").unwrap();
    c.end(
        t0 + Duration::from_secs(30),
        EndReason::InsufficientBalance,
        None,
    )
    .unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Completed));
    assert_eq!(c.end_reason(), Some(EndReason::InsufficientBalance));
    assert_eq!(c.duration(), Some(Duration::from_secs(30)));
}

#[test]
fn inputs_from_strangers_are_refused_and_change_nothing() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    events(&mut c);
    assert_eq!(c.accept(t0, "mallory"), Err(CallError::NotInvited));
    assert_eq!(
        c.reject(t0, "mallory", RejectReason::Decline),
        Err(CallError::NotInvited)
    );
    assert_eq!(c.joined(t0, "mallory"), Err(CallError::NotInvited));
    assert_eq!(c.left(t0, "mallory"), Err(CallError::NotInvited));
    assert_eq!(
        c.accept(t0, "alice"),
        Err(CallError::NotInvited),
        "the caller is no callee"
    );
    assert!(events(&mut c).is_empty());
    assert_eq!(c.state(), CallState::Ringing);
    assert!(c.is_member("alice") && c.is_member("host1") && !c.is_member("mallory"));
}

#[test]
fn a_call_is_refused_with_no_callee_too_many_a_repeated_one_the_caller_among_them_or_a_bad_timeout()
{
    let t0 = Instant::now();
    let make = |callees: Vec<String>, caller: &str, ring: Duration| {
        Call::new(
            "CA_1".into(),
            "r".into(),
            caller.into(),
            callees,
            CallType::Audio,
            ring,
            t0,
        )
        .map(|_| ())
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(make(vec![], "a", RING), Err(CallError::CalleeCount));
    let many: Vec<String> = (0..=MAX_CALLEES).map(|i| format!("h{i}")).collect();
    assert_eq!(make(many, "a", RING), Err(CallError::CalleeCount));
    let most: Vec<String> = (0..MAX_CALLEES).map(|i| format!("h{i}")).collect();
    assert_eq!(make(most, "a", RING), Ok(()));
    assert_eq!(
        make(s(&["h", "h"]), "a", RING),
        Err(CallError::DuplicateCallee)
    );
    assert_eq!(make(s(&["a"]), "a", RING), Err(CallError::CallerIsCallee));
    assert_eq!(make(s(&[""]), "a", RING), Err(CallError::BadIdentity));
    assert_eq!(make(s(&["h\n"]), "a", RING), Err(CallError::BadIdentity));
    assert_eq!(
        make(s(&["h"]), &"a".repeat(257), RING),
        Err(CallError::BadIdentity)
    );
    assert_eq!(
        make(s(&["h"]), "a", Duration::from_secs(4)),
        Err(CallError::RingTimeout)
    );
    assert_eq!(
        make(s(&["h"]), "a", Duration::from_secs(181)),
        Err(CallError::RingTimeout)
    );
    assert_eq!(make(s(&["h"]), "a", Duration::from_secs(5)), Ok(()));
}

#[test]
fn every_error_has_a_code_of_its_own() {
    let all = [
        CallError::CalleeCount,
        CallError::BadIdentity,
        CallError::CallerIsCallee,
        CallError::DuplicateCallee,
        CallError::RingTimeout,
        CallError::NotInvited,
        CallError::NotCaller,
        CallError::CallEnded,
        CallError::AlreadyAnswered,
        CallError::NotRinging,
        CallError::AlreadyAccepted,
    ];
    let mut codes: Vec<&str> = all.iter().map(CallError::code).collect();
    assert!(
        codes
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
    );
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
}

#[test]
fn an_answer_whose_members_never_meet_in_the_room_fails_at_the_connect_timeout() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    let answered = t0 + Duration::from_secs(3);
    c.accept(answered, "host1").unwrap();
    c.joined(answered, "alice").unwrap();
    assert_eq!(c.poll_timeout(), Some(answered + CONNECT_TIMEOUT));
    events(&mut c);
    c.handle_timeout(answered + CONNECT_TIMEOUT - Duration::from_millis(1));
    assert_eq!(c.state(), CallState::Accepted, "not yet");
    c.handle_timeout(answered + CONNECT_TIMEOUT);
    assert_eq!(c.state(), CallState::Ended(Outcome::Failed));
    assert_eq!(c.end_reason(), Some(EndReason::Failed));
    assert_eq!(
        events(&mut c),
        vec![state(CallState::Ended(Outcome::Failed), None)]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn once_two_members_met_in_the_room_there_is_no_connect_timeout() {
    let t0 = Instant::now();
    let mut c = call(&["host1"], t0);
    c.joined(t0, "alice").unwrap();
    c.joined(t0 + Duration::from_secs(2), "host1").unwrap();
    assert_eq!(c.state(), CallState::Accepted);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t0 + Duration::from_secs(600));
    assert_eq!(c.state(), CallState::Accepted);
    // A failure of the server's after they met: the call was completed.
    c.end(t0 + Duration::from_secs(700), EndReason::Failed, None)
        .unwrap();
    assert_eq!(c.state(), CallState::Ended(Outcome::Completed));
}

#[test]
fn engages_says_who_is_in_the_call_now() {
    let t0 = Instant::now();
    let mut c = call(&["host1", "host2"], t0);
    assert!(c.engages("alice"), "the caller, from the start");
    assert!(!c.engages("host1"), "a ringing callee is not in it yet");
    c.accept(t0, "host1").unwrap();
    assert!(c.engages("host1"));
    assert!(!c.engages("host2"));
    assert!(!c.engages("stranger"));
    assert_eq!(c.ring_of("host2"), Some(RingState::Ringing));
    assert_eq!(c.ring_of("alice"), None);
    c.end(t0, EndReason::Failed, None).unwrap();
    assert!(!c.engages("alice") && !c.engages("host1"), "ended");
}
