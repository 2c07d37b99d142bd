//! A cluster for the end-to-end tests: a `redis-server`, a database of its
//! own on the test PostgreSQL (CALLGATE_TEST_POSTGRES_URL, which
//! scripts/test.sh provides), and callgate nodes on 127.0.0.2, 127.0.0.3, …

use callgate_cluster::testing::TestRedis;

use super::*;

pub const CLUSTER_SECRET: &str = "cluster-test-secret-0123";

pub struct TestCluster {
    pub redis: TestRedis,
    /// The shared ledger.
    pub database_url: String,
    pub nodes: Vec<TestServer>,
    vars: Vec<(String, String)>,
}

/// A new database on the test PostgreSQL server.
pub async fn new_postgres_database() -> String {
    use sqlx::Connection;
    let base = std::env::var("CALLGATE_TEST_POSTGRES_URL").expect(
        "CALLGATE_TEST_POSTGRES_URL names a PostgreSQL server (scripts/test.sh starts one)",
    );
    let name = format!("cg_cluster_{}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}

impl TestCluster {
    /// `n` nodes, `n1` on 127.0.0.2, `n2` on 127.0.0.3, …
    pub async fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, &[]).await
    }

    /// `n` nodes with configuration overrides `vars` (`CALLGATE_*`).
    pub async fn start_with(n: usize, vars: &[(&str, &str)]) -> TestCluster {
        let redis = TestRedis::start();
        let database_url = new_postgres_database().await;
        let mut cluster = TestCluster {
            redis,
            database_url,
            nodes: Vec::new(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..n {
            let node = cluster.start_node(i);
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Node `i` (`n{i+1}` on 127.0.0.{i+2}), started.
    pub fn start_node(&self, i: usize) -> TestServer {
        let ip = format!("127.0.0.{}", i + 2);
        let id = format!("n{}", i + 1);
        let mut vars = vec![
            ("CALLGATE_HTTP_BIND", ip.as_str()),
            ("CALLGATE_RTC_BIND_IP", &ip),
            ("CALLGATE_TURN_BIND_IP", &ip),
            ("CALLGATE_CLUSTER_REDIS_URL", self.redis.url()),
            ("CALLGATE_CLUSTER_NODE_ID", &id),
            ("CALLGATE_CLUSTER_SECRET", CLUSTER_SECRET),
            ("CALLGATE_METERING_DATABASE_URL", &self.database_url),
        ];
        vars.extend(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        TestServer::start_with_env(&vars, &["--workers", "1"])
    }

    /// Waits until `check` holds (asked every 100 ms, for at most `WAIT`):
    /// for what another process does, which sends no signal.
    pub async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes room `room` with `POST /v1/rooms` through node `via`; the node
    /// it was placed on (its index).
    pub async fn make_room(&self, room: &str, via: usize) -> usize {
        let before = self.room_counts().await;
        let (status, body) = api_send(
            &self.nodes[via],
            reqwest::Method::POST,
            "/v1/rooms",
            serde_json::json!({"name": room}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        self.node_of(&before).await
    }

    /// Sends node `i` SIGTERM and waits until the registry shows it
    /// draining.
    pub async fn drain(&self, i: usize) {
        self.nodes[i].sigterm();
        let id = format!("n{}", i + 1);
        TestCluster::eventually("the node draining in the registry", || async {
            self.registry_entry(&id).await.is_some_and(|n| n.draining)
        })
        .await;
    }

    /// Node `i`'s exit status, once it has exited.
    pub async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let node = &mut self.nodes[i];
        TestCluster::eventually("the node exits", || {
            let exited = node.exit_status();
            async move { exited.is_some() }
        })
        .await;
        node.exit_status().expect("exited")
    }

    /// The node room `room` lives on (its index), by the rooms each node
    /// reports open in its metrics.
    pub async fn node_of(&self, room_count_before: &[f64]) -> usize {
        let mut grown = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let rooms = metric(&metrics_text(node).await, "callgate_rooms", "");
            if rooms > room_count_before[i] {
                grown.push(i);
            }
        }
        assert_eq!(grown.len(), 1, "exactly one node opened the room");
        grown[0]
    }

    /// The registry as a node sees it, read by a node that never registers.
    async fn observer(&self) -> callgate_cluster::Cluster {
        callgate_cluster::Cluster::connect(callgate_cluster::ClusterConfig {
            redis_url: self.redis.url().to_owned(),
            node_id: "test-observer".into(),
            url: "http://observer".into(),
            node_ttl: Duration::from_secs(6),
            key_prefix: "callgate:".into(),
        })
        .await
        .unwrap()
    }

    /// What the registry says of node `id` (`None`: not registered or gone).
    pub async fn registry_entry(&self, id: &str) -> Option<callgate_cluster::NodeInfo> {
        self.observer().await.node(id).await.unwrap()
    }

    /// The node room `room` is placed on (its index), by the registry.
    pub async fn owner_of(&self, room: &str) -> usize {
        let owner = self.observer().await.owner(room).await.unwrap();
        let id = owner.unwrap_or_else(|| panic!("room {room} is placed")).id;
        // Node `n{i+1}` is `nodes[i]`.
        id.trim_start_matches('n').parse::<usize>().unwrap() - 1
    }

    /// Every node's open rooms, by its metrics.
    pub async fn room_counts(&self) -> Vec<f64> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            counts.push(metric(&metrics_text(node).await, "callgate_rooms", ""));
        }
        counts
    }

    /// A metric summed over every node.
    pub async fn total(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for node in &self.nodes {
            sum += metric(&metrics_text(node).await, name, "");
        }
        sum
    }
}
