//! The one error type of chorus. Each variant knows its HTTP status, its
//! stable machine-readable code and whether a client may retry.

use http::StatusCode;

use crate::version::ContextError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the URI is {len} bytes; the limit is {max} (16 times limits.max_key_bytes and 4 KiB, at most 64 KiB)"
    )]
    UriTooLong { len: usize, max: usize },
    #[error("the body is not valid JSON: {0}; send one JSON document")]
    InvalidJson(String),
    #[error("the key is not usable: {0}")]
    BadKey(String),
    #[error("the key is {len} bytes; the limit is {max} bytes (limits.max_key_bytes)")]
    KeyTooLarge { len: usize, max: usize },
    #[error("the body is over the limit of {max} bytes (limits.max_value_bytes)")]
    ValueTooLarge { max: usize },
    #[error(
        "the write would leave {count} siblings, over the limit of {max} (limits.max_siblings); read the key and write with its context to resolve them"
    )]
    TooManySiblings { count: usize, max: usize },
    #[error(
        "the write would leave {bytes} bytes of siblings, over the limit of {max} (limits.max_set_bytes); read the key and write with its context to resolve them"
    )]
    SiblingsTooLarge { bytes: usize, max: usize },
    #[error("parameter `{name}`: {reason}")]
    BadParameter { name: String, reason: String },
    #[error(
        "the X-Chorus-Context header is unusable: {0}; send back a context this cluster returned, or none"
    )]
    MalformedContext(#[from] ContextError),
    #[error("content type `{0}` is not supported; send application/json")]
    UnsupportedMediaType(String),
    #[error("the batch is too large: {0}")]
    BatchTooLarge(String),
    /// An `Idempotency-Key` already used for another request to the key.
    #[error(
        "the Idempotency-Key `{0}` was used for another request to this key (another body, context, condition or ttl_ms); use a new key for a new request"
    )]
    IdempotencyKeyReused(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error(
        "{0}; a key's type is fixed by its first write: plain JSON values live on /kv, counters, sets and maps on /crdt (docs/api.md, CRDT keys)"
    )]
    TypeMismatch(crate::version::Mismatch),
    /// An increment the counter's per-node count cannot hold.
    #[error("{0}")]
    CounterOverflow(String),
    #[error("method {method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error("no route {0}; see docs/api.md")]
    NoRoute(String),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("replica {node} is unavailable: {reason}")]
    Unavailable { node: String, reason: String },
    /// A client (the CLI, a benchmark) could not reach the node at `url`.
    #[error("cannot reach {url}: {reason}; is a chorus node listening there?")]
    Unreachable { url: String, reason: String },
    /// The request reached `node` (or may have) and no answer came: it may
    /// have been applied there. Unlike [`Error::Unavailable`], trying the
    /// same write on another replica could apply it twice.
    #[error("replica {node} did not answer a request it may have applied: {reason}")]
    Indeterminate { node: String, reason: String },
    #[error(
        "{acked} of the {needed} replica answers needed arrived ({primary_acked} from primaries; failed: {}); a write may still have been stored on the replicas that answered",
        failed.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join("; ")
    )]
    QuorumNotMet {
        needed: usize,
        acked: usize,
        primary_acked: usize,
        /// (node, reason) of each replica that failed.
        failed: Vec<(String, String)>,
    },
    #[error(
        "no replica answered within timeout_ms with a version as new as the X-Chorus-Context sent; retry, or read without the context"
    )]
    SessionNotSatisfied,
    #[error("node {node}: {message}")]
    Remote {
        node: String,
        status: u16,
        code: &'static str,
        message: String,
        retryable: bool,
    },
    #[error("no member `{0}` in the ring; see GET /cluster")]
    UnknownNode(String),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("peer protocol error: {0}")]
    Protocol(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("{0}; send `Authorization: Bearer <token>` with a token from [security] tokens")]
    Unauthenticated(&'static str),
    #[error("token `{token}` lacks the `{needs}` scope this route needs")]
    Forbidden { token: String, needs: &'static str },
    #[error("peer request refused: {0}")]
    PeerUnauthenticated(String),
    #[error(
        "the peer message of {len} bytes is over this node's limit of {max} (twice limits.max_set_bytes and 1 MiB, at least 64 MiB)"
    )]
    PeerMessageTooLarge { len: u64, max: usize },
    #[error(
        "this node has no peer service `{0}`; a node of a newer build? see docs/operations.md, Upgrading"
    )]
    UnknownService(String),
    #[error(
        "peer service `{service}` version {version} is not spoken here; this node speaks version {speaks}"
    )]
    UnsupportedVersion {
        service: String,
        version: u16,
        speaks: u16,
    },
    #[error("this node is at its limit of {limit} {what} (limits.{key}); retry after a second")]
    Overloaded {
        what: &'static str,
        key: &'static str,
        limit: usize,
    },
    #[error(
        "the feed cursor is unusable: {0}; send back a `next` this cluster returned, or since=now"
    )]
    BadCursor(String),
    /// The cursor points before what some node's change log still holds
    /// (`changes.retention_ms`): changes after it may be gone. `next` is
    /// a cursor at the present, to resume from after a rescan.
    #[error(
        "the cursor is older than the change log retains (changes.retention_ms); rescan the prefix, then follow the feed from `next`"
    )]
    CursorExpired { next: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        use Error::*;
        match self {
            InvalidJson(_)
            | BadKey(_)
            | BadParameter { .. }
            | MalformedContext(_)
            | BadCursor(_) => StatusCode::BAD_REQUEST,
            KeyTooLarge { .. }
            | ValueTooLarge { .. }
            | BatchTooLarge(_)
            | PeerMessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // 503 as Riak does: the key cannot take more until a client resolves it.
            TooManySiblings { .. } | SiblingsTooLarge { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            TypeMismatch(_) | CounterOverflow(_) => StatusCode::CONFLICT,
            NoRoute(_) => StatusCode::NOT_FOUND,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyRead(_) => StatusCode::BAD_REQUEST,
            Unavailable { .. }
            | Unreachable { .. }
            | Indeterminate { .. }
            | QuorumNotMet { .. }
            | SessionNotSatisfied => StatusCode::SERVICE_UNAVAILABLE,
            // A peer's status reaches a client only when it is one a
            // client route answers (the route table's, docs/openapi.yaml):
            // a peer's own 401 or 501, or a number it made up, is a 500.
            Remote { status, .. } => match status {
                400 | 404 | 408 | 409 | 410 | 412 | 413 | 415 | 422 | 503 => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            UnknownNode(_) => StatusCode::NOT_FOUND,
            Membership(_) => StatusCode::CONFLICT,
            Protocol(_) | Storage(_) | Config { .. } | Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Unauthenticated(_) | PeerUnauthenticated(_) => StatusCode::UNAUTHORIZED,
            Forbidden { .. } => StatusCode::FORBIDDEN,
            UnknownService(_) | UnsupportedVersion { .. } => StatusCode::NOT_IMPLEMENTED,
            Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            CursorExpired { .. } => StatusCode::GONE,
        }
    }

    /// The stable code clients match on, the `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        use Error::*;
        match self {
            UriTooLong { .. } => "uri_too_long",
            InvalidJson(_) => "invalid_json",
            BadKey(_) => "bad_key",
            KeyTooLarge { .. } => "key_too_large",
            ValueTooLarge { .. } => "value_too_large",
            BatchTooLarge(_) => "batch_too_large",
            BadParameter { .. } => "bad_parameter",
            TooManySiblings { .. } => "too_many_siblings",
            SiblingsTooLarge { .. } => "siblings_too_large",
            MalformedContext(ContextError::KeyMismatch) => "context_key_mismatch",
            MalformedContext(_) => "malformed_context",
            UnsupportedMediaType(_) => "unsupported_media_type",
            MethodNotAllowed { .. } => "method_not_allowed",
            PreconditionFailed(_) => "precondition_failed",
            IdempotencyKeyReused(_) => "idempotency_key_reused",
            TypeMismatch(_) => "type_mismatch",
            CounterOverflow(_) => "counter_overflow",
            NoRoute(_) => "no_route",
            BodyTimeout(_) => "body_timeout",
            BodyRead(_) => "body_unreadable",
            Unavailable { .. } | Unreachable { .. } => "unavailable",
            Indeterminate { .. } => "indeterminate",
            QuorumNotMet { .. } => "quorum_not_met",
            SessionNotSatisfied => "session_not_satisfied",
            Remote { code, .. } => code,
            UnknownNode(_) => "unknown_node",
            Membership(_) => "membership_conflict",
            Protocol(_) => "protocol_error",
            Storage(_) => "storage_error",
            Config { .. } => "config_error",
            Io(_) => "io_error",
            Unauthenticated(_) => "unauthenticated",
            Forbidden { .. } => "forbidden",
            PeerUnauthenticated(_) => "peer_unauthenticated",
            PeerMessageTooLarge { .. } => "peer_message_too_large",
            UnknownService(_) => "unknown_service",
            UnsupportedVersion { .. } => "unsupported_version",
            Overloaded { .. } => "overloaded",
            BadCursor(_) => "bad_cursor",
            CursorExpired { .. } => "cursor_expired",
        }
    }

    /// Whether the same request may succeed if sent again unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Remote { retryable, .. } => *retryable,
            other => matches!(
                other,
                Error::Unavailable { .. }
                    | Error::Unreachable { .. }
                    | Error::Indeterminate { .. }
                    | Error::QuorumNotMet { .. }
                    | Error::SessionNotSatisfied
                    | Error::BodyTimeout(_)
                    | Error::Storage(_)
                    | Error::Io(_)
                    | Error::Overloaded { .. }
            ),
        }
    }

    /// Every code [`Error::code`] can return, so that an error a peer sends
    /// back keeps its code (and unknown codes from a newer peer do not).
    pub fn known_code(code: &str) -> &'static str {
        const CODES: &[&str] = &[
            "uri_too_long",
            "invalid_json",
            "bad_key",
            "key_too_large",
            "value_too_large",
            "batch_too_large",
            "bad_parameter",
            "too_many_siblings",
            "siblings_too_large",
            "malformed_context",
            "context_key_mismatch",
            "unsupported_media_type",
            "method_not_allowed",
            "precondition_failed",
            "idempotency_key_reused",
            "type_mismatch",
            "counter_overflow",
            "no_route",
            "body_timeout",
            "body_unreadable",
            "unavailable",
            "indeterminate",
            "quorum_not_met",
            "session_not_satisfied",
            "unknown_node",
            "membership_conflict",
            "protocol_error",
            "storage_error",
            "config_error",
            "io_error",
            "unauthenticated",
            "forbidden",
            "peer_unauthenticated",
            "peer_message_too_large",
            "unknown_service",
            "unsupported_version",
            "overloaded",
            "bad_cursor",
            "cursor_expired",
        ];
        CODES
            .iter()
            .find(|c| **c == code)
            .copied()
            .unwrap_or("remote_error")
    }

    pub fn bad_parameter(name: &str, reason: impl Into<String>) -> Self {
        Error::BadParameter {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<crate::version::Mismatch> for Error {
    fn from(e: crate::version::Mismatch) -> Self {
        Error::TypeMismatch(e)
    }
}

impl From<crate::version::Refused> for Error {
    fn from(e: crate::version::Refused) -> Self {
        match e {
            crate::version::Refused::Mismatch(m) => Error::TypeMismatch(m),
            overflow => Error::CounterOverflow(overflow.to_string()),
        }
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and every source under it, joined by `: `: hyper's client
/// errors say only "client error (Connect)" at the top, and the reason
/// (refused, a certificate expired, an unknown issuer) is underneath.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_knows_its_status_code_and_whether_to_retry() {
        let cases = [
            (Error::InvalidJson("x".into()), 400, "invalid_json", false),
            (
                Error::KeyTooLarge { len: 2, max: 1 },
                413,
                "key_too_large",
                false,
            ),
            (
                Error::TooManySiblings { count: 2, max: 1 },
                503,
                "too_many_siblings",
                false,
            ),
            (Error::BodyTimeout(1), 408, "body_timeout", true),
            (
                Error::Unavailable {
                    node: "n2".into(),
                    reason: "down".into(),
                },
                503,
                "unavailable",
                true,
            ),
            (Error::Storage("disk".into()), 500, "storage_error", true),
            (
                Error::Unauthenticated("no token"),
                401,
                "unauthenticated",
                false,
            ),
            (
                Error::Forbidden {
                    token: "app".into(),
                    needs: "admin",
                },
                403,
                "forbidden",
                false,
            ),
            (
                Error::BatchTooLarge("1001 ops".into()),
                413,
                "batch_too_large",
                false,
            ),
            (
                Error::PreconditionFailed("the key has a value".into()),
                412,
                "precondition_failed",
                false,
            ),
            (
                Error::TypeMismatch(crate::version::Mismatch::new(
                    crate::version::Shape::Plain,
                    crate::version::Shape::Crdt(crate::version::Kind::Counter),
                )),
                409,
                "type_mismatch",
                false,
            ),
            (
                Error::CounterOverflow("past 2^64 - 1".into()),
                409,
                "counter_overflow",
                false,
            ),
            (
                Error::IdempotencyKeyReused("order-17".into()),
                422,
                "idempotency_key_reused",
                false,
            ),
            (
                Error::PeerUnauthenticated("bad MAC".into()),
                401,
                "peer_unauthenticated",
                false,
            ),
            (
                Error::Overloaded {
                    what: "requests in flight",
                    key: "max_inflight",
                    limit: 1,
                },
                503,
                "overloaded",
                true,
            ),
        ];
        for (error, status, code, retryable) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            let remote = crate::peer::WireError::from_error(&error).into_error("n2");
            let client_route = [400, 404, 408, 409, 410, 412, 413, 415, 422, 503];
            let passed = match client_route.contains(&status) {
                true => status,
                false => 500,
            };
            assert_eq!(remote.status().as_u16(), passed, "{error} from a peer");
            assert_eq!(remote.code(), code);
            assert_eq!(error.code(), code);
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
        for made_up in [0, 299, 999, 65535] {
            let wire = crate::peer::WireError {
                status: made_up,
                code: "no_such_code".into(),
                message: "?".into(),
                retryable: false,
            };
            let remote = wire.into_error("n2");
            assert_eq!(remote.status().as_u16(), 500, "a peer's {made_up}");
            assert_eq!(remote.code(), "remote_error");
        }
    }
}
