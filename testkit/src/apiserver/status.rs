//! API errors as the apiserver sends them: a `meta.k8s.io/v1` `Status` body with the matching
//! HTTP code and `reason`. Nothing here knows about routes or the store.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::resources::Resource;

/// One failed request: HTTP code, machine-readable `reason`, human message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also the Status `code`.
    pub code: u16,
    /// The Status `reason` (`NotFound`, `Expired`, …).
    pub reason: &'static str,
    /// The Status `message`.
    pub message: String,
    /// The Status `details`, when the apiserver sends them.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// 404 for one object: `services "web" not found`.
    pub fn not_found(resource: &Resource, name: &str) -> ApiError {
        let mut err = ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", resource.qualified_name()));
        err.details = Some(json!({ "name": name, "group": resource.group, "kind": resource.plural }));
        err
    }

    /// 404 for a path the server does not serve.
    pub fn no_route(path: &str) -> ApiError {
        let mut err = ApiError::new(404, "NotFound", "the server could not find the requested resource");
        err.details = Some(json!({ "causes": [{ "reason": "UnexpectedServerResponse", "message": path }] }));
        err
    }

    /// 400 for a malformed parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405 for a verb this server does not implement on a path.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method ({method}) on the requested resource"),
        )
    }

    /// 410 `Expired`: the requested resourceVersion (or continue token) was compacted away.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 410 for a watch or exact list from before the compaction point, with the apiserver's text.
    pub fn too_old(requested: u64, oldest: u64) -> ApiError {
        ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    /// 422 for a request the apiserver validates and rejects.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }

    /// 401 for a request without the expected bearer token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 503 while the test has made the server unavailable.
    pub fn unavailable() -> ApiError {
        ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    }

    /// 504 for a resourceVersion newer than anything the server has seen.
    pub fn too_large(requested: u64, current: u64) -> ApiError {
        let mut err =
            ApiError::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"));
        err.details = Some(
            json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }], "retryAfterSeconds": 1 }),
        );
        err
    }

    /// The `Status` object (also used as the object of a watch `ERROR` event).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.status())).into_response();
        if self.code == 503 || self.code == 504 {
            // Like the apiserver (and what kube's retry layer honours): try again in a second.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `Result` with an [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
