//! A real `mixer server` process on loopback: started with free ports, addresses read from
//! its log, memory read from `/proc`, stopped (SIGKILL) when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `mixer` binary of this build.
pub fn mixer_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mixer"))
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
}

impl ServerProcess {
    /// `mixer server --config-dir DIR` on free loopback ports, plus `extra` flags.
    pub fn start(config: &Path, extra: &[&str]) -> ServerProcess {
        Self::start_with(config, extra, Stdio::null())
    }

    /// As [`ServerProcess::start`], with the server's stdout connected to `stdout`.
    pub fn start_with(config: &Path, extra: &[&str], stdout: Stdio) -> ServerProcess {
        Self::spawn(mixer_command(), config, extra, stdout)
    }

    /// As [`ServerProcess::start`], with at most `files` open file descriptors (run under
    /// util-linux `prlimit`, which execs the server: the PID is the server's).
    pub fn start_prlimited(config: &Path, files: u32, extra: &[&str]) -> ServerProcess {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_mixer"));
        Self::spawn(command, config, extra, Stdio::null())
    }

    fn spawn(mut command: Command, config: &Path, extra: &[&str], stdout: Stdio) -> ServerProcess {
        let mut child = command
            .args([
                "server",
                "--address",
                "127.0.0.1:0",
                "--monitoring-address",
                "127.0.0.1:0",
                "--prometheus-address",
                "127.0.0.1:0",
                "--reload-poll-interval",
                "25ms",
                "--reload-debounce",
                "100ms",
            ])
            .arg("--config-dir")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("mixer server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut api, mut monitoring, mut prometheus) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.is_none() || monitoring.is_none() || prometheus.is_none() {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "server did not log its addresses: {:?}",
                        log.lock().unwrap()
                    );
                }
            };
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
                .map(str::to_owned);
            if line.contains("gRPC API listening") {
                api = addr;
            } else if line.contains("Monitoring endpoints listening") {
                monitoring = addr;
            } else if line.contains("Prometheus exposition listening") {
                prometheus = addr;
            }
        }
        ServerProcess {
            child,
            api: api.unwrap(),
            monitoring: monitoring.unwrap(),
            prometheus: prometheus.unwrap(),
            log,
        }
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
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
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

    /// GET `path` on the monitoring listener: (status, body, time taken).
    pub fn monitoring_get(&self, path: &str, timeout: Duration) -> Option<(u16, String, Duration)> {
        http_get(&self.monitoring, path, timeout)
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

/// A blocking HTTP/1.1 GET with a deadline: (status, body, time taken), or None when the
/// server did not answer in time.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Option<(u16, String, Duration)> {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).ok()?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body, took))
}
