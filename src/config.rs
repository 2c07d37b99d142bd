//! The configuration file (`config/callgate.toml` documents every key),
//! overlaid by `CALLGATE_*` environment variables, then by flags.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The API key pair `--dev` uses, as LiveKit's dev mode does. Refused without `--dev`.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "secret";
/// The TURN REST secret `--dev` uses when none is configured. Public, so
/// refused without `--dev`.
pub const DEV_TURN_SECRET: &str = "callgate-dev-turn-secret";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("in {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub rtc: RtcConfig,
    pub room: RoomConfig,
    pub signaling: SignalingConfig,
    pub logging: LoggingConfig,
    pub turn: TurnRelayConfig,
    pub metering: MeteringConfig,
    pub limits: LimitsConfig,
    pub cluster: ClusterSection,
    /// API key → secret. Several pairs let an operator rotate keys.
    pub keys: BTreeMap<String, String>,
    /// Roles a token may name (`grants.role`), added to or replacing the
    /// built-in `host`, `speaker` and `listener`.
    pub roles: BTreeMap<String, callgate_signaling::token::RoleGrants>,
    /// Set by `--dev` (never read from a file): mounts the dev-only routes.
    #[serde(skip)]
    pub dev: bool,
}

/// `[cluster]`: several nodes on one Redis and one PostgreSQL ledger
/// (docs/operations.md, "Running several nodes"). Off while `redis_url`
/// is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub redis_url: String,
    /// This node's name in the registry and in the ledger (it replaces
    /// `metering.node_id`).
    pub node_id: String,
    /// Where the other nodes reach this node's HTTP server; empty:
    /// `http://<http.bind, or rtc.external_ip when that is unspecified>:<port>`.
    pub url: String,
    /// Proves requests between nodes; the same on every node.
    pub secret: String,
    /// A node that has not refreshed its registry entry for this long is
    /// gone and its rooms may be placed again.
    #[serde(with = "humantime_serde_compat")]
    pub node_ttl: Duration,
    pub key_prefix: String,
    /// On SIGTERM a cluster node takes no new rooms and waits this long at
    /// most for its running sessions to end; those still running then end
    /// as `node_drained` (their clients join again, on another node).
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis_url: String::new(),
            node_id: String::new(),
            url: String::new(),
            secret: String::new(),
            node_ttl: Duration::from_secs(6),
            key_prefix: "callgate:".into(),
            drain_timeout: Duration::from_secs(15 * 60),
        }
    }
}

impl ClusterSection {
    pub fn is_enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    fn validate(
        &self,
        metering: &MeteringConfig,
        http: &HttpConfig,
        rtc: &RtcConfig,
    ) -> Result<(), ConfigError> {
        if !self.is_enabled() {
            return Ok(());
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err(invalid(
                "cluster.redis_url",
                "must be redis://host:port/db (or rediss:// for TLS)",
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(&self.node_id) {
            return Err(invalid(
                "cluster.node_id",
                "a cluster node needs a name of 1 to 64 letters, digits, '-', '_' or '.', distinct per node",
            ));
        }
        let default_meter_id = MeteringConfig::default().node_id;
        if metering.node_id != default_meter_id && metering.node_id != self.node_id {
            return Err(invalid(
                "metering.node_id",
                "in a cluster the node's one name is cluster.node_id; leave metering.node_id unset",
            ));
        }
        if self.secret.len() < 16 {
            return Err(invalid(
                "cluster.secret",
                "set the nodes' shared secret, at least 16 bytes",
            ));
        }
        if !self.url.is_empty() && !self.url.starts_with("http://") {
            return Err(invalid(
                "cluster.url",
                "must be http://host:port (nodes talk plain HTTP on their private network)",
            ));
        }
        if self.url.is_empty() && http.bind.is_unspecified() && rtc.external_ip.is_none() {
            return Err(invalid(
                "cluster.url",
                "http.bind is unspecified: set where the other nodes reach this one",
            ));
        }
        if self.node_ttl < Duration::from_secs(2) {
            return Err(invalid("cluster.node_ttl", "must be at least 2s"));
        }
        if metering.enabled
            && !(metering.database_url.starts_with("postgres://")
                || metering.database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "metering.database_url",
                "the nodes of a cluster share one ledger: set a postgres:// URL (or metering.enabled = false)",
            ));
        }
        Ok(())
    }
}

/// `[metering]`: the ledger, paid calls, exports and billing hooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    pub enabled: bool,
    /// Empty: a SQLite file `ledger.db` under `data_dir`.
    pub database_url: String,
    #[serde(with = "humantime_serde_compat")]
    pub checkpoint_interval: Duration,
    #[serde(with = "humantime_list")]
    pub warnings: Vec<Duration>,
    #[serde(with = "humantime_serde_compat")]
    pub hold_expiry: Duration,
    pub node_id: String,
    pub webhooks: Option<WebhooksConfig>,
    pub razorpay: Option<RazorpaySection>,
    /// Named rate plans a token can ask for with `billing.plan`.
    pub plans: BTreeMap<String, callgate_metering::BillingTerms>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub url: String,
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RazorpaySection {
    pub webhook_secret: String,
    /// What a paid order whose notes carry no `coins` credits:
    /// `[{ amount = 49900, currency = "INR", coins = 500 }]` (amount in the
    /// smallest unit of the currency).
    #[serde(default, deserialize_with = "price_list")]
    pub prices: Vec<RazorpayPrice>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RazorpayPrice {
    pub amount: i64,
    pub currency: String,
    pub coins: i64,
}

/// The price list, with a pointer to the new form for the old one (a table
/// of paise → coins, which said nothing about the currency).
fn price_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RazorpayPrice>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Table(_) => Err(serde::de::Error::custom(
            "metering.razorpay.prices is a list of prices with their currency now: \
             prices = [{ amount = 49900, currency = \"INR\", coins = 500 }]",
        )),
        other => Vec::<RazorpayPrice>::deserialize(other).map_err(serde::de::Error::custom),
    }
}

impl Default for MeteringConfig {
    fn default() -> Self {
        let meter = callgate_metering::MeterConfig::default();
        MeteringConfig {
            enabled: true,
            database_url: String::new(),
            checkpoint_interval: meter.checkpoint_interval,
            warnings: meter.warnings,
            hold_expiry: meter.hold_expiry,
            node_id: meter.node_id,
            webhooks: None,
            razorpay: None,
            plans: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtcConfig {
    pub bind_ip: IpAddr,
    pub external_ip: Option<IpAddr>,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub workers: usize,
    pub socket_buffer_bytes: usize,
    #[serde(with = "humantime_serde_compat")]
    pub keyframe_request_interval: Duration,
    /// Share subscribers' bandwidth estimates among their tracks and tell
    /// single-stream publishers the least a subscriber takes (REMB). Off
    /// only to compare (the browser test of a capped downlink does).
    pub adapt_to_subscribers: bool,
    /// Estimate subscribers' downlinks send-side, from their transport-wide
    /// CC feedback (callgate's own estimator), instead of from their REMB
    /// (docs/congestion-control.md, "Our send-side estimator"). On by
    /// default; off, subscribers are estimated by their browsers' REMB.
    pub send_side_estimation: bool,
    /// A media worker busier than this share of the time admits no new
    /// participant (close 1013 `server_overloaded`); 1 never refuses.
    pub max_worker_load: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomConfig {
    pub max_participants: usize,
    #[serde(with = "humantime_serde_compat")]
    pub empty_timeout: Duration,
    /// How long a participant whose connection is lost is kept for it to resume.
    #[serde(with = "humantime_serde_compat")]
    pub reconnect_grace: Duration,
    /// Nothing from a participant's transports for this long makes it reconnecting.
    #[serde(with = "humantime_serde_compat")]
    pub reconnect_after_silence: Duration,
    /// How long a transport's DTLS handshake may take once its ICE connected.
    #[serde(with = "humantime_serde_compat")]
    pub dtls_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    #[serde(with = "humantime_serde_compat")]
    pub join_timeout: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            rtc: RtcConfig::default(),
            room: RoomConfig::default(),
            signaling: SignalingConfig::default(),
            logging: LoggingConfig::default(),
            turn: TurnRelayConfig::default(),
            metering: MeteringConfig::default(),
            limits: LimitsConfig::default(),
            cluster: ClusterSection::default(),
            keys: BTreeMap::new(),
            roles: BTreeMap::new(),
            dev: false,
        }
    }
}

impl Config {
    /// The roles tokens may name: the built-in ones, with the configured
    /// ones added or replacing them.
    pub fn roles(
        &self,
    ) -> std::collections::HashMap<String, callgate_signaling::token::RoleGrants> {
        let mut roles = callgate_signaling::token::default_roles();
        roles.extend(self.roles.iter().map(|(k, v)| (k.clone(), *v)));
        roles
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 7880,
        }
    }
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            external_ip: None,
            udp_port: 7882,
            tcp_port: 7881,
            workers: 0,
            socket_buffer_bytes: 4 << 20,
            keyframe_request_interval: Duration::from_millis(500),
            adapt_to_subscribers: true,
            send_side_estimation: true,
            max_worker_load: 0.95,
        }
    }
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_participants: 50,
            empty_timeout: Duration::from_secs(20),
            reconnect_grace: Duration::from_secs(20),
            reconnect_after_silence: Duration::from_secs(5),
            dtls_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            join_timeout: Duration::from_secs(10),
        }
    }
}

/// A listener of the TURN relay.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TurnListener {
    Udp,
    Tcp,
    Tls,
}

/// `[turn]`: the embedded TURN relay (turn-relay/).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnRelayConfig {
    /// Unset: on with `--dev`, off otherwise.
    pub enabled: Option<bool>,
    pub bind_ip: IpAddr,
    pub external_ip: Option<IpAddr>,
    pub domain: Option<String>,
    pub listeners: Vec<TurnListener>,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub tls_port: u16,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub relay_ip: Option<IpAddr>,
    pub relay_port_min: u16,
    pub relay_port_max: u16,
    pub realm: String,
    pub auth_secret: Option<String>,
    #[serde(with = "humantime_serde_compat")]
    pub credential_ttl: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub default_lifetime: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_lifetime: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub nonce_lifetime: Duration,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    pub max_permissions_per_allocation: usize,
    pub max_bytes_per_second: u64,
    pub allow_peer_cidrs: Vec<String>,
    pub deny_peer_cidrs: Vec<String>,
    pub socket_buffer_bytes: usize,
    /// Set by `--dev`: a self-signed TLS certificate when none is configured.
    #[serde(skip)]
    pub dev: bool,
}

impl Default for TurnRelayConfig {
    fn default() -> Self {
        TurnRelayConfig {
            enabled: None,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            external_ip: None,
            domain: None,
            listeners: vec![TurnListener::Udp, TurnListener::Tcp, TurnListener::Tls],
            udp_port: 3478,
            tcp_port: 3478,
            tls_port: 5349,
            tls_cert: None,
            tls_key: None,
            relay_ip: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            realm: "callgate".into(),
            auth_secret: None,
            credential_ttl: Duration::from_secs(24 * 3600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            max_allocations: 10_000,
            max_allocations_per_user: 32,
            max_permissions_per_allocation: 64,
            max_bytes_per_second: 1_000_000,
            allow_peer_cidrs: Vec::new(),
            deny_peer_cidrs: Vec::new(),
            socket_buffer_bytes: 4 << 20,
            dev: false,
        }
    }
}

impl TurnRelayConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(self.dev)
    }

    pub fn has(&self, l: TurnListener) -> bool {
        self.listeners.contains(&l)
    }

    /// `--dev`: on unless configured off, the dev secret unless one is
    /// configured, a self-signed certificate unless one is configured.
    pub fn apply_dev(&mut self) {
        self.dev = true;
        if self.auth_secret.is_none() {
            self.auth_secret = Some(DEV_TURN_SECRET.to_owned());
        }
    }

    /// The host put in `turn:` URLs: `domain`, else the advertised address.
    pub fn url_host(&self) -> String {
        match (&self.domain, self.external_ip.unwrap_or(self.bind_ip)) {
            (Some(d), _) => d.clone(),
            (None, IpAddr::V6(ip)) => format!("[{ip}]"),
            (None, ip) => ip.to_string(),
        }
    }

    fn cidrs(list: &[String], key: &'static str) -> Result<Vec<callgate_turn::IpNet>, ConfigError> {
        list.iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<callgate_turn::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(callgate_turn::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            key,
                            format!("`{s}` is not an address or CIDR like 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }

    fn validate(&self, dev: bool, http: &HttpConfig, rtc: &RtcConfig) -> Result<(), ConfigError> {
        if !self.is_enabled() {
            return Ok(());
        }
        match self.auth_secret.as_deref() {
            None => {
                return Err(invalid(
                    "turn.auth_secret",
                    "the TURN relay is enabled: set the shared secret of its REST credentials (or turn.enabled = false)",
                ));
            }
            Some(DEV_TURN_SECRET) if !dev => {
                return Err(invalid(
                    "turn.auth_secret",
                    "the dev TURN secret is only allowed with --dev",
                ));
            }
            Some(s) if s.len() < 16 => {
                return Err(invalid("turn.auth_secret", "must be at least 16 bytes"));
            }
            _ => {}
        }
        if self.listeners.is_empty() {
            return Err(invalid(
                "turn.listeners",
                "no listener; name at least one of \"udp\", \"tcp\", \"tls\" (or turn.enabled = false)",
            ));
        }
        if self.has(TurnListener::Tls)
            && !dev
            && (self.tls_cert.is_none() || self.tls_key.is_none())
        {
            return Err(invalid(
                "turn.tls_cert",
                "the \"tls\" listener needs turn.tls_cert and turn.tls_key (PEM files)",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "turn.tls_key",
                "set both turn.tls_cert and turn.tls_key, or neither",
            ));
        }
        if self.has(TurnListener::Tcp)
            && self.has(TurnListener::Tls)
            && self.tcp_port != 0
            && self.tcp_port == self.tls_port
        {
            return Err(invalid(
                "turn.tls_port",
                "is turn.tcp_port too; pick another port",
            ));
        }
        let tcp_ports = [
            (self.has(TurnListener::Tcp), self.tcp_port, "turn.tcp_port"),
            (self.has(TurnListener::Tls), self.tls_port, "turn.tls_port"),
        ];
        for (on, port, key) in tcp_ports {
            if on && port != 0 && (port == http.port || port == rtc.tcp_port) {
                return Err(invalid(
                    key,
                    format!("{port} is http.port or rtc.tcp_port too; pick another port"),
                ));
            }
        }
        if self.relay_port_min == 0 || self.relay_port_min > self.relay_port_max {
            return Err(invalid(
                "turn.relay_port_min",
                format!(
                    "the relay port range {}..{} is empty or starts at 0",
                    self.relay_port_min, self.relay_port_max
                ),
            ));
        }
        if self.bind_ip.is_unspecified() && self.external_ip.is_none() {
            return Err(invalid(
                "turn.external_ip",
                format!(
                    "turn.bind_ip is {}, so set the address clients reach the relay at",
                    self.bind_ip
                ),
            ));
        }
        if self.relay_ip.is_some_and(|ip| ip.is_unspecified()) && self.external_ip.is_none() {
            return Err(invalid(
                "turn.external_ip",
                "turn.relay_ip is unspecified, so set the address peers reach the relay at",
            ));
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return Err(invalid("turn.realm", "must be 1 to 127 bytes"));
        }
        if self.default_lifetime < Duration::from_secs(1) {
            return Err(invalid("turn.default_lifetime", "must be at least 1s"));
        }
        if self.max_lifetime < self.default_lifetime {
            return Err(invalid(
                "turn.max_lifetime",
                "must be at least turn.default_lifetime",
            ));
        }
        if self.nonce_lifetime < Duration::from_secs(1) {
            return Err(invalid("turn.nonce_lifetime", "must be at least 1s"));
        }
        if self.credential_ttl < Duration::from_secs(60) {
            return Err(invalid("turn.credential_ttl", "must be at least 1m"));
        }
        if self.max_allocations == 0 {
            return Err(invalid("turn.max_allocations", "must be at least 1"));
        }
        if self.max_allocations_per_user == 0 {
            return Err(invalid(
                "turn.max_allocations_per_user",
                "must be at least 1",
            ));
        }
        if self.max_permissions_per_allocation == 0 {
            return Err(invalid(
                "turn.max_permissions_per_allocation",
                "must be at least 1",
            ));
        }
        if self.socket_buffer_bytes < 65536 {
            return Err(invalid(
                "turn.socket_buffer_bytes",
                "must be at least 65536",
            ));
        }
        Self::cidrs(&self.allow_peer_cidrs, "turn.allow_peer_cidrs")?;
        Self::cidrs(&self.deny_peer_cidrs, "turn.deny_peer_cidrs")?;
        Ok(())
    }

    /// The relay's own configuration; `always_allowed` are the SFU's media
    /// addresses. Reads the TLS certificate (or makes one in dev).
    pub fn relay(
        &self,
        always_allowed: Vec<std::net::SocketAddr>,
        limits: &LimitsConfig,
        open_files: u64,
    ) -> Result<callgate_turn::TurnConfig, ConfigError> {
        use std::net::SocketAddr;
        let secret = self.auth_secret.clone().unwrap_or_default();
        let mut c = callgate_turn::TurnConfig::new(self.bind_ip, secret);
        c.realm = self.realm.clone();
        c.udp = self
            .has(TurnListener::Udp)
            .then(|| SocketAddr::new(self.bind_ip, self.udp_port));
        c.tcp = self
            .has(TurnListener::Tcp)
            .then(|| SocketAddr::new(self.bind_ip, self.tcp_port));
        c.tls = if self.has(TurnListener::Tls) {
            let identity = match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => callgate_turn::TlsIdentity::from_pem_files(cert, key)
                    .map_err(|e| invalid("turn.tls_cert", e.to_string()))?,
                _ => {
                    let mut names = vec!["localhost".to_owned(), self.bind_ip.to_string()];
                    names.extend(self.domain.clone());
                    names.extend(self.external_ip.map(|ip| ip.to_string()));
                    callgate_turn::TlsIdentity::self_signed(&names)
                        .map_err(|e| invalid("turn.tls_cert", e.to_string()))?
                }
            };
            Some((SocketAddr::new(self.bind_ip, self.tls_port), identity))
        } else {
            None
        };
        c.relay_ip = self.relay_ip.unwrap_or(self.bind_ip);
        c.advertised_ip = self.external_ip.unwrap_or(c.relay_ip);
        c.relay_ports = self.relay_port_min..=self.relay_port_max;
        c.default_lifetime = self.default_lifetime;
        c.max_lifetime = self.max_lifetime;
        c.nonce_lifetime = self.nonce_lifetime;
        c.max_allocations = self.max_allocations;
        c.max_allocations_per_user = self.max_allocations_per_user;
        c.max_permissions_per_allocation = self.max_permissions_per_allocation;
        c.max_bytes_per_second = self.max_bytes_per_second;
        c.allow_peers = Self::cidrs(&self.allow_peer_cidrs, "turn.allow_peer_cidrs")?;
        c.deny_peers = Self::cidrs(&self.deny_peer_cidrs, "turn.deny_peer_cidrs")?;
        c.always_allowed = always_allowed;
        c.socket_buffer_bytes = self.socket_buffer_bytes;
        c.unauthenticated_timeout = limits.turn_unauthenticated_timeout;
        c.unauthenticated = limits.turn_unauthenticated(open_files);
        Ok(c)
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// `[limits]`: what idle, slow and unauthenticated clients may hold
/// (docs/operations.md, "Connection limits"). A cap of 0 is sized from the
/// open-files limit in force after start-up raised it (`open_files`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    #[serde(with = "humantime_serde_compat")]
    pub http_header_read_timeout: Duration,
    pub http_max_unauthenticated: usize,
    pub http_max_unauthenticated_per_address: usize,
    #[serde(with = "humantime_serde_compat")]
    pub ice_tcp_first_frame_timeout: Duration,
    pub ice_tcp_max_pending: usize,
    pub ice_tcp_max_pending_per_address: usize,
    #[serde(with = "humantime_serde_compat")]
    pub turn_unauthenticated_timeout: Duration,
    pub turn_max_unauthenticated: usize,
    pub turn_max_unauthenticated_per_address: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            http_header_read_timeout: Duration::from_secs(10),
            http_max_unauthenticated: 0,
            http_max_unauthenticated_per_address: 0,
            ice_tcp_first_frame_timeout: Duration::from_secs(3),
            ice_tcp_max_pending: 0,
            ice_tcp_max_pending_per_address: 0,
            turn_unauthenticated_timeout: Duration::from_secs(10),
            turn_max_unauthenticated: 0,
            turn_max_unauthenticated_per_address: 0,
        }
    }
}

/// `configured`, or when 0 `auto` (at least 1).
fn cap_or(configured: usize, auto: u64) -> usize {
    match configured {
        0 => usize::try_from(auto).unwrap_or(usize::MAX).max(1),
        n => n,
    }
}

impl LimitsConfig {
    /// The HTTP server's limits. Unset caps: a quarter of the open files in
    /// all, and a quarter of that per address.
    pub fn http(&self, open_files: u64) -> callgate_signaling::http::HttpLimits {
        let max_total = cap_or(self.http_max_unauthenticated, open_files / 4);
        let max_per_source = cap_or(
            self.http_max_unauthenticated_per_address,
            max_total as u64 / 4,
        );
        callgate_signaling::http::HttpLimits {
            header_read_timeout: self.http_header_read_timeout,
            unauthenticated: callgate_admission::AdmissionLimits {
                max_total,
                max_per_source,
            },
        }
    }

    /// ICE-TCP connections waiting for their first STUN request. Unset
    /// caps: an eighth of the open files in all, a quarter of that per
    /// address.
    pub fn ice_tcp_pending(&self, open_files: u64) -> callgate_admission::AdmissionLimits {
        let max_total = cap_or(self.ice_tcp_max_pending, open_files / 8);
        let max_per_source = cap_or(self.ice_tcp_max_pending_per_address, max_total as u64 / 4);
        callgate_admission::AdmissionLimits {
            max_total,
            max_per_source,
        }
    }

    /// TURN TCP/TLS connections without an authenticated request yet.
    /// Unset caps: an eighth of the open files in all, a quarter of that
    /// per address.
    pub fn turn_unauthenticated(&self, open_files: u64) -> callgate_admission::AdmissionLimits {
        let max_total = cap_or(self.turn_max_unauthenticated, open_files / 8);
        let max_per_source = cap_or(
            self.turn_max_unauthenticated_per_address,
            max_total as u64 / 4,
        );
        callgate_admission::AdmissionLimits {
            max_total,
            max_per_source,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, d) in [
            (
                "limits.http_header_read_timeout",
                self.http_header_read_timeout,
            ),
            (
                "limits.ice_tcp_first_frame_timeout",
                self.ice_tcp_first_frame_timeout,
            ),
            (
                "limits.turn_unauthenticated_timeout",
                self.turn_unauthenticated_timeout,
            ),
        ] {
            if d < Duration::from_millis(100) {
                return Err(invalid(key, "must be at least 100ms"));
            }
        }
        Ok(())
    }
}

/// Durations written the way people write them: "500ms", "20s", "2h".
/// A list of durations: `["60s", "10s"]`.
mod humantime_list {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not a duration like \"10s\": {e}"
                    ))
                })
            })
            .collect()
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"20s\": {e}"))
        })
    }
}

/// `CALLGATE_*` variables that flags read (`--config`, `--api-key`,
/// `--api-secret`), left alone by the configuration.
const NOT_CONFIG_VARS: &[&str] = &["config", "api_key", "api_secret"];

/// Top-level keys, so `CALLGATE_DATA_DIR` is not read as section `data`.
const TOP_LEVEL_KEYS: &[&str] = &["data_dir"];

/// Applies `CALLGATE_<SECTION>_<KEY>=value` overrides to a parsed file.
/// `CALLGATE_KEYS=key1:secret1,key2:secret2` replaces the key pairs.
fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("CALLGATE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        // Variables of the command line itself, not configuration keys;
        // `CALLGATE_TEST_*` belong to the test harness (scripts/test.sh).
        if NOT_CONFIG_VARS.contains(&rest.as_str()) || rest.starts_with("test_") {
            continue;
        }
        if rest == "keys" {
            let mut keys = toml::Table::new();
            for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, s) = pair
                    .trim()
                    .split_once(':')
                    .ok_or_else(|| ConfigError::Parse {
                        origin: "CALLGATE_KEYS".into(),
                        message: "expected key:secret[,key:secret…]".into(),
                    })?;
                keys.insert(k.into(), toml::Value::String(s.into()));
            }
            table.insert("keys".into(), toml::Value::Table(keys));
            continue;
        }
        // A value that reads as TOML (a number, a boolean, a list) is taken as
        // such; anything else is a string.
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        if TOP_LEVEL_KEYS.contains(&rest.as_str()) {
            table.insert(rest, parsed);
            continue;
        }
        let (section, key) = rest.split_once('_').ok_or_else(|| ConfigError::Parse {
            origin: name.clone(),
            message: "expected CALLGATE_<SECTION>_<KEY>".into(),
        })?;
        let section = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section {
            toml::Value::Table(t) => {
                t.insert(key.to_owned(), parsed);
            }
            _ => {
                return Err(ConfigError::Parse {
                    origin: name.clone(),
                    message: format!("`{}` is not a section", rest),
                });
            }
        }
    }
    Ok(())
}

impl Config {
    /// Reads `path` (if any), then the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        apply_env(&mut table, env)?;
        Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
            origin: format!("{origin} and CALLGATE_* variables"),
            message: e.to_string(),
        })
    }

    /// Checks what the types could not. `dev` allows the dev key pair.
    pub fn validate(&self, dev: bool) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(invalid(
                "keys",
                "no API key pairs; add `[keys] <key> = \"<secret>\"` or run with --dev",
            ));
        }
        for (key, secret) in &self.keys {
            if !dev && key == DEV_API_KEY && secret == DEV_API_SECRET {
                return Err(invalid(
                    "keys",
                    "the dev key pair devkey/secret is only allowed with --dev",
                ));
            }
            if secret.len() < 6 {
                return Err(invalid(
                    "keys",
                    format!("the secret of `{key}` is shorter than 6 bytes"),
                ));
            }
        }
        if self.rtc.bind_ip.is_unspecified() && self.rtc.external_ip.is_none() {
            return Err(invalid(
                "rtc.external_ip",
                format!(
                    "rtc.bind_ip is {}, so set the address clients reach this host at (or --node-ip)",
                    self.rtc.bind_ip
                ),
            ));
        }
        if let Some(ip) = self.rtc.external_ip
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return Err(invalid(
                "rtc.external_ip",
                format!("{ip} cannot be advertised to clients"),
            ));
        }
        if self.rtc.udp_port != 0
            && usize::from(self.rtc.udp_port) + self.workers() > usize::from(u16::MAX) + 1
        {
            return Err(invalid("rtc.udp_port", "udp_port + workers exceeds 65535"));
        }
        if self.rtc.tcp_port != 0
            && self.rtc.tcp_port == self.http.port
            && (self.rtc.bind_ip == self.http.bind
                || self.rtc.bind_ip.is_unspecified()
                || self.http.bind.is_unspecified())
        {
            return Err(invalid(
                "rtc.tcp_port",
                format!(
                    "{} is http.port too; pick another TCP port",
                    self.rtc.tcp_port
                ),
            ));
        }
        if self.room.max_participants == 0 {
            return Err(invalid("room.max_participants", "must be at least 1"));
        }
        // Below these a client's ordinary jitter or a hand-over would end calls.
        if self.room.reconnect_after_silence < Duration::from_secs(1) {
            return Err(invalid(
                "room.reconnect_after_silence",
                "must be at least 1s",
            ));
        }
        if self.room.reconnect_grace < Duration::from_secs(1) {
            return Err(invalid("room.reconnect_grace", "must be at least 1s"));
        }
        if self.room.dtls_timeout < Duration::from_secs(2) {
            return Err(invalid("room.dtls_timeout", "must be at least 2s"));
        }
        if self.rtc.socket_buffer_bytes < 65536 {
            return Err(invalid("rtc.socket_buffer_bytes", "must be at least 65536"));
        }
        // Below this a worker refuses joins while it idles most of the time.
        if !(0.2..=1.0).contains(&self.rtc.max_worker_load) {
            return Err(invalid(
                "rtc.max_worker_load",
                "must be from 0.2 to 1 (1: never refuse a join)",
            ));
        }
        if !matches!(
            self.logging.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(invalid(
                "logging.level",
                format!(
                    "`{}` is not one of error, warn, info, debug, trace",
                    self.logging.level
                ),
            ));
        }
        self.turn.validate(dev, &self.http, &self.rtc)?;
        self.limits.validate()?;
        self.cluster
            .validate(&self.metering, &self.http, &self.rtc)?;
        Ok(())
    }

    /// What `callgate turn` (a relay-only host) needs: the `[turn]` section,
    /// which is on there whatever `turn.enabled` says.
    pub fn validate_turn_only(&mut self, dev: bool) -> Result<(), ConfigError> {
        self.turn.enabled = Some(true);
        self.turn.validate(dev, &self.http, &self.rtc)?;
        self.limits.validate()
    }

    /// Where the other nodes of a cluster reach this node's HTTP server,
    /// listening on `port`: `cluster.url`, or made of the HTTP bind address
    /// (the advertised media address when that is unspecified).
    pub fn cluster_url(&self, port: u16) -> String {
        if !self.cluster.url.is_empty() {
            return self.cluster.url.clone();
        }
        let ip = match (self.http.bind.is_unspecified(), self.rtc.external_ip) {
            (true, Some(ip)) => ip,
            _ => self.http.bind,
        };
        format!("http://{}", std::net::SocketAddr::new(ip, port))
    }

    /// Media worker threads: the configured number, or one per core.
    pub fn workers(&self) -> usize {
        if self.rtc.workers > 0 {
            self.rtc.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The meter's configuration; the ledger defaults to `data_dir/ledger.db`.
    pub fn meter(&self) -> Result<callgate_metering::MeterConfig, ConfigError> {
        let m = &self.metering;
        let database_url = if m.database_url.is_empty() {
            callgate_metering::sqlite_url(&self.data_dir.join("ledger.db"))
        } else {
            m.database_url.clone()
        };
        let config = callgate_metering::MeterConfig {
            database_url,
            checkpoint_interval: m.checkpoint_interval,
            warnings: m.warnings.clone(),
            hold_expiry: m.hold_expiry,
            node_id: if self.cluster.is_enabled() {
                self.cluster.node_id.clone()
            } else {
                m.node_id.clone()
            },
            webhooks: m
                .webhooks
                .as_ref()
                .map(|w| callgate_metering::WebhookConfig::new(&w.url, &w.secret)),
            razorpay: m.razorpay.as_ref().map(|r| {
                r.prices.iter().fold(
                    callgate_metering::RazorpayConfig::new(&r.webhook_secret),
                    |c, p| c.with_price(p.amount, &p.currency, p.coins),
                )
            }),
            plans: m.plans.clone(),
            ..callgate_metering::MeterConfig::default()
        };
        config
            .validate()
            .map_err(|e| invalid("metering", e.to_string()))?;
        Ok(config)
    }

    /// The media plane's configuration; `open_files` sizes unset ICE-TCP caps.
    pub fn sfu(&self, open_files: u64) -> callgate_sfu::SfuConfig {
        callgate_sfu::SfuConfig {
            bind_ip: self.rtc.bind_ip,
            advertise_ip: self.rtc.external_ip.unwrap_or(self.rtc.bind_ip),
            udp_port: self.rtc.udp_port,
            tcp_port: self.rtc.tcp_port,
            workers: self.workers(),
            max_participants: self.room.max_participants,
            empty_room_timeout: self.room.empty_timeout,
            socket_buffer_bytes: self.rtc.socket_buffer_bytes,
            keyframe_request_interval: self.rtc.keyframe_request_interval,
            adapt_to_subscribers: self.rtc.adapt_to_subscribers,
            send_side_estimation: self.rtc.send_side_estimation,
            ice_tcp_first_frame_timeout: self.limits.ice_tcp_first_frame_timeout,
            ice_tcp_pending: self.limits.ice_tcp_pending(open_files),
            reconnect_after_silence: self.room.reconnect_after_silence,
            reconnect_grace: self.room.reconnect_grace,
            dtls_timeout: self.room.dtls_timeout,
            max_worker_load: self.rtc.max_worker_load,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_documented_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/callgate.toml");
        let file = Config::load(Some(&path), env(&[])).unwrap();
        let defaults = Config::default();
        assert_eq!(format!("{:?}", file.http), format!("{:?}", defaults.http));
        assert_eq!(format!("{:?}", file.rtc), format!("{:?}", defaults.rtc));
        assert_eq!(format!("{:?}", file.room), format!("{:?}", defaults.room));
        assert_eq!(
            format!("{:?}", file.signaling),
            format!("{:?}", defaults.signaling)
        );
        assert_eq!(file.data_dir, defaults.data_dir);
        assert_eq!(format!("{:?}", file.turn), format!("{:?}", defaults.turn));
        assert_eq!(
            format!("{:?}", file.limits),
            format!("{:?}", defaults.limits)
        );
        assert_eq!(file.roles, defaults.roles);
        assert_eq!(
            format!("{:?}", file.metering),
            format!("{:?}", defaults.metering)
        );
        assert_eq!(
            format!("{:?}", file.cluster),
            format!("{:?}", defaults.cluster)
        );
    }

    #[test]
    fn a_cluster_node_needs_redis_a_name_a_secret_and_the_shared_ledger() {
        let cluster = [
            ("CALLGATE_KEYS", "k1:secret1"),
            ("CALLGATE_HTTP_BIND", "10.0.0.2"),
            ("CALLGATE_CLUSTER_REDIS_URL", "redis://10.0.0.9:6379/0"),
            ("CALLGATE_CLUSTER_NODE_ID", "n1"),
            ("CALLGATE_CLUSTER_SECRET", "sixteen bytes at least"),
            (
                "CALLGATE_METERING_DATABASE_URL",
                "postgres://cg@10.0.0.9/cg",
            ),
            ("CALLGATE_TURN_ENABLED", "false"),
        ];
        let with = |changes: &[(&'static str, &'static str)]| {
            let mut pairs: Vec<(&str, &str)> = cluster
                .iter()
                .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
                .copied()
                .collect();
            pairs.extend(changes.iter().filter(|(_, v)| !v.is_empty()));
            Config::load(None, env(&pairs)).unwrap()
        };
        let config = with(&[]);
        config.validate(false).unwrap();
        assert_eq!(config.meter().unwrap().node_id, "n1", "one name per node");
        assert_eq!(config.cluster_url(7880), "http://10.0.0.2:7880");
        assert_eq!(
            with(&[("CALLGATE_CLUSTER_URL", "http://sfu-1.internal:7880")]).cluster_url(7880),
            "http://sfu-1.internal:7880"
        );

        let refusals: [(&[(&str, &str)], &str); 7] = [
            (
                &[("CALLGATE_CLUSTER_REDIS_URL", "10.0.0.9:6379")],
                "cluster.redis_url",
            ),
            (&[("CALLGATE_CLUSTER_NODE_ID", "")], "cluster.node_id"),
            (&[("CALLGATE_CLUSTER_NODE_ID", "n 1")], "cluster.node_id"),
            (&[("CALLGATE_CLUSTER_SECRET", "short")], "cluster.secret"),
            (
                &[("CALLGATE_METERING_DATABASE_URL", "")],
                "metering.database_url",
            ),
            (
                &[("CALLGATE_METERING_NODE_ID", "other")],
                "metering.node_id",
            ),
            (&[("CALLGATE_HTTP_BIND", "0.0.0.0")], "cluster.url"),
        ];
        for (changes, key) in refusals {
            match with(changes).validate(false) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{changes:?}"),
                other => panic!("{changes:?}: expected {key} refused, got {other:?}"),
            }
        }
        // Without redis_url, none of it is needed.
        Config::load(
            None,
            env(&[
                ("CALLGATE_KEYS", "k1:secret1"),
                ("CALLGATE_TURN_ENABLED", "false"),
            ]),
        )
        .unwrap()
        .validate(false)
        .unwrap();
    }

    #[test]
    fn configured_roles_add_to_and_replace_the_built_in_ones() {
        let dir = std::env::temp_dir().join(format!("callgate-roles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("callgate.toml");
        std::fs::write(
            &path,
            "[roles.moderator]\ncan_publish = false\n[roles.listener]\ncan_publish_data = false\ncan_publish = false\n",
        )
        .unwrap();
        let roles = Config::load(Some(&path), env(&[])).unwrap().roles();
        let grants = |name: &str| roles.get(name).copied();
        use callgate_signaling::token::RoleGrants;
        assert_eq!(
            grants("moderator"),
            Some(RoleGrants {
                can_publish: false,
                can_subscribe: true,
                can_publish_data: true,
                room_admin: false,
            })
        );
        assert_eq!(
            grants("listener"),
            Some(RoleGrants {
                can_publish: false,
                can_subscribe: true,
                can_publish_data: false,
                room_admin: false,
            })
        );
        assert_eq!(grants("host").map(|g| g.can_publish), Some(true));
        std::fs::write(&path, "[roles.x]\ncan_fly = true\n").unwrap();
        assert!(
            Config::load(Some(&path), env(&[])).is_err(),
            "unknown keys refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn turn_settings_are_checked_by_name() {
        let mut c = Config::default();
        c.keys.insert(DEV_API_KEY.into(), DEV_API_SECRET.into());
        c.validate(true).unwrap();
        c.turn.apply_dev();
        c.validate(true).unwrap();
        assert!(c.turn.is_enabled());
        let err = c.validate(false).unwrap_err().to_string();
        assert!(
            err.contains("turn.auth_secret") || err.contains("keys"),
            "{err}"
        );

        let mut c = Config::default();
        c.keys.insert("k".into(), "secret-of-k".into());
        c.turn.enabled = Some(true);
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.contains("turn.auth_secret"), "{err}");
        c.turn.auth_secret = Some(DEV_TURN_SECRET.into());
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.contains("--dev"), "{err}");
        c.turn.auth_secret = Some("short".into());
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        c.turn.auth_secret = Some("a-long-enough-secret".into());
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.contains("turn.tls_cert"), "{err}");
        c.turn.listeners = vec![TurnListener::Udp, TurnListener::Tcp];
        c.validate(false).unwrap();
        c.turn.allow_peer_cidrs = vec!["10.0.0.0/33".into()];
        let err = c.validate(false).unwrap_err().to_string();
        assert!(
            err.contains("turn.allow_peer_cidrs") && err.contains("10.0.0.0/33"),
            "{err}"
        );
        c.turn.allow_peer_cidrs = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        let relay = c.turn.relay(vec![], &c.limits, 1024).unwrap();
        assert_eq!(relay.allow_peers.len(), 2);
        c.turn.relay_port_min = 60000;
        c.turn.relay_port_max = 50000;
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.contains("turn.relay_port_min"), "{err}");
        c.turn.relay_port_min = 50000;
        c.turn.max_lifetime = Duration::from_secs(60);
        let err = c.validate(false).unwrap_err().to_string();
        assert!(err.contains("turn.max_lifetime"), "{err}");

        let err = Config::load(None, env(&[("CALLGATE_TURN_LISTENER", "[\"udp\"]")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener"), "{err}");
        let c = Config::load(
            None,
            env(&[
                ("CALLGATE_TURN_LISTENERS", "[\"udp\", \"tcp\"]"),
                ("CALLGATE_TURN_ALLOW_PEER_CIDRS", "[\"127.0.0.1/32\"]"),
                ("CALLGATE_TURN_UDP_PORT", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.turn.listeners, vec![TurnListener::Udp, TurnListener::Tcp]);
        assert_eq!(c.turn.udp_port, 0);
    }

    #[test]
    fn unset_connection_caps_are_sized_from_the_open_files_limit() {
        use callgate_admission::AdmissionLimits;
        let caps = |max_total, max_per_source| AdmissionLimits {
            max_total,
            max_per_source,
        };
        let limits = LimitsConfig::default();
        let http = limits.http(1024);
        assert_eq!(http.unauthenticated, caps(256, 64));
        assert_eq!(http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.ice_tcp_pending(1024), caps(128, 32));
        assert_eq!(limits.turn_unauthenticated(1024), caps(128, 32));
        assert_eq!(limits.http(65536).unauthenticated, caps(16384, 4096));
        // Never zero, however low the limit.
        assert_eq!(limits.http(3).unauthenticated, caps(1, 1));
        assert_eq!(limits.ice_tcp_pending(0), caps(1, 1));

        // Set caps win; an unset per-address cap follows the set total.
        let c = Config::load(
            None,
            env(&[
                ("CALLGATE_LIMITS_HTTP_MAX_UNAUTHENTICATED", "40"),
                ("CALLGATE_LIMITS_HTTP_MAX_UNAUTHENTICATED_PER_ADDRESS", "3"),
                ("CALLGATE_LIMITS_ICE_TCP_MAX_PENDING", "10"),
                ("CALLGATE_LIMITS_ICE_TCP_FIRST_FRAME_TIMEOUT", "2s"),
                ("CALLGATE_LIMITS_TURN_MAX_UNAUTHENTICATED_PER_ADDRESS", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.http(1024).unauthenticated, caps(40, 3));
        assert_eq!(c.limits.ice_tcp_pending(1024), caps(10, 2));
        let sfu = c.sfu(1024);
        assert_eq!(sfu.ice_tcp_pending, caps(10, 2));
        assert_eq!(sfu.ice_tcp_first_frame_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.turn_unauthenticated(1024), caps(128, 5));

        let mut c = Config::default();
        c.keys.insert(DEV_API_KEY.into(), DEV_API_SECRET.into());
        c.limits.turn_unauthenticated_timeout = Duration::from_millis(10);
        let err = c.validate(true).unwrap_err().to_string();
        assert!(err.contains("limits.turn_unauthenticated_timeout"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = Config::load(
            None,
            env(&[
                ("CALLGATE_HTTP_PORT", "9000"),
                ("CALLGATE_RTC_EXTERNAL_IP", "203.0.113.7"),
                ("CALLGATE_ROOM_EMPTY_TIMEOUT", "2m"),
                ("CALLGATE_DATA_DIR", "/tmp/x"),
                ("CALLGATE_KEYS", "k1:secret1,k2:secret2"),
                ("UNRELATED", "1"),
                ("CALLGATE_TEST_POSTGRES_URL", "postgres://127.0.0.1/x"),
                ("CALLGATE_API_SECRET", "for the token command"),
                ("CALLGATE_CONFIG", "/etc/callgate.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.port, 9000);
        assert_eq!(c.rtc.external_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(c.room.empty_timeout, Duration::from_secs(120));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.keys.len(), 2);
        c.validate(false).unwrap();
    }

    #[test]
    fn razorpay_prices_are_a_list_with_currencies() {
        let load = |text: &str| {
            let dir =
                std::env::temp_dir().join(format!("callgate-config-{}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("callgate.toml");
            std::fs::write(&path, text).unwrap();
            let loaded = Config::load(Some(&path), env(&[]));
            std::fs::remove_dir_all(&dir).unwrap();
            loaded
        };
        let c = load(
            "[metering.razorpay]\nwebhook_secret = \"s\"\nprices = [\n  { amount = 49900, currency = \"INR\", coins = 500 },\n  { amount = 600, currency = \"USD\", coins = 500 },\n]\n",
        )
        .unwrap();
        let razorpay = c.meter().unwrap().razorpay.unwrap();
        assert_eq!(razorpay.coins_for(49_900, "INR"), Some(500));
        assert_eq!(razorpay.coins_for(600, "USD"), Some(500));
        assert_eq!(razorpay.coins_for(600, "INR"), None);
        // The old form (paise → coins, no currency) says what to write now.
        let err =
            load("[metering.razorpay]\nwebhook_secret = \"s\"\nprices = { \"49900\" = 500 }\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("prices = [{ amount = 49900"), "{err}");
        // A price the meter cannot use stops start-up, naming it.
        let c = load(
            "[metering.razorpay]\nwebhook_secret = \"s\"\nprices = [{ amount = 100, currency = \"inr\", coins = 1 }]\n",
        )
        .unwrap();
        let err = c.meter().unwrap_err().to_string();
        assert!(err.contains("`inr`"), "{err}");
    }

    #[test]
    fn wrong_settings_name_the_setting() {
        let err = Config::load(None, env(&[("CALLGATE_HTTP_PORT", "70000")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = Config::load(None, env(&[("CALLGATE_HTTP_PROT", "80")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
        let err = Config::load(None, env(&[("CALLGATE_ROOM_EMPTY_TIMEOUT", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");

        let mut c = Config::default();
        assert!(
            c.validate(false)
                .unwrap_err()
                .to_string()
                .contains("`keys`")
        );
        c.keys.insert(DEV_API_KEY.into(), DEV_API_SECRET.into());
        assert!(c.validate(false).unwrap_err().to_string().contains("--dev"));
        c.validate(true).unwrap();
        for load in [0.1, 1.5, f64::NAN] {
            c.rtc.max_worker_load = load;
            let err = c.validate(true).unwrap_err().to_string();
            assert!(err.contains("rtc.max_worker_load"), "{load}: {err}");
        }
        c.rtc.max_worker_load = 1.0;
        c.validate(true).unwrap();
        c.rtc.tcp_port = c.http.port;
        let err = c.validate(true).unwrap_err().to_string();
        assert!(err.contains("rtc.tcp_port"), "{err}");
        c.rtc.tcp_port = 0;
        c.http.port = 0;
        c.validate(true).unwrap();
        c.rtc.bind_ip = "0.0.0.0".parse().unwrap();
        let err = c.validate(true).unwrap_err().to_string();
        assert!(err.contains("rtc.external_ip"), "{err}");
    }
}
