//! `serve --config`: the real binary refuses bad settings before binding a
//! port, with exit code 2 and the bad key on stderr, and starts on good ones.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Never wait on the binary longer than this.
const DEADLINE: Duration = Duration::from_secs(20);

/// A settings file holding `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "ssm-gateway-settings-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `ssm-session-gateway serve <args>`, with none of this process's
/// `SSM_GATEWAY_*` variables leaking in.
fn serve(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssm-session-gateway"));
    command.arg("serve").args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SSM_GATEWAY_") {
            command.env_remove(key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` to exit within [`DEADLINE`], killing it if not.
fn wait_with_deadline(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `serve --config <text>` and returns its exit code and stderr.
fn serve_with(name: &str, text: &str) -> (Option<i32>, String) {
    let file = TempFile::new(name, text);
    let mut child = serve(&["--config", file.0.to_str().unwrap()])
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

const TWO_PRODS: &str = r#"
default_regions = ["eu-west-1"]

[[accounts]]
id = "111111111111"
alias = "prod"

[[accounts]]
id = "222222222222"
alias = "prod"
"#;

#[test]
fn a_duplicate_alias_exits_2_naming_the_key() {
    let (code, stderr) = serve_with("duplicate-alias", TWO_PRODS);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("accounts[1].alias: duplicate alias \"prod\""),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_exits_2_naming_the_key() {
    let text = "[limits]\nmax_frist = 10\n";
    let (code, stderr) = serve_with("unknown-key", text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("limits.max_frist: unknown field"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown-key.toml"),
        "names the file: {stderr}"
    );
}

#[test]
fn no_accounts_exits_2_with_one_clear_message() {
    let (code, stderr) = serve_with("no-accounts", "default_regions = [\"eu-west-1\"]\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "one line: {stderr}"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains("no accounts configured"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no-accounts.toml"),
        "names the file: {stderr}"
    );
}

#[test]
fn the_example_file_starts_the_gateway() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let mut child = serve(&["--config", example, "--listen", "127.0.0.1:0"])
        // Nothing listens on port 9; no request is made before we stop it.
        .env("SSM_GATEWAY_AWS__ENDPOINT_URL", "http://127.0.0.1:9")
        .spawn()
        .unwrap();
    // Read stderr on a thread so the deadline holds even if it stays open.
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut log = String::new();
    let listening = loop {
        match seen.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let done = line.contains("gateway listening");
                log.push_str(&line);
                log.push('\n');
                if done {
                    break true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() > DEADLINE => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the gateway did not start:\n{log}");
}
