//! A user-space NAT for one test client: its peer connections send to the
//! NAT's inside address (the client is given it in place of the server's
//! candidate), and the NAT forwards each inside address from a socket of
//! its own on an outside address, as a home router or a carrier NAT does.
//! `rebind` moves every mapping to a new outside address mid-call (a
//! network change, or NAT rebinding, as the server sees it); `drop_if`
//! loses chosen client datagrams; `impair` makes both directions a lossy,
//! jittery link (this kernel has no netem, so it is done here).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

type Filter = Box<dyn FnMut(&[u8]) -> bool + Send>;

pub struct Nat {
    inside: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

struct State {
    server: Option<SocketAddr>,
    outside_ip: IpAddr,
    /// Inside address → its outside socket and the task reading it.
    mappings: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)>,
    drop_if: Option<Filter>,
    /// Client datagrams the filter dropped.
    dropped: usize,
    link: Option<Link>,
}

/// A lossy, jittery link, the same both ways.
#[derive(Clone)]
pub struct Link {
    /// Chance that a datagram is lost, 0.0–1.0.
    pub loss: f64,
    /// Each datagram is delayed uniformly within `delay ± jitter`.
    pub delay: std::time::Duration,
    pub jitter: std::time::Duration,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    /// Datagrams offered to the link, and those it lost.
    counts: Arc<Mutex<(u64, u64)>>,
}

impl Link {
    pub fn new(
        loss: f64,
        delay: std::time::Duration,
        jitter: std::time::Duration,
        seed: u64,
    ) -> Link {
        use rand::SeedableRng;
        Link {
            loss,
            delay,
            jitter,
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            counts: Arc::new(Mutex::new((0, 0))),
        }
    }

    /// Datagrams offered to the link so far, and how many it lost.
    pub fn counts(&self) -> (u64, u64) {
        *self.counts.lock().unwrap()
    }

    /// `None`: lost; otherwise how long the datagram is held.
    fn fate(&self) -> Option<std::time::Duration> {
        use rand::Rng;
        let mut rng = self.rng.lock().unwrap();
        let lost = rng.random::<f64>() < self.loss;
        {
            let mut counts = self.counts.lock().unwrap();
            counts.0 += 1;
            counts.1 += u64::from(lost);
        }
        if lost {
            return None;
        }
        let low = self.delay.saturating_sub(self.jitter);
        let high = self.delay + self.jitter;
        Some(rng.random_range(low..=high))
    }
}

/// Sends `datagram` on `socket` to `to` after the link's delay, or loses it.
fn send_over(link: Option<&Link>, socket: Arc<UdpSocket>, datagram: &[u8], to: SocketAddr) {
    match link {
        None => {
            let _ = socket.try_send_to(datagram, to);
        }
        Some(link) => {
            let Some(after) = link.fate() else { return };
            let datagram = datagram.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = socket.send_to(&datagram, to).await;
            });
        }
    }
}

impl Nat {
    /// A NAT whose inside address is on `inside_ip` and whose mappings go
    /// out from `outside_ip`.
    pub async fn start(inside_ip: IpAddr, outside_ip: IpAddr) -> Arc<Nat> {
        let inside = Arc::new(
            UdpSocket::bind(SocketAddr::new(inside_ip, 0))
                .await
                .expect("nat inside socket"),
        );
        let state = Arc::new(Mutex::new(State {
            server: None,
            outside_ip,
            mappings: HashMap::new(),
            drop_if: None,
            dropped: 0,
            link: None,
        }));
        let task = tokio::spawn(forward_out(inside.clone(), state.clone()));
        Arc::new(Nat {
            inside,
            state,
            task,
        })
    }

    /// Where the client must send: the NAT's inside address.
    pub fn inside_addr(&self) -> SocketAddr {
        self.inside.local_addr().expect("nat inside address")
    }

    /// The server media address everything is forwarded to.
    pub fn set_server(&self, server: SocketAddr) {
        self.state.lock().unwrap().server = Some(server);
    }

    /// Every mapping moves to a new outside socket on `ip`: the server sees
    /// the client's datagrams come from a new address from now on.
    pub fn rebind(&self, ip: IpAddr) {
        let mut state = self.state.lock().unwrap();
        state.outside_ip = ip;
        for (_, (_, task)) in state.mappings.drain() {
            task.abort();
        }
    }

    /// Loses the client datagrams `filter` picks (from now on).
    pub fn drop_if(&self, filter: impl FnMut(&[u8]) -> bool + Send + 'static) {
        self.state.lock().unwrap().drop_if = Some(Box::new(filter));
    }

    /// Makes both directions `link` (from now on).
    pub fn impair(&self, link: Link) {
        self.state.lock().unwrap().link = Some(link);
    }

    /// How many client datagrams the filter has dropped.
    pub fn dropped(&self) -> usize {
        self.state.lock().unwrap().dropped
    }

    /// The outside addresses of the mappings now.
    pub fn outside_addrs(&self) -> Vec<SocketAddr> {
        let state = self.state.lock().unwrap();
        state
            .mappings
            .values()
            .filter_map(|(s, _)| s.local_addr().ok())
            .collect()
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.task.abort();
        for (_, (_, task)) in self.state.lock().unwrap().mappings.drain() {
            task.abort();
        }
    }
}

/// Client → server: through the inside address's mapping.
async fn forward_out(inside: Arc<UdpSocket>, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = inside.recv_from(&mut buf).await else {
            return;
        };
        let datagram = &buf[..n];
        let (outside, server, link) = {
            let mut st = state.lock().unwrap();
            let Some(server) = st.server else { continue };
            if let Some(filter) = st.drop_if.as_mut()
                && filter(datagram)
            {
                st.dropped += 1;
                continue;
            }
            let link = st.link.clone();
            match st.mappings.get(&from) {
                Some((socket, _)) => (socket.clone(), server, link),
                None => {
                    let ip = st.outside_ip;
                    let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
                        .expect("nat outside socket");
                    std_socket.set_nonblocking(true).unwrap();
                    let socket = Arc::new(UdpSocket::from_std(std_socket).unwrap());
                    let task = tokio::spawn(forward_in(
                        socket.clone(),
                        inside.clone(),
                        from,
                        state.clone(),
                    ));
                    st.mappings.insert(from, (socket.clone(), task));
                    (socket, server, link)
                }
            }
        };
        send_over(link.as_ref(), outside, datagram, server);
    }
}

/// Server → client: what arrives on a mapping goes to its inside address.
async fn forward_in(
    outside: Arc<UdpSocket>,
    inside: Arc<UdpSocket>,
    client: SocketAddr,
    state: Arc<Mutex<State>>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, _)) = outside.recv_from(&mut buf).await {
        let link = state.lock().unwrap().link.clone();
        send_over(link.as_ref(), inside.clone(), &buf[..n], client);
    }
}

/// `sdp` with every UDP host candidate of the server replaced by the NAT's
/// inside address, and TCP candidates removed; also returns the server's
/// UDP media address it found.
pub fn through(sdp: &str, inside: SocketAddr) -> (String, Option<SocketAddr>) {
    let mut server = None;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if let Some(candidate) = trimmed.strip_prefix("a=candidate:") {
            // <foundation> <component> <transport> <priority> <ip> <port> typ host …
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            if fields.len() >= 6 {
                if fields[2].eq_ignore_ascii_case("tcp") {
                    continue;
                }
                if let (Ok(ip), Ok(port)) = (fields[4].parse::<IpAddr>(), fields[5].parse::<u16>())
                {
                    server = Some(SocketAddr::new(ip, port));
                    let rewritten = format!(
                        "a=candidate:{} {} {} {} {} {} {}\r\n",
                        fields[0],
                        fields[1],
                        fields[2],
                        fields[3],
                        inside.ip(),
                        inside.port(),
                        fields[6..].join(" ")
                    );
                    out.push_str(&rewritten);
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    (out, server)
}
