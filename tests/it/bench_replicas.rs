//! The multi-replica benchmark (`bench/replicas.sh`, ignored in the normal
//! run): upstream calls of one polling load over 1, 2 and 3 replicas, with
//! and without Redis, and the latency of a second-level hit next to a
//! first-level hit. Writes a Markdown section to `$BENCH_OUT` (default
//! `target/bench-replicas.md`). Everything runs on loopback, bounded in
//! count and time.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use ssm_emulator::EmulatorConfig;
use ssm_session_gateway::settings::RedisSettings;

use crate::support::redis::RedisServer;
use crate::support::{error_codes, spawn_replicas};

const CLIENTS: usize = 60;
const EVERY: Duration = Duration::from_millis(100);
const FOR: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test]
#[ignore = "a benchmark: bench/replicas.sh runs it"]
async fn bench_replicas() {
    let server = RedisServer::start();
    let query = r#"{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: ACTIVE, first: 50) { nodes { sessionId status } } }"#;
    let mut out = String::new();
    out.push_str(&format!(
        "Polling load: {CLIENTS} clients, each sending `sessions(state: ACTIVE, first: 50)` for one \
         (account, region) every {} ms for {} s, spread evenly over the replicas; Active TTL 1 s, \
         response cache off (so every poll reaches the page cache). Upstream calls counted by the \
         emulator.\n\n",
        EVERY.as_millis(),
        FOR.as_secs()
    ));
    out.push_str(
        "| replicas | upstream calls without Redis | upstream calls with Redis | polls answered (run with Redis) |\n| --- | --- | --- | --- |\n",
    );
    for replicas in 1..=3 {
        let mut row = Vec::new();
        let mut answered = 0;
        for shared in [false, true] {
            let url = server.url();
            let apps = spawn_replicas(
                EmulatorConfig::demo(crate::support::anchor()),
                replicas,
                |s| {
                    if shared {
                        let mut redis = RedisSettings::new(url);
                        redis.key_prefix = format!("bench{replicas}:");
                        s.redis = Some(redis);
                    }
                    s.cache.active_ttl_secs = 1;
                    s.cache.responses = false;
                },
            )
            .await;
            let started = Instant::now();
            let polls = join_all((0..CLIENTS).map(|i| {
                let app = &apps[i % apps.len()];
                async move {
                    let mut n = 0;
                    while started.elapsed() < FOR {
                        let answer = app.graphql(query, json!({})).await;
                        assert!(error_codes(&answer).is_empty(), "{answer}");
                        n += 1;
                        tokio::time::sleep(EVERY).await;
                    }
                    n
                }
            }))
            .await;
            answered = polls.iter().sum::<usize>();
            row.push(apps[0].describe_calls());
        }
        out.push_str(&format!(
            "| {replicas} | {} | {} | {answered} |\n",
            row[0], row[1]
        ));
    }

    // Latency: replica A reads 100 distinct pages (pageSize 1..=100) from
    // SSM; replica B then reads each from Redis (second level), then again
    // from its own memory (first level).
    let url = server.url();
    let apps = spawn_replicas(EmulatorConfig::demo(crate::support::anchor()), 2, |s| {
        let mut redis = RedisSettings::new(url);
        redis.key_prefix = "latency:".to_owned();
        s.redis = Some(redis);
        s.cache.responses = false;
    })
    .await;
    let page = |size: u32| {
        format!(
            r#"{{ sessions(accounts: ["platform"], regions: ["us-east-1"], state: HISTORY, first: 1, pageSize: {size}) {{ nodes {{ sessionId }} }} }}"#
        )
    };
    let mut timings = [Vec::new(), Vec::new(), Vec::new()];
    for size in 1..=100 {
        let q = page(size);
        for (i, app) in [&apps[0], &apps[1], &apps[1]].into_iter().enumerate() {
            let started = Instant::now();
            let answer = app.graphql(&q, json!({})).await;
            timings[i].push(started.elapsed());
            assert!(error_codes(&answer).is_empty(), "{answer}");
        }
    }
    let calls = apps[0].describe_calls();
    for t in &mut timings {
        t.sort();
    }
    out.push_str(&format!(
        "\nLatency of one `sessions(first: 1)` over HTTP, 100 distinct pages, {calls} upstream \
         calls in all (replica A's):\n\n| served from | median | p90 |\n| --- | --- | --- |\n"
    ));
    for (label, t) in [
        ("SSM (the emulator, replica A, cold)", &timings[0]),
        ("second level (Redis, replica B)", &timings[1]),
        ("first level (memory, replica B)", &timings[2]),
    ] {
        out.push_str(&format!(
            "| {label} | {} | {} |\n",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.9))
        ));
    }
    let path = std::env::var("BENCH_OUT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-replicas.md").to_owned()
    });
    std::fs::write(&path, &out).expect("write the figures");
    println!("{out}");
}
