//! `mixer check` and `mixer report`: the Istio `mixc` role. Attributes given on the
//! command line are encoded exactly as Envoy encodes them (global dictionary words where
//! known, the rest as message words), and the answer is printed decoded.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use expr_lang::{Manifest, Value};
use mixer::api::mixer::decode_referenced;
use mixer::attrs::{AttributeEncoder, GLOBAL_WORD_COUNT, encode_report};
use mixer::wire::pb::istio::mixer::v1::{
    CheckRequest, HeaderOperation, check_request, mixer_client::MixerClient,
};
use templates::code;

use super::expr::parse_attr;

/// `println!` that ignores a closed stdout (`mixer check ... | head -1`), instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[derive(Args)]
pub struct CommonArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9091")]
    address: String,
    /// An attribute: `name=value` (type from Istio's attribute vocabulary) or
    /// `name:TYPE=value`; STRING_MAP values are written `k1:v1;k2:v2`. Repeatable.
    #[arg(short = 'a', long = "attr", value_name = "NAME[:TYPE]=VALUE")]
    attrs: Vec<String>,
    /// Global dictionary words the client claims to know (Envoy sends 222).
    #[arg(long = "global-word-count", default_value_t = GLOBAL_WORD_COUNT as u32)]
    global_word_count: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// A quota to allocate: `name=amount` (repeatable).
    #[arg(short = 'q', long = "quota", value_name = "NAME=AMOUNT")]
    quotas: Vec<String>,
    /// Accept partial quota grants.
    #[arg(long = "best-effort")]
    best_effort: bool,
    /// Deduplication id of the call (default: a fresh one).
    #[arg(long = "dedup-id")]
    dedup_id: Option<String>,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    common: CommonArgs,
}

fn attributes(specs: &[String]) -> Result<Vec<(String, Value<'static>)>> {
    let vocabulary = Manifest::istio_vocabulary();
    specs
        .iter()
        .map(|s| parse_attr(s, &vocabulary).map(|(n, _, v)| (n, v)))
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn connect(common: &CommonArgs) -> Result<MixerClient<tonic::transport::Channel>> {
    let url = if common.address.contains("://") {
        common.address.clone()
    } else {
        format!("http://{}", common.address)
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .with_context(|| format!("--address {:?}", common.address))?
        .timeout(Duration::from_secs(common.timeout))
        .connect_timeout(Duration::from_secs(common.timeout));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(MixerClient::new(channel))
}

fn duration_text(d: Option<&prost_types::Duration>) -> String {
    match d {
        None => "unset".to_owned(),
        Some(d) => {
            let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
            expr_lang::golib::duration::format_duration(i64::try_from(nanos).unwrap_or(i64::MAX))
        }
    }
}

fn status_text(s: Option<&mixer::wire::pb::google::rpc::Status>) -> String {
    match s {
        None => "OK".to_owned(),
        Some(s) if s.message.is_empty() => code::name(s.code).to_owned(),
        Some(s) => format!("{} ({}): {}", code::name(s.code), s.code, s.message),
    }
}

fn header_ops_text(ops: &[HeaderOperation]) -> String {
    ops.iter()
        .map(|o| {
            let op = match o.operation {
                1 => "REMOVE",
                2 => "APPEND",
                _ => "REPLACE",
            };
            format!("{op} {}: {:?}", o.name, o.value)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn referenced_text(r: Option<&mixer::wire::pb::istio::mixer::v1::ReferencedAttributes>) -> String {
    let Some(r) = r else {
        return "none".to_owned();
    };
    match decode_referenced(r) {
        Ok(list) if list.is_empty() => "none".to_owned(),
        Ok(list) => list
            .iter()
            .map(|r| {
                let target = match &r.map_key {
                    Some(k) => format!("{}[{k}]", r.name),
                    None => r.name.clone(),
                };
                format!("{target} ({:?})", r.condition)
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("undecodable: {e}"),
    }
}

pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let attrs = attributes(&args.common.attrs)?;
    let mut quotas = BTreeMap::new();
    for q in &args.quotas {
        let Some((name, amount)) = q.split_once('=') else {
            bail!("--quota {q:?}: expected NAME=AMOUNT");
        };
        let amount: i64 = amount
            .trim()
            .parse()
            .with_context(|| format!("--quota {q:?}: amount must be an integer"))?;
        quotas.insert(
            name.to_owned(),
            check_request::QuotaParams {
                amount,
                best_effort: args.best_effort,
            },
        );
    }
    let mut encoder = AttributeEncoder::new(args.common.global_word_count);
    let mut compressed = encoder.encode(&attrs);
    compressed.words = encoder.into_words();
    let dedup = args.dedup_id.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("mixer-cli-{}-{nanos}", std::process::id())
    });
    let request = CheckRequest {
        attributes: Some(compressed),
        global_word_count: args.common.global_word_count,
        deduplication_id: dedup,
        quotas,
    };
    runtime()?.block_on(async {
        let mut client = connect(&args.common).await?;
        let response = match client.check(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                out!(
                    "Check failed: {} ({}): {}",
                    code::name(status.code() as i32),
                    status.code() as i32,
                    status.message()
                );
                return Ok(ExitCode::from(2));
            }
        };
        let pre = response.precondition.unwrap_or_default();
        let ok = pre.status.as_ref().is_none_or(|s| s.code == code::OK);
        out!("precondition: {}", status_text(pre.status.as_ref()));
        out!(
            "  valid duration: {}",
            duration_text(pre.valid_duration.as_ref())
        );
        out!("  valid use count: {}", pre.valid_use_count);
        out!(
            "  referenced: {}",
            referenced_text(pre.referenced_attributes.as_ref())
        );
        if let Some(rd) = &pre.route_directive {
            if rd.direct_response_code != 0 {
                out!(
                    "  direct response: {} {:?}",
                    rd.direct_response_code,
                    rd.direct_response_body
                );
            }
            if !rd.request_header_operations.is_empty() {
                out!(
                    "  request headers: {}",
                    header_ops_text(&rd.request_header_operations)
                );
            }
            if !rd.response_header_operations.is_empty() {
                out!(
                    "  response headers: {}",
                    header_ops_text(&rd.response_header_operations)
                );
            }
        }
        let mut names: Vec<_> = response.quotas.keys().cloned().collect();
        names.sort();
        for name in names {
            let q = &response.quotas[&name];
            out!(
                "quota {name}: granted {}, valid {}, status {}",
                q.granted_amount,
                duration_text(q.valid_duration.as_ref()),
                status_text(q.status.as_ref())
            );
            out!(
                "  referenced: {}",
                referenced_text(q.referenced_attributes.as_ref())
            );
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let attrs = attributes(&args.common.attrs)?;
    let request = encode_report(args.common.global_word_count, &[attrs]);
    runtime()?.block_on(async {
        let mut client = connect(&args.common).await?;
        match client.report(request).await {
            Ok(_) => {
                out!("Report accepted.");
                Ok(ExitCode::SUCCESS)
            }
            Err(status) => {
                out!(
                    "Report failed: {} ({}): {}",
                    code::name(status.code() as i32),
                    status.code() as i32,
                    status.message()
                );
                Ok(ExitCode::from(2))
            }
        }
    })
}
