//! Which path a transport's media goes out on. rtc's ICE-lite agent picks
//! its selected pair once, on the first nomination, and never moves it
//! (rtc-ice 0.21 `ControlledSelector::handle_binding_request` sets it only
//! while none is set), so a client that changes address, or that nominated
//! an ICE-TCP pair before settling on UDP, would be sent to where it no
//! longer listens. We keep the client's routes ourselves and send to the
//! one its checks and media use.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::shared::TransportProtocol;

/// Where a transport's traffic comes from: UDP and TCP ports are separate
/// spaces, so an address alone could name two peers.
pub(crate) type Route = (TransportProtocol, SocketAddr);

/// How long the active route must have been silent before traffic on
/// another known route takes media over without a nomination.
pub(crate) const ROUTE_SILENCE: Duration = Duration::from_secs(1);

/// The routes a client has proven (an authenticated check came from each)
/// and the one media goes to.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Each known route and when something last arrived on it.
    known: Vec<(Route, Instant)>,
    active: Option<Route>,
    /// Routes another transport's client proved its own since (a NAT gave
    /// our client's old address and port to someone else): nothing of
    /// ours may go there any more.
    taken: Vec<Route>,
}

/// Most taken routes remembered; older ones are forgotten first.
const MAX_TAKEN: usize = 8;

/// What arrived on a route, as far as choosing the active one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// An authenticated binding request with USE-CANDIDATE.
    Nomination,
    /// An authenticated binding request without it.
    Check,
    /// Anything else (DTLS, SRTP, SRTCP) on a route already known.
    Media,
}

impl Routes {
    /// Learns a route an authenticated check came from.
    pub(crate) fn learn(&mut self, route: Route, now: Instant) {
        self.taken.retain(|r| *r != route);
        if !self.knows(route) {
            self.known.push((route, now));
        }
    }

    pub(crate) fn knows(&self, route: Route) -> bool {
        self.known.iter().any(|(r, _)| *r == route)
    }

    /// Notes traffic on a known route and moves media to it when the client
    /// nominated it, when nothing was chosen yet, or when the active route
    /// has gone silent. Returns whether the active route changed.
    pub(crate) fn heard(&mut self, route: Route, now: Instant, arrival: Arrival) -> bool {
        let Some(entry) = self.known.iter_mut().find(|(r, _)| *r == route) else {
            return false;
        };
        entry.1 = now;
        let Some(active) = self.active else {
            self.active = Some(route);
            return true;
        };
        if active == route {
            return false;
        }
        let active_silent = self
            .known
            .iter()
            .find(|(r, _)| *r == active)
            .is_none_or(|(_, at)| *at + ROUTE_SILENCE <= now);
        if arrival == Arrival::Nomination || active_silent {
            self.active = Some(route);
            return true;
        }
        false
    }

    pub(crate) fn active(&self) -> Option<Route> {
        self.active
    }

    /// Forgets a route (its ICE-TCP connection closed).
    pub(crate) fn forget(&mut self, route: Route) {
        self.known.retain(|(r, _)| *r != route);
        if self.active == Some(route) {
            // The most recently heard of the rest, if any.
            self.active = self.known.iter().max_by_key(|(_, at)| *at).map(|(r, _)| *r);
        }
    }

    /// Whether nothing arrived on `route` for `ROUTE_SILENCE` (or it is
    /// not ours): only then may another transport's client claim it, so a
    /// live call's address cannot be claimed from under it.
    pub(crate) fn silent(&self, route: Route, now: Instant) -> bool {
        self.known
            .iter()
            .find(|(r, _)| *r == route)
            .is_none_or(|(_, at)| *at + ROUTE_SILENCE <= now)
    }

    /// Another transport's client proved `route` its own: forget it, and
    /// send nothing there any more.
    pub(crate) fn taken_over(&mut self, route: Route) {
        self.forget(route);
        if !self.taken.contains(&route) {
            if self.taken.len() == MAX_TAKEN {
                self.taken.remove(0);
            }
            self.taken.push(route);
        }
    }

    /// Whether `route` went to another transport's client.
    pub(crate) fn is_taken(&self, route: Route) -> bool {
        !self.taken.is_empty() && self.taken.contains(&route)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Route> + '_ {
        self.known.iter().map(|(r, _)| *r)
    }

    pub(crate) fn count(&self, protocol: TransportProtocol) -> usize {
        self.known
            .iter()
            .filter(|((p, _), _)| *p == protocol)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(last: u8) -> Route {
        (
            TransportProtocol::UDP,
            SocketAddr::from(([127, 0, 0, last], 5000)),
        )
    }

    fn tcp(last: u8) -> Route {
        (
            TransportProtocol::TCP,
            SocketAddr::from(([127, 0, 0, last], 6000)),
        )
    }

    #[test]
    fn the_first_route_heard_carries_media() {
        let now = Instant::now();
        let mut routes = Routes::default();
        routes.learn(udp(2), now);
        assert!(routes.heard(udp(2), now, Arrival::Check));
        assert_eq!(routes.active(), Some(udp(2)));
    }

    #[test]
    fn a_later_nomination_moves_media_at_once() {
        // Chromium checks (and may nominate) an ICE-TCP pair before it
        // settles on UDP; media must follow its last choice.
        let now = Instant::now();
        let mut routes = Routes::default();
        routes.learn(tcp(2), now);
        routes.heard(tcp(2), now, Arrival::Nomination);
        routes.learn(udp(2), now);
        assert!(routes.heard(udp(2), now, Arrival::Nomination));
        assert_eq!(routes.active(), Some(udp(2)));
    }

    #[test]
    fn checks_on_another_route_move_media_only_once_the_active_one_is_silent() {
        let start = Instant::now();
        let mut routes = Routes::default();
        routes.learn(udp(2), start);
        routes.heard(udp(2), start, Arrival::Media);
        routes.learn(udp(3), start);
        let soon = start + ROUTE_SILENCE / 2;
        assert!(!routes.heard(udp(3), soon, Arrival::Check));
        assert_eq!(routes.active(), Some(udp(2)));
        let later = start + ROUTE_SILENCE;
        assert!(routes.heard(udp(3), later, Arrival::Media));
        assert_eq!(routes.active(), Some(udp(3)));
    }

    #[test]
    fn unknown_routes_never_carry_media() {
        let now = Instant::now();
        let mut routes = Routes::default();
        assert!(!routes.heard(udp(9), now, Arrival::Nomination));
        assert_eq!(routes.active(), None);
    }

    #[test]
    fn a_route_taken_over_is_never_sent_to_until_our_client_proves_it_again() {
        let start = Instant::now();
        let mut routes = Routes::default();
        routes.learn(udp(2), start);
        routes.heard(udp(2), start, Arrival::Nomination);
        assert!(!routes.silent(udp(2), start + ROUTE_SILENCE / 2));
        assert!(routes.silent(udp(2), start + ROUTE_SILENCE));
        assert!(routes.silent(udp(7), start), "not ours: nothing to keep");

        routes.taken_over(udp(2));
        assert_eq!(routes.active(), None);
        assert!(routes.is_taken(udp(2)));
        assert!(!routes.is_taken(udp(3)));

        routes.learn(udp(2), start + ROUTE_SILENCE);
        assert!(!routes.is_taken(udp(2)));
        assert!(routes.heard(udp(2), start + ROUTE_SILENCE, Arrival::Check));
    }

    #[test]
    fn taken_routes_are_remembered_up_to_a_bound() {
        let mut routes = Routes::default();
        for last in 0..=MAX_TAKEN as u8 {
            routes.taken_over(udp(last));
        }
        assert!(!routes.is_taken(udp(0)), "the oldest is forgotten");
        assert!((1..=MAX_TAKEN as u8).all(|last| routes.is_taken(udp(last))));
    }

    #[test]
    fn forgetting_the_active_route_falls_back_to_the_latest_heard() {
        let start = Instant::now();
        let mut routes = Routes::default();
        routes.learn(udp(2), start);
        routes.heard(udp(2), start, Arrival::Check);
        routes.learn(tcp(2), start);
        routes.heard(tcp(2), start + ROUTE_SILENCE, Arrival::Nomination);
        routes.forget(tcp(2));
        assert_eq!(routes.active(), Some(udp(2)));
        assert_eq!(routes.count(TransportProtocol::TCP), 0);
    }
}
