//! `callgate loadtest`: the command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::chart;
use super::error::LoadTestError;
use super::participant::{ClientKind, VideoShape};
use super::run::{Options, run};
use super::scenario::{Scenario, Sizes};
use super::sweep::{self, Step, Sweep};

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// The server's signaling address (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:7880")]
    url: String,
    /// API key to mint access tokens with.
    #[arg(long, env = "CALLGATE_API_KEY", default_value = "devkey")]
    api_key: String,
    /// Its secret.
    #[arg(
        long,
        env = "CALLGATE_API_SECRET",
        default_value = "secret",
        hide_env_values = true
    )]
    api_secret: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Rooms (video-calls: the number of 1:1 calls).
    #[arg(long)]
    rooms: Option<usize>,
    /// Publishing participants per room (meeting: participants per room).
    #[arg(long)]
    publishers: Option<usize>,
    /// Receive-only participants per room (audio-room listeners, livestream viewers).
    #[arg(long)]
    subscribers: Option<usize>,
    /// The WebRTC engine of the simulated participants: `rtc` (sans-I/O,
    /// light) or `webrtc` (the async crate, about 5× the CPU per packet).
    #[arg(long, value_enum, default_value = "rtc")]
    client: ClientKind,
    /// Bitrate of each synthetic video track.
    #[arg(long, default_value_t = 1000)]
    video_kbps: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Time between video keyframes.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    keyframe_interval: Duration,
    /// Length of the measurement window (after everyone has joined).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The server's process id: adds its CPU time, CPU per forwarded
    /// packet and peak RSS to the report.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON on stdout (the progress line stays on stderr).
    #[arg(long)]
    json: bool,
    /// Run at growing sizes, e.g. `subscribers=10,50,100,200,400`.
    #[arg(long)]
    sweep: Option<String>,
    /// Where the sweep chart goes (SVG).
    #[arg(long, default_value = "loadtest-sweep.svg")]
    chart: PathBuf,
    /// The `--json` of an earlier sweep (e.g. against the limit relay) to
    /// compare each step's CPU per forwarded packet with.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Participants joining at once.
    #[arg(long, default_value_t = 8)]
    join_concurrency: usize,
    /// Longest wait for every expected track to arrive before measuring.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    join_timeout: Duration,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Every participant moves its transports to a new loopback address
    /// (127.0.x.y) once, at a random moment in the middle half of the
    /// window; reports resume times and packets lost (`rtc` client only).
    #[arg(long)]
    reconnect: bool,
    /// Seed for the random moments of `--reconnect`.
    #[arg(long)]
    seed: Option<u64>,
}

impl LoadtestArgs {
    fn options(&self) -> Options {
        Options {
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
            scenario: self.scenario,
            sizes: Sizes {
                rooms: self.rooms,
                publishers: self.publishers,
                subscribers: self.subscribers,
            },
            client: self.client,
            video: VideoShape {
                kbps: self.video_kbps,
                fps: self.fps,
                keyframe_interval: self.keyframe_interval,
            },
            duration: self.duration,
            server_pid: self.server_pid,
            join_concurrency: self.join_concurrency,
            join_timeout: self.join_timeout,
            progress: !self.quiet,
            reconnect: self.reconnect,
            seed: self.seed,
        }
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<String, LoadTestError> {
    serde_json::to_string_pretty(v).map_err(|e| LoadTestError::Output {
        path: "stdout".into(),
        message: e.to_string(),
    })
}

/// Runs the subcommand on one thread: every simulated participant shares
/// one event loop, so the load generator takes one core (pin it with
/// `taskset`).
pub fn main(args: LoadtestArgs) -> Result<(), LoadTestError> {
    // Warnings on stderr; RUST_LOG=callgate=debug shows each transport's steps.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rtc=error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadTestError::Usage(format!("starting the event loop: {e}")))?;
    runtime.block_on(async {
        let options = args.options();
        let Some(spec) = &args.sweep else {
            let report = run(&options).await?;
            if args.json {
                println!("{}", to_json(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        };
        let (param, values) = sweep::parse(spec)?;
        let baseline = match &args.baseline {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| sweep::read_baseline(&text))
                .map_err(|e| LoadTestError::Usage(format!("--baseline {}: {e}", path.display())))?,
            None => Vec::new(),
        };
        let mut result = Sweep {
            scenario: args.scenario.name(),
            param,
            steps: Vec::new(),
        };
        for value in values {
            if !args.quiet {
                eprintln!("== {} {}={value}", args.scenario.name(), param.as_str());
            }
            let step = Options {
                sizes: param.apply(options.sizes, value),
                ..options.clone()
            };
            let report = run(&step).await?;
            if !args.quiet && !args.json {
                eprint!("{}", report.table());
            }
            result.steps.push(Step {
                value,
                report,
                baseline_us_per_packet: baseline
                    .iter()
                    .find(|(v, _)| *v == value)
                    .map(|(_, us)| *us),
            });
        }
        chart::write_svg(&result, &args.chart)?;
        if args.json {
            println!("{}", to_json(&result)?);
        } else {
            print!("{}", result.table());
            println!("chart: {}", args.chart.display());
        }
        Ok(())
    })
}
