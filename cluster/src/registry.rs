//! The registry and placement, on one Redis connection.

use std::sync::LazyLock;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tracing::debug;

use crate::error::ClusterError;
use crate::keys::Keys;
use crate::node::{NodeId, NodeInfo, NodeLoad};
use crate::placement::candidates;

/// What [`Cluster::scan`] found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scan {
    pub alive: Vec<NodeInfo>,
    /// Nodes found gone and forgotten by this scan.
    pub gone: Vec<NodeId>,
}

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:6379/0`
    pub redis_url: String,
    pub node_id: NodeId,
    /// Where the other nodes reach this node's HTTP server.
    pub url: String,
    /// A node that has not refreshed its entry for this long is gone: its
    /// rooms can be placed again. Refresh well within it (a third).
    pub node_ttl: Duration,
    /// Prefix of every key (`callgate:`).
    pub key_prefix: String,
}

/// One node's handle on the cluster. Cheap to clone (one multiplexed
/// connection, reconnected by the connection manager).
#[derive(Clone)]
pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    me: NodeId,
    url: String,
    ttl: Duration,
}

/// Places a room unless it is placed on a node that is alive: atomically,
/// so that every node asking about one room gets the same answer.
///
/// KEYS[1]: the room key. ARGV[1]: the node key prefix; ARGV[2]: the
/// per-node room set prefix; ARGV[3]: the room name; then pairs of
/// candidate node id and load step. Returns the owner's id, or false when
/// there is no candidate.
const PLACE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then
  return owner
end
if owner then
  redis.call('SREM', ARGV[2] .. owner, ARGV[3])
end
local best, best_step, best_count
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local step = tonumber(ARGV[i + 1])
  local count = redis.call('SCARD', ARGV[2] .. id)
  if best == nil or step < best_step
     or (step == best_step and (count < best_count
         or (count == best_count and id < best))) then
    best, best_step, best_count = id, step, count
  end
end
if best == nil then
  return false
end
redis.call('SET', KEYS[1], best)
redis.call('SADD', ARGV[2] .. best, ARGV[3])
return best
"#;

/// Forgets a room if it is still placed on the caller.
/// KEYS[1]: the room key, KEYS[2]: the caller's room set. ARGV[1]: the
/// caller's id; ARGV[2]: the room name.
const RELEASE: &str = r#"
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

static PLACE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PLACE));
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

fn checked<'a>(what: &'static str, value: &'a str) -> Result<&'a str, ClusterError> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if ok {
        Ok(value)
    } else {
        Err(ClusterError::Invalid {
            what,
            value: value.to_owned(),
        })
    }
}

impl Cluster {
    /// Connects to Redis; the node is not registered until [`Cluster::refresh`].
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        checked("node id", &config.node_id)?;
        let client = redis::Client::open(config.redis_url.as_str())?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(Cluster {
            client,
            conn,
            keys: Keys::new(&config.key_prefix),
            me: config.node_id,
            url: config.url,
            ttl: config.node_ttl,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.me
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Writes this node's entry, good for the node TTL.
    pub async fn refresh(
        &self,
        load: NodeLoad,
        draining: bool,
        now_ms: i64,
    ) -> Result<(), ClusterError> {
        let info = NodeInfo {
            id: self.me.clone(),
            url: self.url.clone(),
            load,
            draining,
            refreshed_ms: now_ms,
        };
        let entry = serde_json::to_string(&info).map_err(|e| ClusterError::BadEntry {
            node: self.me.clone(),
            message: e.to_string(),
        })?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.keys.node(&self.me))
            .arg(entry)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .sadd(self.keys.nodes(), &self.me)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes this node out of the cluster at once (a clean stop): its
    /// entry and the placements of its rooms go.
    pub async fn deregister(&self) -> Result<(), ClusterError> {
        for room in self.placed_here().await? {
            self.release(&room).await?;
        }
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.keys.node(&self.me))
            .ignore()
            .srem(self.keys.nodes(), &self.me)
            .ignore()
            .del(self.keys.node_rooms(&self.me))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Every node that is alive (its entry has not expired).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        Ok(self.entries().await?.0)
    }

    /// The nodes that are alive, and the nodes this call found gone (their
    /// entry expired) and forgot, with their room sets. Each gone node is
    /// forgotten by exactly one caller, which is then the one to clean up
    /// after it (its billed sessions); only [`Cluster::scan`] forgets.
    pub async fn scan(&self) -> Result<Scan, ClusterError> {
        let (alive, expired) = self.entries().await?;
        let mut conn = self.conn.clone();
        let mut gone = Vec::new();
        for id in expired {
            let (removed,): (i64,) = redis::pipe()
                .srem(self.keys.nodes(), &id)
                .del(self.keys.node_rooms(&id))
                .ignore()
                .query_async(&mut conn)
                .await?;
            if removed == 1 {
                debug!(node = %id, "node entry expired: node forgotten");
                gone.push(id);
            }
        }
        Ok(Scan { alive, gone })
    }

    /// The registered nodes: the entries of those alive, and the ids of
    /// those whose entry expired.
    async fn entries(&self) -> Result<(Vec<NodeInfo>, Vec<NodeId>), ClusterError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn.smembers(self.keys.nodes()).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.node(id)).collect();
        let entries: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let (mut alive, mut expired) = (Vec::new(), Vec::new());
        for (id, entry) in ids.into_iter().zip(entries) {
            match entry {
                Some(json) => alive.push(parse_entry(&id, &json)?),
                None => expired.push(id),
            }
        }
        Ok((alive, expired))
    }

    /// The node `id`, if it is alive.
    pub async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let mut conn = self.conn.clone();
        let entry: Option<String> = conn.get(self.keys.node(id)).await?;
        entry.map(|json| parse_entry(id, &json)).transpose()
    }

    /// The node room `name` lives on, placing it on the least loaded node
    /// that is alive and not draining if it lives nowhere yet (or on a node
    /// that is gone).
    pub async fn place(&self, name: &str) -> Result<NodeInfo, ClusterError> {
        checked("room name", name)?;
        let nodes = self.nodes().await?;
        let mut script = PLACE_SCRIPT.key(self.keys.room(name));
        script
            .arg(self.keys.node_prefix())
            .arg(self.keys.node_rooms_prefix())
            .arg(name);
        for c in candidates(&nodes) {
            script.arg(c.id).arg(c.step);
        }
        let mut conn = self.conn.clone();
        let owner: Option<String> = script.invoke_async(&mut conn).await?;
        let owner = owner.ok_or(ClusterError::NoNode)?;
        match nodes.into_iter().find(|n| n.id == owner) {
            Some(node) => Ok(node),
            // Placed by another node on one this one's list missed.
            None => self.node(&owner).await?.ok_or(ClusterError::NoNode),
        }
    }

    /// The node room `name` lives on, without placing it: `None` when it is
    /// placed nowhere or on a node that is gone.
    pub async fn owner(&self, name: &str) -> Result<Option<NodeInfo>, ClusterError> {
        checked("room name", name)?;
        let mut conn = self.conn.clone();
        let owner: Option<String> = conn.get(self.keys.room(name)).await?;
        match owner {
            Some(id) => self.node(&id).await,
            None => Ok(None),
        }
    }

    /// Forgets room `name`'s placement if it is on this node (the room
    /// closed here). True when it was.
    pub async fn release(&self, name: &str) -> Result<bool, ClusterError> {
        checked("room name", name)?;
        let mut conn = self.conn.clone();
        let released: i64 = RELEASE_SCRIPT
            .key(self.keys.room(name))
            .key(self.keys.node_rooms(&self.me))
            .arg(&self.me)
            .arg(name)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }

    /// The rooms placed on this node.
    pub async fn placed_here(&self) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn.clone();
        let mut rooms: Vec<String> = conn.smembers(self.keys.node_rooms(&self.me)).await?;
        rooms.sort();
        Ok(rooms)
    }

    /// Notes that participant `sid` lives on this node, for `ttl` at most
    /// (past the longest a session may last).
    pub async fn note_participant(&self, sid: &str, ttl: Duration) -> Result<(), ClusterError> {
        checked("participant sid", sid)?;
        let mut conn = self.conn.clone();
        let ttl_s = ttl.as_secs().max(1);
        conn.set_ex::<_, _, ()>(self.keys.participant(sid), &self.me, ttl_s)
            .await?;
        Ok(())
    }

    /// The node participant `sid` lives on, if it is noted and alive.
    pub async fn participant_node(&self, sid: &str) -> Result<Option<NodeInfo>, ClusterError> {
        checked("participant sid", sid)?;
        let mut conn = self.conn.clone();
        let node: Option<String> = conn.get(self.keys.participant(sid)).await?;
        match node {
            Some(id) => self.node(&id).await,
            None => Ok(None),
        }
    }

    pub async fn forget_participant(&self, sid: &str) -> Result<(), ClusterError> {
        checked("participant sid", sid)?;
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(self.keys.participant(sid)).await?;
        Ok(())
    }
}

fn parse_entry(id: &str, json: &str) -> Result<NodeInfo, ClusterError> {
    serde_json::from_str(json).map_err(|e| ClusterError::BadEntry {
        node: id.to_owned(),
        message: e.to_string(),
    })
}
