//! HTTP: the axum router, path and query parsing, and the list / get / watch / discovery
//! responses, all logged. State lives in `Shared`; objects in `store`; watch streams in `watch`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::discovery;
use super::log::{RequestRecord, Verb};
use super::resources::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, Result};
use super::store::{Filter, ListRequest};
use super::watch::{self, WatchRequest};
use super::Shared;

/// Every request goes through one handler: the apiserver's path space is easier to parse by hand.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// What a path names.
#[derive(Debug)]
enum Route<'a> {
    Discovery(Value),
    Health,
    Collection { resource: Resource, namespace: Option<&'a str> },
    Object { resource: Resource, namespace: Option<&'a str>, name: &'a str },
    Unknown,
}

type Params = Vec<(String, String)>;

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let params: Params = Query::try_from_uri(&uri).map(|Query(params)| params).unwrap_or_default();
    let route = parse_route(&segments, &shared);
    let verb = verb_of(&route, &method, &params);
    let authorized = shared.bearer_token.as_ref().is_none_or(|token| {
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(format!("Bearer {token}").as_str())
    });
    let response = if !authorized {
        ApiError::unauthorized().into_response()
    } else if shared.unavailable.load(Ordering::SeqCst) {
        ApiError::unavailable().into_response()
    } else {
        respond(&shared, &method, route, &params).await.unwrap_or_else(IntoResponse::into_response)
    };
    shared.log().push(RequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        params,
        verb,
        status: response.status().as_u16(),
        at: std::time::Instant::now(),
    });
    response
}

fn parse_route<'a>(segments: &[&'a str], shared: &Shared) -> Route<'a> {
    if discovery::is_health(segments) {
        return Route::Health;
    }
    if let Some(document) = discovery::document(segments, shared.addr) {
        return Route::Discovery(document);
    }
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::Unknown,
    };
    let resource = |plural: &str| Resource::by_path(group, version, plural);
    match rest {
        ["namespaces", namespace, plural, tail @ ..] => match (resource(plural), tail) {
            (Some(resource), []) if resource.namespaced => Route::Collection { resource, namespace: Some(namespace) },
            (Some(resource), [name]) if resource.namespaced => {
                Route::Object { resource, namespace: Some(namespace), name }
            }
            _ => Route::Unknown,
        },
        [plural] => resource(plural).map_or(Route::Unknown, |resource| Route::Collection { resource, namespace: None }),
        [plural, name] => match resource(plural) {
            Some(resource) if !resource.namespaced => Route::Object { resource, namespace: None, name },
            _ => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

fn verb_of(route: &Route<'_>, method: &Method, params: &Params) -> Verb {
    match (route, *method == Method::GET) {
        (Route::Collection { .. }, true) if flag(params, "watch") => Verb::Watch,
        (Route::Collection { .. }, true) => Verb::List,
        (Route::Object { .. }, true) => Verb::Get,
        (Route::Discovery(_) | Route::Health, true) => Verb::Discovery,
        _ => Verb::Other,
    }
}

async fn respond(shared: &Arc<Shared>, method: &Method, route: Route<'_>, params: &Params) -> Result<Response> {
    if *method != Method::GET {
        return Err(match route {
            Route::Unknown => ApiError::no_route(method.as_str()),
            _ => ApiError::method_not_allowed(method.as_str()),
        });
    }
    match route {
        Route::Discovery(document) => Ok(Json(document).into_response()),
        Route::Health => Ok("ok".into_response()),
        Route::Collection { resource, namespace } if flag(params, "watch") => {
            watch_response(shared, filter(resource, namespace, params)?, params).await
        }
        Route::Collection { resource, namespace } => {
            list_response(shared, filter(resource, namespace, params)?, params)
        }
        Route::Object { resource, namespace, name } => {
            let store = shared.store();
            let object = store.get(&resource, namespace.unwrap_or_default(), name);
            object
                .map(|object| Json(object.clone()).into_response())
                .ok_or_else(|| ApiError::not_found(&resource, name))
        }
        Route::Unknown => Err(ApiError::no_route("GET")),
    }
}

fn list_response(shared: &Shared, filter: Filter, params: &Params) -> Result<Response> {
    let resource = filter.resource;
    let limit = param(params, "limit")
        .map(|limit| limit.parse().map_err(|_| ApiError::bad_request(format!("invalid limit: {limit:?}"))))
        .transpose()?;
    let request = ListRequest {
        filter,
        limit,
        continue_token: param(params, "continue").filter(|token| !token.is_empty()).map(str::to_string),
        resource_version: param(params, "resourceVersion").map(str::to_string),
        version_match: param(params, "resourceVersionMatch").map(str::to_string),
    };
    let page = shared.store().list(&request)?;
    let mut metadata = json!({ "resourceVersion": page.resource_version.to_string() });
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let list = json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": page.items,
    });
    Ok(Json(list).into_response())
}

async fn watch_response(shared: &Arc<Shared>, filter: Filter, params: &Params) -> Result<Response> {
    wait_while_held(shared).await;
    if shared.unavailable.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable());
    }
    let timeout = param(params, "timeoutSeconds")
        .map(|secs| secs.parse().map(Duration::from_secs).map_err(|_| ApiError::bad_request("invalid timeoutSeconds")))
        .transpose()?;
    let request = WatchRequest {
        filter,
        resource_version: param(params, "resourceVersion").map(str::to_string),
        bookmarks: flag(params, "allowWatchBookmarks"),
        send_initial_events: flag(params, "sendInitialEvents"),
        timeout,
    };
    let open = watch::open(&mut shared.store(), &request)?;
    let body = Body::from_stream(open.into_body_stream(shared.clone()));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// While the test holds watches (`ApiServer::hold_watches`), new watch requests wait here.
async fn wait_while_held(shared: &Shared) {
    let mut holds = shared.holds.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        _ = holds.wait_for(|holds| *holds == 0) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

fn filter(resource: Resource, namespace: Option<&str>, params: &Params) -> Result<Filter> {
    Ok(Filter {
        resource,
        namespace: namespace.map(str::to_string),
        labels: LabelSelector::parse(param(params, "labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(param(params, "fieldSelector").unwrap_or_default())?,
    })
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// `true` / `1`, like the apiserver's boolean query parameters.
fn flag(params: &Params, name: &str) -> bool {
    matches!(param(params, name), Some("true" | "1"))
}
