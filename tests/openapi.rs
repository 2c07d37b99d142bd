//! The server API's contract (docs/operations.md, "API contract"): the
//! OpenAPI document names every `/v1/` route the router serves, with the
//! same methods, and nothing else; it is OpenAPI 3.1 and served without
//! auth at `/v1/openapi.json`, ahead of the `/v1/` catch-all. The routes
//! are read from the source: each `.route("/v1/…", get(…).post(…))`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Every Rust file of the server: each crate's `src/` (not tests, benches
/// or fuzz targets), so a route in a new file is read too.
fn server_sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    for entry in std::fs::read_dir(root).unwrap() {
        let crate_dir = entry.unwrap().path();
        let src = crate_dir.join("src");
        if crate_dir.join("Cargo.toml").is_file() && src.is_dir() && !crate_dir.ends_with("fuzz") {
            walk(&src, &mut files);
        }
    }
    // `--dev` only (`POST /v1/dev/credits`, the demo page's recharge):
    // not part of the API a deployment serves, so not in its contract.
    files.retain(|f| !f.ends_with("src/dev_api.rs"));
    files.sort();
    files
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// `(path, method)` of every `.route("/v1/…", get(…).post(…))` in `source`,
/// the catch-all left out.
fn routes_in(file: &str, source: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = &source[at + ".route(".len()..];
        // The call's arguments: up to the parenthesis that closes it.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("{file}: unclosed .route("));
        let args = &rest[..end];
        let path = match args.trim_start().strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap().to_owned(),
            // `.route(PATH, …)`: the document's own route.
            None if args.trim_start().starts_with("PATH") => "/v1/openapi.json".to_owned(),
            None => panic!("{file}: a route whose path is no literal: {args}"),
        };
        if !path.starts_with("/v1/") || path.contains("{*") {
            continue;
        }
        let handlers = &args[args.find(',').expect("a route has handlers") + 1..];
        let mut methods = 0;
        for method in METHODS {
            let call = format!("{method}(");
            let named = handlers.match_indices(&call).any(|(i, _)| {
                i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if named {
                found.insert((path.clone(), (*method).to_owned()));
                methods += 1;
            }
        }
        assert!(methods > 0, "{file}: no method read for {path}: {args}");
    }
    found
}

fn document() -> Value {
    serde_json::from_str(callgate::openapi::json()).expect("the document is JSON")
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                found.insert((path.clone(), method.clone()));
            }
        }
    }
    found
}

#[test]
fn the_document_names_every_v1_route_and_no_other() {
    let mut served = BTreeSet::new();
    for file in server_sources() {
        let source = std::fs::read_to_string(&file).unwrap();
        served.extend(routes_in(&file.display().to_string(), &source));
    }
    // The parser itself: it must see the routes of each file.
    for must in [
        ("/v1/rooms/{room}/participants/{identity}", "delete"),
        ("/v1/wallets/{user}/credits", "post"),
        ("/v1/calls", "get"),
        ("/v1/openapi.json", "get"),
    ] {
        assert!(served.contains(&(must.0.into(), must.1.into())), "{must:?}");
    }
    let doc = documented(&document());
    let missing: Vec<_> = served.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
}

#[test]
fn the_document_is_openapi_3_1_with_errors_and_auth_described() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(doc["info"]["title"], "callgate");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]), "{error}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let secured = op.get("security").is_some();
            let unsigned = ["/v1/openapi.json", "/v1/hooks/razorpay"].contains(&path.as_str());
            assert_eq!(secured, !unsigned, "{method} {path}: security");
            if secured {
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    let schema = schema.as_str().unwrap_or_default();
                    assert!(
                        schema.ends_with("/ErrorBody") || schema.ends_with("/RefusedCall"),
                        "{method} {path} {status}: an error body, not {schema:?}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_without_auth_ahead_of_the_catch_all() {
    let server = TestServer::start(&[]);
    let response = reqwest::get(server.api("/v1/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, document());
    // The catch-all still answers what is no route.
    let response = reqwest::get(server.api("/v1/openapi.yaml")).await.unwrap();
    assert_eq!(response.status(), 404);
}
