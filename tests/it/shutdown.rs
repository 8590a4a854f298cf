//! SIGTERM on the real binary: `/readyz` turns 503 at once, the port stops
//! taking connections, a slow query in flight still finishes with its data,
//! and the process exits 0.

use std::time::{Duration, Instant};

use hyper::Method;
use hyper::body::Bytes;
use serde_json::json;

use crate::support::process::DemoProcess;
use crate::support::{ADMIN, client, send};

#[tokio::test]
async fn sigterm_drains_readiness_first_then_finishes_requests_in_flight() {
    let mut demo = DemoProcess::spawn(
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--upstream-latency-ms",
            "1500",
        ],
        &[],
    );
    let admin = demo.admin_addr.expect("admin address printed");
    let http = client();
    // The admin port answers from the start of the build: `starting` (503)
    // until the gateway serves, then 200.
    let waiting = Instant::now();
    loop {
        let ready = send(&http, admin, Method::GET, "/readyz", &[], Bytes::new()).await;
        if ready.status == 200 {
            break;
        }
        assert_eq!(&ready.body[..], b"starting\n");
        assert!(waiting.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A query that takes about 1.5 s upstream.
    let query = json!({
        "query": "{ sessions(state: HISTORY, first: 3, accounts: [\"platform\"], regions: [\"us-east-1\"]) { edges { node { sessionId } } } }"
    })
    .to_string();
    let addr = demo.addr;
    let started = Instant::now();
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move {
            send(
                &http,
                addr,
                Method::POST,
                "/graphql",
                &[
                    ("content-type", "application/json"),
                    ("authorization", ADMIN),
                ],
                Bytes::from(query),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    demo.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let draining = send(&http, admin, Method::GET, "/readyz", &[], Bytes::new()).await;
    assert_eq!(
        draining.status,
        503,
        "{}",
        String::from_utf8_lossy(&draining.body)
    );
    assert_eq!(&draining.body[..], b"draining\n");
    // The demo has no load balancer to wait for (shutdown delay 0): the
    // public port no longer takes connections.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "new connections are refused while draining"
    );

    let answer = in_flight.await.expect("the query task");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the query was really slow"
    );
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert!(body["errors"].is_null(), "{body}");
    let edges = body["data"]["sessions"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 3, "{body}");

    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
}
