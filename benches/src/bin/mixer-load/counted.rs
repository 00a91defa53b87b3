//! `--count-instructions`: the server runs under valgrind's callgrind and the figures are
//! exact counts, not seconds. Each configuration is profiled twice, with the same start-up
//! and warm-up and then `--calls` or 3 × `--calls` measured calls; the difference between
//! the two profiles is the cost of 2 × `--calls` calls at steady state, with start-up,
//! configuration loading and shutdown cancelled out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use benches::callgrind::{self, Counts};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::{Value as Json, json};
use tonic::transport::Channel;

use crate::{Args, Workload, call, connect, server_binary, start_server};

/// How long a server under callgrind (tens of times slower) may take to start or stop.
const VALGRIND_PATIENCE: Duration = Duration::from_secs(600);

/// Where `samples/default`'s `otlp` handler sends spans.
const SAMPLE_OTLP_RECEIVERS: [&str; 2] = ["127.0.0.1:4317", "[::1]:4317"];

/// Counts per bag for `--config`, and for `--baseline-config` when given, with their ratio.
pub async fn compare(args: &Args, work: Arc<Workload>) -> Result<Json> {
    let Some(config) = &args.config else {
        bail!(
            "--count-instructions starts its own servers: give --config (and optionally --baseline-config)"
        );
    };
    start_span_sinks().await;
    let a = per_bag(args, &work, config).await?;
    let Some(baseline) = &args.baseline_config else {
        return Ok(json!({ "mode": args.mode.name(), "a": a }));
    };
    let b = per_bag(args, &work, baseline).await?;
    let ratio = |key: &str| match (a[key].as_f64(), b[key].as_f64()) {
        (Some(x), Some(y)) if y != 0.0 => json!(x / y),
        _ => Json::Null,
    };
    Ok(json!({
        "mode": args.mode.name(),
        "a": a,
        "b": b,
        "ratio": {
            "instructions_per_bag": ratio("instructions_per_bag"),
            "allocations_per_bag": ratio("allocations_per_bag"),
        },
    }))
}

/// Instructions and allocator calls per bag (and per call) for one configuration.
async fn per_bag(args: &Args, work: &Arc<Workload>, config: &Path) -> Result<Json> {
    let short = profile(args, work, config, args.calls).await?;
    let long = profile(args, work, config, 3 * args.calls).await?;
    let extra = long.since(short);
    let calls = 2 * args.calls;
    let bags = calls * work.bags_per_call;
    let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    Ok(json!({
        "config": config.display().to_string(),
        "measured_calls": calls,
        "measured_bags": bags,
        "instructions_per_bag": per(extra.instructions, bags),
        "instructions_per_call": per(extra.instructions, calls),
        "allocations_per_bag": per(extra.allocations, bags),
        "reallocations_per_bag": per(extra.reallocations, bags),
        "allocations_per_call": per(extra.allocations, calls),
    }))
}

/// Starts a server on `config` under callgrind, warms it up with every distinct request
/// once, sends `calls` more, stops it with SIGTERM and reads its profile.
async fn profile(args: &Args, work: &Arc<Workload>, config: &Path, calls: u64) -> Result<Counts> {
    let out = profile_path(args, config, calls);
    let mut command = std::process::Command::new(&args.valgrind);
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args(["--compress-strings=no", "--compress-pos=no", "-q"])
        .arg(server_binary(args)?);
    let mut extra = args.server_args.clone();
    // A config poll costs work in proportion to wall time, which differs between the two
    // profiles; the measured window must count requests only.
    extra.extend(["--reload-poll-interval".to_owned(), "1h".to_owned()]);
    let mut server = start_server(command, config, &extra, VALGRIND_PATIENCE)?;
    let channels = connect(&server.address, 1).await?;
    let pid = server.child.id();
    send(&channels[0], work, work.bodies.len() as u64, pid).await?;
    send(&channels[0], work, calls, pid).await?;
    drop(channels);
    server.stop(VALGRIND_PATIENCE)?;
    let text = std::fs::read_to_string(&out)
        .with_context(|| format!("reading the callgrind profile {}", out.display()))?;
    if args.profile_dir.is_none() {
        let _ = std::fs::remove_file(&out);
    }
    callgrind::parse(&text).with_context(|| format!("parsing {}", out.display()))
}

/// One call at a time, cycling through the workload's requests, each followed by the
/// server settling; any error fails the count.
async fn send(channel: &Channel, work: &Workload, calls: u64, pid: u32) -> Result<()> {
    for i in 0..calls as usize {
        let body = work.bodies[i % work.bodies.len()].clone();
        call(channel.clone(), work.mode, body)
            .await
            .with_context(|| format!("call {i} under callgrind failed"))?;
        settle(pid).await;
    }
    Ok(())
}

/// Waits until the server has used no CPU for a few samples in a row. Callgrind runs one
/// thread at a time, so work a call leaves to background threads (span export, the access
/// log writer) would otherwise compete with the next call, and how much of it runs — or
/// how many spans a full export queue drops — would depend on timing, not on the code.
async fn settle(pid: u32) {
    const QUIET_SAMPLES: u32 = 3;
    const SAMPLE: Duration = Duration::from_millis(40);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = crate::process_cpu(pid);
    let mut quiet = 0;
    while quiet < QUIET_SAMPLES && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(SAMPLE).await;
        let now = crate::process_cpu(pid);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// `callgrind.<config directory name>.<calls>.out` in `--profile-dir`, else a temporary
/// file.
fn profile_path(args: &Args, config: &Path, calls: u64) -> PathBuf {
    match &args.profile_dir {
        Some(dir) => {
            let name = config.file_name().map(|n| n.to_string_lossy().into_owned());
            dir.join(format!(
                "callgrind.{}.{calls}.out",
                name.unwrap_or_else(|| "config".to_owned())
            ))
        }
        None => std::env::temp_dir().join(format!(
            "mixer-load-callgrind-{}-{calls}.out",
            std::process::id()
        )),
    }
}

/// Accepts and discards OTLP trace exports, as a collector would: without one, every
/// export fails after a connection attempt whose count depends on wall time (so on how
/// slow callgrind is), and the final flush waits out the retries.
struct SpanSink;

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        _request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A [`SpanSink`] on each of the sample's receiver addresses that is free.
async fn start_span_sinks() {
    for address in SAMPLE_OTLP_RECEIVERS {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => {
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(SpanSink))
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
                );
            }
            Err(e) => eprintln!("no OTLP span sink on {address} ({e}); span exports may fail"),
        }
    }
}
