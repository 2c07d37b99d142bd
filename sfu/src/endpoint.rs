//! The worker's demultiplexer (the role quinn calls the Endpoint): which
//! transport a datagram belongs to, by the route it came on or, for a route
//! not yet proven, by the ICE ufrag its STUN request names; and the local
//! addresses rtc must see on every datagram.

use std::collections::HashMap;
use std::net::SocketAddr;

use rtc::shared::TransportProtocol;

use crate::route::Route;
use crate::stun::ice_username;
use crate::transport::TransportId;

pub(crate) struct Endpoint {
    /// The address in our UDP ICE candidates; `TransportContext.local_addr`
    /// must equal it.
    udp_addr: SocketAddr,
    /// The address in our passive TCP ICE candidates; likewise for TCP frames.
    tcp_addr: SocketAddr,
    by_route: HashMap<Route, TransportId>,
    by_ufrag: HashMap<String, TransportId>,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demuxed {
    pub transport: TransportId,
    /// Its route is already known to belong to the transport.
    pub known_route: bool,
}

impl Endpoint {
    pub(crate) fn new(udp_addr: SocketAddr, tcp_addr: SocketAddr) -> Self {
        Endpoint {
            udp_addr,
            tcp_addr,
            by_route: HashMap::new(),
            by_ufrag: HashMap::new(),
        }
    }

    pub(crate) fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub(crate) fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The address our candidate for `protocol` has: what rtc must see as
    /// the local address of a datagram; its ICE agent matches inbound
    /// datagrams to a local candidate by that address and drops the rest.
    pub(crate) fn local_addr_for(&self, protocol: TransportProtocol) -> SocketAddr {
        match protocol {
            TransportProtocol::TCP => self.tcp_addr,
            _ => self.udp_addr,
        }
    }

    /// The transport a datagram from `route` belongs to.
    pub(crate) fn demux(&self, route: Route, data: &[u8]) -> Option<Demuxed> {
        if let Some(&transport) = self.by_route.get(&route) {
            return Some(Demuxed {
                transport,
                known_route: true,
            });
        }
        let ufrag = ice_username(data)?;
        self.by_ufrag.get(&ufrag).map(|&transport| Demuxed {
            transport,
            known_route: false,
        })
    }

    pub(crate) fn transport_of_ufrag(&self, ufrag: &str) -> Option<TransportId> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// The transport a STUN request names by its ufrag when that is not
    /// `owner`, the transport its route belongs to: a client of another
    /// transport now sends from an address of one of ours.
    pub(crate) fn claimant(&self, owner: TransportId, data: &[u8]) -> Option<TransportId> {
        if !crate::stun::is_binding_request(data) {
            return None;
        }
        let claimant = *self.by_ufrag.get(&ice_username(data)?)?;
        (claimant != owner).then_some(claimant)
    }

    /// `route` proved to be `transport`'s (an authenticated STUN request);
    /// the transport it belonged to until now, if another.
    pub(crate) fn learn_route(
        &mut self,
        route: Route,
        transport: TransportId,
    ) -> Option<TransportId> {
        self.by_route
            .insert(route, transport)
            .filter(|&previous| previous != transport)
    }

    /// `route` routes nowhere any more; the transport it was for, if any.
    pub(crate) fn forget_route(&mut self, route: Route) -> Option<TransportId> {
        self.by_route.remove(&route)
    }

    /// Forgets `route` if it is `transport`'s: a route another transport
    /// took over stays with that one.
    pub(crate) fn forget_route_of(&mut self, route: Route, transport: TransportId) {
        if self.by_route.get(&route) == Some(&transport) {
            self.by_route.remove(&route);
        }
    }

    pub(crate) fn add_ufrag(&mut self, ufrag: String, transport: TransportId) {
        self.by_ufrag.insert(ufrag, transport);
    }

    pub(crate) fn remove_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }
}
