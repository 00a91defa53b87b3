//! A real `mixer server` process on loopback: started on free ports with
//! `--ready-file`, its addresses read from that file, its log (stderr) kept, memory and CPU
//! read from `/proc`, stopped (SIGKILL) when dropped.
//!
//! The binary's path is an argument (a mixer test passes `env!("CARGO_BIN_EXE_mixer")`):
//! this crate cannot depend on mixer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http;

/// How long a server may take to bind its listeners and load its configuration.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a server wrote to its `--ready-file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// `IP:PORT` of the gRPC API.
    pub api: String,
    /// `IP:PORT` of the monitoring endpoints.
    pub monitoring: String,
    /// `IP:PORT` of the Prometheus exposition.
    pub prometheus: String,
    pub pid: u32,
}

impl Ready {
    /// Parses a ready file's JSON document.
    pub fn parse(text: &str) -> Result<Ready, String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{e}: {text:?}"))?;
        let field = |name: &str| {
            doc[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no string {name:?} in {text:?}"))
        };
        let pid = doc["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| format!("no pid in {text:?}"))?;
        Ok(Ready {
            api: field("api")?,
            monitoring: field("monitoring")?,
            prometheus: field("prometheus")?,
            pid,
        })
    }
}

/// Waits up to `timeout` for `child` to write its ready file at `path`. An error says why
/// not: the process exited, or the time passed.
pub fn wait_for_ready_file(
    path: &Path,
    child: &mut Child,
    timeout: Duration,
) -> Result<Ready, String> {
    let deadline = Instant::now() + timeout;
    loop {
        // The server renames a complete file into place, so a file that is there is whole.
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ready::parse(&text);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited ({status}) before it was ready"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no ready file at {} after {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `mixer server`.
pub struct ServerProcess {
    pub child: Child,
    /// `127.0.0.1:PORT` of the gRPC API.
    pub api: String,
    /// `127.0.0.1:PORT` of the monitoring endpoints.
    pub monitoring: String,
    /// `127.0.0.1:PORT` of the Prometheus exposition.
    pub prometheus: String,
    /// Every stderr line so far (the server's log).
    log: Arc<Mutex<Vec<String>>>,
    ready_file: std::path::PathBuf,
    /// Holds the ready file.
    _ready_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// `BINARY server --config-dir DIR` on free loopback ports, plus `extra` flags.
    pub fn start(binary: impl AsRef<Path>, config: &Path, extra: &[&str]) -> ServerProcess {
        Self::start_with(binary, config, extra, Stdio::null())
    }

    /// As [`ServerProcess::start`], with the server's stdout connected to `stdout`.
    pub fn start_with(
        binary: impl AsRef<Path>,
        config: &Path,
        extra: &[&str],
        stdout: Stdio,
    ) -> ServerProcess {
        Self::spawn(Command::new(binary.as_ref()), config, extra, stdout)
    }

    /// As [`ServerProcess::start`], with at most `files` open file descriptors (run under
    /// util-linux `prlimit`, which execs the server: the PID is the server's).
    pub fn start_prlimited(
        binary: impl AsRef<Path>,
        config: &Path,
        files: u32,
        extra: &[&str],
    ) -> ServerProcess {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(binary.as_ref());
        Self::spawn(command, config, extra, Stdio::null())
    }

    fn spawn(command: Command, config: &Path, extra: &[&str], stdout: Stdio) -> ServerProcess {
        let mut args = vec!["--monitoring-address", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut command = command;
        command.arg("server").arg("--config-dir").arg(config);
        let mut server = Self::launch_command(command, &args, stdout);
        server.wait_ready();
        server
    }

    /// `BINARY server` with `extra` flags (no --config-dir: say where configuration comes
    /// from in `extra`), the monitoring endpoints on `monitoring` (`127.0.0.1:PORT`, see
    /// [`crate::free_port`]), without waiting for it to be ready: for a server whose
    /// readiness is under test. [`ServerProcess::wait_ready`] waits; until then only
    /// `monitoring` is known.
    pub fn launch(binary: impl AsRef<Path>, monitoring: &str, extra: &[&str]) -> ServerProcess {
        let mut command = Command::new(binary.as_ref());
        command.arg("server");
        let mut args = vec!["--monitoring-address", monitoring];
        args.extend_from_slice(extra);
        Self::launch_command(command, &args, Stdio::null())
    }

    /// Starts `command` (which names the subcommand) on loopback with quick reloads and
    /// a ready file, plus `args`; its log is collected.
    fn launch_command(mut command: Command, args: &[&str], stdout: Stdio) -> ServerProcess {
        let ready_dir = tempfile::tempdir().expect("creates a tempdir");
        let ready_file = ready_dir.path().join("ready.json");
        let mut child = command
            .args([
                "--address",
                "127.0.0.1:0",
                "--prometheus-address",
                "127.0.0.1:0",
                "--reload-poll-interval",
                "25ms",
                "--reload-debounce",
                "100ms",
            ])
            .arg("--ready-file")
            .arg(&ready_file)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("mixer server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let monitoring = args
            .iter()
            .position(|a| *a == "--monitoring-address")
            .and_then(|i| args.get(i + 1))
            .map(|a| a.to_string())
            .unwrap_or_default();
        ServerProcess {
            child,
            api: String::new(),
            monitoring,
            prometheus: String::new(),
            log,
            ready_file,
            _ready_dir: ready_dir,
        }
    }

    /// Waits for the ready file (panicking with the log if the server exits or takes
    /// too long) and learns the bound addresses from it.
    pub fn wait_ready(&mut self) {
        let ready = match wait_for_ready_file(&self.ready_file, &mut self.child, READY_TIMEOUT) {
            Ok(ready) => ready,
            Err(why) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                // The reader thread gets the rest of the log once the pipe closes.
                std::thread::sleep(Duration::from_millis(100));
                panic!("{why}; the server's log: {:?}", self.log.lock().unwrap());
            }
        };
        assert_eq!(ready.pid, self.child.id(), "the ready file is the child's");
        self.api = ready.api;
        self.monitoring = ready.monitoring;
        self.prometheus = ready.prometheus;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR` of the gRPC API, for tonic clients.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The server's log so far, one string.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Resident memory now, in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// User + system CPU the server has used so far (`/proc/PID/stat`).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    /// GET `path` on the monitoring listener, within `timeout`.
    pub fn monitoring_get(&self, path: &str, timeout: Duration) -> std::io::Result<http::Response> {
        http::get(&*self.monitoring, path, timeout)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
