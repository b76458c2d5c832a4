//! `run_code`'s sandbox against real escape attempts, on this host's
//! bubblewrap (installed by `scripts/bootstrap.sh`): each must fail and be
//! reported, and ordinary code must run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::OnceLock;

use switchyard_config::{RunCodeConfig, SandboxLanguage};
use switchyard_tools::sandbox::{Limit, RunCode, RunReport};

/// One sandbox for every test, as a gateway has one: the tests run at
/// once, each in a run slot (and so as a user) of its own.
fn sandbox() -> &'static RunCode {
    static SANDBOX: OnceLock<RunCode> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let limits = RunCodeConfig {
            languages: vec![SandboxLanguage::Python, SandboxLanguage::Shell],
            cpu_secs: 1,
            wall_secs: 4,
            memory_mb: 128,
            max_processes: 16,
            max_output_bytes: 64 * 1024,
            max_file_mb: 1,
            concurrency: 16,
            ..RunCodeConfig::default()
        };
        RunCode::detect(&limits).unwrap_or_else(|why| {
            panic!("the sandbox must work on this host (scripts/bootstrap.sh installs bubblewrap): {why}")
        })
    })
}

async fn python(code: &str) -> RunReport {
    sandbox()
        .run(SandboxLanguage::Python, code)
        .await
        .expect("the run is reported")
}

#[tokio::test]
async fn ordinary_code_runs_and_returns_its_output() {
    let report = python(
        "import math\nprint(math.comb(10, 3))\nprint('to stderr', file=__import__('sys').stderr)",
    )
    .await;
    assert_eq!(report.exit_code, Some(0), "{report:?}");
    assert_eq!(report.stdout, "120\n");
    assert_eq!(report.stderr, "to stderr\n");
    assert_eq!(report.limit, None);
    let shell = sandbox()
        .run(SandboxLanguage::Shell, "echo $((6 * 7)); exit 3")
        .await
        .unwrap();
    assert_eq!(shell.stdout, "42\n");
    assert_eq!(shell.exit_code, Some(3));
}

#[tokio::test]
async fn a_tcp_connection_fails() {
    // PostgreSQL listens on this host's loopback; the sandbox has none of
    // its own worth reaching and no route out.
    let report = python(
        "import socket\n\
         for host, port in [('127.0.0.1', 5432), ('10.0.0.1', 80), ('1.1.1.1', 53)]:\n\
         \x20   try:\n\
         \x20       socket.create_connection((host, port), timeout=1)\n\
         \x20       print('connected', host)\n\
         \x20   except OSError as e:\n\
         \x20       print('refused', host, e.errno)\n",
    )
    .await;
    assert!(!report.stdout.contains("connected"), "{report:?}");
    assert_eq!(report.stdout.matches("refused").count(), 3, "{report:?}");
}

#[tokio::test]
async fn files_outside_the_scratch_directory_cannot_be_read_or_written() {
    // A file of the gateway's (its config, its database) somewhere on the
    // host.
    let mut secret = tempfile::Builder::new()
        .prefix("switchyard-config-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    writeln!(secret, "master_key = \"sk-very-secret\"").unwrap();
    let path = secret.path().display().to_string();
    let report = python(&format!(
        "import os\n\
         for path in [{path:?}, '/etc/passwd', '/root', '/proc/1/environ']:\n\
         \x20   try:\n\
         \x20       print('read', path, open(path).read()[:40])\n\
         \x20   except OSError as e:\n\
         \x20       print('no', path, type(e).__name__)\n\
         for path in ['/usr/escape', '/etc/escape', '/escape']:\n\
         \x20   try:\n\
         \x20       open(path, 'w').write('x')\n\
         \x20       print('wrote', path)\n\
         \x20   except OSError as e:\n\
         \x20       print('no', path, type(e).__name__)\n\
         open('/work/mine.txt', 'w').write('ok')\n\
         open('/tmp/mine.txt', 'w').write('ok')\n\
         print(sorted(os.listdir('/')))\n"
    ))
    .await;
    assert!(!report.stdout.contains("sk-very-secret"), "{report:?}");
    // The sandbox's init process is there, without the gateway's
    // environment (this test's, here).
    assert!(
        report.stdout.contains("read /proc/1/environ \n"),
        "{report:?}"
    );
    assert!(!report.stdout.contains("CARGO"), "{report:?}");
    assert!(!report.stdout.contains("wrote"), "{report:?}");
    assert_eq!(report.stdout.matches("no ").count(), 6, "{report:?}");
    assert_eq!(
        report.exit_code,
        Some(0),
        "scratch and /tmp are writable: {report:?}"
    );
    assert!(!std::path::Path::new("/usr/escape").exists());
    assert!(!std::path::Path::new("/escape").exists());
    // /proc shows the sandbox's own processes only.
    assert!(!report.stdout.contains("'root'"), "{report:?}");
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_at_the_process_limit() {
    let report = python(
        "import os, time\n\
         children = 0\n\
         try:\n\
         \x20   while True:\n\
         \x20       if os.fork() == 0:\n\
         \x20           time.sleep(30)\n\
         \x20           os._exit(0)\n\
         \x20       children += 1\n\
         except OSError as e:\n\
         \x20   print('stopped after', children, e)\n\
         \x20   raise\n",
    )
    .await;
    assert_eq!(report.limit, Some(Limit::Processes), "{report:?}");
    let children: usize = report
        .stdout
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(children < 16, "{report:?}");
}

#[tokio::test]
async fn memory_past_the_limit_is_refused() {
    let report = python("block = bytearray(512 * 1024 * 1024)\nprint('allocated')").await;
    assert_eq!(report.limit, Some(Limit::Memory), "{report:?}");
    assert!(!report.stdout.contains("allocated"));
}

#[tokio::test]
async fn a_busy_loop_is_stopped_at_the_cpu_limit() {
    let report = python("while True:\n    pass\n").await;
    assert_eq!(report.limit, Some(Limit::CpuTime), "{report:?}");
    assert_ne!(report.exit_code, Some(0));
}

#[tokio::test]
async fn a_sleeper_is_stopped_at_the_wall_time_limit() {
    let report = python("import time\ntime.sleep(60)\nprint('woke')").await;
    assert_eq!(report.limit, Some(Limit::WallTime), "{report:?}");
    assert!(!report.stdout.contains("woke"));
}

#[tokio::test]
async fn printing_100_mb_is_cut_at_the_output_limit() {
    let report = python(
        "import sys\nchunk = 'x' * 1048576\nfor _ in range(100):\n    sys.stdout.write(chunk)\n",
    )
    .await;
    assert_eq!(report.limit, Some(Limit::Output), "{report:?}");
    assert_eq!(report.stdout.len(), 64 * 1024);
}

#[tokio::test]
async fn a_big_file_is_cut_at_the_file_size_limit() {
    let report = python("open('/work/big', 'w').write('x' * (4 * 1048576))").await;
    assert_ne!(report.exit_code, Some(0), "{report:?}");
    assert!(report.stderr.contains("File too large"), "{report:?}");
}
