//! What the tests of `http/` share: requests built in one line, and the
//! whole service — its real state and router — on a throwaway embedded
//! store, in front of an upstream that refuses every connection or accepts
//! them and never answers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tower::ServiceExt as _;

use super::{App, AppState};
use crate::config::Config;

/// A request with `headers` and no body.
pub fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request {
    with_body(method, uri, headers, "")
}

/// A request with `headers` and `body`.
pub fn with_body(method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let mut builder = axum::http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap()
}

/// What the service's upstream does.
#[derive(Debug, Clone, Copy)]
pub enum Upstream {
    /// Refuses every connection: a lookup fails at once (502).
    Refusing,
    /// Accepts connections and never answers: a lookup waits until its
    /// deadline.
    Silent,
}

/// The service, served in-process.
pub struct Service {
    pub state: Arc<AppState>,
    /// The router with the pipeline around it, as the server runs it.
    pub app: App,
    _store: tempfile::TempDir,
    /// Keeps the upstream's port: bound and not listening (refusing)...
    _refusing: Option<tokio::net::TcpSocket>,
    /// ...or listening and never accepting (silent).
    _silent: Option<tokio::net::TcpListener>,
}

impl Service {
    /// The service with `vars` on top of a minimal configuration.
    pub async fn start(upstream: Upstream, vars: &[(&str, &str)]) -> Self {
        let (refusing, silent, port) = match upstream {
            Upstream::Refusing => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
                let port = socket.local_addr().unwrap().port();
                (Some(socket), None, port)
            }
            Upstream::Silent => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                (None, Some(listener), port)
            }
        };
        let store = tempfile::tempdir().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let path = store.path().join("http.redb").display().to_string();
        let config: HashMap<String, String> = [
            ("ZSXQ_API_BASE", base.as_str()),
            ("ZSXQ_GROUP_ID", "51122858222824"),
            ("ZSXQ_ACCESS_TOKEN", "test-token"),
            ("EMBEDDED_PATH", path.as_str()),
            ("API_MAX_RETRIES", "0"),
            ("API_REQUEST_DELAY", "0"),
            ("WARMUP_INTERVAL", "0"),
        ]
        .into_iter()
        .chain(vars.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::from_vars(&config).unwrap();
        let state = crate::startup::build_state(&config).await.unwrap();
        Self {
            app: super::router(state.clone()),
            state,
            _store: store,
            _refusing: refusing,
            _silent: silent,
        }
    }

    /// The answer to `request`.
    pub async fn send(&self, request: Request) -> Response {
        match self.app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
