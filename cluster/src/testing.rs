//! For tests of a cluster: a throwaway `redis-server` (Debian's, which
//! scripts/test.sh installs) on a free loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `redis-server` with no persistence, killed on drop.
pub struct TestRedis {
    child: Child,
    url: String,
}

impl TestRedis {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not start.
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs Debian's redis-server)");
        let stdout = child.stdout.take().expect("its stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("redis-server says it is ready")
                .expect("its log is readable");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        TestRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
        }
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server at once (`kill -9`), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
