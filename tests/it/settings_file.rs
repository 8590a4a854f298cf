//! `serve --config`: the real binary refuses bad settings before binding a
//! port, with exit code 2 and the bad key on stderr, and starts on good ones;
//! and re-reads its keys file on SIGHUP.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    serve_after(None, args)
}

/// [`serve`], run by `sh` after `shell` (`ulimit -n 300`, say): what the
/// gateway inherits from the shell that starts it.
fn serve_after(shell: Option<&str>, args: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_ssm-session-gateway");
    let mut command = match shell {
        None => Command::new(binary),
        Some(shell) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{shell} && exec \"$0\" \"$@\""))
                .arg(binary);
            sh
        }
    };
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
    let (listening, log) = until_listening(&mut serve(&EXAMPLE_ARGS));
    assert!(listening, "the gateway did not start:\n{log}");
}

/// `serve --config config/example.toml` on any free port.
const EXAMPLE_ARGS: [&str; 4] = [
    "--config",
    concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"),
    "--listen",
    "127.0.0.1:0",
];

/// `serve` raises its soft open-file limit to the hard one, and warns when
/// even that is below what its settings let it hold open.
#[cfg(unix)]
#[test]
fn serve_raises_the_open_file_limit_and_warns_when_it_is_short() {
    // 100 connections and 100 WebSockets, and 256 kept: 456 needed.
    let small = [
        ("SSM_GATEWAY_HTTP__MAX_CONNECTIONS", "100"),
        ("SSM_GATEWAY_LIVE__MAX_CONNECTIONS", "100"),
    ];
    let warning = "the open-file limit is below";
    // A soft limit of 300 under a higher hard one (systemd's way): raised.
    let (listening, log) =
        until_listening(serve_after(Some("ulimit -Sn 300"), &EXAMPLE_ARGS).envs(small));
    assert!(listening, "the gateway did not start:\n{log}");
    assert!(!log.contains(warning), "{log}");
    // A hard limit of 300: nothing to raise it to, so a warning with the
    // figures.
    let (listening, log) =
        until_listening(serve_after(Some("ulimit -n 300"), &EXAMPLE_ARGS).envs(small));
    assert!(listening, "the gateway did not start:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains(warning))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("300") && line.contains("456"), "{line}");
}

/// Starts `command` (a `serve`) and reads its log until it listens, within
/// [`DEADLINE`]; then stops it. Whether it listened, and its log.
fn until_listening(command: &mut Command) -> (bool, String) {
    let mut child = command
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
    (listening, log)
}

const ONE_ACCOUNT: &str = r#"
default_regions = ["eu-west-1"]

[[accounts]]
id = "111111111111"
alias = "prod"
"#;

#[test]
fn no_way_to_authenticate_exits_2_saying_what_to_set() {
    let (code, stderr) = serve_with("no-auth", ONE_ACCOUNT);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "one line: {stderr}"
    );
    for what in [
        "auth.api_keys",
        "auth.api_keys_file",
        "auth.jwt",
        "allow_anonymous = true",
    ] {
        assert!(stderr.contains(what), "names {what}: {stderr}");
    }
}

#[test]
fn an_unreadable_keys_file_exits_2() {
    let text =
        format!("{ONE_ACCOUNT}\n[auth]\napi_keys_file = \"/nonexistent/ssm-gateway-keys.toml\"\n");
    let (code, stderr) = serve_with("missing-keys-file", &text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("ssm-gateway-keys.toml"), "{stderr}");
}

// ------------------------------------------------------------ SIGHUP

/// One POST `{ accounts { alias } }` with `Bearer key` over a fresh
/// connection; the status, or 0 when the connection failed.
async fn status_with_key(addr: std::net::SocketAddr, key: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = r#"{"query":"{ accounts { alias } }"}"#;
    let request = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer {key}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    if stream.read_to_end(&mut answer).await.is_err() {
        return 0;
    }
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn keys_file(hashes: &[&str]) -> String {
    let list: Vec<String> = hashes.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[[api_keys]]\nname = \"ci\"\nsha256 = [{}]\ngrants = [{{ accounts = [\"*\"], scopes = [\"sessions:read\"] }}]\n",
        list.join(", ")
    )
}

/// Polls `key` until it gets `want`, for at most [`DEADLINE`].
async fn until_status(addr: std::net::SocketAddr, key: &str, want: u16) {
    let start = Instant::now();
    loop {
        let got = status_with_key(addr, key).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{key}: still {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sighup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The real binary, over an emulator started here: an edited keys file is
/// picked up on SIGHUP, and requests keep being answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_keys_file_without_dropping_requests() {
    use crate::support::{dataset, emulator_config, serve_emulator};
    let (emulator_addr, _stop) = serve_emulator(ssm_emulator::Emulator::new(emulator_config(
        dataset(3, 2, 2),
    )))
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let keys = TempFile::new("sighup-keys", &keys_file(&[&sha256_hex("key-one")]));
    let settings = TempFile::new(
        "sighup",
        &format!(
            "listen = \"{addr}\"\ncursor_key = \"{cursor}\"\ndefault_regions = [\"{region}\"]\n\
             [aws]\nregion = \"{region}\"\nendpoint_url = \"http://{emulator_addr}\"\nmax_attempts = 1\n\
             [[accounts]]\nid = \"{account}\"\nalias = \"demo\"\n\
             [auth]\napi_keys_file = \"{keys}\"\n\
             [rate_limits]\nrequests_per_second = 1000000\nburst = 1000000\n",
            // (The caller below asks as fast as it can: its own flood is
            // not what this test is about.)
            cursor = "k".repeat(32),
            region = ssm_emulator::DEMO_REGION,
            account = ssm_emulator::DEMO_ACCOUNT_ID,
            keys = keys.0.display(),
        ),
    );
    // The log goes to a file: the audit lines are checked at the end.
    let log = TempFile::new("sighup-log", "");
    let mut child = serve(&["--config", settings.0.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", ssm_emulator::DEMO_ACCESS_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            ssm_emulator::DEMO_SECRET_ACCESS_KEY,
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stderr(std::fs::File::create(&log.0).unwrap())
        .spawn()
        .unwrap();
    until_status(addr, "key-one", 200).await;
    assert_eq!(status_with_key(addr, "key-two").await, 401);

    // A caller with key-one keeps asking throughout the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let loop_stop = stop.clone();
    let caller = tokio::spawn(async move {
        let (mut ok, mut other) = (0u32, Vec::new());
        while !loop_stop.load(Ordering::SeqCst) {
            match status_with_key(addr, "key-one").await {
                200 => ok += 1,
                status => other.push(status),
            }
        }
        (ok, other)
    });

    // Rotation starts: key-two joins key-one under the same name.
    std::fs::write(
        &keys.0,
        keys_file(&[&sha256_hex("key-one"), &sha256_hex("key-two")]),
    )
    .unwrap();
    sighup(&child);
    until_status(addr, "key-two", 200).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, other) = caller.await.unwrap();
    assert!(ok > 0 && other.is_empty(), "{ok} answered, then {other:?}");

    // Rotation ends: key-one is retired.
    std::fs::write(&keys.0, keys_file(&[&sha256_hex("key-two")])).unwrap();
    sighup(&child);
    until_status(addr, "key-one", 401).await;
    assert_eq!(status_with_key(addr, "key-two").await, 200);

    // A broken edit keeps the keys in use.
    std::fs::write(&keys.0, "not toml [").unwrap();
    sighup(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_with_key(addr, "key-two").await, 200);
    assert!(child.try_wait().unwrap().is_none(), "the gateway exited");

    let _ = child.kill();
    let _ = child.wait();

    // One audit line per request, naming the principal, never a key. Off a
    // terminal the gateway logs JSON lines (`log_format = "auto"`).
    let log = std::fs::read_to_string(&log.0).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let audit = |message: &str| {
        lines
            .iter()
            .filter(|l| l["target"] == "audit" && l["message"] == message)
            .map(|l| &l["fields"])
            .collect::<Vec<_>>()
    };
    let served = audit("request served");
    let served = served
        .first()
        .unwrap_or_else(|| panic!("no audit line:\n{log}"));
    assert_eq!(served["principal"], "api_key:ci", "{served}");
    assert_eq!(served["outcome"], "ok", "{served}");
    for field in ["accounts", "upstream_pages", "duration_ms"] {
        assert!(!served[field].is_null(), "{field} in {served}");
    }
    assert!(
        audit("request refused")
            .iter()
            .any(|l| l["reason"] == "unknown_key"),
        "a refused request is audited:\n{log}"
    );
    for secret in ["key-one", "key-two", &sha256_hex("key-one")] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}
