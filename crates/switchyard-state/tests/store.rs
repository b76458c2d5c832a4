//! The store against both real databases: an embedded SQLite file always,
//! and the PostgreSQL named by `SWITCHYARD_TEST_DATABASE_URL` (set by
//! `make test`; when it is set and unreachable the tests fail).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::collections::BTreeMap;

use switchyard_state::records::{
    AnomalyAlert, ApiKey, AuditRow, Budget, BudgetAlert, BudgetPeriod, Limits, Role, Team, Tenant,
    UsageGroup, UsageRow,
};
use switchyard_state::testing::{POSTGRES_ENV, fresh_postgres_schema, service_url};
use switchyard_state::{
    ConversationRow, DatabaseKind, ItemRow, ResponseRow, SpendScope, SqlStore, TenantScope,
    TimeRange,
};

/// A store on a fresh SQLite file (kept until the test ends).
async fn sqlite() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&switchyard_state::sqlite_url(dir.path()))
        .await
        .unwrap();
    assert_eq!(store.kind(), DatabaseKind::Sqlite);
    (store, dir)
}

/// A store on a fresh schema of the tests' PostgreSQL. Only called where
/// PostgreSQL is configured or required; required and missing fails.
async fn postgres() -> SqlStore {
    let url = service_url(POSTGRES_ENV)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set"));
    let url = fresh_postgres_schema(&url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but unusable: {e}"));
    let store = SqlStore::connect(&url).await.unwrap();
    assert_eq!(store.kind(), DatabaseKind::Postgres);
    store
}

/// Runs the store check `$name` on SQLite, and on PostgreSQL where the
/// tests have one (elsewhere that half is reported as ignored).
macro_rules! on_every_database {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$name(store).await;
            }

            #[tokio::test]
            #[cfg_attr(
                not(switchyard_postgres),
                ignore = "needs PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL (make test does)"
            )]
            async fn on_postgres() {
                super::$name(super::postgres().await).await;
            }
        }
    };
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: format!("{id} inc"),
        disabled: false,
        limits: Limits {
            rpm: Some(100),
            ..Limits::default()
        },
        budget: Some(Budget {
            limit_usd: 10.0,
            period: BudgetPeriod::Monthly,
            alert_at: vec![0.5, 0.9],
        }),
        metadata: BTreeMap::from([("tier".into(), serde_json::json!("gold"))]),
        created_at: 1,
        updated_at: 1,
        guardrails: vec!["strict".into()],
    }
}

fn team(id: &str, tenant_id: &str) -> Team {
    Team {
        id: id.into(),
        tenant_id: tenant_id.into(),
        name: "search".into(),
        disabled: false,
        limits: Limits::default(),
        budget: None,
        metadata: BTreeMap::new(),
        created_at: 2,
        updated_at: 2,
    }
}

fn key(id: &str, tenant_id: &str, team_id: Option<&str>) -> ApiKey {
    ApiKey {
        id: id.into(),
        tenant_id: tenant_id.into(),
        team_id: team_id.map(Into::into),
        name: "ci".into(),
        secret_hash: "ab".repeat(32),
        role: Role::Member,
        allowed_models: Some(vec!["gpt-4o-mini".into()]),
        limits: Limits::default(),
        budget: None,
        metadata: BTreeMap::new(),
        expires_at: Some(99),
        disabled: false,
        created_at: 3,
        updated_at: 3,
        guardrails: vec!["no-personal-data".into(), "strict".into()],
        client_certificate: None,
    }
}

fn usage(id: &str, tenant: &str, key: &str, model: &str, at: i64, cost: f64) -> UsageRow {
    UsageRow {
        id: id.into(),
        request_id: format!("req-{id}"),
        at,
        tenant_id: Some(tenant.into()),
        team_id: None,
        key_id: Some(key.into()),
        model: model.into(),
        deployment: Some(model.into()),
        route: Some(model.into()),
        cache_hit: false,
        status: 200,
        input_tokens: 10,
        output_tokens: 5,
        cached_tokens: 2,
        cost,
        latency_ms: 12,
        ttft_ms: Some(3),
        response_id: Some(format!("resp_{id}")),
    }
}

fn audit(id: &str, tenant: &str, at: i64) -> AuditRow {
    AuditRow {
        id: id.into(),
        request_id: format!("req-{id}"),
        at,
        tenant_id: Some(tenant.into()),
        key_id: None,
        status: 200,
        decisions: vec![serde_json::json!({"step": "authenticate"})],
        prompt: Some("hello [EMAIL]".into()),
        answer: None,
    }
}

on_every_database!(tenants_teams_and_keys_round_trip_and_stay_in_their_tenant);

async fn tenants_teams_and_keys_round_trip_and_stay_in_their_tenant(store: SqlStore) {
    let kind = store.kind();
    store.insert_tenant(&tenant("ten_a")).await.unwrap();
    store.insert_tenant(&tenant("ten_b")).await.unwrap();
    store.insert_team(&team("team_a", "ten_a")).await.unwrap();
    store
        .insert_key(&key("key_a", "ten_a", Some("team_a")))
        .await
        .unwrap();
    store
        .insert_key(&key("key_b", "ten_b", None))
        .await
        .unwrap();

    let all = TenantScope::All;
    let a = TenantScope::Tenant("ten_a".into());
    let b = TenantScope::Tenant("ten_b".into());
    assert_eq!(
        store.tenant(&all, "ten_a").await.unwrap(),
        Some(tenant("ten_a")),
        "{kind:?}"
    );
    assert_eq!(
        store.key(&a, "key_a").await.unwrap(),
        Some(key("key_a", "ten_a", Some("team_a")))
    );
    assert_eq!(store.tenants(&all).await.unwrap().len(), 2);

    // Another tenant's objects do not exist for a tenant's scope.
    assert_eq!(store.tenant(&b, "ten_a").await.unwrap(), None);
    assert_eq!(store.team(&b, "team_a").await.unwrap(), None);
    assert_eq!(store.key(&b, "key_a").await.unwrap(), None);
    assert_eq!(store.tenants(&b).await.unwrap().len(), 1);
    assert!(store.teams(&b).await.unwrap().is_empty());
    let keys_of_b: Vec<_> = store
        .keys(&b)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(keys_of_b, ["key_b"]);

    // ...and cannot be changed through it.
    let mut revoked = key("key_a", "ten_a", Some("team_a"));
    revoked.disabled = true;
    assert!(!store.update_key(&b, &revoked).await.unwrap());
    assert!(!store.key(&all, "key_a").await.unwrap().unwrap().disabled);
    assert!(store.update_key(&a, &revoked).await.unwrap());
    assert!(store.key(&all, "key_a").await.unwrap().unwrap().disabled);
    let mut renamed = team("team_a", "ten_a");
    renamed.name = "renamed".into();
    assert!(!store.update_team(&b, &renamed).await.unwrap());
    assert!(store.update_team(&a, &renamed).await.unwrap());
    let mut disabled = tenant("ten_a");
    disabled.disabled = true;
    assert!(!store.update_tenant(&b, &disabled).await.unwrap());
    assert!(store.update_tenant(&all, &disabled).await.unwrap());
    assert!(store.tenant(&all, "ten_a").await.unwrap().unwrap().disabled);

    // A key must belong to an existing tenant.
    assert!(
        store
            .insert_key(&key("key_x", "ten_missing", None))
            .await
            .is_err()
    );
    store.close().await;
}

on_every_database!(the_ledger_is_idempotent_reports_group_and_spend_adds_up);

async fn the_ledger_is_idempotent_reports_group_and_spend_adds_up(store: SqlStore) {
    let day = 86_400_000;
    let rows = vec![
        usage("1", "ten_a", "key_a", "gpt", 10 * day + 5, 0.25),
        usage("2", "ten_a", "key_a", "claude", 10 * day + 6, 0.5),
        usage("3", "ten_a", "key_c", "gpt", 11 * day + 1, 1.0),
        usage("4", "ten_b", "key_b", "gpt", 11 * day + 2, 2.0),
    ];
    let audits = vec![
        audit("1", "ten_a", 10 * day + 5),
        audit("4", "ten_b", 11 * day + 2),
    ];
    store.append(&rows, &audits).await.unwrap();
    // A retried batch adds nothing.
    store.append(&rows, &audits).await.unwrap();
    assert_eq!(store.usage_count(&TenantScope::All).await.unwrap(), 4);

    let a = TenantScope::Tenant("ten_a".into());
    let by_model = store
        .usage_report(&a, &TimeRange::default(), UsageGroup::Model)
        .await
        .unwrap();
    assert_eq!(by_model.len(), 2);
    let gpt = by_model
        .iter()
        .find(|l| l.group.as_deref() == Some("gpt"))
        .unwrap();
    assert_eq!(
        (
            gpt.requests,
            gpt.input_tokens,
            gpt.output_tokens,
            gpt.cached_tokens
        ),
        (2, 20, 10, 4)
    );
    assert!((gpt.cost - 1.25).abs() < 1e-9);

    let by_day = store
        .usage_report(&TenantScope::All, &TimeRange::default(), UsageGroup::Day)
        .await
        .unwrap();
    let days: Vec<_> = by_day
        .iter()
        .map(|l| (l.group.clone().unwrap(), l.requests))
        .collect();
    assert_eq!(
        days,
        [("1970-01-11".to_owned(), 2), ("1970-01-12".to_owned(), 2)]
    );

    let range = TimeRange {
        from: Some(11 * day),
        to: None,
    };
    let by_key = store
        .usage_report(&TenantScope::All, &range, UsageGroup::Key)
        .await
        .unwrap();
    assert_eq!(by_key.len(), 2);

    assert!(
        (store
            .spend_since(SpendScope::Key, "key_a", 0)
            .await
            .unwrap()
            - 0.75)
            .abs()
            < 1e-9
    );
    assert!(
        (store
            .spend_since(SpendScope::Tenant, "ten_a", 11 * day)
            .await
            .unwrap()
            - 1.0)
            .abs()
            < 1e-9
    );
    assert_eq!(
        store
            .spend_since(SpendScope::Team, "none", 0)
            .await
            .unwrap(),
        0.0
    );

    // Audit records by request id and by time, inside the tenant only.
    assert_eq!(store.audit_of_request(&a, "req-1").await.unwrap().len(), 1);
    assert!(
        store
            .audit_of_request(&a, "req-4")
            .await
            .unwrap()
            .is_empty()
    );
    let record = &store
        .audit_of_request(&TenantScope::All, "req-4")
        .await
        .unwrap()[0];
    assert_eq!(
        record.decisions,
        vec![serde_json::json!({"step": "authenticate"})]
    );
    assert_eq!(record.prompt.as_deref(), Some("hello [EMAIL]"));
    let listed = store
        .audit_records(&TenantScope::All, &TimeRange::default(), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].request_id, "req-4", "newest first");
    // Every field comes back as written, the response it produced included.
    assert_eq!(
        store.usage_of_request(&a, "req-2").await.unwrap()[0],
        rows[1]
    );
    assert_eq!(rows[1].response_id.as_deref(), Some("resp_2"));
    store.close().await;
}

on_every_database!(an_alert_is_recorded_once_per_threshold_and_period);

async fn an_alert_is_recorded_once_per_threshold_and_period(store: SqlStore) {
    let alert = BudgetAlert {
        id: "al1".into(),
        at: 5,
        tenant_id: "ten_a".into(),
        scope: "key".into(),
        scope_id: "key_a".into(),
        period_start: 0,
        threshold: 0.8,
        spent: 8.1,
        budget_limit: 10.0,
    };
    assert!(store.insert_alert(&alert).await.unwrap());
    let again = BudgetAlert {
        id: "al2".into(),
        ..alert.clone()
    };
    assert!(!store.insert_alert(&again).await.unwrap());
    let next_period = BudgetAlert {
        id: "al3".into(),
        period_start: 100,
        ..alert.clone()
    };
    assert!(store.insert_alert(&next_period).await.unwrap());
    assert_eq!(
        store
            .alerts(&TenantScope::Tenant("ten_a".into()))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .alerts(&TenantScope::Tenant("ten_b".into()))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

on_every_database!(anomaly_alarms_are_kept_resolved_once_and_seen_within_their_tenant);

async fn anomaly_alarms_are_kept_resolved_once_and_seen_within_their_tenant(store: SqlStore) {
    let alarm = |id: &str, at: i64, tenant: Option<&str>| AnomalyAlert {
        id: id.into(),
        at,
        tenant_id: tenant.map(str::to_owned),
        model: "gpt".into(),
        signal: "latency_p50_ms".into(),
        observed: 610.0,
        baseline: 200.0,
        bound: 380.0,
        score: 9.5,
        points: 30,
        resolved_at: None,
        resolution: None,
    };
    store
        .insert_anomaly(&alarm("an1", 10, Some("ten_a")))
        .await
        .unwrap();
    store
        .insert_anomaly(&alarm("an2", 20, Some("ten_a")))
        .await
        .unwrap();
    store.insert_anomaly(&alarm("an3", 30, None)).await.unwrap();
    store
        .resolve_anomaly("an1", 15, "back_to_baseline")
        .await
        .unwrap();
    // A second resolution changes nothing.
    store
        .resolve_anomaly("an1", 99, "new_baseline")
        .await
        .unwrap();

    let own = store
        .anomalies(&TenantScope::Tenant("ten_a".into()), 100)
        .await
        .unwrap();
    let ids: Vec<&str> = own.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["an2", "an1"], "newest first, none of another scope");
    assert_eq!(own[1].resolved_at, Some(15));
    assert_eq!(own[1].resolution.as_deref(), Some("back_to_baseline"));
    assert_eq!(own[0], alarm("an2", 20, Some("ten_a")));
    assert!(
        store
            .anomalies(&TenantScope::Tenant("ten_b".into()), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let all = store.anomalies(&TenantScope::All, 2).await.unwrap();
    assert_eq!(all.len(), 2, "the limit holds");
    assert_eq!(all[0].id, "an3");
    store.close().await;
}

on_every_database!(a_response_chain_is_stored_once_and_read_back_in_order_within_its_tenant);

fn response_row(id: &str, tenant: &str, previous: Option<&str>, at: i64) -> ResponseRow {
    ResponseRow {
        id: id.into(),
        tenant_id: tenant.into(),
        previous_response_id: previous.map(str::to_owned),
        conversation_id: None,
        created_at: at,
        model: "m".into(),
        status: "completed".into(),
        body: format!("{{\"id\":\"{id}\"}}"),
    }
}

fn items(texts: &[(&str, bool)]) -> Vec<ItemRow> {
    texts
        .iter()
        .enumerate()
        .map(|(i, (text, is_output))| ItemRow {
            position: i as i64,
            is_output: *is_output,
            item: (*text).to_owned(),
        })
        .collect()
}

async fn a_response_chain_is_stored_once_and_read_back_in_order_within_its_tenant(store: SqlStore) {
    let mine = TenantScope::Tenant("ten_a".into());
    let theirs = TenantScope::Tenant("ten_b".into());
    store
        .insert_response(
            &response_row("r1", "ten_a", None, 1),
            &items(&[("q1", false), ("a1", true)]),
            &[],
        )
        .await
        .unwrap();
    store
        .insert_response(
            &response_row("r2", "ten_a", Some("r1"), 2),
            &items(&[("q2", false), ("a2", true)]),
            &[],
        )
        .await
        .unwrap();
    store
        .insert_response(
            &response_row("r3", "ten_a", Some("r2"), 3),
            &items(&[("q3", false), ("a3", true)]),
            &[],
        )
        .await
        .unwrap();
    let history: Vec<String> = store
        .response_history(&mine, "r3")
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|i| i.item)
        .collect();
    assert_eq!(history, ["q1", "a1", "q2", "a2", "q3", "a3"]);
    // Another tenant finds nothing, neither the response nor its history.
    assert!(store.response(&theirs, "r3").await.unwrap().is_none());
    assert!(
        store
            .response_history(&theirs, "r3")
            .await
            .unwrap()
            .is_none()
    );
    let (row, own) = store.response(&mine, "r2").await.unwrap().unwrap();
    assert_eq!(row.previous_response_id.as_deref(), Some("r1"));
    assert_eq!(own.len(), 2);
    assert!(own[1].is_output);
    // Deleting is scoped too; a deleted link ends the history there.
    assert!(!store.delete_response(&theirs, "r1").await.unwrap());
    assert!(store.delete_response(&mine, "r1").await.unwrap());
    assert!(store.response(&mine, "r1").await.unwrap().is_none());
    let history = store.response_history(&mine, "r3").await.unwrap().unwrap();
    assert_eq!(history.len(), 4);
    store.close().await;
}

on_every_database!(a_conversation_gathers_its_items_and_its_responses_within_its_tenant);

async fn a_conversation_gathers_its_items_and_its_responses_within_its_tenant(store: SqlStore) {
    let mine = TenantScope::Tenant("ten_a".into());
    let theirs = TenantScope::Tenant("ten_b".into());
    let pair = |id: &str, item: &str| (id.to_owned(), item.to_owned());
    store
        .insert_conversation(
            &ConversationRow {
                id: "conv_1".into(),
                tenant_id: "ten_a".into(),
                created_at: 1,
                metadata: "{}".into(),
            },
            &[pair("m0", "seed")],
        )
        .await
        .unwrap();
    // A response created in it appends its items in the same transaction.
    let mut row = response_row("r1", "ten_a", None, 2);
    row.conversation_id = Some("conv_1".into());
    let ids = ["m1".to_owned(), "m2".to_owned()];
    assert!(
        store
            .insert_response(&row, &items(&[("q", false), ("a", true)]), &ids)
            .await
            .unwrap()
    );
    assert!(
        store
            .append_conversation_items(&mine, "conv_1", &[pair("m3", "note")])
            .await
            .unwrap()
    );
    let listed: Vec<(String, String)> = store
        .conversation_items(&mine, "conv_1")
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|i| (i.item_id, i.item))
        .collect();
    assert_eq!(
        listed,
        [
            pair("m0", "seed"),
            pair("m1", "q"),
            pair("m2", "a"),
            pair("m3", "note")
        ]
    );
    // Another tenant sees, changes and appends nothing.
    assert!(
        store
            .conversation(&theirs, "conv_1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .conversation_items(&theirs, "conv_1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .update_conversation(&theirs, "conv_1", "{\"x\":\"y\"}")
            .await
            .unwrap()
    );
    assert!(
        !store
            .append_conversation_items(&theirs, "conv_1", &[pair("m9", "x")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_conversation_item(&theirs, "conv_1", "m0")
            .await
            .unwrap()
    );
    let mut foreign = response_row("r2", "ten_b", None, 3);
    foreign.conversation_id = Some("conv_1".into());
    assert!(
        !store
            .insert_response(&foreign, &items(&[("q", false)]), &["m9".to_owned()])
            .await
            .unwrap()
    );
    assert!(store.response(&theirs, "r2").await.unwrap().is_none());
    // Its owner does.
    assert!(
        store
            .update_conversation(&mine, "conv_1", "{\"topic\":\"x\"}")
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_conversation_item(&mine, "conv_1", "m0")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .conversation_items(&mine, "conv_1")
            .await
            .unwrap()
            .unwrap()
            .len(),
        3
    );
    assert!(store.delete_conversation(&mine, "conv_1").await.unwrap());
    assert!(
        store
            .conversation_items(&mine, "conv_1")
            .await
            .unwrap()
            .is_none()
    );
    store.close().await;
}

on_every_database!(writers_on_separate_connections_wait_for_each_other_instead_of_failing);

/// Responses appended to a conversation (a read, then writes, in one
/// transaction), items added to it and ledger batches, all at once from
/// separate connections: every write lands. A transaction that read before
/// it wrote used to fail with "database is locked" on SQLite when another
/// connection committed in between.
async fn writers_on_separate_connections_wait_for_each_other_instead_of_failing(store: SqlStore) {
    const ROUNDS: usize = 30;
    let mine = TenantScope::Tenant("ten_a".into());
    store
        .insert_conversation(
            &ConversationRow {
                id: "conv_busy".into(),
                tenant_id: "ten_a".into(),
                created_at: 1,
                metadata: "{}".into(),
            },
            &[],
        )
        .await
        .unwrap();
    let responses = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let mut row = response_row(&format!("rb{round}"), "ten_a", None, 2);
                row.conversation_id = Some("conv_busy".into());
                let ids = [format!("rq{round}"), format!("ra{round}")];
                let stored = store
                    .insert_response(&row, &items(&[("q", false), ("a", true)]), &ids)
                    .await
                    .unwrap();
                assert!(stored);
            }
        })
    };
    let notes = {
        let store = store.clone();
        let mine = mine.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let item = [(format!("n{round}"), "note".to_owned())];
                let added = store
                    .append_conversation_items(&mine, "conv_busy", &item)
                    .await
                    .unwrap();
                assert!(added);
            }
        })
    };
    let ledger = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let rows = [usage(&format!("u{round}"), "ten_a", "k", "m", 5, 0.01)];
                store.append(&rows, &[]).await.unwrap();
            }
        })
    };
    for task in [responses, notes, ledger] {
        task.await.unwrap();
    }
    let listed = store
        .conversation_items(&mine, "conv_busy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        listed.len(),
        3 * ROUNDS,
        "two items per response, one per note"
    );
    store.close().await;
}

on_every_database!(what_is_older_than_the_retention_is_purged);

async fn what_is_older_than_the_retention_is_purged(store: SqlStore) {
    let mine = TenantScope::Tenant("ten_a".into());
    for (id, at) in [("old", 1_000), ("new", 5_000)] {
        store
            .insert_response(
                &response_row(id, "ten_a", None, at),
                &items(&[("q", false)]),
                &[],
            )
            .await
            .unwrap();
    }
    store
        .insert_summary("ten_a", "h-old", "s", 1_000)
        .await
        .unwrap();
    store
        .insert_conversation(
            &ConversationRow {
                id: "conv_kept".into(),
                tenant_id: "ten_a".into(),
                created_at: 1_000,
                metadata: "{}".into(),
            },
            &[("m1".to_owned(), "x".to_owned())],
        )
        .await
        .unwrap();
    let (responses, conversations) = store.purge_before(2_000).await.unwrap();
    assert_eq!((responses, conversations), (1, 0));
    assert!(store.response(&mine, "old").await.unwrap().is_none());
    assert!(store.response(&mine, "new").await.unwrap().is_some());
    assert!(
        store
            .summaries("ten_a", &["h-old".into()])
            .await
            .unwrap()
            .is_empty()
    );
    // A conversation counts from its last item, added just now.
    assert!(
        store
            .conversation(&mine, "conv_kept")
            .await
            .unwrap()
            .is_some()
    );
    let (responses, conversations) = store.purge_before(i64::MAX).await.unwrap();
    assert_eq!((responses, conversations), (1, 1));
    store.close().await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = switchyard_state::sqlite_url(&dir.path().join("nested"));
    let store = SqlStore::connect(&url).await.unwrap();
    store.insert_tenant(&tenant("ten_a")).await.unwrap();
    store.close().await;
    let reopened = SqlStore::connect(&url).await.unwrap();
    assert_eq!(reopened.tenants(&TenantScope::All).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_bad_url_is_a_clear_error() {
    let error = SqlStore::connect("mysql://x")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("sqlite:// or postgres://"), "{error}");
    let error = SqlStore::connect("postgres://u:secret@127.0.0.1:1/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(!error.contains("secret"), "{error}");
}

on_every_database!(a_client_certificate_names_one_key_in_any_tenant);

async fn a_client_certificate_names_one_key_in_any_tenant(store: SqlStore) {
    store.insert_tenant(&tenant("ten_a")).await.unwrap();
    store.insert_tenant(&tenant("ten_b")).await.unwrap();
    let mut billing = key("key_billing", "ten_a", None);
    billing.client_certificate = Some("billing.internal".into());
    store.insert_key(&billing).await.unwrap();
    store
        .insert_key(&key("key_plain", "ten_a", None))
        .await
        .unwrap();
    let found = store
        .key_for_client_certificate("billing.internal")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, billing);
    assert!(
        store
            .key_for_client_certificate("other.internal")
            .await
            .unwrap()
            .is_none()
    );
    // A second key for the same certificate, even in another tenant, is
    // refused by the database itself.
    let mut twin = key("key_twin", "ten_b", None);
    twin.client_certificate = Some("billing.internal".into());
    assert!(store.insert_key(&twin).await.is_err());
    // Taken off the key, the certificate names nothing.
    billing.client_certificate = None;
    assert!(store.update_key(&TenantScope::All, &billing).await.unwrap());
    assert!(
        store
            .key_for_client_certificate("billing.internal")
            .await
            .unwrap()
            .is_none()
    );
}
