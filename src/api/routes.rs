//! The route table: every path the node serves, the methods each takes and
//! the statuses each method answers. It is the one list, used three ways:
//!
//! - the router finds a request's route here and refuses a method the
//!   route does not list (405, `Allow` from the table), before any handler
//!   runs;
//! - the server notes every answer whose status its route does not declare
//!   ([`Undeclared`], one per node): the in-process test nodes fail the
//!   test that saw one;
//! - tests/openapi.rs holds docs/openapi.yaml equal to the public routes,
//!   methods and statuses, so the contract clients are generated from is
//!   the router's own.
//!
//! Statuses every route may answer are in [`ANY_ROUTE`]; each operation
//! lists the ones it adds.

use parking_lot::Mutex;

/// What serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    Scan,
    Key,
    Crdt,
    Batch,
    Changes,
    Health,
    Metrics,
    Cluster,
    Leave,
    Remove,
    Rebuild,
    Replica,
    Peer,
}

/// One path and what it serves.
#[derive(Debug)]
pub struct Route {
    /// The path; `{name}` stands for its one parameter, the rest of the path.
    pub path: &'static str,
    pub handler: Handler,
    /// Whether docs/openapi.yaml describes it: the peer protocol is not a
    /// client API (docs/architecture.md describes it).
    pub public: bool,
    /// The methods, as a 405's `Allow` names them.
    pub allow: &'static str,
    pub operations: &'static [Operation],
}

/// One method of a route and the statuses it answers besides [`ANY_ROUTE`].
#[derive(Debug)]
pub struct Operation {
    pub method: &'static str,
    pub statuses: &'static [u16],
}

/// Statuses any route may answer: 400 (a parameter it does not take, or
/// one it cannot use), 401 and 403 (bearer tokens), 405 (a method it does
/// not take), 414 (a URI over the limit), 500 (storage or an internal
/// failure) and 503 (overloaded, or replicas unavailable).
pub const ANY_ROUTE: &[u16] = &[400, 401, 403, 405, 414, 500, 503];

const fn op(method: &'static str, statuses: &'static [u16]) -> Operation {
    Operation { method, statuses }
}

const SCAN: &[u16] = &[200];
const KV_GET: &[u16] = &[200, 300, 304, 404, 409, 413];
const CRDT_GET: &[u16] = &[200, 404, 409, 413];
const REPLICA: &[u16] = &[200, 404, 413];

/// The methods any route takes; another is named `other` in the table's
/// checks (and answered 405).
pub const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];

/// Every route, in the order the router tries them.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/kv",
        handler: Handler::Scan,
        public: true,
        allow: "GET, HEAD",
        operations: &[op("GET", SCAN), op("HEAD", SCAN)],
    },
    Route {
        path: "/kv/{key}",
        handler: Handler::Key,
        public: true,
        allow: "GET, HEAD, PUT, DELETE",
        operations: &[
            op("GET", KV_GET),
            op("HEAD", KV_GET),
            op("PUT", &[200, 204, 300, 408, 409, 412, 413, 415, 422]),
            op("DELETE", &[204, 409, 412, 413, 422]),
        ],
    },
    Route {
        path: "/crdt/{key}",
        handler: Handler::Crdt,
        public: true,
        allow: "GET, HEAD, POST",
        operations: &[
            op("GET", CRDT_GET),
            op("HEAD", CRDT_GET),
            op("POST", &[200, 204, 408, 409, 413, 415, 422]),
        ],
    },
    Route {
        path: "/batch",
        handler: Handler::Batch,
        public: true,
        allow: "POST",
        operations: &[op("POST", &[200, 408, 413, 415])],
    },
    Route {
        path: "/changes",
        handler: Handler::Changes,
        public: true,
        allow: "GET, HEAD",
        operations: &[op("GET", &[200, 410]), op("HEAD", &[200, 410])],
    },
    Route {
        path: "/health",
        handler: Handler::Health,
        public: true,
        allow: "GET, HEAD",
        operations: &[op("GET", &[200]), op("HEAD", &[200])],
    },
    Route {
        path: "/metrics",
        handler: Handler::Metrics,
        public: true,
        allow: "GET, HEAD",
        operations: &[op("GET", &[200]), op("HEAD", &[200])],
    },
    Route {
        path: "/cluster",
        handler: Handler::Cluster,
        public: true,
        allow: "GET, HEAD",
        operations: &[op("GET", &[200]), op("HEAD", &[200])],
    },
    Route {
        path: "/admin/leave",
        handler: Handler::Leave,
        public: true,
        allow: "POST",
        operations: &[op("POST", &[202])],
    },
    Route {
        path: "/admin/remove/{node}",
        handler: Handler::Remove,
        public: true,
        allow: "POST",
        operations: &[op("POST", &[200, 404, 409])],
    },
    Route {
        path: "/admin/antientropy/rebuild",
        handler: Handler::Rebuild,
        public: true,
        allow: "POST",
        operations: &[op("POST", &[202])],
    },
    Route {
        path: "/admin/replica/{key}",
        handler: Handler::Replica,
        public: true,
        allow: "GET, HEAD",
        operations: &[op("GET", REPLICA), op("HEAD", REPLICA)],
    },
    Route {
        path: crate::peer::PEER_PATH,
        handler: Handler::Peer,
        public: false,
        allow: "POST",
        // 101: a stream's upgrade; 408: a body that did not arrive in
        // time; 413: a message over the limit; 501: a service or version
        // this node does not speak.
        operations: &[op("POST", &[101, 200, 408, 413, 501])],
    },
];

impl Route {
    pub fn operation(&self, method: &str) -> Option<&'static Operation> {
        self.operations.iter().find(|o| o.method == method)
    }

    /// Whether `method` on this route may answer `status`.
    pub fn declares(&self, method: &str, status: u16) -> bool {
        ANY_ROUTE.contains(&status)
            || self
                .operation(method)
                .is_some_and(|o| o.statuses.contains(&status))
    }
}

/// The route of `path` and its parameter (the rest of the path; empty for
/// a route without one). An empty parameter is the route's still (`/kv/`
/// is a key's route, whose handler refuses the empty key by name).
pub fn find(path: &str) -> Option<(&'static Route, &str)> {
    ROUTES.iter().find_map(|route| match route.path.find('{') {
        None => (path == route.path).then_some((route, "")),
        Some(at) => path
            .strip_prefix(&route.path[..at])
            .map(|rest| (route, rest)),
    })
}

/// The 405 of `method` on `handler`'s route: a handler that matches on
/// methods answers this for one the router let through but it does not
/// serve (none, while the table and the handler agree).
pub fn not_allowed(handler: Handler, method: &http::Method) -> crate::error::Error {
    let allowed = ROUTES
        .iter()
        .find(|r| r.handler == handler)
        .map_or("", |r| r.allow);
    crate::error::Error::MethodNotAllowed {
        method: method.to_string(),
        allowed,
    }
}

/// The answers of one node whose status their route does not declare,
/// as `METHOD template -> status`: at most [`KEPT`] of them. The in-process
/// tests fail on any (tests/common).
#[derive(Debug, Default)]
pub struct Undeclared(Mutex<Vec<String>>);

const KEPT: usize = 64;

impl Undeclared {
    /// Notes the answer `status` to `method` on `route` if the route does
    /// not declare it.
    pub fn check(&self, route: &Route, method: &str, status: u16) {
        if route.declares(method, status) {
            return;
        }
        tracing::error!(
            method,
            route = route.path,
            status,
            "answered a status the route table does not declare (docs/openapi.yaml)"
        );
        let mut undeclared = self.0.lock();
        if undeclared.len() < KEPT {
            undeclared.push(format!("{method} {} -> {status}", route.path));
        }
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_finds_its_route_and_parameter() {
        let found = |path| find(path).map(|(route, rest)| (route.path, rest));
        assert_eq!(found("/kv"), Some(("/kv", "")));
        assert_eq!(found("/kv/a/b"), Some(("/kv/{key}", "a/b")));
        assert_eq!(found("/crdt/c"), Some(("/crdt/{key}", "c")));
        assert_eq!(
            found("/admin/remove/n2"),
            Some(("/admin/remove/{node}", "n2"))
        );
        assert_eq!(
            found("/admin/replica/k"),
            Some(("/admin/replica/{key}", "k"))
        );
        assert_eq!(found("/admin/leave"), Some(("/admin/leave", "")));
        assert_eq!(found("/kv/"), Some(("/kv/{key}", "")));
        assert_eq!(found("/kvx"), None);
        assert_eq!(found("/health/"), None);
        assert_eq!(found("/admin"), None);
    }

    #[test]
    fn an_undeclared_status_is_noted_and_a_declared_one_is_not() {
        let undeclared = Undeclared::default();
        let (key, _) = find("/kv/k").expect("a route");
        for (method, status) in [("GET", 200), ("GET", 300), ("HEAD", 304), ("PUT", 422)] {
            undeclared.check(key, method, status);
        }
        for status in ANY_ROUTE {
            undeclared.check(key, "other", *status);
        }
        assert!(undeclared.list().is_empty(), "{:?}", undeclared.list());
        undeclared.check(key, "GET", 204);
        undeclared.check(key, "DELETE", 300);
        assert_eq!(
            undeclared.list(),
            ["GET /kv/{key} -> 204", "DELETE /kv/{key} -> 300"]
        );
    }

    #[test]
    fn allow_names_exactly_the_operations() {
        for route in ROUTES {
            let methods: Vec<_> = route.operations.iter().map(|o| o.method).collect();
            assert_eq!(route.allow, methods.join(", "), "{}", route.path);
            for op in route.operations {
                let mut sorted = op.statuses.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted, op.statuses, "{} {}", op.method, route.path);
                assert!(
                    op.statuses.iter().all(|s| !ANY_ROUTE.contains(s)),
                    "{} {}: a status of every route listed again",
                    op.method,
                    route.path
                );
            }
            // A HEAD answers what its GET answers.
            if let (Some(get), Some(head)) = (route.operation("GET"), route.operation("HEAD")) {
                assert_eq!(get.statuses, head.statuses, "{}", route.path);
            }
        }
    }
}
