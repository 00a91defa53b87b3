//! `mixer-load`: drives a Mixer server over real gRPC with Envoy-shaped traffic and reports
//! throughput, latency, errors and (given the server's pid) server CPU per call and per
//! attribute set, and peak memory.
//!
//! ```text
//! mixer-load --mode report --address 127.0.0.1:9091 --concurrency 4 --duration 10 --json
//! mixer-load --mode check --rps 2000 --duration 30 --server-pid 1234
//! mixer-load --mode report --config samples/default --baseline-config /tmp/empty --duration 20 --json
//! mixer-load --mode accesslog --batch 27 --config samples/default --baseline-config /tmp/empty
//! mixer-load --mode ratelimit --domain perclient --concurrency 2 --duration 10
//! mixer-load --mode report --count-instructions --config samples/default --baseline-config /tmp/empty
//! ```

mod counted;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benches::Traffic;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse as AuthzResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use hdrhistogram::Histogram;
use mixer::wire::pb::istio::mixer::v1::{CheckResponse, ReportResponse};
use prost_bytes::RawCodec;
use serde_json::{Value as Json, json};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `istio.mixer.v1.Mixer/Report` with `--batch` attribute sets.
    Report,
    /// `istio.mixer.v1.Mixer/Check`.
    Check,
    /// Envoy's ext_authz `Authorization/Check`.
    Authz,
    /// Envoy's `RateLimitService/ShouldRateLimit` on `--domain`, one descriptor.
    Ratelimit,
    /// Envoy's `AccessLogService/StreamAccessLogs`: one stream per call, one message of
    /// `--batch` HTTP entries.
    Accesslog,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Report => "report",
            Mode::Check => "check",
            Mode::Authz => "authz",
            Mode::Ratelimit => "ratelimit",
            Mode::Accesslog => "accesslog",
        }
    }

    /// Attribute sets (bags) one call carries.
    fn bags_per_call(self, batch: usize) -> u64 {
        match self {
            Mode::Report | Mode::Accesslog => batch as u64,
            Mode::Check | Mode::Authz | Mode::Ratelimit => 1,
        }
    }
}

#[derive(Parser, Clone)]
#[command(name = "mixer-load", about = "Load generator for the Mixer gRPC API")]
struct Args {
    /// What to send.
    #[arg(long, value_enum, default_value = "report")]
    mode: Mode,
    /// Server to drive (ignored in comparison mode).
    #[arg(long, default_value = "127.0.0.1:9091")]
    address: String,
    /// Open loop: calls per second, scheduled regardless of answers.
    #[arg(long)]
    rps: Option<f64>,
    /// Closed loop (when --rps is not given): calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds of measured load (per configuration in comparison mode).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// gRPC connections to spread calls over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Attribute sets per Report call (Envoy batches 100).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct requests generated up front and sent round-robin.
    #[arg(long, default_value_t = 512)]
    distinct: usize,
    /// Ask for this quota (amount 1) in every Check.
    #[arg(long)]
    quota: Option<String>,
    /// The rate-limit domain (a quota instance's name) for `--mode ratelimit`.
    #[arg(long, default_value = "perclient")]
    domain: String,
    /// Server process to measure: CPU seconds per call and per bag, peak RSS.
    #[arg(long = "server-pid")]
    server_pid: Option<u32>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Comparison mode: configuration A (starts its own server).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Comparison mode: configuration B, the baseline (an empty directory is valid).
    #[arg(long = "baseline-config")]
    baseline_config: Option<PathBuf>,
    /// The `mixer` binary to start in comparison mode (default: next to this program).
    #[arg(long = "server-bin")]
    server_bin: Option<PathBuf>,
    /// Extra arguments for the servers started in comparison mode.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Alternating rounds per configuration in comparison mode.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Seconds of unmeasured warm-up per server.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Run each server under valgrind's callgrind and report exact user-space instructions
    /// and allocator calls per bag at steady state, instead of rates and seconds (needs
    /// --config; --baseline-config adds the comparison).
    #[arg(long = "count-instructions")]
    count_instructions: bool,
    /// With --count-instructions: measured calls (the profiles differ by 2 × this many);
    /// also the number of distinct requests, each sent once to warm up.
    #[arg(long, default_value_t = 20)]
    calls: u64,
    /// With --count-instructions: keep the callgrind profiles in this directory (for
    /// `callgrind_annotate`) instead of deleting them.
    #[arg(long = "profile-dir")]
    profile_dir: Option<PathBuf>,
    /// With --count-instructions: the valgrind program.
    #[arg(long, default_value = "valgrind")]
    valgrind: PathBuf,
}

/// Raw-bytes gRPC codec: requests are encoded once, up front, so the generator spends its
/// CPU sending rather than encoding.
mod prost_bytes {
    use std::marker::PhantomData;

    use tonic::Status;
    use tonic::codec::{Codec, EncodeBuf, Encoder};

    pub struct RawCodec<R>(PhantomData<R>);

    impl<R> Default for RawCodec<R> {
        fn default() -> Self {
            RawCodec(PhantomData)
        }
    }

    pub struct RawEncoder;

    impl Encoder for RawEncoder {
        type Item = bytes::Bytes;
        type Error = Status;
        fn encode(&mut self, item: bytes::Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            bytes::BufMut::put_slice(buf, &item);
            Ok(())
        }
    }

    impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
        type Encode = bytes::Bytes;
        type Decode = R;
        type Encoder = RawEncoder;
        type Decoder = tonic_prost::ProstDecoder<R>;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> Self::Decoder {
            Default::default()
        }
    }
}

/// What one measured run produced.
#[derive(Clone)]
struct Run {
    calls: u64,
    bags: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    server_cpu: Option<Duration>,
}

impl Run {
    fn empty() -> Run {
        Run {
            calls: 0,
            bags: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new(3).expect("histogram"),
            errors: BTreeMap::new(),
            server_cpu: None,
        }
    }

    fn merge(&mut self, other: &Run) {
        self.calls += other.calls;
        self.bags += other.bags;
        self.elapsed += other.elapsed;
        let _ = self.latency_us.add(&other.latency_us);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.server_cpu = match (self.server_cpu, other.server_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    fn figures(&self, peak_rss: Option<f64>) -> Json {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let per = |n: u64| {
            self.server_cpu
                .filter(|_| n > 0)
                .map(|c| c.as_secs_f64() * 1e6 / n as f64)
        };
        json!({
            "calls": self.calls,
            "bags": self.bags,
            "seconds": secs,
            "calls_per_s": self.calls as f64 / secs,
            "bags_per_s": self.bags as f64 / secs,
            "p50_us": self.latency_us.value_at_quantile(0.5),
            "p90_us": self.latency_us.value_at_quantile(0.9),
            "p99_us": self.latency_us.value_at_quantile(0.99),
            "max_us": self.latency_us.max(),
            "errors": self.errors,
            "server_cpu_us_per_call": per(self.calls),
            "server_cpu_us_per_bag": per(self.bags),
            "peak_rss_mb": peak_rss,
        })
    }
}

/// utime + stime of a process, from /proc.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident set size (VmHWM) in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Workload {
    mode: Mode,
    bodies: Vec<bytes::Bytes>,
    bags_per_call: u64,
}

fn workload(args: &Args) -> Workload {
    use prost::Message;
    let mut traffic = Traffic::new(args.seed);
    let bodies = (0..args.distinct.max(1))
        .map(|_| match args.mode {
            Mode::Report => traffic.report_request(args.batch).encode_to_vec().into(),
            Mode::Check => match &args.quota {
                Some(q) => traffic.check_request_with_quota(q).encode_to_vec().into(),
                None => traffic.check_request().encode_to_vec().into(),
            },
            Mode::Authz => traffic.authz_request().encode_to_vec().into(),
            Mode::Ratelimit => traffic
                .ratelimit_request(&args.domain)
                .encode_to_vec()
                .into(),
            Mode::Accesslog => traffic
                .access_log_message(args.batch)
                .encode_to_vec()
                .into(),
        })
        .collect();
    Workload {
        mode: args.mode,
        bodies,
        bags_per_call: args.mode.bags_per_call(args.batch),
    }
}

async fn call(channel: Channel, mode: Mode, body: bytes::Bytes) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    match mode {
        Mode::Report => grpc
            .unary::<_, ReportResponse, _>(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static("/istio.mixer.v1.Mixer/Report"),
                RawCodec::<ReportResponse>::default(),
            )
            .await
            .map(|_| ()),
        Mode::Check => grpc
            .unary::<_, CheckResponse, _>(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static("/istio.mixer.v1.Mixer/Check"),
                RawCodec::<CheckResponse>::default(),
            )
            .await
            .map(|_| ()),
        Mode::Authz => grpc
            .unary::<_, AuthzResponse, _>(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check"),
                RawCodec::<AuthzResponse>::default(),
            )
            .await
            .map(|_| ()),
        Mode::Ratelimit => grpc
            .unary::<_, RateLimitResponse, _>(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static(
                    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                ),
                RawCodec::<RateLimitResponse>::default(),
            )
            .await
            .map(|_| ()),
        Mode::Accesslog => grpc
            .client_streaming::<_, bytes::Bytes, StreamAccessLogsResponse, _>(
                tonic::Request::new(futures::stream::iter([body])),
                http::uri::PathAndQuery::from_static(
                    "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
                ),
                RawCodec::<StreamAccessLogsResponse>::default(),
            )
            .await
            .map(|_| ()),
    }
}

async fn connect(address: &str, n: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..n.max(1) {
        let ch = Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {address}"))?;
        channels.push(ch);
    }
    Ok(channels)
}

/// Applies load for `duration` and measures it.
async fn drive(
    channels: &[Channel],
    work: &Arc<Workload>,
    args: &Args,
    duration: Duration,
    pid: Option<u32>,
) -> Run {
    let cpu_before = pid.and_then(process_cpu);
    let started = Instant::now();
    let deadline = started + duration;
    let mut run = Run::empty();
    let results: Vec<Run> = if let Some(rps) = args.rps {
        // Open loop: calls are scheduled at a fixed rate; latency counts from the scheduled
        // time, so a slow server cannot hide its queueing (coordinated omission).
        let interval = Duration::from_secs_f64(1.0 / rps.max(0.001));
        let mut handles = Vec::new();
        let mut i = 0usize;
        let mut next = Instant::now();
        while next < deadline {
            tokio::time::sleep_until(next.into()).await;
            let scheduled = next;
            let ch = channels[i % channels.len()].clone();
            let body = work.bodies[i % work.bodies.len()].clone();
            let mode = work.mode;
            handles.push(tokio::spawn(async move {
                let r = call(ch, mode, body).await;
                (
                    scheduled.elapsed(),
                    r.err().map(|s| format!("{:?}", s.code())),
                )
            }));
            i += 1;
            next += interval;
        }
        let mut r = Run::empty();
        for h in handles {
            if let Ok((lat, err)) = h.await {
                r.calls += 1;
                let _ = r.latency_us.record(lat.as_micros() as u64);
                if let Some(e) = err {
                    *r.errors.entry(e).or_default() += 1;
                }
            }
        }
        vec![r]
    } else {
        let mut tasks = Vec::new();
        for w in 0..args.concurrency.max(1) {
            let ch = channels[w % channels.len()].clone();
            let work = work.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = Run::empty();
                let mut i = w;
                while Instant::now() < deadline {
                    let body = work.bodies[i % work.bodies.len()].clone();
                    i += 7;
                    let t = Instant::now();
                    let res = call(ch.clone(), work.mode, body).await;
                    let _ = r.latency_us.record(t.elapsed().as_micros() as u64);
                    r.calls += 1;
                    if let Err(s) = res {
                        *r.errors.entry(format!("{:?}", s.code())).or_default() += 1;
                    }
                }
                r
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    };
    for r in &results {
        run.merge(r);
    }
    run.elapsed = started.elapsed();
    let failed: u64 = run.errors.values().sum();
    run.bags = (run.calls - failed.min(run.calls)) * work.bags_per_call;
    if let (Some(before), Some(after)) = (cpu_before, pid.and_then(process_cpu)) {
        run.server_cpu = Some(after.saturating_sub(before));
    }
    run
}

fn print_human(label: &str, f: &Json) {
    println!(
        "{label}: {:.0} calls/s, {:.0} bags/s; latency p50 {} µs, p90 {} µs, p99 {} µs, max {} µs; errors {}",
        f["calls_per_s"].as_f64().unwrap_or(0.0),
        f["bags_per_s"].as_f64().unwrap_or(0.0),
        f["p50_us"],
        f["p90_us"],
        f["p99_us"],
        f["max_us"],
        f["errors"],
    );
    if let Some(c) = f["server_cpu_us_per_bag"].as_f64() {
        println!(
            "{label}: server CPU {:.1} µs per call, {:.2} µs per bag; peak RSS {:.1} MB",
            f["server_cpu_us_per_call"].as_f64().unwrap_or(0.0),
            c,
            f["peak_rss_mb"].as_f64().unwrap_or(0.0)
        );
    }
}

/// A server started for comparison mode.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.server_bin {
        return Ok(p.clone());
    }
    let me = std::env::current_exe()?;
    let candidate = me.with_file_name("mixer");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "cannot find the mixer binary next to {}; build it (cargo build --release -p mixer) or pass --server-bin",
        me.display()
    )
}

/// Starts `command` (the server binary, or a wrapper whose last argument is the binary) as
/// `mixer server` on `config` with free loopback ports, and waits up to `patience` for it to
/// report its gRPC address.
fn start_server(
    mut command: Command,
    config: &Path,
    extra: &[String],
    patience: Duration,
) -> Result<Server> {
    let mut child = command
        .args([
            "server",
            "--address",
            "127.0.0.1:0",
            "--monitoring-address",
            "127.0.0.1:0",
            "--prometheus-address",
            "127.0.0.1:0",
            "--log-level",
            "warn,mixer::server=info",
        ])
        .arg("--config-dir")
        .arg(config)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let stderr = child.stderr.take().context("server stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + patience;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .context("the server did not report its address")?;
        if line.contains("gRPC API listening")
            && let Some(addr) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
        {
            let address = addr.to_owned();
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in rx {});
            return Ok(Server { child, address });
        }
    }
}

impl Server {
    /// SIGTERM, then waits up to `patience` for a clean exit.
    fn stop(&mut self, patience: Duration) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the server did not stop within {patience:?}")
    }
}

async fn compare(args: &Args, a_dir: &Path, b_dir: &Path) -> Result<Json> {
    let bin = server_binary(args)?;
    let patience = Duration::from_secs(60);
    let a = start_server(Command::new(&bin), a_dir, &args.server_args, patience)?;
    let b = start_server(Command::new(&bin), b_dir, &args.server_args, patience)?;
    let work = Arc::new(workload(args));
    let ca = connect(&a.address, args.connections).await?;
    let cb = connect(&b.address, args.connections).await?;
    let warm = Duration::from_secs_f64(args.warmup);
    drive(&ca, &work, args, warm, None).await;
    drive(&cb, &work, args, warm, None).await;
    let rounds = args.rounds.max(1);
    let slice = Duration::from_secs_f64(args.duration / rounds as f64);
    let (mut ra, mut rb) = (Run::empty(), Run::empty());
    for _ in 0..rounds {
        ra.merge(&drive(&ca, &work, args, slice, Some(a.child.id())).await);
        rb.merge(&drive(&cb, &work, args, slice, Some(b.child.id())).await);
    }
    let fa = ra.figures(peak_rss_mb(a.child.id()));
    let fb = rb.figures(peak_rss_mb(b.child.id()));
    let mut ratio = serde_json::Map::new();
    for key in [
        "calls_per_s",
        "bags_per_s",
        "p50_us",
        "p99_us",
        "server_cpu_us_per_call",
        "server_cpu_us_per_bag",
        "peak_rss_mb",
    ] {
        let r = match (fa[key].as_f64(), fb[key].as_f64()) {
            (Some(x), Some(y)) if y != 0.0 => json!(x / y),
            _ => Json::Null,
        };
        ratio.insert(key.to_owned(), r);
    }
    Ok(json!({
        "mode": args.mode.name(),
        "a": fa,
        "b": fb,
        "ratio": ratio,
    }))
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.count_instructions {
        // Every distinct request is sent once to warm up, so the measured calls find every
        // series, cache entry and buffer already there: steady state.
        args.distinct = args.calls.max(1) as usize;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if args.count_instructions {
            let out = counted::compare(&args, Arc::new(workload(&args))).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        match (&args.config, &args.baseline_config) {
            (Some(a), Some(b)) => {
                let out = compare(&args, a, b).await?;
                if args.json {
                    println!("{out}");
                } else {
                    print_human("A", &out["a"]);
                    print_human("B", &out["b"]);
                    println!("ratio A/B: {}", out["ratio"]);
                }
            }
            (None, None) => {
                let work = Arc::new(workload(&args));
                let channels = connect(&args.address, args.connections).await?;
                let run = drive(
                    &channels,
                    &work,
                    &args,
                    Duration::from_secs_f64(args.duration),
                    args.server_pid,
                )
                .await;
                let f = run.figures(args.server_pid.and_then(peak_rss_mb));
                if args.json {
                    let mut out = f;
                    out["mode"] = json!(args.mode.name());
                    println!("{out}");
                } else {
                    print_human(args.mode.name(), &f);
                }
            }
            _ => bail!("comparison mode needs both --config and --baseline-config"),
        }
        Ok(())
    })
}
