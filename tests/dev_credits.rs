//! `POST /v1/dev/credits`, the demo page's recharge (src/dev_api.rs): with
//! `--dev` it credits the ledger exactly, within its bound; without `--dev`
//! the route does not exist.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

async fn dev_credit(http: std::net::SocketAddr, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{http}/v1/dev/credits"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn with_dev_a_dev_credit_lands_in_the_wallet_exactly_once_per_reference() {
    let server = TestServer::start(&[]);
    let (status, body) = dev_credit(server.http, json!({"user": "payer1", "coins": 250})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true);
    assert_eq!(body["balance"], 250);
    assert!(body["reference"].as_str().unwrap().starts_with("dev:"));

    // The same reference again credits nothing more; a new one adds.
    for _ in 0..2 {
        let (status, body) = dev_credit(
            server.http,
            json!({"user": "payer1", "coins": 10_000, "reference": "r1"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reference"], "dev:r1");
    }
    let wallet = api_json(&server, "/v1/wallets/payer1").await;
    assert_eq!(wallet["balance"], 10_250, "{wallet}");
    assert_eq!(wallet["held"], 0, "{wallet}");

    // Over the bound, zero, negative or malformed: refused, nothing written.
    for body in [
        json!({"user": "payer1", "coins": 10_001}),
        json!({"user": "payer1", "coins": 0}),
        json!({"user": "payer1", "coins": -5}),
        json!({"user": "payer1"}),
        json!({"user": "payer1", "coins": 5, "reference": " "}),
    ] {
        let (status, reply) = dev_credit(server.http, body.clone()).await;
        assert_eq!(status, 400, "{body} → {reply}");
    }
    let (status, reply) = dev_credit(server.http, json!({"user": "", "coins": 5})).await;
    assert_eq!(status, 400, "{reply}");
    let wallet = api_json(&server, "/v1/wallets/payer1").await;
    assert_eq!(wallet["balance"], 10_250, "{wallet}");
}

#[tokio::test]
async fn without_dev_the_dev_credit_route_is_not_there() {
    let data = tempdir::TempDir::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "serve",
            "--http-port",
            "0",
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
            "--node-ip",
            "127.0.0.1",
        ])
        .arg("--data-dir")
        .arg(&data.0)
        .env("CALLGATE_KEYS", "prodkey:a-secret-not-for-dev")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the callgate binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let http: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .expect("callgate printed its ready line")
            .unwrap();
        if let Some(rest) = line.strip_prefix("callgate ready ") {
            break rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("http="))
                .expect("ready line names http")
                .parse()
                .unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let (status, body) = dev_credit(http, json!({"user": "payer1", "coins": 5})).await;
    let health = reqwest::get(format!("http://{http}/healthz"))
        .await
        .unwrap()
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health, 200, "the server without --dev is up");
    assert_eq!(status, 404, "{body}");
}
