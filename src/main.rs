//! `callgate`: the command line.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use callgate::config::{Config, DEV_API_KEY, DEV_API_SECRET, LogFormat};
use callgate_signaling::token::{BillingClaims, Claims, Grants, KeyRing, unix_now};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "callgate",
    version,
    about = "WebRTC SFU with paid-call metering"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print an access token.
    Token(TokenArgs),
    /// Run only the TURN relay (a relay-only host), with /metrics and /healthz.
    Turn(TurnArgs),
    /// Simulate participants against a server and report what it costs
    /// (built with `--features loadtest`).
    #[cfg(feature = "loadtest")]
    Loadtest(callgate::loadtest::cli::LoadtestArgs),
    /// Export billed sessions, ledger postings, usage or calls for finance.
    Export(ExportArgs),
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// sessions, ledger, usage or calls (columns: docs/metering.md).
    #[arg(value_parser = ["sessions", "ledger", "usage", "calls"])]
    kind: String,
    /// Start of the range, inclusive: RFC 3339 or unix milliseconds.
    #[arg(long)]
    from: Option<String>,
    /// End of the range, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// csv (RFC 4180) or jsonl.
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
    format: String,
    /// Only this user's rows.
    #[arg(long)]
    user: Option<String>,
    /// Data directory holding the ledger (data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (see config/callgate.toml).
    #[arg(long, env = "CALLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: the dev key pair devkey/secret, data under ./data.
    #[arg(long)]
    dev: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// HTTP port (http.port).
    #[arg(long)]
    http_port: Option<u16>,
    /// First media UDP port (rtc.udp_port); 0 picks free ports.
    #[arg(long)]
    udp_port: Option<u16>,
    /// ICE-TCP port, for clients whose UDP is blocked (rtc.tcp_port); 0 picks a free port.
    #[arg(long)]
    tcp_port: Option<u16>,
    /// Address advertised to clients for media (rtc.external_ip).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Data directory (data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Media worker threads (rtc.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Log format: human or json (logging.format).
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
    #[command(flatten)]
    turn: TurnFlags,
}

/// Flags of the embedded TURN relay, for `serve` and `turn`.
#[derive(Args)]
struct TurnFlags {
    /// TURN UDP port (turn.udp_port); 0 picks a free port.
    #[arg(long)]
    turn_udp_port: Option<u16>,
    /// TURN TCP port (turn.tcp_port); 0 picks a free port.
    #[arg(long)]
    turn_tcp_port: Option<u16>,
    /// TURN TLS port (turn.tls_port); 0 picks a free port.
    #[arg(long)]
    turn_tls_port: Option<u16>,
    /// Run without the TURN relay, --dev included (turn.enabled = false).
    #[arg(long)]
    no_turn: bool,
}

impl TurnFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(p) = self.turn_udp_port {
            config.turn.udp_port = p;
        }
        if let Some(p) = self.turn_tcp_port {
            config.turn.tcp_port = p;
        }
        if let Some(p) = self.turn_tls_port {
            config.turn.tls_port = p;
        }
        if self.no_turn {
            config.turn.enabled = Some(false);
        }
    }
}

#[derive(Args)]
struct TurnArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// HTTP port for /metrics and /healthz (http.port).
    #[arg(long)]
    http_port: Option<u16>,
    /// Log format: human or json (logging.format).
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
    #[command(flatten)]
    turn: TurnFlags,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Room the token lets its holder join. Without it, the token opens a
    /// presence connection only: to be rung and to watch presence
    /// (docs/calls.md).
    #[arg(long)]
    room: Option<String>,
    /// Participant identity (unique in a room).
    #[arg(long)]
    identity: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. 10m, 2h.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Join without the right to publish.
    #[arg(long)]
    no_publish: bool,
    /// Join without the right to subscribe.
    #[arg(long)]
    no_subscribe: bool,
    /// Join without the right to send data messages.
    #[arg(long)]
    no_data: bool,
    /// May promote, demote, mute and remove the room's other participants
    /// over signaling (a host's app).
    #[arg(long)]
    room_admin: bool,
    /// A role the server defines (`host`, `speaker`, `listener`, or one of
    /// `[roles]`): its grants replace --no-publish, --no-subscribe, --no-data.
    #[arg(long)]
    role: Option<String>,
    /// A token for the server API (/v1/).
    #[arg(long)]
    admin: bool,
    /// API key to sign with (default: the first configured).
    #[arg(long)]
    api_key: Option<String>,
    /// Its secret (default: from the configuration).
    #[arg(long, env = "CALLGATE_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    #[command(flatten)]
    billing: BillingArgs,
}

/// Billing terms signed into the token (docs/metering.md).
#[derive(Args)]
struct BillingArgs {
    /// Identity whose wallet pays for the call.
    #[arg(long)]
    payer: Option<String>,
    /// Identity who earns (a host).
    #[arg(long)]
    payee: Option<String>,
    /// Coins per minute.
    #[arg(long)]
    rate: Option<i64>,
    /// audio or video.
    #[arg(long, value_parser = ["audio", "video"])]
    call_type: Option<String>,
    /// Rating increments in seconds, <initial>/<increment>, e.g. 60/60 or 1/1.
    #[arg(long)]
    increments: Option<String>,
    /// Platform commission, e.g. 20%.
    #[arg(long)]
    commission: Option<String>,
    /// A rate plan from the server's configuration instead of --rate etc.
    #[arg(long)]
    plan: Option<String>,
}

impl BillingArgs {
    fn claims(&self) -> Option<BillingClaims> {
        let any = self.payer.is_some()
            || self.payee.is_some()
            || self.rate.is_some()
            || self.call_type.is_some()
            || self.increments.is_some()
            || self.commission.is_some()
            || self.plan.is_some();
        any.then(|| BillingClaims {
            payer: self.payer.clone(),
            payee: self.payee.clone(),
            rate: self.rate,
            call_type: self.call_type.clone(),
            increments: self.increments.clone(),
            commission: self.commission.clone(),
            plan: self.plan.clone(),
            call: None,
        })
    }
}

fn load_config(args: &ConfigArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if args.dev && config.keys.is_empty() {
        config
            .keys
            .insert(DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned());
    }
    if args.dev {
        config.dev = true;
        config.turn.apply_dev();
    }
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},rtc=error,rtc_ice=error,rtc_dtls=error",
            level = config.logging.level
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// Raises the soft open-files limit to the hard one and says what it is.
fn raise_open_files_limit() {
    match callgate::open_files::raise() {
        (limit, None) => info!(limit, "open files limit"),
        (limit, Some(e)) => warn!(limit, error = %e, "open files limit: could not raise it"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.config)?;
    if let Some(p) = args.http_port {
        config.http.port = p;
    }
    if let Some(p) = args.udp_port {
        config.rtc.udp_port = p;
    }
    if let Some(p) = args.tcp_port {
        config.rtc.tcp_port = p;
    }
    if let Some(ip) = args.node_ip {
        config.rtc.external_ip = Some(ip);
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(w) = args.workers {
        config.rtc.workers = w;
    }
    if let Some(f) = args.log_format.as_deref() {
        config.logging.format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Human
        };
    }
    args.turn.apply(&mut config);
    config.validate(args.config.dev)?;
    init_logging(&config);
    raise_open_files_limit();
    if args.config.dev {
        warn!(
            api_key = DEV_API_KEY,
            api_secret = DEV_API_SECRET,
            data_dir = %config.data_dir.display(),
            "development mode: the dev key pair is public, never use --dev in production"
        );
    }
    callgate::server::run(config, shutdown_signal(), |listening| {
        println!("{listening}");
        let _ = std::io::stdout().flush();
    })
    .await
}

async fn turn(args: TurnArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.config)?;
    if let Some(p) = args.http_port {
        config.http.port = p;
    }
    if let Some(f) = args.log_format.as_deref() {
        config.logging.format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Human
        };
    }
    args.turn.apply(&mut config);
    if args.turn.no_turn {
        bail!("--no-turn leaves `callgate turn` nothing to run");
    }
    config.validate_turn_only(args.config.dev)?;
    init_logging(&config);
    raise_open_files_limit();
    if args.config.dev {
        warn!(
            auth_secret = config.turn.auth_secret.as_deref().unwrap_or_default(),
            "development mode: the TURN secret is public, never use --dev in production"
        );
    }
    callgate::server::run_turn(config, shutdown_signal(), |line| {
        println!("{line}");
        let _ = std::io::stdout().flush();
    })
    .await
}

/// Streams an export from the ledger, read-only: a running server on the
/// same ledger is not disturbed.
async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use callgate_metering::{Clock, ExportFormat, ExportKind, Meter, TimeRange};
    let mut config = load_config(&args.config)?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let kind: ExportKind = args.kind.parse()?;
    let format: ExportFormat = args.format.parse()?;
    let range = TimeRange::parse(args.from.as_deref(), args.to.as_deref())?;
    let meter = Meter::open_reader(config.meter()?, Clock::system())
        .await
        .context("opening the ledger")?;
    let out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &args.output {
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let out = tokio::io::BufWriter::new(out);
    let rows = match &args.user {
        Some(user) => {
            meter
                .export_for_user(kind, range, format, user, out)
                .await?
        }
        None => meter.export(kind, range, format, out).await?,
    };
    meter.shutdown().await;
    eprintln!("{rows} rows");
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let (key, secret) = match (&args.api_key, &args.api_secret) {
        (Some(k), Some(s)) => (k.clone(), s.clone()),
        (Some(k), None) => match config.keys.get(k) {
            Some(s) => (k.clone(), s.clone()),
            None => bail!("API key `{k}` is not configured; pass --api-secret"),
        },
        (None, _) => match config.keys.iter().next() {
            Some((k, s)) => (k.clone(), s.clone()),
            None => bail!("no API key configured: use --dev, --config or --api-key/--api-secret"),
        },
    };
    if !args.admin && args.identity.is_none() {
        bail!(
            "--identity is required, with --room to join a room or without it for a presence \
             connection (or --admin for a server API token)"
        );
    }
    if let Some(role) = &args.role
        && !config.roles().contains_key(role)
    {
        let mut known: Vec<String> = config.roles().into_keys().collect();
        known.sort();
        bail!("no role `{role}`: the server defines {}", known.join(", "));
    }
    let billing = args.billing.claims();
    if let Some(terms) = &billing {
        // Terms the server would refuse at join (4007) are refused here.
        let room = args.room.as_deref().unwrap_or_default();
        let plans = config.metering.plans.clone().into_iter().collect();
        if let Err(refusal) = callgate::billing::resolve_terms(room, terms, &plans) {
            bail!("billing terms refused: {}", refusal.message);
        }
    }
    let now = unix_now();
    let claims = Claims {
        iss: key.clone(),
        sub: args.identity.clone().unwrap_or_else(|| "admin".into()),
        name: args.name.clone(),
        iat: now,
        nbf: Some(now),
        exp: now + args.ttl.as_secs(),
        grants: Grants {
            room_join: args.room.is_some(),
            room: args.room.clone(),
            can_publish: !args.no_publish,
            can_subscribe: !args.no_subscribe,
            admin: args.admin,
            can_publish_data: !args.no_data,
            role: args.role.clone(),
            room_admin: args.room_admin,
        },
        billing,
    };
    let ring = KeyRing::new([(key.as_str(), secret.as_str())]);
    let token = ring.sign(&claims).context("signing the token")?;
    println!("{token}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(args)),
        Command::Token(args) => token(args),
        Command::Turn(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(turn(args)),
        #[cfg(feature = "loadtest")]
        Command::Loadtest(args) => Ok(callgate::loadtest::cli::main(args)?),
        Command::Export(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(export(args)),
    }
}
