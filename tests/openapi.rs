//! docs/openapi.yaml is the router's own contract: it declares exactly the
//! public routes, methods and statuses of `chorus::api::ROUTES` (the table
//! the router dispatches by), the headers the server sends, and a JSON
//! error body for every error; a live node serves each route, answers
//! every other method with a JSON 405 naming the table's methods, and a
//! URI over the limit with a JSON 414. Every in-process test node also
//! fails its test if it answered a status the table does not declare
//! (tests/common, `ContractCheck`). (CI runs schemathesis against
//! a live node with the document, and tests/clients.rs a client
//! generated from it.)

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use chorus::api::{ANY_ROUTE, ROUTES};
use common::TestNode;
use http::Method;
use yaml_rust2::{Yaml, YamlLoader};

fn document() -> Yaml {
    let text = std::fs::read_to_string("docs/openapi.yaml").expect("docs/openapi.yaml");
    let mut docs = YamlLoader::load_from_str(&text).expect("docs/openapi.yaml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// `node` with its `$ref` (to `#/components/...`) followed.
fn resolve<'a>(doc: &'a Yaml, node: &'a Yaml) -> &'a Yaml {
    let Some(reference) = node["$ref"].as_str() else {
        return node;
    };
    let path = reference
        .strip_prefix("#/")
        .unwrap_or_else(|| panic!("a local $ref: {reference}"));
    let target = path.split('/').fold(doc, |at, part| &at[part]);
    assert!(!target.is_badvalue(), "{reference} resolves");
    resolve(doc, target)
}

/// Every (path, METHOD, status) the document declares, and each
/// response as declared (references followed).
fn declared(doc: &Yaml) -> Vec<(String, String, u16, &Yaml)> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_hash().expect("paths");
    for (path, item) in paths {
        let path = path.as_str().expect("a path is a string");
        for (method, op) in item.as_hash().expect("a path item") {
            let method = method.as_str().expect("a key");
            if method == "parameters" {
                continue;
            }
            let responses = op["responses"]
                .as_hash()
                .unwrap_or_else(|| panic!("{method} {path}: responses"));
            for (status, response) in responses {
                let status: u16 = status
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{method} {path}: a status, quoted: {status:?}"));
                out.push((
                    path.to_string(),
                    method.to_uppercase(),
                    status,
                    resolve(doc, response),
                ));
            }
        }
    }
    out
}

fn served() -> BTreeSet<(String, String, u16)> {
    let mut out = BTreeSet::new();
    for route in ROUTES.iter().filter(|r| r.public) {
        for op in route.operations {
            for status in ANY_ROUTE.iter().chain(op.statuses) {
                out.insert((route.path.to_string(), op.method.to_string(), *status));
            }
        }
    }
    out
}

#[test]
fn the_document_declares_exactly_the_routes_methods_and_statuses_served() {
    let doc = document();
    let declared: BTreeSet<_> = declared(&doc)
        .into_iter()
        .map(|(path, method, status, _)| (path, method, status))
        .collect();
    let served = served();
    assert!(served.len() >= 150, "the table is too small: {served:?}");
    let missing: Vec<_> = served.difference(&declared).collect();
    let extra: Vec<_> = declared.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in docs/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in docs/openapi.yaml but not served: {extra:?}"
    );
    assert!(
        doc["paths"]["/peer"].is_badvalue(),
        "the peer protocol is not a client API"
    );
}

/// The headers of a response, lower-cased, and whether each is required.
fn headers(doc: &Yaml, response: &Yaml) -> Vec<(String, bool)> {
    response["headers"]
        .as_hash()
        .map(|h| {
            h.iter()
                .map(|(name, header)| {
                    let header = resolve(doc, header);
                    (
                        name.as_str().expect("a name").to_ascii_lowercase(),
                        header["required"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_response_declares_the_headers_the_server_sends() {
    let doc = document();
    let all = declared(&doc);
    let mut checked = 0;
    for (path, method, status, response) in &all {
        let headers = headers(&doc, response);
        let has = |name: &str, required: bool| {
            headers.iter().any(|(n, r)| n == name && (*r || !required))
        };
        let at = format!("{method} {path} {status}");
        let mut want: Vec<(&str, bool)> = match status {
            401 => vec![("www-authenticate", true)],
            405 => vec![("allow", true)],
            503 => vec![("retry-after", false)],
            _ => vec![],
        };
        let key_route = path == "/kv/{key}" || path == "/crdt/{key}";
        if key_route && [200, 204, 300, 404].contains(status) {
            want.push(("x-chorus-quorum", true));
        }
        // The context to write with next: on every answer that has one.
        let with_context = matches!(
            (path.as_str(), method.as_str(), status),
            ("/kv/{key}", "GET" | "HEAD", 200 | 300 | 304)
                | ("/kv/{key}", "PUT", 200 | 204 | 300)
                | ("/kv/{key}", "DELETE", 204)
                | ("/crdt/{key}", _, 200 | 204)
        );
        if with_context {
            want.push(("x-chorus-context", true));
        }
        if key_route && *status == 404 && method != "POST" {
            // A deleted key's 404 carries the context of its tombstones.
            want.push(("x-chorus-context", false));
        }
        for (name, required) in want {
            assert!(
                has(name, required),
                "{at}: declare {name}{}",
                if required { " (required)" } else { "" }
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "checked too few headers: {checked}");
}

#[test]
fn every_error_has_the_json_error_body_and_a_head_has_no_body() {
    let doc = document();
    let mut errors = 0;
    for (path, method, status, response) in declared(&doc) {
        let at = format!("{method} {path} {status}");
        let content = &response["content"];
        if method == "HEAD" {
            assert!(content.is_badvalue(), "{at}: a HEAD answer has no body");
            continue;
        }
        if status < 400 {
            continue;
        }
        let schema = resolve(&doc, &content["application/json"]["schema"]);
        let error = resolve(&doc, &doc["components"]["schemas"]["Error"]);
        let required: Vec<_> = schema["required"]
            .as_vec()
            .map(|v| v.iter().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        assert!(
            schema == error || (required.contains(&"error") && required.contains(&"message")),
            "{at}: the JSON error body"
        );
        errors += 1;
    }
    assert!(errors >= 100, "checked too few errors: {errors}");
}

#[tokio::test]
async fn every_route_is_served_and_every_other_method_is_a_405() {
    let node = TestNode::start_in_memory().await;
    // Leaving last: the node stays up (it is the ring's only owner), but
    // nothing else should run beside it.
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|route| route.path == "/admin/leave");
    let mut checked = 0;
    for route in routes {
        let path = route
            .path
            .replace("{key}", "some-key")
            .replace("{node}", "nobody");
        for method in [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ] {
            let headers = [("content-type", "application/json")];
            let reply = node
                .client
                .request(method.clone(), &path, &headers, Bytes::from_static(b"1"))
                .await
                .expect("request");
            let code = common::error_code(&reply);
            if route.operation(method.as_str()).is_some() {
                assert!(
                    reply.status != 405 && code != "no_route",
                    "{method} {path}: {} {code}",
                    reply.status
                );
            } else {
                assert_eq!(reply.status, 405, "{method} {path}");
                assert_eq!(code, "method_not_allowed", "{method} {path}");
                let allow = reply.headers.get("allow").and_then(|v| v.to_str().ok());
                assert_eq!(allow, Some(route.allow), "{method} {path}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 60, "{checked}");
}

#[tokio::test]
async fn a_uri_over_the_limit_is_a_json_414() {
    let node = TestNode::start_in_memory().await;
    let max = chorus::api::max_uri_bytes(chorus::config::Limits::default().max_key_bytes);
    for path in [
        format!("/kv/{}", "k".repeat(max)),
        format!("/kv?prefix={}", "p".repeat(max)),
        format!("/health?{}", "x".repeat(max)),
    ] {
        let reply = get(&node, &path).await;
        assert_eq!(reply.status, 414, "{}", &path[..20]);
        assert_eq!(common::error_code(&reply), "uri_too_long");
    }
    // At the limit, the request is served (and its key refused by name).
    let at_limit = format!("/kv/{}", "k".repeat(max - 4));
    let reply = get(&node, &at_limit).await;
    assert_eq!(common::error_code(&reply), "key_too_large");
}

async fn get(node: &TestNode, path: &str) -> chorus::client::Reply {
    node.client
        .request(Method::GET, path, &[], Bytes::new())
        .await
        .expect("request")
}
