//! Governance end to end: the real gateway process with authentication on,
//! a stand-in upstream speaking OpenAI's wire format, the admin API, and
//! the store on SQLite or on the PostgreSQL named by
//! `SWITCHYARD_TEST_DATABASE_URL` (Redis: `SWITCHYARD_TEST_REDIS_URL`).
//! Both are set by `make test`; when set and unreachable, tests fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, signal};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_governance::switchyard_state::testing::{
    POSTGRES_ENV, REDIS_ENV, fresh_postgres_schema, service_url,
};
use switchyard_standin::{RunningStandin, StandinConfig};

const MASTER: &str = "master-key-for-tests-0123456789";

async fn standin() -> RunningStandin {
    switchyard_standin::spawn("127.0.0.1:0".parse().unwrap(), StandinConfig::default())
        .await
        .unwrap()
}

/// `priced` costs $0.10 per token in and out: "hello" (1 token) answered
/// "echo: hello" (2 tokens) costs $0.30.
fn config(upstream: &RunningStandin, extra_top: &str, governance: &str) -> String {
    format!(
        "{extra_top}\n[governance]\nauth = true\nmaster_key = \"{MASTER}\"\nledger_flush_ms = 200\n{governance}\n\
         [models.priced]\nbackend = \"openai\"\nbase_url = \"{url}\"\npricing = {{ input = 100000.0, output = 100000.0 }}\n\
         [models.slow]\nbackend = \"openai\"\nbase_url = \"{url}\"\nheaders = {{ \"x-standin-latency-ms\" = \"300\" }}\npricing = {{ input = 100000.0, output = 100000.0 }}\n\
         [models.other]\nbackend = \"openai\"\nbase_url = \"{url}\"\n",
        url = upstream.base_url()
    )
}

/// A fresh schema of the tests' PostgreSQL, for the `_on_postgres`
/// variants. They are compiled as ignored where PostgreSQL is neither
/// configured nor required; required and missing fails.
async fn postgres_url() -> String {
    let url = service_url(POSTGRES_ENV)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set"));
    fresh_postgres_schema(&url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but unusable: {e}"))
}

/// The tests' Redis URL, for the tests that share counters.
fn redis_url() -> String {
    service_url(REDIS_ENV)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{REDIS_ENV} is not set"))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

struct Admin<'a> {
    server: &'a Server,
    key: String,
}

impl Admin<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = client()
            .request(method, format!("{}{path}", self.server.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "{path}: {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

fn master(server: &Server) -> Admin<'_> {
    Admin {
        server,
        key: MASTER.into(),
    }
}

/// A tenant with one key made with `key` as the key's settings.
async fn tenant_with_key(server: &Server, key: Value) -> (String, String) {
    let admin = master(server);
    let tenant = admin.post("/admin/tenants", json!({"name": "acme"})).await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let mut body = key;
    body["tenant_id"] = json!(tenant_id);
    if body.get("name").is_none() {
        body["name"] = json!("app");
    }
    let created = admin.post("/admin/keys", body).await;
    (tenant_id, created["key"].as_str().unwrap().to_owned())
}

async fn chat(server: &Server, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/chat/completions", server.v1()))
        .json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// Sends `total` chat requests for `model` with `key`, `concurrency` at a
/// time, spread over `servers` in turn; the statuses, bodies read.
async fn statuses_of(
    servers: &[&Server],
    key: &str,
    model: &str,
    total: usize,
    concurrency: usize,
) -> Vec<u16> {
    futures::stream::iter(0..total)
        .map(|i| async move {
            let response = chat(servers[i % servers.len()], Some(key), &ask(model)).await;
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test]
async fn keys_gate_model_calls_with_the_right_status_and_shape() {
    let upstream = standin().await;
    let server = Server::start(&config(&upstream, "", ""));
    let (_, key) = tenant_with_key(&server, json!({"allowed_models": ["priced"]})).await;
    assert!(key.starts_with("sy-key_"));

    // No key, a foreign key, a mangled key: 401, OpenAI-shaped.
    for presented in [
        None,
        Some("sk-not-ours"),
        Some("sy-key_0123456789abcdef.wrong"),
    ] {
        let response = chat(&server, presented, &ask("priced")).await;
        assert_eq!(response.status(), 401, "{presented:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Failed attempts are in the audit trail too, without the key.
    let attempt = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth("sy-key_0123456789abcdef.guessing")
        .header("x-request-id", "bad-key")
        .json(&ask("priced"))
        .send()
        .await
        .unwrap();
    assert_eq!(attempt.status(), 401);
    let audit = master(&server).get("/admin/audit?request_id=bad-key").await;
    let record = &audit["data"][0];
    assert_eq!(record["status"], 401);
    assert_eq!(record["decisions"][0]["step"], "authenticate");
    assert_eq!(record["decisions"][0]["allowed"], false);
    assert!(!audit.to_string().contains("guessing"));

    // The Anthropic door answers in Anthropic's shape.
    let response = client()
        .post(format!("{}/messages", server.v1()))
        .header("x-api-key", "sy-key_0123456789abcdef.wrong")
        .json(&json!({"model": "priced", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    // A good key, by either header.
    let response = chat(&server, Some(&key), &ask("priced")).await;
    assert_eq!(response.status(), 200);
    let response = client()
        .post(format!("{}/messages", server.v1()))
        .header("x-api-key", &key)
        .json(&json!({"model": "priced", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A model outside the allow-list: 403.
    let response = chat(&server, Some(&key), &ask("other")).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("other"));

    // A key lists the models it may call, and only with a key.
    let models: Value = client()
        .get(format!("{}/models", server.v1()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["priced"]);
    let hidden = client()
        .get(format!("{}/models/other", server.v1()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
    let anonymous = client()
        .get(format!("{}/models", server.v1()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // A member key cannot use the admin API; no key at all is a 401.
    let member = Admin {
        server: &server,
        key: key.clone(),
    };
    assert_eq!(
        member
            .send(reqwest::Method::GET, "/admin/keys", None)
            .await
            .0,
        403
    );
    let nobody = Admin {
        server: &server,
        key: String::new(),
    };
    assert_eq!(
        nobody
            .send(reqwest::Method::GET, "/admin/keys", None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn read_only_revoked_and_expired_keys_are_refused() {
    let upstream = standin().await;
    let server = Server::start(&config(&upstream, "", "key_cache_ms = 60000"));
    let admin = master(&server);
    let (tenant, reader) = tenant_with_key(&server, json!({"role": "read_only"})).await;
    let response = chat(&server, Some(&reader), &ask("priced")).await;
    assert_eq!(response.status(), 403);

    let created = admin
        .post(
            "/admin/keys",
            json!({"tenant_id": tenant, "name": "soon gone"}),
        )
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    // Listing never shows a secret or its hash.
    let listed = admin.get("/admin/keys").await;
    let text = listed.to_string();
    assert!(!text.contains(key.split('.').nth(1).unwrap()));
    assert!(!text.contains("secret_hash"));
    assert_eq!(
        chat(&server, Some(&key), &ask("priced")).await.status(),
        200
    );
    // Revocation applies at once, even with a long key cache.
    let (status, body) = admin
        .send(reqwest::Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["disabled"], true);
    let response = chat(&server, Some(&key), &ask("priced")).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    let created = admin
        .post(
            "/admin/keys",
            json!({"tenant_id": tenant, "name": "brief", "expires_in_secs": 1}),
        )
        .await;
    let brief = created["key"].as_str().unwrap().to_owned();
    assert_eq!(
        chat(&server, Some(&brief), &ask("priced")).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = chat(&server, Some(&brief), &ask("priced")).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // Bad admin input: a clear 400.
    let (status, body) = admin
        .send(
            reqwest::Method::POST,
            "/admin/keys",
            Some(json!({"tenant_id": tenant, "name": "x", "role": "king"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = admin
        .send(
            reqwest::Method::POST,
            "/admin/keys",
            Some(json!({"name": "no tenant"})),
        )
        .await;
    assert_eq!(status, 400);
}

async fn isolation_between_tenants(database_url: Option<String>) {
    let upstream = standin().await;
    let top = database_url
        .map(|url| format!("database_url = \"{url}\""))
        .unwrap_or_default();
    let server = Server::start(&config(&upstream, &top, ""));
    let admin = master(&server);
    // Tenant A with a team, a key and a request on record.
    let a = admin.post("/admin/tenants", json!({"name": "A"})).await;
    let a_id = a["id"].as_str().unwrap();
    let team_a = admin
        .post("/admin/teams", json!({"tenant_id": a_id, "name": "a-team"}))
        .await;
    let team_a_id = team_a["id"].as_str().unwrap();
    let key_a = admin
        .post(
            "/admin/keys",
            json!({"tenant_id": a_id, "team_id": team_a_id, "name": "a-key"}),
        )
        .await;
    let key_a_id = key_a["id"].as_str().unwrap();
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth(key_a["key"].as_str().unwrap())
        .header("x-request-id", "req-of-tenant-a")
        .json(&ask("priced"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Tenant B's admin.
    let b = admin.post("/admin/tenants", json!({"name": "B"})).await;
    let b_id = b["id"].as_str().unwrap();
    let b_admin_key = admin
        .post(
            "/admin/keys",
            json!({"tenant_id": b_id, "name": "b-admin", "role": "admin"}),
        )
        .await;
    let b_admin = Admin {
        server: &server,
        key: b_admin_key["key"].as_str().unwrap().into(),
    };

    use reqwest::Method;
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/admin/tenants/{a_id}"), None),
        (
            Method::PATCH,
            format!("/admin/tenants/{a_id}"),
            Some(json!({"disabled": true})),
        ),
        (Method::GET, format!("/admin/teams/{team_a_id}"), None),
        (
            Method::PATCH,
            format!("/admin/teams/{team_a_id}"),
            Some(json!({"name": "mine"})),
        ),
        (Method::GET, format!("/admin/keys/{key_a_id}"), None),
        (
            Method::PATCH,
            format!("/admin/keys/{key_a_id}"),
            Some(json!({"allowed_models": ["other"]})),
        ),
        (Method::DELETE, format!("/admin/keys/{key_a_id}"), None),
        (
            Method::POST,
            "/admin/teams".into(),
            Some(json!({"tenant_id": a_id, "name": "intruder"})),
        ),
        (
            Method::POST,
            "/admin/keys".into(),
            Some(json!({"tenant_id": a_id, "name": "intruder"})),
        ),
        (
            Method::POST,
            "/admin/keys".into(),
            Some(json!({"team_id": team_a_id, "name": "intruder"})),
        ),
        (Method::GET, format!("/admin/usage?tenant_id={a_id}"), None),
        (Method::GET, format!("/admin/audit?tenant_id={a_id}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = b_admin.send(method.clone(), &path, body).await;
        assert!(
            status == 404 || status == 403,
            "{method} {path} gave {status}: {answer}"
        );
        assert!(!answer.to_string().contains(key_a_id) || path.contains(key_a_id));
    }
    // Lists and reports show B's own objects only.
    for path in [
        "/admin/tenants",
        "/admin/teams",
        "/admin/keys",
        "/admin/usage?group_by=tenant",
        "/admin/audit",
        "/admin/alerts",
    ] {
        let listed = b_admin.get(path).await.to_string();
        assert!(!listed.contains(a_id), "{path} leaked tenant A: {listed}");
        assert!(
            !listed.contains(key_a_id),
            "{path} leaked A's key: {listed}"
        );
    }
    let audit = b_admin.get("/admin/audit?request_id=req-of-tenant-a").await;
    assert_eq!(audit["data"], json!([]));
    // Nothing of A was changed by the attempts.
    let key = admin.get(&format!("/admin/keys/{key_a_id}")).await;
    assert_eq!(key["disabled"], false);
    assert_eq!(key["allowed_models"], Value::Null);
    assert_eq!(
        admin.get(&format!("/admin/tenants/{a_id}")).await["disabled"],
        false
    );
    assert_eq!(
        admin.get(&format!("/admin/teams/{team_a_id}")).await["name"],
        "a-team"
    );
    // The master still sees A's request.
    let audit = admin.get("/admin/audit?request_id=req-of-tenant-a").await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn one_tenant_never_reaches_anothers_objects_on_sqlite() {
    isolation_between_tenants(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_postgres),
    ignore = "needs PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL (make test does)"
)]
async fn one_tenant_never_reaches_anothers_objects_on_postgres() {
    isolation_between_tenants(Some(postgres_url().await)).await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_openai_headers() {
    let upstream = standin().await;
    let server = Server::start(&config(&upstream, "", ""));
    let (_, key) = tenant_with_key(
        &server,
        json!({"limits": {"rpm": 3, "tpm": 100000, "models": {"other": {"rpm": 1}}}}),
    )
    .await;
    let response = chat(&server, Some(&key), &ask("priced")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-ratelimit-limit-requests"], "3");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "2");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "100000");
    assert!(headers.contains_key("x-ratelimit-reset-requests"));
    assert!(headers.contains_key("x-ratelimit-remaining-tokens"));
    // The per-model limit of `other` is 1 a minute.
    assert_eq!(chat(&server, Some(&key), &ask("other")).await.status(), 200);
    let refused = chat(&server, Some(&key), &ask("other")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("other"),
        "{body}"
    );
    // The key's own 3 a minute is now spent (the refusal took nothing).
    assert_eq!(
        chat(&server, Some(&key), &ask("priced")).await.status(),
        200
    );
    let refused = chat(&server, Some(&key), &ask("priced")).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
#[cfg_attr(
    not(all(switchyard_postgres, switchyard_redis)),
    ignore = "needs PostgreSQL and Redis: set SWITCHYARD_TEST_DATABASE_URL and SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn two_gateways_sharing_redis_admit_at_most_60_of_200_concurrent_requests() {
    let redis = redis_url();
    let database = postgres_url().await;
    let upstream = standin().await;
    let top = format!("database_url = \"{database}\"\nredis_url = \"{redis}\"");
    let first = Server::start(&config(&upstream, &top, ""));
    let second = Server::start(&config(&upstream, &top, ""));
    let (_, key) = tenant_with_key(&first, json!({"limits": {"rpm": 60}})).await;
    let servers = [&first, &second];
    let statuses = statuses_of(&servers, &key, "priced", 200, 200).await;
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(admitted + limited, 200, "{statuses:?}");
    assert_eq!(
        admitted, 60,
        "the two instances together admit the limit, no more"
    );
}

/// `database_url = "…"` for the top of a configuration, or nothing (SQLite).
fn database_line(database_url: Option<&str>) -> String {
    database_url
        .map(|url| format!("database_url = \"{url}\""))
        .unwrap_or_default()
}

#[tokio::test]
async fn concurrent_requests_overshoot_a_budget_by_at_most_those_in_flight_on_sqlite() {
    budget_overshoot(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_postgres),
    ignore = "needs PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL (make test does)"
)]
async fn concurrent_requests_overshoot_a_budget_by_at_most_those_in_flight_on_postgres() {
    budget_overshoot(Some(postgres_url().await)).await;
}

async fn budget_overshoot(database_url: Option<String>) {
    let upstream = standin().await;
    let server = Server::start(&config(
        &upstream,
        &database_line(database_url.as_deref()),
        "",
    ));
    let (tenant, key) = tenant_with_key(
        &server,
        json!({"budget": {"limit_usd": 3.0, "period": "monthly", "alert_at": [0.5]}}),
    )
    .await;
    let concurrency = 10;
    let statuses = statuses_of(&[&server], &key, "slow", 60, concurrency).await;
    let served = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(served + refused, 60, "{statuses:?}");
    let per_request = 0.3;
    let admin = master(&server);
    let report = admin
        .get(&format!("/admin/usage?group_by=tenant&tenant_id={tenant}"))
        .await;
    let spent = report["data"][0]["cost"].as_f64().unwrap();
    assert!(
        (spent - served as f64 * per_request).abs() < 1e-6,
        "spend matches what was served"
    );
    assert!(spent >= 3.0, "the budget was used up: {spent}");
    assert!(
        spent <= 3.0 + concurrency as f64 * per_request + 1e-6,
        "overshoot {spent} beyond what {concurrency} in flight could spend"
    );
    // From now on every request is refused, with OpenAI's quota error.
    let response = chat(&server, Some(&key), &ask("slow")).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    // The soft alert at 50% was raised once.
    let alerts = admin.get("/admin/alerts").await;
    let alerts = alerts["data"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["threshold"], 0.5);
}

#[tokio::test]
async fn the_ledger_and_audit_trail_record_each_request_with_secrets_masked_on_sqlite() {
    ledger_and_audit(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_postgres),
    ignore = "needs PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL (make test does)"
)]
async fn the_ledger_and_audit_trail_record_each_request_with_secrets_masked_on_postgres() {
    ledger_and_audit(Some(postgres_url().await)).await;
}

async fn ledger_and_audit(database_url: Option<String>) {
    let upstream = standin().await;
    let server = Server::start(&config(
        &upstream,
        &database_line(database_url.as_deref()),
        "store_prompts = true\nstore_answers = true",
    ));
    let (tenant, key) = tenant_with_key(&server, json!({"limits": {"rpm": 100}})).await;
    let body = json!({"model": "priced", "messages": [{"role": "user",
        "content": "mail jane@example.com, card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnop1234"}]});
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth(&key)
        .header("x-request-id", "audited-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let streamed = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth(&key)
        .header("x-request-id", "audited-2")
        .json(&json!({"model": "priced", "stream": true, "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let _ = streamed.text().await.unwrap();

    let admin = master(&server);
    let audit = admin.get("/admin/audit?request_id=audited-1").await;
    let record = &audit["data"][0];
    assert_eq!(record["tenant_id"], tenant.as_str());
    assert_eq!(record["status"], 200);
    let prompt = record["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("[EMAIL]") && prompt.contains("[CARD]") && prompt.contains("[API_KEY]"),
        "{prompt}"
    );
    assert!(!prompt.contains("jane@") && !prompt.contains("4111") && !prompt.contains("sk-proj"));
    assert!(record["answer"].as_str().unwrap().contains("[EMAIL]"));
    let steps: Vec<&str> = record["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["step"].as_str().unwrap())
        .collect();
    for step in ["authenticate", "models", "rate_limits", "route", "usage"] {
        assert!(steps.contains(&step), "{step} missing from {steps:?}");
    }

    // The ledger: two rows, tokens and cost from real usage.
    let report = admin
        .get(&format!("/admin/usage?group_by=key&tenant_id={tenant}"))
        .await;
    let line = &report["data"][0];
    assert_eq!(line["requests"], 2);
    let input = line["input_tokens"].as_u64().unwrap();
    let output = line["output_tokens"].as_u64().unwrap();
    assert!(
        input > answer["usage"]["prompt_tokens"].as_u64().unwrap(),
        "{line}"
    );
    assert!(
        output > answer["usage"]["completion_tokens"].as_u64().unwrap(),
        "{line}"
    );
    // $0.10 per token either way.
    let cost = line["cost"].as_f64().unwrap();
    assert!(
        (cost - (input + output) as f64 * 0.1).abs() < 1e-6,
        "{line}"
    );
    let streamed_audit = admin.get("/admin/audit?request_id=audited-2").await;
    let record = &streamed_audit["data"][0];
    assert_eq!(
        record["answer"], "echo: hello there",
        "the streamed answer is kept whole"
    );

    // Neither the key nor the prompt's secrets reach the logs.
    let logs = server.logs();
    assert!(!logs.contains(key.split('.').nth(1).unwrap()));
    assert!(!logs.contains(MASTER));
    assert!(!logs.contains("jane@example.com"));
}

/// The SQLite and PostgreSQL variants take turns: two loaded gateways at
/// once on two cores would measure the machine, not the ledger.
static ONE_KILL_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_killed_gateway_keeps_every_request_completed_a_flush_interval_before_on_sqlite() {
    let _turn = ONE_KILL_AT_A_TIME.lock().await;
    killed_under_load(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_postgres),
    ignore = "needs PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL (make test does)"
)]
async fn a_killed_gateway_keeps_every_request_completed_a_flush_interval_before_on_postgres() {
    let _turn = ONE_KILL_AT_A_TIME.lock().await;
    killed_under_load(Some(postgres_url().await)).await;
}

async fn killed_under_load(database_url: Option<String>) {
    let upstream = standin().await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let config = config(&upstream, &database_line(database_url.as_deref()), "");
    let server = Server::start_with_env(&config, &[("SWITCHYARD_DATA_DIR", &data_dir)]);
    let (tenant, key) = tenant_with_key(&server, json!({})).await;
    let started_ms = unix_ms();
    let completions = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let url = format!("{}/chat/completions", server.v1());
        let key = key.clone();
        let completions = completions.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let http = client();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("kill-{worker}-{n}");
                n += 1;
                let sent = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("x-request-id", &id)
                    .json(&ask("priced"))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() == 200 && response.bytes().await.is_ok() {
                    completions.lock().unwrap().push((id, Instant::now()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    signal(server.pid(), "KILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    drop(server);

    let restarted = Server::start_with_env(&config, &[("SWITCHYARD_DATA_DIR", &data_dir)]);
    let admin = master(&restarted);
    // Read the trail back in 100 ms slices (a page holds at most 1000).
    let mut recorded = std::collections::HashSet::new();
    let mut from = started_ms;
    while from < unix_ms() {
        let audit = admin
            .get(&format!(
                "/admin/audit?tenant_id={tenant}&from={from}&to={}&limit=1000",
                from + 100
            ))
            .await;
        let page = audit["data"].as_array().unwrap();
        assert!(page.len() < 1000, "a slice overflowed its page");
        recorded.extend(
            page.iter()
                .map(|r| r["request_id"].as_str().unwrap().to_owned()),
        );
        from += 100;
    }
    // The guarantee: one flush interval (200 ms) plus the write of a batch.
    let guarantee = Duration::from_millis(200 + 100);
    let completions = completions.lock().unwrap();
    let due: Vec<&String> = completions
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > guarantee)
        .map(|(id, _)| id)
        .collect();
    assert!(due.len() > 50, "too little load to judge: {}", due.len());
    let missing: Vec<_> = due.iter().filter(|id| !recorded.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} lost: {missing:?}",
        missing.len(),
        due.len()
    );
}

#[tokio::test]
async fn the_official_sdks_raise_their_own_auth_permission_and_rate_limit_errors() {
    let upstream = standin().await;
    let server = Server::start(&config(&upstream, "", ""));
    let (_, key) = tenant_with_key(
        &server,
        json!({"allowed_models": ["priced"], "limits": {"rpm": 2}}),
    )
    .await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/governance_sdk_check.py");
    let python = std::env::var_os("SWITCHYARD_TEST_PYTHON").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        std::path::PathBuf::from,
    );
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(&server.url)
        .arg(&key)
        .output()
        .await
        .expect("no Python with the SDKs: run `make test` (it creates .venv)");
    assert!(
        output.status.success(),
        "SDK check failed:\nstdout: {}\nstderr: {}\nserver logs:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("governance SDK checks passed"));
}

#[tokio::test]
async fn the_audit_trail_shows_the_route_the_fallback_and_why() {
    let upstream = standin().await;
    let routes = format!(
        "[models.broken]\nbackend = \"openai\"\nbase_url = \"{}\"\nheaders = {{ \"x-standin-status\" = \"500\" }}\n\
         [routes.chat]\nstrategy = \"priority\"\ndeployments = [{{ model = \"broken\" }}, {{ model = \"priced\" }}]\n",
        upstream.base_url()
    );
    let server = Server::start(&format!("{}\n{routes}", config(&upstream, "", "")));
    let (_, key) = tenant_with_key(&server, json!({})).await;
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth(&key)
        .header("x-request-id", "fell-back")
        .json(&ask("chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-route"], "chat/priced");
    let audit = master(&server)
        .get("/admin/audit?request_id=fell-back")
        .await;
    let steps = audit["data"][0]["decisions"].as_array().unwrap().clone();
    let failed = steps
        .iter()
        .find(|s| s["step"] == "attempt_failed")
        .unwrap_or_else(|| panic!("no failed attempt in {steps:?}"));
    assert_eq!(failed["deployment"], "broken");
    let route = steps.iter().find(|s| s["step"] == "route").unwrap();
    assert_eq!(route["deployment"], "priced");
    let failed_at = steps.iter().position(|s| s["step"] == "attempt_failed");
    let routed_at = steps.iter().position(|s| s["step"] == "route");
    assert!(
        failed_at < routed_at,
        "the fallback comes before the answer: {steps:?}"
    );
}

/// Serves `body` as JSON on every request (the issuer's JWKS endpoint).
async fn serve_json(body: Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = body.to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/jwks.json")
}

/// An Ed25519 signing key as PKCS#8 v1 DER, and its public key.
fn ed25519(seed: [u8; 32]) -> (Vec<u8>, Vec<u8>) {
    use ring::signature::KeyPair;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    (der, pair.public_key().as_ref().to_vec())
}

fn sign(der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_from_an_oidc_issuer_map_to_tenant_team_and_role() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (issuer_key, public) = ed25519([7; 32]);
    let (stranger_key, _) = ed25519([9; 32]);
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64.encode(&public),
                                "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let jwks_url = serve_json(jwks).await;
    let upstream = standin().await;
    let governance = format!(
        "[governance.jwt]\nissuer = \"https://idp.test\"\njwks_url = \"{jwks_url}\"\naudience = \"switchyard\"\nteam_claim = \"team\""
    );
    let server = Server::start(&config(&upstream, "", &governance));
    let admin = master(&server);
    let tenant = admin.post("/admin/tenants", json!({"name": "sso"})).await;
    let tenant_id = tenant["id"].as_str().unwrap();
    let other = admin
        .post("/admin/tenants", json!({"name": "elsewhere"}))
        .await;
    admin
        .post(
            "/admin/keys",
            json!({"tenant_id": other["id"], "name": "theirs"}),
        )
        .await;
    let now = unix_ms() / 1000;
    let claims = |changes: Value| {
        let mut claims = json!({"sub": "alice", "iss": "https://idp.test", "aud": "switchyard",
                                "exp": now + 300, "tenant": tenant_id});
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };

    let member = sign(&issuer_key, "k1", &claims(json!({})));
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth(&member)
        .header("x-request-id", "by-token")
        .json(&ask("priced"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let audit = admin.get("/admin/audit?request_id=by-token").await;
    assert_eq!(audit["data"][0]["tenant_id"], tenant_id);
    assert_eq!(audit["data"][0]["key_id"], "jwt:alice");
    // A member token is no admin.
    let as_member = Admin {
        server: &server,
        key: member.clone(),
    };
    assert_eq!(
        as_member
            .send(reqwest::Method::GET, "/admin/keys", None)
            .await
            .0,
        403
    );

    let refused = [
        (
            "wrong issuer",
            sign(
                &issuer_key,
                "k1",
                &claims(json!({"iss": "https://evil.test"})),
            ),
        ),
        (
            "wrong audience",
            sign(&issuer_key, "k1", &claims(json!({"aud": "other"}))),
        ),
        (
            "expired",
            sign(&issuer_key, "k1", &claims(json!({"exp": now - 120}))),
        ),
        (
            "unknown tenant",
            sign(&issuer_key, "k1", &claims(json!({"tenant": "ten_nope"}))),
        ),
        (
            "unknown team",
            sign(&issuer_key, "k1", &claims(json!({"team": "team_nope"}))),
        ),
        (
            "unknown role",
            sign(&issuer_key, "k1", &claims(json!({"role": "king"}))),
        ),
        ("another key", sign(&stranger_key, "k1", &claims(json!({})))),
        (
            "unknown key id",
            sign(&stranger_key, "k2", &claims(json!({}))),
        ),
    ];
    for (why, token) in refused {
        let response = chat(&server, Some(&token), &ask("priced")).await;
        assert_eq!(response.status(), 401, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key", "{why}");
    }
    // HMAC signed with the public key as the secret: the key decides the
    // algorithm, not the token.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(json!({"role": "admin"})),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_eq!(
        chat(&server, Some(&forged), &ask("priced")).await.status(),
        401
    );

    // An admin token manages its own tenant only.
    let admin_token = sign(
        &issuer_key,
        "k1",
        &claims(json!({"role": "admin", "sub": "root"})),
    );
    let as_admin = Admin {
        server: &server,
        key: admin_token,
    };
    let keys = as_admin.get("/admin/keys").await;
    assert_eq!(
        keys["data"],
        json!([]),
        "the other tenant's key stays hidden"
    );
    let created = as_admin
        .post("/admin/keys", json!({"name": "made by sso"}))
        .await;
    assert_eq!(created["tenant_id"], tenant_id);
}

/// `GET /v1/usage` as the key `key` reads it.
async fn own_usage(server: &Server, key: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}/usage", server.v1()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn member_and_read_only_keys_read_their_own_usage_and_nothing_of_other_keys() {
    let upstream = standin().await;
    let server = Server::start(&config(&upstream, "", ""));
    let admin = master(&server);
    let (tenant, member) = tenant_with_key(
        &server,
        json!({"role": "member", "budget": {"limit_usd": 10.0, "period": "monthly"}}),
    )
    .await;
    let colleague = admin
        .post(
            "/admin/keys",
            json!({"tenant_id": tenant, "name": "colleague", "role": "member"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let read_only = admin
        .post(
            "/admin/keys",
            json!({"tenant_id": tenant, "name": "viewer", "role": "read_only"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        assert_eq!(
            chat(&server, Some(&member), &ask("priced")).await.status(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            chat(&server, Some(&colleague), &ask("other"))
                .await
                .status(),
            200
        );
    }

    // The admin API stays closed to them.
    let (status, _) = Admin {
        server: &server,
        key: member.clone(),
    }
    .send(reqwest::Method::GET, "/admin/usage", None)
    .await;
    assert_eq!(status, 403);

    let (status, report) = own_usage(&server, &member).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["object"], "usage");
    let lines = report["data"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "only the member's own model: {report}");
    assert_eq!(lines[0]["group"], "priced");
    assert_eq!(lines[0]["requests"], 2);
    // Two requests at $0.30 each, against its own $10 monthly budget.
    let spent = report["budget"]["spent_usd"].as_f64().unwrap();
    assert!((spent - 0.6).abs() < 1e-9, "{report}");
    assert_eq!(report["budget"]["limit_usd"], 10.0);

    let (_, theirs) = own_usage(&server, &colleague).await;
    assert_eq!(theirs["data"][0]["group"], "other");
    assert_eq!(theirs["data"][0]["requests"], 3);
    assert!(theirs["budget"].is_null());

    let (status, viewer) = own_usage(&server, &read_only).await;
    assert_eq!(status, 200, "{viewer}");
    assert_eq!(viewer["data"], json!([]));

    // Without a key there is no "own" usage; the master key has /admin.
    let (status, _) = own_usage(&server, "").await;
    assert_eq!(status, 401);
    let (status, body) = own_usage(&server, MASTER).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn feedback_is_kept_beside_its_request_shown_per_model_and_kept_within_the_tenant() {
    let upstream = standin().await;
    let server = Server::start(&config(&upstream, "", ""));
    let (_, mine) = tenant_with_key(&server, json!({"role": "member"})).await;
    let (_, theirs) = tenant_with_key(&server, json!({"role": "member"})).await;
    let mut ids = Vec::new();
    for (n, model) in ["priced", "priced", "other"].iter().enumerate() {
        let id = format!("fb-request-{n}");
        let response = client()
            .post(format!("{}/chat/completions", server.v1()))
            .bearer_auth(&mine)
            .header("x-request-id", &id)
            .json(&ask(model))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ids.push(id);
    }
    let give = |key: &str, body: Value| {
        client()
            .post(format!("{}/v1/feedback", server.url))
            .bearer_auth(key.to_owned())
            .json(&body)
            .send()
    };
    // Straight after the answers: the ledger may not have written them yet.
    for (id, score) in [(&ids[0], 1.0), (&ids[1], 0.0), (&ids[2], 1.0)] {
        let response = give(
            &mine,
            json!({"request_id": id, "score": score, "label": "helpful",
                                         "comment": "mail me at jane@example.com"}),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 201);
        let kept: Value = response.json().await.unwrap();
        assert_eq!(kept["object"], "feedback");
        assert_eq!(kept["comment"], "mail me at [EMAIL]");
    }
    // Another tenant's request is not found; nonsense is refused.
    let response = give(&theirs, json!({"request_id": ids[0], "score": 1}))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = give(&mine, json!({"request_id": ids[0]})).await.unwrap();
    assert_eq!(response.status(), 400);
    let response = give(&mine, json!({"score": 1})).await.unwrap();
    assert_eq!(response.status(), 400);

    // Usage reports show it per model.
    let report = master(&server).get("/admin/usage?group_by=model").await;
    let line = |model: &str| {
        report["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["group"] == model)
            .cloned()
            .unwrap()
    };
    assert_eq!(line("priced")["feedback"], 2, "{report}");
    assert_eq!(line("priced")["mean_score"], 0.5);
    assert_eq!(line("other")["feedback"], 1);
    let report = master(&server)
        .get("/admin/usage?group_by=deployment")
        .await;
    assert!(
        report["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["group"] == "priced"),
        "{report}"
    );
}

/// A webhook receiver that refuses its first delivery with 503 and keeps
/// the bodies of those it accepts; also counts every attempt.
async fn flaky_webhook() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let accepted: Arc<Mutex<Vec<Value>>> = Arc::default();
    let attempts: Arc<AtomicUsize> = Arc::default();
    let (kept, counted) = (accepted.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (kept, counted) = (kept.clone(), counted.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                kept.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, accepted, attempts)
}

/// The anomaly alarms `/admin/alerts` lists for `admin`, waited for until
/// one of `signal` shows (they are written in the background).
async fn anomaly_alarm(admin: &Admin<'_>, signal: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = admin.get("/admin/alerts").await;
        if let Some(found) = alerts["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "anomaly" && a["signal"] == signal)
        {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "no {signal} alarm: {alerts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_slowed_deployment_and_an_error_burst_raise_drift_alarms_against_standin() {
    let upstream = standin().await;
    upstream.set_latency(Some(Duration::from_millis(20)));
    let (hook, delivered, attempts) = flaky_webhook().await;
    // Small batches and baselines so the test is short: a point is 5
    // requests, judged once 5 points are known.
    let anomalies = format!(
        "[anomalies]\nbatch = 5\nbaseline = 10\nmin_points = 5\nwebhook_url = \"{hook}\"\n"
    );
    let server = Server::start(&config(&upstream, &anomalies, ""));
    let (tenant, key) = tenant_with_key(&server, json!({})).await;
    for _ in 0..30 {
        assert_eq!(chat(&server, Some(&key), &ask("other")).await.status(), 200);
    }
    let admin = master(&server);
    let alerts = admin.get("/admin/alerts").await;
    assert_eq!(alerts["data"], json!([]), "steady traffic raised alarms");

    // The deployment slows tenfold: raised within two batches.
    upstream.set_latency(Some(Duration::from_millis(200)));
    for _ in 0..10 {
        assert_eq!(chat(&server, Some(&key), &ask("other")).await.status(), 200);
    }
    let slow = anomaly_alarm(&admin, "latency_p50_ms").await;
    assert_eq!(slow["tenant_id"], json!(tenant));
    assert_eq!(slow["model"], "other");
    assert!(slow["observed"].as_f64().unwrap() >= 200.0, "{slow}");
    assert!(slow["observed"].as_f64() > slow["bound"].as_f64(), "{slow}");
    assert!(slow["baseline"].as_f64().unwrap() < 200.0, "{slow}");
    assert_eq!(slow["resolved_at"], Value::Null);

    // Back to normal: the alarm resolves.
    upstream.set_latency(Some(Duration::from_millis(20)));
    for _ in 0..5 {
        assert_eq!(chat(&server, Some(&key), &ask("other")).await.status(), 200);
    }
    // Then the upstream fails every request: an error-rate alarm.
    upstream.set_outage(Some(switchyard_standin::Failure {
        status: 500,
        retry_after: None,
    }));
    for _ in 0..5 {
        assert!(
            chat(&server, Some(&key), &ask("other"))
                .await
                .status()
                .is_server_error()
        );
    }
    upstream.set_outage(None);
    let errors = anomaly_alarm(&admin, "error_rate").await;
    assert_eq!(errors["observed"], 1.0);
    let slow_now = admin.get("/admin/alerts").await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == slow["id"])
        .cloned()
        .unwrap();
    assert_eq!(slow_now["resolution"], "back_to_baseline", "{slow_now}");

    // Another tenant's admin sees none of it.
    let other = master(&server)
        .post("/admin/tenants", json!({"name": "globex"}))
        .await;
    let other_admin = master(&server)
        .post(
            "/admin/keys",
            json!({"tenant_id": other["id"], "name": "ops", "role": "admin"}),
        )
        .await;
    let outsider = Admin {
        server: &server,
        key: other_admin["key"].as_str().unwrap().to_owned(),
    };
    assert_eq!(outsider.get("/admin/alerts").await["data"], json!([]));

    // The webhook got the alarm although it refused the first attempt.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bodies = delivered.lock().unwrap().clone();
        if bodies
            .iter()
            .any(|b| b["type"] == "anomaly.raised" && b["alert"]["id"] == errors["id"])
        {
            assert!(
                bodies
                    .iter()
                    .any(|b| b["type"] == "anomaly.raised" && b["alert"]["id"] == slow["id"]),
                "{bodies:?}"
            );
            assert!(bodies.iter().any(|b| b["type"] == "anomaly.resolved"
                && b["id"] == slow["id"]
                && b["resolution"] == "back_to_baseline"));
            break;
        }
        assert!(Instant::now() < deadline, "webhook got {bodies:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) > bodies_len(&delivered));
    // And the metric and the log line.
    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_anomaly_alerts_total{")
                && l.contains("signal=\"error_rate\"")
                && l.contains("model=\"other\"")),
        "{metrics}"
    );
    assert!(
        server
            .logs()
            .contains("anomaly alarm: a series left its baseline")
    );
}

fn bodies_len(delivered: &std::sync::Mutex<Vec<Value>>) -> usize {
    delivered.lock().unwrap().len()
}

/// A Redis server of the test's own, so stopping it harms no other test;
/// dropping it stops it.
/// A port nothing listens on now, for a server the test starts itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct PrivateRedis(std::process::Child);

impl PrivateRedis {
    /// Starts one on `port` and waits until it accepts connections.
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server, which the machine's Redis comes with");
        let redis = Self(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the private redis-server did not start on {port}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[cfg_attr(
    not(all(switchyard_postgres, switchyard_redis)),
    ignore = "needs PostgreSQL and Redis: set SWITCHYARD_TEST_DATABASE_URL and SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn two_gateways_refuse_with_503_while_their_redis_is_gone_and_recover_without_a_restart() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let database = postgres_url().await;
    let upstream = standin().await;
    let top = format!("database_url = \"{database}\"\nredis_url = \"redis://127.0.0.1:{port}\"");
    let first = Server::start(&config(&upstream, &top, ""));
    let second = Server::start(&config(&upstream, &top, ""));
    let (tenant, key) = tenant_with_key(
        &first,
        json!({"limits": {"rpm": 10000}, "budget": {"limit_usd": 100000.0, "period": "monthly"}}),
    )
    .await;
    let servers = [&first, &second];
    let before = statuses_of(&servers, &key, "priced", 20, 4).await;
    assert!(before.iter().all(|&s| s == 200), "{before:?}");

    drop(redis);
    // Refused at once, in OpenAI's shape, by both instances.
    let during = statuses_of(&servers, &key, "priced", 20, 4).await;
    assert!(during.iter().all(|&s| s == 503), "{during:?}");
    let refused = chat(&first, Some(&key), &ask("priced")).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "governance_unavailable");

    let _redis = PrivateRedis::start(port);
    let mut after = Vec::new();
    for _ in 0..100 {
        after = statuses_of(&servers, &key, "priced", 10, 2).await;
        if after.iter().all(|&s| s == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after.iter().all(|&s| s == 200), "{after:?}");
    // The restarted Redis was empty: the key's spend was seeded again from
    // the ledger, and agrees with it.
    assert_shared_spend_matches_the_ledger(&first, &tenant, port).await;
}

/// Waits for the ledger to hold every served request of `tenant`'s one
/// key, then compares its cost with the key's spend total in Redis.
async fn assert_shared_spend_matches_the_ledger(server: &Server, tenant: &str, redis_port: u16) {
    let admin = master(server);
    let key_id = admin.get(&format!("/admin/keys?tenant_id={tenant}")).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = admin
            .get(&format!("/admin/usage?group_by=tenant&tenant_id={tenant}"))
            .await;
        let cost = report["data"][0]["cost"].as_f64().unwrap_or(0.0);
        let spend = redis_spend(redis_port, &key_id).expect("a shared spend total for the key");
        if (spend - cost).abs() < 1e-6 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shared spend {spend} vs ledger {cost}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A PostgreSQL server of the test's own, made with `initdb` in a
/// temporary folder, which the test stops and starts again. As root (CI)
/// the server runs as the `postgres` user, since PostgreSQL refuses root.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    owner: Option<(u32, u32)>,
    server: Option<std::process::Child>,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let is_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        let owner = is_root.then(|| {
            let id = |flag: &str| -> u32 {
                let out = std::process::Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            let owner = (id("-u"), id("-g"));
            std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1)).unwrap();
            owner
        });
        let port = free_port();
        let mut postgres = Self {
            dir,
            port,
            bin,
            owner,
            server: None,
        };
        let data = postgres.data();
        let out = postgres
            .command("initdb")
            .args(["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        postgres.resume();
        postgres
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, program: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        command
    }

    /// Starts the server and waits until it takes queries.
    fn resume(&mut self) {
        let data = self.data();
        let socket_dir = self.dir.path().to_str().unwrap().to_owned();
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid))
                .unwrap();
        }
        let child = self
            .command("postgres")
            .args(["-D", &data, "-p", &self.port.to_string(), "-k", &socket_dir])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        for _ in 0..400 {
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private PostgreSQL did not start: {}", self.log());
    }

    /// Stops the server the way an operator's restart does (fast shutdown:
    /// open sessions are ended).
    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            signal(child.id(), "INT");
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `redis-cli` says the shared spend total of `scope_id` is.
fn redis_spend(port: u16, scope_id: &str) -> Option<f64> {
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli, which comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The total itself, not the seed time kept beside it.
    let name = cli(&["--scan", "--pattern", &format!("*spend*{scope_id}*:spend")]);
    let name = name.lines().next()?.to_owned();
    cli(&["GET", &name]).parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(all(switchyard_postgres, switchyard_redis)),
    ignore = "needs PostgreSQL and Redis: set SWITCHYARD_TEST_DATABASE_URL and SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn two_gateways_ride_out_a_postgres_restart_under_load_and_lose_no_charge() {
    let mut postgres = tokio::task::block_in_place(PrivatePostgres::start);
    let redis_port = free_port();
    let _redis = PrivateRedis::start(redis_port);
    let upstream = standin().await;
    let top = format!(
        "database_url = \"{}\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"",
        postgres.url()
    );
    // Keys are looked up again after a second, so the outage reaches them.
    let config = config(&upstream, &top, "key_cache_ms = 1000");
    let first = Server::start(&config);
    let second = Server::start(&config);
    let (tenant, key) = tenant_with_key(
        &first,
        json!({"limits": {"rpm": 100000}, "budget": {"limit_usd": 100000.0, "period": "monthly"}}),
    )
    .await;

    // Load through both gateways until told to stop: each answer's status
    // and error code.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u16, String)>::new()));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let url = format!("{}/chat/completions", [&first, &second][worker % 2].v1());
        let (key, stop, seen) = (key.clone(), stop.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&ask("priced"))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
                // Refused within the 2 s a request waits for PostgreSQL.
                assert!(
                    started.elapsed() < Duration::from_secs(4),
                    "a request hung for {:?} ({status} {code})",
                    started.elapsed()
                );
                seen.lock().unwrap().push((status, code));
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| postgres.stop());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during_outage = seen.lock().unwrap().len();
    tokio::task::block_in_place(|| postgres.resume());
    // Recovered: both gateways answer again, without a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = statuses_of(&[&first, &second], &key, "priced", 4, 2).await;
        if statuses.iter().all(|&s| s == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let served = seen.iter().filter(|(s, _)| *s == 200).count() + 4;
    let refused: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    eprintln!(
        "{} answers ({during_outage} by the end of the outage): {served} served, {} refused",
        seen.len(),
        refused.len()
    );
    // Fail closed: what was not served was refused with a 503 that says why.
    assert!(
        refused
            .iter()
            .all(|(s, code)| *s == 503 && code == "governance_unavailable"),
        "{refused:?}"
    );
    assert!(!refused.is_empty(), "the outage never reached a request");

    // The ledger writers retried: every served request is in the ledger,
    // once, with its cost; and the shared spend total agrees.
    let admin = master(&first);
    let expected = served as f64 * 0.3;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = admin
            .get(&format!("/admin/usage?group_by=tenant&tenant_id={tenant}"))
            .await;
        let requests = report["data"][0]["requests"].as_u64().unwrap_or(0) as usize;
        let cost = report["data"][0]["cost"].as_f64().unwrap_or(0.0);
        if requests >= served || Instant::now() > deadline {
            assert_eq!(requests, served, "ledger rows vs served requests: {report}");
            assert!((cost - expected).abs() < 1e-6, "{cost} vs {expected}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_shared_spend_matches_the_ledger(&first, &tenant, redis_port).await;
}
