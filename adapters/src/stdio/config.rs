//! Params of the `stdio` adapter (`adapter.stdio.config.Params`, Istio 1.4) and their
//! validation into a [`Config`] a handler can be built from.

use std::collections::BTreeMap;

use serde::Deserialize;
use templates::ParamError;

use crate::ValidateInput;
use crate::params;
use crate::prometheus::pbjson::{Entries, decode_object, nullable, opt_int, pb_enum};

/// Default of [`Params::max_megabytes_before_rotation`]. Mixer's default is
/// 100 × 1024 × 1024 "megabytes" (a unit mix-up kept for compatibility).
pub const DEFAULT_MAX_MEGABYTES_BEFORE_ROTATION: u32 = 100 * 1024 * 1024;
/// Default of [`Params::max_days_before_rotation`].
pub const DEFAULT_MAX_DAYS_BEFORE_ROTATION: u32 = 30;
/// Default of [`Params::max_rotated_files`].
pub const DEFAULT_MAX_ROTATED_FILES: u32 = 1000;

/// The default `severity_levels` map (replaced entirely when the map is given).
pub const DEFAULT_SEVERITY_LEVELS: [(&str, Level); 14] = [
    ("INFORMATIONAL", Level::Info),
    ("informational", Level::Info),
    ("INFO", Level::Info),
    ("info", Level::Info),
    ("WARNING", Level::Warning),
    ("warning", Level::Warning),
    ("WARN", Level::Warning),
    ("warn", Level::Warning),
    ("ERROR", Level::Error),
    ("error", Level::Error),
    ("ERR", Level::Error),
    ("err", Level::Error),
    ("FATAL", Level::Error),
    ("fatal", Level::Error),
];

pb_enum! {
    /// Where output goes.
    pub enum Stream {
        /// Standard output (the default).
        Stdout = "STDOUT",
        /// Standard error.
        Stderr = "STDERR",
        /// The file at `outputPath`.
        File = "FILE",
        /// The file at `outputPath`, rotated by size and age.
        RotatedFile = "ROTATED_FILE",
    }
}

pb_enum! {
    /// Importance of an output line.
    pub enum Level {
        Info = "INFO",
        Warning = "WARNING",
        Error = "ERROR",
    }
}

impl Level {
    /// How the level is printed in the `level` field: `info`, `warn`, `error`.
    pub fn output_name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warn",
            Level::Error => "error",
        }
    }
}

/// The handler params, as written under a `stdio` handler's `params:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Where to write: `STDOUT` (default), `STDERR`, `FILE` or `ROTATED_FILE`.
    #[serde(rename = "logStream", alias = "log_stream", default)]
    pub log_stream: Stream,

    /// Maps a log entry's `severity` text (exact, case-sensitive) to an output level;
    /// unknown severities print as `INFO`. Giving the map replaces the default one,
    /// which maps `INFORMATIONAL`/`informational`/`INFO`/`info` to `INFO`,
    /// `WARNING`/`warning`/`WARN`/`warn` to `WARNING` and
    /// `ERROR`/`error`/`ERR`/`err`/`FATAL`/`fatal` to `ERROR`.
    #[serde(rename = "severityLevels", alias = "severity_levels", default)]
    pub severity_levels: Option<Entries<Level>>,

    /// The level metric lines are written at. Default `INFO`.
    #[serde(rename = "metricLevel", alias = "metric_level", default)]
    pub metric_level: Level,

    /// Write each line as a JSON object (default true) rather than tab-separated
    /// console text.
    #[serde(rename = "outputAsJson", alias = "output_as_json", default)]
    pub output_as_json: Option<bool>,

    /// Lines below this level are dropped. Default `INFO` (nothing dropped).
    #[serde(rename = "outputLevel", alias = "output_level", default)]
    pub output_level: Level,

    /// The file written for `FILE` and `ROTATED_FILE` (required then); must be empty
    /// for `STDOUT` and `STDERR`.
    #[serde(
        rename = "outputPath",
        alias = "output_path",
        default,
        deserialize_with = "nullable"
    )]
    pub output_path: String,

    /// `ROTATED_FILE`: size that triggers a rotation. Default 104857600 (Mixer's
    /// default, which it meant as 100 MB but passed as megabytes).
    #[serde(
        rename = "maxMegabytesBeforeRotation",
        alias = "max_megabytes_before_rotation",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_megabytes_before_rotation: Option<i32>,

    /// `ROTATED_FILE`: age in days that triggers a rotation. Default 30. (Mixer passed
    /// this value to its rotation library as the number of files to keep.)
    #[serde(
        rename = "maxDaysBeforeRotation",
        alias = "max_days_before_rotation",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_days_before_rotation: Option<i32>,

    /// `ROTATED_FILE`: number of rotated files kept. Default 1000. (Mixer passed this
    /// value to its rotation library as the maximum age in days.)
    #[serde(
        rename = "maxRotatedFiles",
        alias = "max_rotated_files",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_rotated_files: Option<i32>,
}

/// Validated params: what a stdio handler is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where output goes.
    pub log_stream: Stream,
    /// The file for `FILE` / `ROTATED_FILE`; `None` for `STDOUT` / `STDERR`.
    pub output_path: Option<String>,
    /// Severity text ⇒ level (exact lookup; see [`Config::level_for`]).
    pub severity_levels: BTreeMap<String, Level>,
    /// Level of metric lines.
    pub metric_level: Level,
    /// Lines below this level are dropped.
    pub output_level: Level,
    /// JSON lines (true) or tab-separated console text (false).
    pub output_as_json: bool,
    /// Rotation limits, as configured (meaningful for `ROTATED_FILE` only).
    pub rotation: Rotation,
}

impl Config {
    /// The level of a log entry with this `severity`: exact, case-sensitive lookup,
    /// `INFO` when unknown.
    pub fn level_for(&self, severity: &str) -> Level {
        self.severity_levels
            .get(severity)
            .copied()
            .unwrap_or(Level::Info)
    }
}

/// Rotation limits of a `ROTATED_FILE` stream, each field as its param says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_megabytes_before_rotation: u32,
    pub max_days_before_rotation: u32,
    pub max_rotated_files: u32,
}

/// Validates params into a [`Config`], reporting every problem with its field path.
pub fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    let severity_levels = match p.severity_levels {
        None => DEFAULT_SEVERITY_LEVELS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        Some(entries) => entries.into_decoded("params.severityLevels", &mut errors),
    };

    let output_path = match p.log_stream {
        Stream::Stdout | Stream::Stderr => {
            if !p.output_path.is_empty() {
                errors.push(params::error(
                    "params.outputPath",
                    format!(
                        "cannot specify an output path when using a {} log stream",
                        p.log_stream
                    ),
                ));
            }
            None
        }
        Stream::File | Stream::RotatedFile => {
            if p.output_path.is_empty() {
                errors.push(params::error(
                    "params.outputPath",
                    format!(
                        "need a valid output path when using a {} log stream",
                        p.log_stream
                    ),
                ));
            }
            Some(p.output_path)
        }
    };

    let mut limit = |field: &str, v: Option<i32>, default: u32| -> u32 {
        match v {
            None => default,
            Some(n) => u32::try_from(n).unwrap_or_else(|_| {
                errors.push(params::error(
                    format!("params.{field}"),
                    format!("must not be negative, found {n}"),
                ));
                default
            }),
        }
    };
    let rotation = Rotation {
        max_megabytes_before_rotation: limit(
            "maxMegabytesBeforeRotation",
            p.max_megabytes_before_rotation,
            DEFAULT_MAX_MEGABYTES_BEFORE_ROTATION,
        ),
        max_days_before_rotation: limit(
            "maxDaysBeforeRotation",
            p.max_days_before_rotation,
            DEFAULT_MAX_DAYS_BEFORE_ROTATION,
        ),
        max_rotated_files: limit(
            "maxRotatedFiles",
            p.max_rotated_files,
            DEFAULT_MAX_ROTATED_FILES,
        ),
    };

    if errors.is_empty() {
        Ok(Config {
            log_stream: p.log_stream,
            output_path,
            severity_levels,
            metric_level: p.metric_level,
            output_level: p.output_level,
            output_as_json: p.output_as_json.unwrap_or(true),
            rotation,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn run(params: Json) -> Result<Config, Vec<ParamError>> {
        validate(&ValidateInput {
            handler: "stdio.istio-system",
            params: &params,
            instances: &[],
        })
    }

    fn ok(params: Json) -> Config {
        run(params).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    fn has(errors: &[ParamError], field: &str, text: &str) {
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains(text)),
            "no error at {field} containing {text:?} in {errors:#?}"
        );
    }

    /// Every distinct stdio handler's params in the real Istio configs.
    fn real_configs() -> Vec<(&'static str, Json)> {
        vec![
            // Default Helm config with stdio on (1.1.17 with-stdio, 1.4.10 demo) and
            // mixer/testdata/config/accesslog.yaml.
            (
                "default chart 1.1/1.4, testdata accesslog",
                json!({"outputAsJson": true}),
            ),
            // samples/bookinfo/telemetry/log-entry.yaml and log-entry-crd.yaml.
            (
                "bookinfo log-entry (newloghandler)",
                json!({"severity_levels": {"warning": 1}, "outputAsJson": true}),
            ),
            // 1.6.14 mixer-telemetry chart rendered with stdio.
            ("default chart 1.6", json!({"outputAsJson": false})),
        ]
    }

    #[test]
    fn real_istio_configs_validate() {
        for (source, params) in real_configs() {
            run(params).unwrap_or_else(|e| panic!("{source}: {e:#?}"));
        }
        let c = ok(real_configs()[1].1.clone());
        assert_eq!(c.severity_levels.len(), 1);
        assert_eq!(c.level_for("warning"), Level::Warning);
        assert_eq!(c.level_for("Warning"), Level::Info);
        assert!(!ok(real_configs()[2].1.clone()).output_as_json);
    }

    #[test]
    fn defaults() {
        let c = ok(Json::Null);
        assert_eq!(c.log_stream, Stream::Stdout);
        assert_eq!(c.output_path, None);
        assert!(c.output_as_json);
        assert_eq!((c.metric_level, c.output_level), (Level::Info, Level::Info));
        assert_eq!(c.severity_levels.len(), 14);
        assert_eq!(c.level_for("fatal"), Level::Error);
        assert_eq!(c.level_for("WARN"), Level::Warning);
        assert_eq!(c.level_for("Info"), Level::Info);
        assert_eq!(
            c.rotation,
            Rotation {
                max_megabytes_before_rotation: 104_857_600,
                max_days_before_rotation: 30,
                max_rotated_files: 1000,
            }
        );
        assert_eq!(Level::Warning.output_name(), "warn");
    }

    #[test]
    fn camel_and_snake_case() {
        let camel = ok(json!({
            "logStream": "ROTATED_FILE", "outputPath": "/var/log/mixer.log",
            "severityLevels": {"Info": "INFO", "Bad": "ERROR"}, "metricLevel": "WARNING",
            "outputAsJson": false, "outputLevel": "error", "maxMegabytesBeforeRotation": 10,
            "maxDaysBeforeRotation": 2, "maxRotatedFiles": 3
        }));
        let snake = ok(json!({
            "log_stream": 3, "output_path": "/var/log/mixer.log",
            "severity_levels": {"Info": 0, "Bad": 2}, "metric_level": 1,
            "output_as_json": false, "output_level": "ERROR", "max_megabytes_before_rotation": "10",
            "max_days_before_rotation": 2, "max_rotated_files": 3
        }));
        assert_eq!(camel, snake);
        assert_eq!(camel.output_path.as_deref(), Some("/var/log/mixer.log"));
        assert_eq!(camel.level_for("Bad"), Level::Error);
        assert_eq!(camel.rotation.max_rotated_files, 3);
    }

    #[test]
    fn output_path_rules() {
        let e = run(json!({"logStream": "FILE"})).unwrap_err();
        has(
            &e,
            "params.outputPath",
            "need a valid output path when using a FILE log stream",
        );
        let e = run(json!({"logStream": "ROTATED_FILE", "outputPath": ""})).unwrap_err();
        has(&e, "params.outputPath", "ROTATED_FILE");
        let e = run(json!({"logStream": "STDERR", "outputPath": "/tmp/x"})).unwrap_err();
        has(
            &e,
            "params.outputPath",
            "cannot specify an output path when using a STDERR log stream",
        );
        let e = run(json!({"outputPath": "/tmp/x"})).unwrap_err();
        has(&e, "params.outputPath", "STDOUT");
        assert_eq!(
            ok(json!({"logStream": "file", "outputPath": "/tmp/x"})).log_stream,
            Stream::File
        );
    }

    #[test]
    fn every_error_is_reported() {
        let e = run(json!({
            "logStream": "FILE",
            "severity_levels": {"a": "INFO", "b": "LOUD", "c": 7},
            "maxMegabytesBeforeRotation": -1, "maxDaysBeforeRotation": -2, "maxRotatedFiles": -3
        }))
        .unwrap_err();
        has(
            &e,
            "params.severityLevels.b",
            "unknown value \"LOUD\"; expected one of INFO, WARNING, ERROR",
        );
        has(&e, "params.severityLevels.c", "unknown value 7");
        has(&e, "params.outputPath", "need a valid output path");
        has(
            &e,
            "params.maxMegabytesBeforeRotation",
            "must not be negative, found -1",
        );
        has(
            &e,
            "params.maxDaysBeforeRotation",
            "must not be negative, found -2",
        );
        has(
            &e,
            "params.maxRotatedFiles",
            "must not be negative, found -3",
        );
        assert_eq!(e.len(), 6, "{e:#?}");
    }

    #[test]
    fn bad_values_and_unknown_fields() {
        let e = run(json!({"logStream": "SYSLOG"})).unwrap_err();
        has(&e, "params.logStream", "unknown value \"SYSLOG\"");
        let e = run(json!({"metric_level": "DEBUG"})).unwrap_err();
        has(&e, "params.metric_level", "unknown value \"DEBUG\"");
        let e = run(json!({"outputAsJson": "yes"})).unwrap_err();
        has(&e, "params.outputAsJson", "invalid type");
        let e = run(json!({"output_format": "json"})).unwrap_err();
        has(&e, "params.output_format", "unknown field `output_format`");
        let e = run(json!("stdout")).unwrap_err();
        has(&e, "params", "expected a mapping");
    }
}
