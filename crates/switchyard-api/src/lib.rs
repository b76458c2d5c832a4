//! Switchyard's API layer: HTTP in, calls on the request pipeline, HTTP
//! out. It holds no business logic: handlers parse, call, encode.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/messages` (Anthropic's
//! shape), `POST /v1/embeddings`, `GET /v1/models`,
//! `GET /v1/models/{model}`, collections, documents and search under
//! `/v1/collections` (see [`collections`]), `GET /v1/ingestion_jobs/{id}`,
//! `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus), and the admin
//! API under `/admin/` (tenants, teams, keys, usage, audit, alerts). Every
//! response
//! carries `x-request-id` (the client's own when it sent one); every error
//! is OpenAI-shaped.

mod admin;
mod anthropic;
mod calls;
mod chat;
mod collections;
mod context;
mod conversations;
mod embeddings;
pub mod error;
pub mod extract;
mod feedback;
mod listener;
mod metrics;
mod models;
mod moderations;
mod responses;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use switchyard_governance::Governance;
use switchyard_pipeline::Pipeline;
use switchyard_telemetry::trace;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
pub use crate::listener::Limits;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// `GET /metrics` answers anyone even when keys are required (for a
    /// Prometheus that scrapes without credentials on a private network).
    pub public_metrics: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            public_metrics: false,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub public_metrics: bool,
}

impl AppState {
    pub fn governance(&self) -> &Arc<Governance> {
        self.pipeline.governance()
    }
}

/// The complete HTTP application over `pipeline`. Without retrieval in
/// its snapshot (no embeddings model configured) the collection endpoints
/// answer 503.
pub fn router(pipeline: Arc<Pipeline>, config: &ApiConfig) -> Router {
    let state = AppState {
        pipeline,
        public_metrics: config.public_metrics,
    };
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/moderations", post(moderations::moderations))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .route("/v1/conversations", post(conversations::create))
        .route(
            "/v1/conversations/{id}",
            get(conversations::retrieve)
                .post(conversations::update)
                .delete(conversations::delete),
        )
        .route(
            "/v1/conversations/{id}/items",
            get(conversations::list_items).post(conversations::add_items),
        )
        .route(
            "/v1/conversations/{id}/items/{item_id}",
            get(conversations::retrieve_item).delete(conversations::delete_item),
        )
        .route(
            "/v1/collections",
            post(collections::create).get(collections::list),
        )
        .route(
            "/v1/collections/{name}",
            get(collections::retrieve).delete(collections::delete),
        )
        .route(
            "/v1/collections/{name}/documents",
            post(collections::add_documents).get(collections::list_documents),
        )
        .route(
            "/v1/collections/{name}/documents/{id}",
            axum::routing::put(collections::upload_document).delete(collections::delete_document),
        )
        .route("/v1/collections/{name}/search", post(collections::search))
        .route("/v1/ingestion_jobs/{id}", get(collections::job))
        .route("/v1/usage", get(admin::own_usage))
        .route("/v1/feedback", post(feedback::give))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*model}", get(models::retrieve))
        .route(
            "/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/admin/tenants/{id}",
            get(admin::get_tenant).patch(admin::update_tenant),
        )
        .route(
            "/admin/tenants/{id}/guardrails",
            put(admin::set_tenant_guardrails),
        )
        .route(
            "/admin/teams",
            post(admin::create_team).get(admin::list_teams),
        )
        .route(
            "/admin/teams/{id}",
            get(admin::get_team).patch(admin::update_team),
        )
        .route("/admin/keys", post(admin::create_key).get(admin::list_keys))
        .route(
            "/admin/keys/{id}",
            get(admin::get_key)
                .patch(admin::update_key)
                .delete(admin::revoke_key),
        )
        .route("/admin/models", get(admin::local_models))
        .route("/admin/models/load", post(admin::load_model))
        .route("/admin/models/unload", post(admin::unload_model))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/alerts", get(admin::alerts))
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(models::healthz))
        .route("/readyz", get(models::readyz))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    // Failures are logged once, by the error response itself, at the level
    // they deserve (a 503 from /readyz is not an ERROR).
    let trace = TraceLayer::new_for_http()
        .on_failure(())
        .make_span_with(server_span)
        .on_response(
            |response: &Response, _latency: Duration, span: &tracing::Span| {
                let status = response.status();
                trace::annotate(span, || {
                    [(
                        "http.response.status_code",
                        i64::from(status.as_u16()).into(),
                    )]
                });
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            },
        );
    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(TimeOrderedIds))
            .layer(trace)
            .layer(axum::middleware::from_fn(with_trace_context))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

/// The request's server span. With span export on it continues the
/// client's trace and carries OpenTelemetry's span name and kind; without,
/// it holds only what the log lines show.
fn server_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let method = request.method();
    let path = request.uri().path();
    if !trace::exporting() {
        return tracing::info_span!(
            "request",
            method = %method,
            path = %path,
            request_id,
            model = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {path}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        method = %method,
        path = %path,
        request_id,
        model = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    trace::continue_trace(&span, request.headers());
    span
}

/// What is known of the request being handled before its handler runs.
struct Arrival {
    /// When it arrived.
    at: std::time::Instant,
    /// The name of the client certificate its TLS connection verified.
    client_certificate: Option<Arc<str>>,
}

tokio::task_local! {
    static ARRIVAL: Arrival;
}

/// When the current request arrived, if a request is being handled.
pub(crate) fn arrived() -> Option<std::time::Instant> {
    ARRIVAL.try_with(|arrival| arrival.at).ok()
}

/// The verified client certificate of the current request's connection.
pub(crate) fn client_certificate() -> Option<String> {
    ARRIVAL
        .try_with(|arrival| arrival.client_certificate.as_deref().map(str::to_owned))
        .ok()
        .flatten()
}

/// Notes when the request arrived and the client certificate its
/// connection showed, and keeps its trace context at hand for upstream
/// calls.
async fn with_trace_context(request: axum::extract::Request, next: Next) -> Response {
    let at = std::time::Instant::now();
    let client_certificate = request
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::TlsPeer>>()
        .and_then(|peer| peer.0.client_certificate.clone());
    let context = trace::request_trace(request.headers());
    let arrival = Arrival {
        at,
        client_certificate,
    };
    ARRIVAL
        .scope(arrival, trace::in_request_trace(context, next.run(request)))
        .await
}

/// Request ids are UUIDv7: time-ordered, so the ledger's index on them
/// grows at its end instead of touching a random page per request.
#[derive(Clone, Copy)]
struct TimeOrderedIds;

impl MakeRequestId for TimeOrderedIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        axum::http::HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::invalid_request(
            format!("unknown request URL: {method} {}", uri.path()),
            None,
        )
    }
    .with_code("unknown_url")
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::invalid_request(format!("{method} is not allowed on {}", uri.path()), None)
    }
    .with_code("method_not_allowed")
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        ..ApiError::invalid_request("internal error; the request was not completed", None)
    }
    .into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and gives in-flight requests up to `grace` to finish; each
/// connection held to `limits`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: Limits,
) {
    let listener = listener::PlainListener {
        tcp: listener,
        slots: listener::Slots::new(limits.max_connections),
    };
    listener::serve_connections(listener, app, shutdown, grace, limits).await;
}

/// [`serve`] over TLS: `listener` hands over finished handshakes (and
/// holds the connection limit it was made with), and each request knows
/// the client certificate its connection verified.
pub async fn serve_tls(
    listener: tls::TlsListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: Limits,
) {
    listener::serve_connections(listener, app, shutdown, grace, limits).await;
}
