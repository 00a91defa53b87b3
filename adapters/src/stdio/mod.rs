//! `stdio`: writes log entries and metrics to standard output, standard error or files.
//!
//! Each instance becomes one line, formatted as Mixer's stdio adapter wrote it (see
//! [`mod@format`]): `level`, `time`, `instance`, then the variables (or `value` and the
//! dimensions) sorted by name, as a JSON object or in zap's console form.
//!
//! Lines are formatted on the caller's thread, because instances borrow from the
//! request and formatting is the cheapest way to detach them (one `String` per line,
//! no copy of every value), and then handed to a bounded queue drained by one writer
//! thread (see [`writer`]). Report never waits for output: when the queue is full the
//! line is dropped and counted in `mixer_adapter_stdio_dropped_lines_total`, as are lines
//! lost because the stream or file refused them (a full disk, a closed pipe).

pub mod config;
pub mod format;
pub mod rotate;
pub mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ::prometheus::{IntCounter, IntCounterVec, Opts};
use expr_lang::Value;
use expr_lang::golib::time::Timestamp;
use templates::handler::{LogEntryHandler, MetricHandler};
use templates::instances::{Dims, logentry, metric};
use templates::{Handler, HandlerError, TemplateKind};

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};
use config::{Config, Level, Stream};
use format::{IpStyle, Layout, Line, ZERO_TIME};
use rotate::{Limits, RotatingFile};
use writer::{BUFFER_BYTES, LineBuffer, LineSink, Writer};

/// Lines a handler's queue holds before it drops new ones. At the ~1 KB of an Istio
/// access log line this bounds a stalled handler's memory to about 8 MB, and it absorbs
/// bursts of several thousand requests while the writer catches up. Unusually long lines
/// are bounded by [`writer::QUEUE_BYTES`] as well.
pub const QUEUE_LINES: usize = 8192;

/// Layouts a handler keeps. A configuration has a handful of maps per handler; the
/// bound only matters for a handler that outlives many configurations, whose old
/// layouts are then forgotten together.
const MAX_LAYOUTS: usize = 64;

/// Name of the self-metric counting dropped lines, labelled by handler.
pub const DROPPED_METRIC: &str = "mixer_adapter_stdio_dropped_lines_total";

/// The stdio adapter.
pub struct StdioAdapter;

/// The stdio adapter, for [`crate::inventory`].
pub static ADAPTER: StdioAdapter = StdioAdapter;

impl Adapter for StdioAdapter {
    type Config = Config;

    fn name(&self) -> &'static str {
        "stdio"
    }

    fn description(&self) -> &'static str {
        "Writes log entries and metrics to standard output, standard error or files"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::LogEntry, TemplateKind::Metric]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        config::validate(input).into()
    }

    fn build(&self, config: Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let sink = open_sink(&config).map_err(|error| BuildError::Io {
            adapter: "stdio",
            action: format!(
                "open {}",
                config
                    .output_path
                    .as_deref()
                    .unwrap_or(config.log_stream.name())
            ),
            error,
        })?;
        let handler =
            StdioHandler::with_sink(config, &env.handler, sink, QUEUE_LINES, dropped(env))
                .map_err(|error| BuildError::Io {
                    adapter: "stdio",
                    action: "start the writer thread".to_owned(),
                    error,
                })?;
        Ok(Arc::new(handler))
    }
}

/// The process-wide drop counter, registered into `env`'s self-metrics registry, with
/// this handler's label.
///
/// One counter serves every handler of every config generation, so a handler rebuilt
/// on reload keeps counting in the same series. Registering it again into the same
/// registry is refused as "already registered", which is the expected case.
fn dropped(env: &Env) -> IntCounter {
    static COUNTER: OnceLock<IntCounterVec> = OnceLock::new();
    let vec = COUNTER.get_or_init(|| {
        IntCounterVec::new(
            Opts::new(
                DROPPED_METRIC,
                "Lines the stdio adapter dropped because its output queue was full, its \
                 writer had stopped, or the stream or file refused them.",
            ),
            &["handler"],
        )
        // The name, help and label are constants that satisfy the registry's rules.
        .expect("constant metric definition is valid")
    });
    match env.resources.metrics.register(Box::new(vec.clone())) {
        Ok(()) | Err(::prometheus::Error::AlreadyReg) => {}
        Err(e) => tracing::warn!(error = %e, "cannot register {DROPPED_METRIC}"),
    }
    vec.with_label_values(&[env.handler.as_str()])
}

/// Opens the configured stream or file.
fn open_sink(config: &Config) -> io::Result<Box<dyn LineSink>> {
    let path = || {
        // Validation requires a path for file streams; keep the failure an error anyway.
        config.output_path.as_deref().map(Path::new).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {} log stream needs an output path", config.log_stream),
            )
        })
    };
    Ok(match config.log_stream {
        Stream::Stdout => Box::new(LineBuffer::with_capacity(BUFFER_BYTES, io::stdout())),
        Stream::Stderr => Box::new(LineBuffer::with_capacity(BUFFER_BYTES, io::stderr())),
        Stream::File => Box::new(LineBuffer::with_capacity(
            BUFFER_BYTES,
            rotate::open_append(path()?)?,
        )),
        Stream::RotatedFile => Box::new(RotatingFile::open(
            path()?,
            Limits::from_config(&config.rotation),
        )?),
    })
}

/// A running stdio handler.
pub struct StdioHandler {
    config: Config,
    writer: Writer,
    /// The layouts of the maps this handler has written, found by [`Layout::fits`].
    layouts: RwLock<Vec<Arc<Layout>>>,
}

impl StdioHandler {
    /// A handler writing to `sink` through a queue of `capacity` lines.
    pub(crate) fn with_sink(
        config: Config,
        handler: &str,
        sink: Box<dyn LineSink>,
        capacity: usize,
        dropped: IntCounter,
    ) -> io::Result<StdioHandler> {
        Ok(StdioHandler {
            writer: Writer::spawn(handler, sink, capacity, dropped)?,
            config,
            layouts: RwLock::new(Vec::new()),
        })
    }

    /// The layout of the map named `names`, reusing `last` (the previous instance's)
    /// when it fits, as it does for every instance of a batch from one rule.
    fn layout_for(&self, names: &[Arc<str>], last: &mut Option<Arc<Layout>>) -> Arc<Layout> {
        if let Some(layout) = last.as_ref().filter(|l| l.fits(names)) {
            return layout.clone();
        }
        let found = self
            .layouts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|l| l.fits(names))
            .cloned();
        let layout = found.unwrap_or_else(|| {
            let layout = Arc::new(Layout::new(names));
            let mut layouts = self.layouts.write().unwrap_or_else(PoisonError::into_inner);
            if layouts.len() >= MAX_LAYOUTS {
                layouts.clear();
            }
            layouts.push(layout.clone());
            layout
        });
        *last = Some(layout.clone());
        layout
    }

    /// Formats one line: `first` (the metric value), then `fields` in `layout`'s order
    /// (Mixer sorted names by byte value).
    fn line<'v>(
        &self,
        header: (Level, &Timestamp, &str),
        first: Option<Option<&Value<'v>>>,
        fields: &Dims<'v>,
        layout: &Layout,
        ip: IpStyle,
    ) -> String {
        let (level, time, instance) = header;
        let size = layout.keys_len() + 24 * fields.len() + 96 + instance.len();
        let mut line = Line::start(self.config.output_as_json, level, time, instance, size);
        if let Some(value) = first {
            line.field_with_prefix(VALUE_KEY, value, ip);
        }
        for (prefix, i) in layout.fields() {
            if let Some(value) = fields.values.get(i) {
                line.field_with_prefix(prefix, Some(value), ip);
            }
        }
        line.finish()
    }
}

/// The key of a metric line's value, as [`format::key_prefix`] writes it.
const VALUE_KEY: &str = "\"value\":";

/// The wall clock as a timestamp (metric lines carry the time they were handled).
fn now() -> Timestamp {
    // A clock before 1970 is broken; printing the epoch then is as good as anything.
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

impl LogEntryHandler for StdioHandler {
    fn handle_log_entry(&self, instances: &[logentry::Instance<'_>]) -> Result<(), HandlerError> {
        let mut lines = Vec::with_capacity(instances.len());
        let mut last = None;
        for inst in instances {
            let level = self.config.level_for(&inst.severity);
            // Checked before formatting, so filtered entries cost nothing.
            if level < self.config.output_level {
                continue;
            }
            let time = inst.timestamp.unwrap_or(ZERO_TIME);
            let layout = self.layout_for(inst.variables.names, &mut last);
            let line = self.line(
                (level, &time, inst.name),
                None,
                &inst.variables,
                &layout,
                IpStyle::Text,
            );
            lines.push(line);
        }
        self.writer.push_lines(lines);
        Ok(())
    }
}

impl MetricHandler for StdioHandler {
    fn handle_metric(&self, instances: &[metric::Instance<'_>]) -> Result<(), HandlerError> {
        let level = self.config.metric_level;
        if level < self.config.output_level {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(instances.len());
        let mut last = None;
        for inst in instances {
            let layout = self.layout_for(inst.dimensions.names, &mut last);
            let line = self.line(
                (level, &now(), inst.name),
                Some(inst.value.as_ref()),
                &inst.dimensions,
                &layout,
                IpStyle::Base64,
            );
            lines.push(line);
        }
        self.writer.push_lines(lines);
        Ok(())
    }
}

impl Handler for StdioHandler {
    fn log_entry(&self) -> Option<&dyn LogEntryHandler> {
        Some(self)
    }

    fn metric(&self) -> Option<&dyn MetricHandler> {
        Some(self)
    }

    /// Writes every line accepted so far, flushes, and stops the writer thread.
    fn close(&self) {
        self.writer.close();
    }
}
