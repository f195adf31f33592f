//! `/kv/{key}`: GET, PUT and DELETE of one key.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::Api;
use super::response::{self, Body, CONTEXT_HEADER};
use crate::error::{Error, Result};
use crate::version::{Content, Context};

pub const ALLOWED: &str = "GET, PUT, DELETE";

pub async fn handle(api: &Api, raw_key: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let key = decode_key(raw_key, api.limits.max_key_bytes)?;
    match *req.method() {
        Method::GET => {
            params(req.uri().query(), &[])?;
            get(api, &key).await
        }
        Method::PUT => {
            let returnbody = params(req.uri().query(), &["returnbody"])?.returnbody;
            check_content_type(req.headers())?;
            let context = context(api, req.headers())?;
            let body =
                read_body(req, api.limits.max_value_bytes, api.limits.body_timeout_ms).await?;
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| Error::InvalidJson(e.to_string()))?;
            write(api, &key, context, Content::Value(body), returnbody).await
        }
        Method::DELETE => {
            params(req.uri().query(), &[])?;
            let context = context(api, req.headers())?;
            write(api, &key, context, Content::Tombstone, false).await
        }
        ref other => Err(Error::MethodNotAllowed {
            method: other.to_string(),
            allowed: ALLOWED,
        }),
    }
}

async fn get(api: &Api, key: &str) -> Result<Response<Body>> {
    let Some(set) = api.coordinator.read(key, false).await? else {
        return Ok(response::not_found_key());
    };
    metrics::histogram!(crate::metrics::READ_SIBLINGS).record(set.siblings().len() as f64);
    let mut response = response::siblings(&set);
    response::set_context(
        &mut response,
        &Context::read(set.context().clone()),
        api.fingerprint,
    );
    Ok(response)
}

async fn write(
    api: &Api,
    key: &str,
    context: Context,
    content: Content,
    returnbody: bool,
) -> Result<Response<Body>> {
    let written = api
        .coordinator
        .write(key, context.clone(), content, false)
        .await?;
    let (mut response, context) = if returnbody {
        let full = Context::read(written.set.context().clone());
        (response::siblings(&written.set), full)
    } else {
        (
            response::empty(StatusCode::NO_CONTENT),
            context.after_write(written.dot),
        )
    };
    response::set_context(&mut response, &context, api.fingerprint);
    Ok(response)
}

/// The key from the path: percent-decoded UTF-8, non-empty, within the limit.
fn decode_key(raw: &str, max: usize) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::BadKey("the key is empty; use /kv/{key}".into()));
    }
    let key = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadKey("the key is not UTF-8 after percent-decoding".into()))?;
    if key.len() > max {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(key.into_owned())
}

#[derive(Default)]
struct Params {
    returnbody: bool,
}

/// Parses the query string, refusing parameters the route does not know.
fn params(query: Option<&str>, known: &[&str]) -> Result<Params> {
    let mut out = Params::default();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(Error::bad_parameter(
                &name,
                format!("unknown parameter; this route takes: {known}"),
            ));
        }
        if name == "returnbody" {
            out.returnbody = match value.as_ref() {
                "true" | "" => true,
                "false" => false,
                other => {
                    return Err(Error::bad_parameter(
                        "returnbody",
                        format!("`{other}` is not true or false"),
                    ));
                }
            };
        }
    }
    Ok(out)
}

fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("(not text)");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(text.to_string()))
    }
}

fn context(api: &Api, headers: &HeaderMap) -> Result<Context> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(Context::default()),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Error::MalformedContext(crate::version::ContextError::NotBase64))?;
            if text.trim().is_empty() {
                return Ok(Context::default());
            }
            Ok(Context::decode(text, api.fingerprint)?)
        }
    }
}

/// Reads the body into an exact-size buffer, refusing it as soon as it
/// passes `max` bytes and giving up when it does not arrive in time.
pub(super) async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout_ms: u64,
) -> Result<Bytes> {
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        match len.parse::<u64>() {
            Ok(len) if len > max as u64 => return Err(Error::ValueTooLarge { max }),
            Ok(_) => {}
            Err(_) => return Err(Error::BodyRead("Content-Length is not a number".into())),
        }
    }
    let limited = Limited::new(req.into_body(), max);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), limited.collect()).await {
        Err(_) => Err(Error::BodyTimeout(timeout_ms)),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Error::ValueTooLarge { max }),
        Ok(Err(e)) => Err(Error::BodyRead(e.to_string())),
        // A copy, so the value does not pin hyper's whole read buffer.
        Ok(Ok(collected)) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
    }
}
