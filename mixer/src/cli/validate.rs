//! `mixer validate DIR...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use mixer::config::Severity;
use mixer::config::compile::{CompileOptions, compile};
use mixer::config::store::read_dirs;

#[derive(Args)]
pub struct ValidateArgs {
    /// Configuration directories (or files) to check.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Rules in this namespace apply to every request.
    #[arg(long = "default-namespace", default_value = "istio-system")]
    default_namespace: String,
    /// Treat warnings (skipped resources, dangling references) as errors.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let read = read_dirs(&args.dirs);
    let compiled = compile(
        &read.documents,
        &CompileOptions {
            default_namespace: args.default_namespace,
            build_handlers: false,
            generation: 1,
            resources: Default::default(),
        },
        None,
    );
    let mut errors = 0;
    let mut warnings = 0;
    for e in &read.errors {
        errors += 1;
        println!("{e}");
    }
    for d in &compiled.diagnostics {
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
        println!("{d}");
    }
    let s = compiled.snapshot.summary;
    let failed = errors > 0 || (args.strict && warnings > 0);
    let bindings = match compiled.snapshot.quota_bindings.len() {
        0 => String::new(),
        n => format!(", {n} quota spec bindings"),
    };
    println!(
        "{}: {} files, {} documents; {} rules, {} instances, {} handlers, {} attributes{bindings}; {errors} errors, {warnings} warnings",
        if failed { "invalid" } else { "valid" },
        read.files,
        read.documents.len(),
        s.rules,
        s.instances,
        s.handlers,
        s.attributes,
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
