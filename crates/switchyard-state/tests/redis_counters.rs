//! The Redis counters against the real Redis named by
//! `SWITCHYARD_TEST_REDIS_URL` (set by `make test`; when it is set and
//! unreachable the tests fail). Each test uses its own key prefix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_state::counters::{
    ConcurrencySlots, RedisCounters, SpendTotals, WindowCharge, WindowCounters, WindowDecision,
};
use switchyard_state::testing::{REDIS_ENV, service_url};

/// Counters in the tests' Redis. Only called where Redis is configured or
/// required (see `redis_test!`); required and missing fails.
async fn counters(prefix: &str) -> Option<RedisCounters> {
    let url = service_url(REDIS_ENV)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{REDIS_ENV} is not set"));
    let prefix = format!("sytest:{prefix}:{}:", std::process::id());
    Some(
        RedisCounters::connect(&url, &prefix, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{REDIS_ENV} is set but unusable: {e}")),
    )
}

fn rpm(key: &str, limit: u64) -> WindowCharge {
    WindowCharge {
        key: key.into(),
        limit,
        amount: 1,
        window: Duration::from_secs(60),
    }
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn two_instances_hammered_by_200_clients_admit_exactly_the_limit() {
    let Some(first) = counters("hammer").await else {
        return;
    };
    let second = first.clone();
    // A second connection, as a second gateway process would have.
    let url = std::env::var(REDIS_ENV).unwrap();
    let prefix = format!("sytest:hammer:{}:", std::process::id());
    let other = RedisCounters::connect(&url, &prefix, Duration::from_secs(60))
        .await
        .unwrap();
    let instances = [Arc::new(first), Arc::new(other), Arc::new(second)];
    let mut tasks = Vec::new();
    for client in 0..200 {
        let counters = instances[client % instances.len()].clone();
        tasks.push(tokio::spawn(async move {
            let charges = [rpm("key", 60)];
            let decision = counters
                .charge(&format!("r{client}"), &charges)
                .await
                .unwrap();
            matches!(decision, WindowDecision::Admitted(_))
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 60);
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn refusals_say_when_and_charge_nothing() {
    let Some(counters) = counters("refuse").await else {
        return;
    };
    let both = [rpm("key", 5), rpm("tenant", 1)];
    assert!(matches!(
        counters.charge("a", &both).await.unwrap(),
        WindowDecision::Admitted(_)
    ));
    let WindowDecision::Refused {
        index,
        retry_after,
        states,
    } = counters.charge("b", &both).await.unwrap()
    else {
        panic!("the tenant window is full");
    };
    assert_eq!(index, 1);
    let wait = retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(states[0].remaining, 4, "the refused request took nothing");
    let too_big = [WindowCharge {
        amount: 10,
        ..rpm("tpm", 5)
    }];
    assert!(matches!(
        counters.charge("c", &too_big).await.unwrap(),
        WindowDecision::Refused {
            retry_after: None,
            ..
        }
    ));
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn token_estimates_are_replaced_by_real_usage() {
    let Some(counters) = counters("adjust").await else {
        return;
    };
    let tpm = |amount| WindowCharge {
        key: "tpm".into(),
        limit: 1000,
        amount,
        window: Duration::from_secs(60),
    };
    counters.charge("a", &[tpm(900)]).await.unwrap();
    assert!(matches!(
        counters.charge("b", &[tpm(200)]).await.unwrap(),
        WindowDecision::Refused { .. }
    ));
    counters.adjust("a", "tpm", 900, 100).await.unwrap();
    let WindowDecision::Admitted(states) = counters.charge("b", &[tpm(200)]).await.unwrap() else {
        panic!("the estimate was given back");
    };
    assert_eq!(states[0].remaining, 700);
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn slots_are_shared_and_given_back() {
    let Some(counters) = counters("slots").await else {
        return;
    };
    let keys = [("cc".to_owned(), 2)];
    assert_eq!(counters.acquire("a", &keys).await.unwrap(), None);
    assert_eq!(counters.acquire("b", &keys).await.unwrap(), None);
    assert_eq!(counters.acquire("c", &keys).await.unwrap(), Some(0));
    counters.release("a", &["cc".to_owned()]).await.unwrap();
    assert_eq!(counters.acquire("c", &keys).await.unwrap(), None);
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn spend_is_seeded_once_then_added_to() {
    let Some(counters) = counters("spend").await else {
        return;
    };
    let keys = ["s".to_owned()];
    assert_eq!(counters.get(&keys).await.unwrap(), vec![None]);
    assert_eq!(
        counters.add(&keys, 1.0).await.unwrap(),
        vec![None],
        "unseeded totals are not invented"
    );
    counters
        .seed("s", 2.5, Duration::from_secs(60))
        .await
        .unwrap();
    counters
        .seed("s", 100.0, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(counters.add(&keys, 0.5).await.unwrap(), vec![Some(3.0)]);
    assert_eq!(counters.get(&keys).await.unwrap(), vec![Some(3.0)]);
}

#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn an_owed_amount_is_added_only_to_a_total_seeded_before_the_debt() {
    let Some(counters) = counters("owed").await else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (kept, reseeded, gone) = (
        ["kept".to_owned()],
        ["reseeded".to_owned()],
        ["gone".to_owned()],
    );
    // A total that outlived the outage takes the debt.
    counters
        .seed("kept", 1.0, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        counters.add_owed(&kept, 0.5, now + 1_000).await.unwrap(),
        vec![Some(1.5)]
    );
    // One seeded again after the debt arose was read from a ledger that
    // holds it: not charged twice.
    counters
        .seed("reseeded", 2.0, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        counters
            .add_owed(&reseeded, 0.5, now - 60_000)
            .await
            .unwrap(),
        vec![None]
    );
    assert_eq!(counters.get(&reseeded).await.unwrap(), vec![Some(2.0)]);
    // One not seeded yet will be, from the ledger.
    assert_eq!(
        counters.add_owed(&gone, 0.5, now).await.unwrap(),
        vec![None]
    );
}
