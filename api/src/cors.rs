//! Browsers: CORS and the origin check, as Appwrite does them. A request from a page
//! (`Origin`) is answered with credentials allowed only when the page's host is `localhost` or
//! covered by one of the project's web platforms (`basalt platform add`); a write from any
//! other page is refused with 403 `general_unknown_origin` unless it carries an API key, and a
//! read gets no CORS headers, so the browser keeps its answer from the page. Requests without
//! `Origin` (server SDKs, scripts) are not browsers' and pass untouched.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::reader::Consistency;
use model::ErrorCode;

const EXPOSED: &str = "X-Appwrite-Session, X-Fallback-Cookies, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Basalt-Applied-Index, X-Basalt-Staleness-Ms";
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// The host of an origin (`https://app.example.com:8443` → `app.example.com`).
pub(crate) fn origin_host(origin: &str) -> Option<String> {
    let rest = origin.split_once("://")?.1;
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => rest.split([':', '/']).next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The project, read exactly as authorisation reads it (`auth::project_from`); a request
/// naming two is refused there, and is given no CORS headers here.
fn project_of(req: &Request) -> Result<Option<String>, ()> {
    crate::auth::project_from(req.headers(), req.uri().query())
}

/// May pages on `origin` call `project` with credentials? `localhost` always may (as in
/// Appwrite); others must be covered by a web platform of the project. A platform registered
/// a moment ago through another node is looked for once more on a linearizable view.
pub(crate) async fn allowed(s: &AppState, project: Option<&str>, origin: &str) -> bool {
    let Some(host) = origin_host(origin) else {
        return false;
    };
    if host == "localhost" {
        return true;
    }
    let Some(project) = project else {
        return false;
    };
    for consistency in [Consistency::Local, Consistency::Linearizable] {
        let Ok(view) = s.backend.read(consistency).await else {
            return false;
        };
        if let Ok(platforms) = view.list_platforms(project) {
            if platforms.iter().any(|p| p.covers(&host)) {
                return true;
            }
        }
    }
    false
}

fn allow(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub(crate) async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let origin_text = origin.to_str().unwrap_or("").to_string();
    let Ok(project) = project_of(&req) else {
        return ApiError(model::Error::invalid(
            "The request names more than one project (`project` parameter and X-Appwrite-Project header).",
        ))
        .into_response();
    };
    if req.method() == Method::OPTIONS {
        // A preflight names no project unless its URL does: it is answered for any page when
        // the project is unknown, and the request itself is judged when it comes.
        let ok = match &project {
            Some(p) => allowed(&s, Some(p), &origin_text).await,
            None => origin_host(&origin_text).is_some(),
        };
        let mut res = StatusCode::NO_CONTENT.into_response();
        if ok {
            let h = res.headers_mut();
            allow(h, &origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            let asked = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("*"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(86400));
        }
        return res;
    }
    let ok = allowed(&s, project.as_deref(), &origin_text).await;
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let keyed = req
        .headers()
        .get("x-appwrite-key")
        .is_some_and(|v| !v.is_empty());
    if !ok && writes && !keyed {
        return ApiError::new(
            ErrorCode::GeneralUnknownOrigin,
            "The request originated from an unknown origin. If you trust this domain, please list it as a trusted platform in the Appwrite console.",
        )
        .into_response();
    }
    let mut res = next.run(req).await;
    if ok {
        allow(res.headers_mut(), &origin);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_hosts() {
        assert_eq!(
            origin_host("https://App.Example.com:8443").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            origin_host("http://localhost:3000").as_deref(),
            Some("localhost")
        );
        assert_eq!(origin_host("http://[::1]:80").as_deref(), Some("::1"));
        assert_eq!(origin_host("null"), None);
        assert_eq!(origin_host("https://"), None);
    }

    #[test]
    fn platforms_cover_hosts_and_wildcard_subdomains() {
        let p = |h: &str| model::schema::Platform {
            id: "p".into(),
            project: "x".into(),
            kind: "web".into(),
            name: "n".into(),
            hostname: h.into(),
            created_at: 0,
            updated_at: 0,
        };
        assert!(p("app.example.com").covers("app.example.com"));
        assert!(!p("app.example.com").covers("evil.app.example.com"));
        assert!(p("*.example.com").covers("a.example.com"));
        assert!(!p("*.example.com").covers("example.com"));
        assert!(!p("*.example.com").covers("badexample.com"));
    }
}
