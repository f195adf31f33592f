//! docs/openapi.yaml stays true: it lists exactly the routes and methods
//! of `chorus::api::ROUTES`, and a live node serves each of them and
//! answers every other method with a JSON 405. (CI also runs schemathesis
//! against a live node with the document: .ci/run.)

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use chorus::api::ROUTES;
use common::TestNode;
use http::Method;

/// (path, METHOD) pairs of the document, read from its `paths:` block:
/// a path is a two-space-indented key starting with `/`, a method a
/// four-space-indented HTTP verb under it.
fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string("docs/openapi.yaml").expect("docs/openapi.yaml");
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let Some(verb) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && ["get", "put", "post", "delete", "patch", "head"].contains(&verb)
        {
            let path = path.clone().expect("a method under a path");
            out.insert((path, verb.to_uppercase()));
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(|m| (path.to_string(), m.to_string())))
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let (documented, served) = (documented(), served());
    assert!(documented.len() >= 10, "parsed too little: {documented:?}");
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in docs/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in docs/openapi.yaml but not served: {extra:?}"
    );
}

#[tokio::test]
async fn every_route_is_served_and_every_other_method_is_a_405() {
    let node = TestNode::start_in_memory().await;
    // Leaving last: the node stays up (it is the ring's only owner), but
    // nothing else should run beside it.
    let mut routes: Vec<_> = ROUTES.to_vec();
    routes.sort_by_key(|(path, _)| *path == "/admin/leave");
    for (template, methods) in routes {
        let path = template
            .replace("{key}", "some-key")
            .replace("{node}", "nobody");
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            let headers = [("content-type", "application/json")];
            let reply = node
                .client
                .request(method.clone(), &path, &headers, Bytes::from_static(b"1"))
                .await
                .expect("request");
            let code = common::error_code(&reply);
            if methods.contains(&method.as_str()) {
                assert!(
                    reply.status != 405 && code != "no_route",
                    "{method} {path}: {} {code}",
                    reply.status
                );
            } else {
                assert_eq!(reply.status, 405, "{method} {path}");
                assert_eq!(code, "method_not_allowed", "{method} {path}");
            }
        }
    }
}
