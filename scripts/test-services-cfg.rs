//! Tells the tests which shared services this run has: a test that needs
//! PostgreSQL or Redis is compiled as ignored where neither its URL is set
//! nor the run requires the services (`SWITCHYARD_REQUIRE_SERVICES=1`,
//! which `.ci/run` sets), so a skip never shows as a pass.

// A build script talks to cargo on standard output.
#![allow(clippy::print_stdout)]

fn main() {
    let required = std::env::var("SWITCHYARD_REQUIRE_SERVICES")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    for (cfg, env) in [
        ("switchyard_postgres", "SWITCHYARD_TEST_DATABASE_URL"),
        ("switchyard_redis", "SWITCHYARD_TEST_REDIS_URL"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={env}");
        if required || set(env) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-env-changed=SWITCHYARD_REQUIRE_SERVICES");
}
