//! What the media plane needs to know from the operator's configuration.

use std::net::IpAddr;
use std::time::Duration;

use callgate_admission::AdmissionLimits;

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address the media sockets bind to.
    pub bind_ip: IpAddr,
    /// Address put in ICE candidates; differs from `bind_ip` behind 1:1 NAT
    /// or when binding the unspecified address.
    pub advertise_ip: IpAddr,
    /// First UDP port; worker `i` owns `udp_port + i`. 0 picks free ports.
    pub udp_port: u16,
    /// The one ICE-TCP port (RFC 6544 passive candidates, RFC 4571 framing)
    /// every worker's transports share; 0 picks a free port.
    pub tcp_port: u16,
    /// Media worker threads, each owning whole rooms and one UDP port.
    pub workers: usize,
    /// Most participants one room admits.
    pub max_participants: usize,
    /// How long an empty room lives before it is closed.
    pub empty_room_timeout: Duration,
    /// SO_RCVBUF / SO_SNDBUF asked for on each media socket.
    pub socket_buffer_bytes: usize,
    /// Least time between two keyframe requests sent upstream for one track.
    pub keyframe_request_interval: Duration,
    /// Share subscribers' bandwidth estimates among their tracks and tell
    /// single-stream publishers the least a subscriber takes (REMB).
    pub adapt_to_subscribers: bool,
    /// Offer subscribers transport-wide congestion control feedback, so
    /// their estimate is callgate's own send-side one (module `bwe`)
    /// instead of their browser's REMB (which a subscriber that declines
    /// transport-cc is still estimated by).
    pub send_side_estimation: bool,
    /// How long a new ICE-TCP connection may take to send its first STUN
    /// request before it is closed.
    pub ice_tcp_first_frame_timeout: Duration,
    /// ICE-TCP connections still sending their first STUN request, in all
    /// and per source; a newcomer beyond sheds the oldest.
    pub ice_tcp_pending: AdmissionLimits,
    /// Nothing at all from a participant's transports for this long (after
    /// its media connected) makes it reconnecting.
    pub reconnect_after_silence: Duration,
    /// How long a reconnecting participant is kept before its session ends
    /// with `connection_lost`.
    pub reconnect_grace: Duration,
    /// How long a transport's DTLS handshake may take after its ICE connected.
    pub dtls_timeout: Duration,
    /// A worker busier than this share of the time (module `load`) admits
    /// no new participant; 1 or more never refuses.
    pub max_worker_load: f64,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            advertise_ip: IpAddr::from([127, 0, 0, 1]),
            udp_port: 7882,
            tcp_port: 7881,
            workers: 2,
            max_participants: 50,
            empty_room_timeout: Duration::from_secs(20),
            socket_buffer_bytes: 4 << 20,
            keyframe_request_interval: Duration::from_millis(500),
            adapt_to_subscribers: true,
            send_side_estimation: true,
            ice_tcp_first_frame_timeout: Duration::from_secs(3),
            ice_tcp_pending: AdmissionLimits {
                max_total: 256,
                max_per_source: 64,
            },
            reconnect_after_silence: Duration::from_secs(5),
            reconnect_grace: Duration::from_secs(20),
            dtls_timeout: Duration::from_secs(10),
            max_worker_load: 0.95,
        }
    }
}
