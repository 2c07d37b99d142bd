//! Room for connections that have not yet shown they belong to anybody: an
//! ICE-TCP connection before its first STUN request, an HTTP connection or
//! a signaling WebSocket before a valid `join`, a TURN TCP/TLS connection
//! before an authenticated request.
//!
//! Each holds a [`Pass`] while it is unproven. The table is capped in total
//! and per source (an IPv4 address, or an IPv6 /64, which one host or
//! customer usually gets whole). A full table never turns a newcomer away:
//! it sheds the *oldest* unproven connection, of the newcomer's own source
//! when that source holds its most, else of anybody. A real client proves
//! itself soon after connecting (a round trip, plus what its ICE agent
//! waits before its first check: about 200 ms for webrtc-rs), so it is only
//! shed when more than a cap's worth of newer unproven connections arrive
//! in that time; one source alone can only ever shed its own connections.
//! Idle connections, however many, cannot lock real clients out; a flood
//! of new connections faster than a cap per proving time still can.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch;

/// How many unproven connections are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// In all; at least 1.
    pub max_total: usize,
    /// From one source; at least 1.
    pub max_per_source: usize,
}

/// Why a pass was taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The table was full; this was the oldest connection in it.
    TotalCap,
    /// Its source held its most; this was the source's oldest connection.
    SourceCap,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::TotalCap => "total_cap",
            Shed::SourceCap => "address_cap",
        }
    }
}

/// What the table counts, at the moment it decides.
#[derive(Clone)]
pub struct AdmissionMetrics {
    /// Passes held now.
    pub held: IntGauge,
    /// Passes taken back because the table was full.
    pub shed_total_cap: IntCounter,
    /// Passes taken back because their source held its most.
    pub shed_source_cap: IntCounter,
}

impl AdmissionMetrics {
    /// Series registered nowhere, for a table nobody watches.
    pub fn unregistered() -> AdmissionMetrics {
        let counter = |name: &str| IntCounter::new(name, name).expect("a valid metric name");
        AdmissionMetrics {
            held: IntGauge::new("held", "held").expect("a valid metric name"),
            shed_total_cap: counter("shed_total_cap"),
            shed_source_cap: counter("shed_source_cap"),
        }
    }
}

/// The table of unproven connections. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    limits: AdmissionLimits,
    table: Mutex<Table>,
    metrics: AdmissionMetrics,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// Oldest first: sequence numbers grow.
    by_age: BTreeMap<u64, Held>,
    /// Each source's sequence numbers, oldest first.
    by_source: HashMap<IpAddr, VecDeque<u64>>,
}

struct Held {
    source: IpAddr,
    shed: watch::Sender<Option<Shed>>,
}

/// The place an unproven connection holds; given back when dropped or
/// [`released`](Pass::release).
pub struct Pass {
    shared: Arc<Shared>,
    seq: u64,
    shed: watch::Receiver<Option<Shed>>,
}

/// Whom a connection from `ip` is counted with: the address itself, or for
/// IPv6 its /64 (an IPv4-mapped address counts as the IPv4 one).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl Admission {
    /// A table with `limits` (each raised to at least 1).
    pub fn new(limits: AdmissionLimits, metrics: AdmissionMetrics) -> Admission {
        let limits = AdmissionLimits {
            max_total: limits.max_total.max(1),
            max_per_source: limits.max_per_source.max(1),
        };
        Admission {
            shared: Arc::new(Shared {
                limits,
                table: Mutex::new(Table::default()),
                metrics,
            }),
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.shared.limits
    }

    /// A pass for a new connection from `ip`, shedding the oldest one of
    /// its source, or else the oldest of all, when the table is full.
    pub fn admit(&self, ip: IpAddr) -> Pass {
        let source = source_of(ip);
        let limits = self.shared.limits;
        let mut table = self.shared.lock();
        let own = table.by_source.get(&source).map_or(0, VecDeque::len);
        if own >= limits.max_per_source {
            if let Some(&oldest) = table.by_source.get(&source).and_then(VecDeque::front) {
                table.shed(oldest, Shed::SourceCap);
                self.shared.metrics.shed_source_cap.inc();
            }
        } else if table.by_age.len() >= limits.max_total
            && let Some((&oldest, _)) = table.by_age.first_key_value()
        {
            table.shed(oldest, Shed::TotalCap);
            self.shared.metrics.shed_total_cap.inc();
        }
        let seq = table.next;
        table.next = table.next.wrapping_add(1);
        let (tx, rx) = watch::channel(None);
        table.by_age.insert(seq, Held { source, shed: tx });
        table.by_source.entry(source).or_default().push_back(seq);
        self.shared.count(&table);
        drop(table);
        Pass {
            shared: self.shared.clone(),
            seq,
            shed: rx,
        }
    }

    /// Passes held now.
    pub fn held(&self) -> usize {
        self.shared.lock().by_age.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent between statements: a panic elsewhere
        // while it was locked leaves nothing half done.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, table: &Table) {
        let held = i64::try_from(table.by_age.len()).unwrap_or(i64::MAX);
        self.metrics.held.set(held);
    }
}

impl Table {
    /// Takes `seq` out of the table; whether it was there.
    fn remove(&mut self, seq: u64) -> Option<Held> {
        let held = self.by_age.remove(&seq)?;
        if let Some(seqs) = self.by_source.get_mut(&held.source) {
            seqs.retain(|&s| s != seq);
            if seqs.is_empty() {
                self.by_source.remove(&held.source);
            }
        }
        Some(held)
    }

    fn shed(&mut self, seq: u64, why: Shed) {
        if let Some(held) = self.remove(seq) {
            held.shed.send_replace(Some(why));
        }
    }
}

impl Pass {
    /// Resolves when the pass is taken back to make room for a newer
    /// connection; never, once released. The connection must then close.
    pub async fn shed(&self) -> Shed {
        let mut rx = self.shed.clone();
        match rx.wait_for(Option::is_some).await.map(|s| *s) {
            Ok(Some(why)) => why,
            // Released (its sender is gone without a value): never shed.
            _ => std::future::pending().await,
        }
    }

    /// The connection proved itself: it leaves the table and can no
    /// longer be shed. Idempotent.
    pub fn release(&self) {
        let mut table = self.shared.lock();
        if table.remove(self.seq).is_some() {
            self.shared.count(&table);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn shed_now(pass: &Pass) -> Option<Shed> {
        *pass.shed.borrow()
    }

    #[test]
    fn a_full_source_sheds_its_own_oldest_and_nobody_else() {
        let metrics = AdmissionMetrics::unregistered();
        let gauge = metrics.held.clone();
        let admission = Admission::new(
            AdmissionLimits {
                max_total: 10,
                max_per_source: 2,
            },
            metrics.clone(),
        );
        let other = admission.admit(ip("10.0.0.9"));
        let a1 = admission.admit(ip("10.0.0.1"));
        let a2 = admission.admit(ip("10.0.0.1"));
        assert_eq!(gauge.get(), 3);
        let a3 = admission.admit(ip("10.0.0.1"));
        assert_eq!(shed_now(&a1), Some(Shed::SourceCap));
        assert_eq!(shed_now(&a2), None);
        assert_eq!(shed_now(&a3), None);
        assert_eq!(shed_now(&other), None, "another source is untouched");
        assert_eq!(admission.held(), 3);
        assert_eq!(gauge.get(), 3);
        assert_eq!(metrics.shed_source_cap.get(), 1);
        assert_eq!(metrics.shed_total_cap.get(), 0);
        // Dropping a shed pass changes nothing more.
        drop(a1);
        assert_eq!(admission.held(), 3);
        let a4 = admission.admit(ip("10.0.0.1"));
        assert_eq!(shed_now(&a2), Some(Shed::SourceCap));
        assert_eq!(shed_now(&a4), None);
        assert_eq!(shed_now(&other), None);
        assert_eq!(metrics.shed_source_cap.get(), 2);
    }

    #[test]
    fn a_full_table_sheds_the_oldest_of_all() {
        let metrics = AdmissionMetrics::unregistered();
        let admission = Admission::new(
            AdmissionLimits {
                max_total: 3,
                max_per_source: 3,
            },
            metrics.clone(),
        );
        let passes: Vec<Pass> = (1..=3)
            .map(|i| admission.admit(ip(&format!("10.0.0.{i}"))))
            .collect();
        let newest = admission.admit(ip("10.0.0.4"));
        assert_eq!(shed_now(&passes[0]), Some(Shed::TotalCap));
        assert_eq!(shed_now(&passes[1]), None);
        assert_eq!(shed_now(&newest), None);
        assert_eq!(admission.held(), 3);
        assert_eq!(metrics.shed_total_cap.get(), 1);
        assert_eq!(metrics.shed_source_cap.get(), 0);
        // A released pass frees its place: the next newcomer sheds nobody.
        passes[1].release();
        assert_eq!(admission.held(), 2);
        let next = admission.admit(ip("10.0.0.5"));
        assert_eq!(shed_now(&passes[2]), None);
        assert_eq!(shed_now(&next), None);
        assert_eq!(admission.held(), 3);
        assert_eq!(metrics.shed_total_cap.get(), 1);
        assert_eq!(metrics.held.get(), 3);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1")),
            source_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(source_of(ip("10.0.0.1")), ip("10.0.0.1"));

        let admission = Admission::new(
            AdmissionLimits {
                max_total: 10,
                max_per_source: 1,
            },
            AdmissionMetrics::unregistered(),
        );
        let first = admission.admit(ip("2001:db8::1"));
        let _second = admission.admit(ip("2001:db8::ffff:2"));
        assert_eq!(shed_now(&first), Some(Shed::SourceCap));
    }

    #[tokio::test(start_paused = true)]
    async fn shed_wakes_the_holder_and_release_makes_it_unsheddable() {
        let admission = Admission::new(
            AdmissionLimits {
                max_total: 1,
                max_per_source: 1,
            },
            AdmissionMetrics::unregistered(),
        );
        let first = admission.admit(ip("10.0.0.1"));
        let waiter = tokio::spawn(async move { first.shed().await });
        let second = admission.admit(ip("10.0.0.2"));
        assert_eq!(waiter.await.unwrap(), Shed::TotalCap);

        // Released, it stays whatever comes after.
        second.release();
        assert_eq!(admission.held(), 0);
        let _third = admission.admit(ip("10.0.0.3"));
        let _fourth = admission.admit(ip("10.0.0.3"));
        assert_eq!(shed_now(&second), None);
        // Paused time: the wait passes at once unless something is ready.
        let never = tokio::time::timeout(std::time::Duration::from_secs(3600), second.shed()).await;
        assert!(never.is_err(), "a released pass was shed");
    }

    #[test]
    fn limits_of_zero_mean_one() {
        let admission = Admission::new(
            AdmissionLimits {
                max_total: 0,
                max_per_source: 0,
            },
            AdmissionMetrics::unregistered(),
        );
        assert_eq!(
            admission.limits(),
            AdmissionLimits {
                max_total: 1,
                max_per_source: 1
            }
        );
        let a = admission.admit(ip("10.0.0.1"));
        let _b = admission.admit(ip("10.0.0.2"));
        assert_eq!(shed_now(&a), Some(Shed::TotalCap));
    }
}
