//! A `redis-server` child process on a loopback port, for the redisquota tests (adapters'
//! unit tests and mixer's policy tests).
//!
//! The `redis-server` binary must be on PATH: without it the fixture panics and says so
//! (`apt-get install -y redis-server` on Debian/Ubuntu; `.ci/run` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` without persistence on `127.0.0.1:PORT`, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// The server's log (its stdout), for the message when it does not start.
    log: Arc<Mutex<String>>,
}

impl RedisServer {
    /// Starts a server on a free loopback port (trying another port when one was taken
    /// meanwhile).
    pub fn start() -> RedisServer {
        let mut last_log = String::new();
        for _ in 0..10 {
            let mut server = RedisServer::stopped(crate::free_port());
            if server.spawn() {
                return server;
            }
            last_log = server.log();
        }
        panic!("redis-server did not start on any free port; its last log:\n{last_log}");
    }

    /// A fixture for `port` with no server running yet: [`RedisServer::restart`] starts it.
    /// For a test of a client that is up before its server.
    pub fn stopped(port: u16) -> RedisServer {
        RedisServer {
            port,
            child: None,
            log: Arc::default(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: nothing is flushed, nothing was persisted).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, empty (nothing was persisted); panics
    /// when it does not answer.
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not start on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    /// The log of the last server started.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Starts redis-server on `self.port`; false when it does not answer PING as itself
    /// within [`START_TIMEOUT`] (e.g. the port was taken meanwhile and it exited).
    fn spawn(&mut self) -> bool {
        self.kill();
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need the `redis-server` binary on PATH, and it could not be \
                     run ({e}); install it, e.g. `apt-get install -y redis-server`"
                )
            });
        // Drained by a thread, so the server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(String::new()));
        self.log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut log) = log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            // Another process may hold the port (even another redis-server of a test
            // running in parallel): only an answer from this child counts.
            if answers_as(self.port, child.id()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the server on `port` answers PING, and `INFO server` with `process_id:pid`.
fn answers_as(port: u16, pid: u32) -> bool {
    let ask = || -> std::io::Result<bool> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.write_all(b"PING\r\n")?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line != "+PONG\r\n" {
            return Ok(false);
        }
        conn.write_all(b"INFO server\r\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        // A bulk string: `$LEN\r\n`, LEN bytes, `\r\n`.
        let Some(len) = line
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
        else {
            return Ok(false);
        };
        let mut info = vec![0u8; len];
        reader.read_exact(&mut info)?;
        let info = String::from_utf8_lossy(&info);
        Ok(info
            .lines()
            .any(|l| l.trim_end() == format!("process_id:{pid}")))
    };
    ask().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_stops_and_restarts_empty_on_its_port() {
        let mut server = RedisServer::start();
        let pid = server.child.as_ref().unwrap().id();
        assert!(answers_as(server.port(), pid));
        server.kill();
        assert!(TcpStream::connect(server.address()).is_err());
        server.restart();
        let pid = server.child.as_ref().unwrap().id();
        assert!(answers_as(server.port(), pid));
    }
}
