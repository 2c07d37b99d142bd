//! This node in a cluster (`[cluster]`, docs/operations.md "Running
//! several nodes"): its registry entry kept fresh in Redis, the placements
//! of rooms that closed here released, and signaling's view of where rooms
//! and sessions live.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use callgate_cluster::{Cluster, ClusterConfig, NodeLoad};
use callgate_metering::Meter;
use callgate_sfu::{Sfu, SfuMetrics};
use callgate_signaling::cluster::{BoxFuture, ClusterUnavailable, NodeProof, Placement, Route};
use callgate_signaling::token::{unix_now, unix_now_ms};
use tracing::{debug, info, warn};

use crate::config::ClusterSection;

/// How long a participant's location is kept at most (a session never
/// lasts this long; a crashed node's entries expire with it).
const PARTICIPANT_TTL: Duration = Duration::from_secs(24 * 3600);

/// This node's part of the cluster.
pub struct ClusterNode {
    cluster: Cluster,
    secret: Vec<u8>,
    /// The shared ledger, to close the billed sessions of nodes that die.
    meter: Option<Meter>,
    /// Taking no new rooms (the node is stopping).
    draining: AtomicBool,
    /// How long asking Redis where a room lives (placing it if new) takes.
    placement_seconds: prometheus::Histogram,
    /// The call desk, told when a node is gone (set once it runs).
    desk: std::sync::OnceLock<crate::calling::CallDesk>,
    /// While draining: the participants and calls it waits for.
    drain_waiting: prometheus::IntGaugeVec,
}

/// This node's load as the registry shows it, and its open rooms.
async fn load_now(sfu: &Sfu, metrics: &SfuMetrics) -> (NodeLoad, Vec<callgate_sfu::RoomInfo>) {
    let rooms = sfu.list_rooms().await;
    let load = NodeLoad {
        cpu: metrics.busiest_worker_load(sfu.media_addrs().len()),
        rooms: rooms.len() as u64,
        participants: rooms.iter().map(|r| r.num_participants as u64).sum(),
    };
    (load, rooms)
}

fn unavailable(e: callgate_cluster::ClusterError) -> ClusterUnavailable {
    ClusterUnavailable(e.to_string())
}

impl ClusterNode {
    /// Connects to Redis and registers this node, reachable at `url`.
    pub async fn join(
        section: &ClusterSection,
        url: String,
        meter: Option<Meter>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Arc<ClusterNode>> {
        let placement_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "callgate_cluster_placement_seconds",
                "Time to learn from Redis which node a room lives on, placing it when new (joins and room API requests)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(placement_seconds.clone()))?;
        let drain_waiting = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "callgate_cluster_drain_waiting",
                "While the node drains: the participants (for=\"participants\") and calls it drives (for=\"calls\") it waits to end before it stops",
            ),
            &["for"],
        )?;
        registry.register(Box::new(drain_waiting.clone()))?;
        let cluster = Cluster::connect(ClusterConfig {
            redis_url: section.redis_url.clone(),
            node_id: section.node_id.clone(),
            url: url.clone(),
            node_ttl: section.node_ttl,
            key_prefix: section.key_prefix.clone(),
        })
        .await
        .context("connecting to the cluster's Redis")?;
        cluster
            .refresh(NodeLoad::default(), false, unix_now_ms())
            .await
            .context("registering the node in Redis")?;
        info!(node = %section.node_id, url = %url, "joined the cluster");
        Ok(Arc::new(ClusterNode {
            cluster,
            secret: section.secret.as_bytes().to_vec(),
            meter,
            draining: AtomicBool::new(false),
            placement_seconds,
            desk: std::sync::OnceLock::new(),
            drain_waiting,
        }))
    }

    /// This node's handle on the cluster's Redis.
    pub fn registry(&self) -> &Cluster {
        &self.cluster
    }

    /// The call desk to tell when a node is gone.
    pub fn set_desk(&self, desk: crate::calling::CallDesk) {
        let _ = self.desk.set(desk);
    }

    fn route_of(&self, node: callgate_cluster::NodeInfo) -> Route {
        if node.id == self.cluster.node_id() {
            Route::Here
        } else {
            Route::There {
                node_id: node.id,
                url: node.url,
            }
        }
    }

    /// Where a lookup found something: a name that cannot be a key (no
    /// room or session can have it) lives nowhere.
    fn located(
        &self,
        found: Result<Option<callgate_cluster::NodeInfo>, callgate_cluster::ClusterError>,
    ) -> Result<Option<Route>, ClusterUnavailable> {
        match found {
            Ok(node) => Ok(node.map(|n| self.route_of(n))),
            Err(callgate_cluster::ClusterError::Invalid { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Refreshes this node's entry every `every` with its load; releases
    /// the placements of rooms that have closed here (a room missing on two
    /// refreshes in a row: a room placed here a moment ago may not be open
    /// yet; a call's room stays placed while the call is driven here, open
    /// or not); and closes the billed sessions of nodes it finds dead. Runs
    /// until the task is dropped.
    pub async fn keep_fresh(self: Arc<Self>, sfu: Arc<Sfu>, metrics: SfuMetrics, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut missing_before: HashSet<String> = HashSet::new();
        loop {
            tick.tick().await;
            let (load, rooms) = load_now(&sfu, &metrics).await;
            let draining = self.draining.load(Ordering::Acquire);
            if let Err(e) = self.cluster.refresh(load, draining, unix_now_ms()).await {
                warn!(error = %e, "could not refresh this node's cluster entry");
                continue;
            }
            match self.cluster.scan().await {
                Ok(scan) => {
                    for node in scan.gone {
                        self.after_node_lost(&node).await;
                    }
                }
                Err(e) => warn!(error = %e, "could not scan the cluster's nodes"),
            }
            let calls = match self.desk.get() {
                Some(desk) => desk.call_rooms().await,
                None => Vec::new(),
            };
            let open: HashSet<&str> = rooms
                .iter()
                .map(|r| r.name.as_str())
                .chain(calls.iter().map(String::as_str))
                .collect();
            let placed = match self.cluster.placed_here().await {
                Ok(placed) => placed,
                Err(e) => {
                    warn!(error = %e, "could not read this node's placements");
                    continue;
                }
            };
            let missing: HashSet<String> = placed
                .into_iter()
                .filter(|room| !open.contains(room.as_str()))
                .collect();
            for room in missing.intersection(&missing_before) {
                match self.cluster.release(room).await {
                    Ok(_) => debug!(room = %room, "placement released: the room closed"),
                    Err(e) => warn!(error = %e, room = %room, "could not release a placement"),
                }
            }
            missing_before = missing;
        }
    }

    /// A node stopped refreshing its entry and this node was the one to
    /// notice: its share of presence goes, its billed sessions are closed
    /// at their last checkpoint now (not when their holds expire), and the
    /// calls it drove end as failed. (Its rooms are placed again as clients
    /// rejoin.)
    async fn after_node_lost(&self, node: &str) {
        warn!(node = %node, "a cluster node is gone");
        if let Some(desk) = self.desk.get() {
            desk.node_lost(node);
        }
        let Some(meter) = &self.meter else { return };
        match meter.fail_unended_calls_of(node).await {
            Ok(0) => {}
            Ok(failed) => {
                info!(node = %node, calls = failed, "the calls of a gone node ended as failed")
            }
            Err(e) => warn!(error = %e, node = %node, "could not end a gone node's calls"),
        }
        match meter.recover_node(node).await {
            Ok(closed) => {
                info!(node = %node, sessions = closed, "closed the billed sessions of a gone node")
            }
            // The hold-expiry sweep of every node closes them later.
            Err(e) => warn!(error = %e, node = %node, "could not close a gone node's sessions"),
        }
    }

    /// Takes no new rooms from now on (its entry says `draining` at once):
    /// rooms placed here stay, and their participants may still join and
    /// resume.
    pub async fn start_draining(&self, sfu: &Sfu, metrics: &SfuMetrics) {
        self.draining.store(true, Ordering::Release);
        let (load, _) = load_now(sfu, metrics).await;
        if let Err(e) = self.cluster.refresh(load, true, unix_now_ms()).await {
            warn!(error = %e, "could not mark this node draining; its next refresh does");
        }
    }

    /// Waits until no participant is left on this node and no call is
    /// driven here (a call still ringing ends by its ring timeout), for at
    /// most `timeout`; whether that happened. (Asks every second: neither
    /// the media plane nor the desk sends a signal when its last one goes.)
    pub async fn drained(&self, sfu: &Sfu, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let participants: usize = sfu
                .list_rooms()
                .await
                .iter()
                .map(|r| r.num_participants)
                .sum();
            let calls = match self.desk.get() {
                Some(desk) => desk.call_rooms().await.len(),
                None => 0,
            };
            self.drain_waiting
                .with_label_values(&["participants"])
                .set(participants as i64);
            self.drain_waiting
                .with_label_values(&["calls"])
                .set(calls as i64);
            if participants == 0 && calls == 0 {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            debug!(participants, calls, "draining");
            tokio::time::sleep(Duration::from_secs(1).min(deadline - now)).await;
        }
    }

    /// Leaves the cluster at once: its entry and its rooms' placements go.
    pub async fn leave(&self) {
        // Other nodes no longer see this one, so they would not remove its
        // share of presence when it goes: it does so itself.
        crate::calling::Bus::new(self.cluster.clone())
            .forget_node(self.cluster.node_id())
            .await;
        if let Err(e) = self.cluster.deregister().await {
            warn!(error = %e, "could not leave the cluster cleanly; the entry expires on its own");
        }
    }
}

impl Placement for ClusterNode {
    fn place<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Route, ClusterUnavailable>> {
        Box::pin(async move {
            let timer = self.placement_seconds.start_timer();
            let node = self.cluster.place(room).await.map_err(unavailable)?;
            timer.observe_duration();
            Ok(self.route_of(node))
        })
    }

    fn locate_room<'a>(
        &'a self,
        room: &'a str,
    ) -> BoxFuture<'a, Result<Option<Route>, ClusterUnavailable>> {
        Box::pin(async move { self.located(self.cluster.owner(room).await) })
    }

    fn locate_participant<'a>(
        &'a self,
        sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Route>, ClusterUnavailable>> {
        Box::pin(async move { self.located(self.cluster.participant_node(sid).await) })
    }

    fn participant_joined(&self, sid: &str) {
        let (cluster, sid) = (self.cluster.clone(), sid.to_owned());
        tokio::spawn(async move {
            if let Err(e) = cluster.note_participant(&sid, PARTICIPANT_TTL).await {
                warn!(error = %e, sid = %sid, "could not note the participant in the cluster");
            }
        });
    }

    fn participant_left(&self, sid: &str) {
        let (cluster, sid) = (self.cluster.clone(), sid.to_owned());
        tokio::spawn(async move {
            if let Err(e) = cluster.forget_participant(&sid).await {
                debug!(error = %e, sid = %sid, "participant location left to expire");
            }
        });
    }

    fn peers(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, ClusterUnavailable>> {
        Box::pin(async move {
            let nodes = self.cluster.nodes().await.map_err(unavailable)?;
            Ok(nodes
                .into_iter()
                .filter(|n| n.id != self.cluster.node_id())
                .map(|n| (n.id, n.url))
                .collect())
        })
    }

    fn proof(&self) -> NodeProof {
        NodeProof::new(&self.secret, self.cluster.node_id(), unix_now())
    }

    fn verify(&self, header: &str, now_s: u64) -> bool {
        NodeProof::verify(&self.secret, header, now_s)
    }
}
