//! The real binary, `ssm-session-gateway demo`, as a child process: for what
//! only a process can show (signals, exit codes, the global subscriber that
//! exports traces).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Never wait on the binary longer than this.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running `demo`, killed on drop if still running.
pub struct DemoProcess {
    child: Child,
    /// The public listener (GraphQL).
    pub addr: SocketAddr,
    /// The admin listener, when `--admin-listen` was given.
    pub admin_addr: Option<SocketAddr>,
}

/// The address in a banner line such as `  GraphiQL:  http://127.0.0.1:1234/graphql`.
fn address_in(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("http://")? + "http://".len()..];
    let end = rest.find(['/', ' ']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl DemoProcess {
    /// Starts `demo --listen 127.0.0.1:0 <args>` with `env` (and none of
    /// this process's `SSM_GATEWAY_*` or `OTEL_*` variables), and waits for
    /// its banner to name its addresses.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start(args, env, Stdio::inherit()).0
    }

    /// [`DemoProcess::spawn`], with its log lines (stderr) sent to the
    /// receiver as they come.
    pub fn spawn_with_logs(args: &[&str], env: &[(&str, &str)]) -> (Self, mpsc::Receiver<String>) {
        let (demo, logs) = Self::start(args, env, Stdio::piped());
        (demo, logs.expect("stderr piped"))
    }

    fn start(
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> (Self, Option<mpsc::Receiver<String>>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ssm-session-gateway"));
        command.args(["demo", "--listen", "127.0.0.1:0"]).args(args);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("SSM_GATEWAY_") || key_text.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        command
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("the binary starts");
        let logs = child.stderr.take().map(|stderr| {
            let (lines, read) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = lines.send(line);
                }
            });
            read
        });
        let stdout = child.stdout.take().expect("stdout");
        let wants_admin = args.contains(&"--admin-listen");
        let (lines, read) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end even once nobody listens: a closed pipe
            // would make the demo's next print fail.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (mut addr, mut admin_addr) = (None, None);
        let started = Instant::now();
        while addr.is_none() || (wants_admin && admin_addr.is_none()) {
            let left = DEADLINE.saturating_sub(started.elapsed());
            let Ok(line) = read.recv_timeout(left) else {
                let _ = child.kill();
                panic!("the demo did not print its addresses within {DEADLINE:?}");
            };
            if line.trim_start().starts_with("GraphiQL:") {
                addr = address_in(&line);
            } else if line.trim_start().starts_with("Admin:") {
                admin_addr = address_in(&line);
            }
        }
        (
            Self {
                child,
                addr: addr.expect("address"),
                admin_addr,
            },
            logs,
        )
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit within [`DEADLINE`].
    pub fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the demo did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
