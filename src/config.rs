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
    /// API key → secret. Several pairs let an operator rotate keys.
    pub keys: BTreeMap<String, String>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomConfig {
    pub max_participants: usize,
    #[serde(with = "humantime_serde_compat")]
    pub empty_timeout: Duration,
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
            keys: BTreeMap::new(),
        }
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
        }
    }
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_participants: 50,
            empty_timeout: Duration::from_secs(20),
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

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Durations written the way people write them: "500ms", "20s", "2h".
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
        if rest == "config" {
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
        if self.rtc.socket_buffer_bytes < 65536 {
            return Err(invalid("rtc.socket_buffer_bytes", "must be at least 65536"));
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
        Ok(())
    }

    /// Media worker threads: the configured number, or one per core.
    pub fn workers(&self) -> usize {
        if self.rtc.workers > 0 {
            self.rtc.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn sfu(&self) -> callgate_sfu::SfuConfig {
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
