//! `run_code`: generated code run in an isolated process.
//!
//! The isolation is the operating system's, through tools Debian ships
//! rather than code of ours: bubblewrap (`bwrap`) gives the run its own
//! namespaces (no network at all, its own process tree, host name and IPC)
//! and its own filesystem view (the system's `/usr` read-only, a fresh
//! scratch directory as `/work`, an empty `/tmp`, nothing else of the
//! host: not the gateway's configuration, database or keys); util-linux's
//! `prlimit` sets the resource limits (CPU seconds, address space,
//! processes, file size, open files) before `bwrap` starts, and when the
//! gateway runs as root, `setpriv` first drops the run to a user of its
//! own with no capabilities, so the process limit counts that run's
//! processes alone. The launch gets an empty environment: the sandbox's
//! init process would otherwise carry the gateway's (and its secrets) in
//! `/proc/1/environ`. Wall time and output size are enforced here: the run
//! is killed when either is exceeded, and `--die-with-parent` plus the PID
//! namespace take every process it started down with it.
//!
//! Where this cannot work (no `bwrap`, or user namespaces disabled), the
//! tool is unavailable and says why; code is never run unsandboxed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_config::{RunCodeConfig, SandboxLanguage};
use switchyard_core::ToolDefinition;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{Notify, Semaphore};

use crate::toolbox::{Tool, ToolError, parse_arguments};

/// When the gateway is root, run slot `n` runs as user (and group)
/// `SANDBOX_UID_BASE + n`: users no account or file on the host has, and
/// one per slot, so the process limit (which the kernel counts per user)
/// is each run's own, and one run's fork bomb cannot starve another.
/// (Below 2^31: bubblewrap refuses larger ids in its user namespace.)
const SANDBOX_UID_BASE: u32 = 2_000_000_000;

/// Where programs are found inside the sandbox.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The exit status `bwrap` reports for a run killed by `SIGXCPU` (128 +
/// 24): the CPU limit.
const EXIT_CPU_LIMIT: i32 = 128 + 24;

/// The code sandbox tool.
pub struct RunCode {
    limits: RunCodeConfig,
    prlimit: PathBuf,
    setpriv: Option<PathBuf>,
    bwrap: PathBuf,
    /// `--ro-bind`/`--symlink` arguments for the system directories.
    system_view: Vec<String>,
    /// Free run slots (their numbers); a run takes one for its duration.
    slots: Mutex<Vec<u32>>,
    /// Wakes a run waiting for a slot.
    freed: Semaphore,
}

impl std::fmt::Debug for RunCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCode")
            .field("bwrap", &self.bwrap)
            .field("languages", &self.limits.languages)
            .finish_non_exhaustive()
    }
}

/// Why a run ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// It ran past its wall-clock time.
    WallTime,
    /// It used its CPU seconds.
    CpuTime,
    /// It wrote more output than is kept.
    Output,
    /// It ran out of address space.
    Memory,
    /// It could not start more processes.
    Processes,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Its exit status (`None` when killed by a signal).
    pub exit_code: Option<i32>,
    /// What it printed (at most the configured bytes).
    pub stdout: String,
    /// What it printed on stderr (at most the configured bytes).
    pub stderr: String,
    /// The limit that stopped it or made it fail, if one did.
    pub limit: Option<Limit>,
    /// How long it took.
    pub duration_ms: u64,
}

#[derive(Deserialize)]
struct Arguments {
    #[serde(default)]
    language: Option<SandboxLanguage>,
    code: String,
}

impl RunCode {
    /// The tool with `limits`, after checking that this host can isolate a
    /// run: the commands are there and a trial run in the sandbox works.
    /// `Err` says why it cannot.
    pub fn detect(limits: &RunCodeConfig) -> Result<Self, String> {
        let find = |name: &str| {
            find_executable(name).ok_or_else(|| {
                format!("`{name}` is not installed (scripts/bootstrap.sh installs it)")
            })
        };
        let bwrap = find("bwrap")?;
        let prlimit = find("prlimit")?;
        let setpriv = if running_as_root() {
            Some(find("setpriv")?)
        } else {
            None
        };
        for language in &limits.languages {
            let interpreter = interpreter(*language);
            // Looked up where the run will look: the host's own PATH may
            // lead elsewhere (a version manager's shims, say).
            if !SANDBOX_PATH
                .split(':')
                .any(|dir| Path::new(dir).join(interpreter).is_file())
            {
                return Err(format!(
                    "`{interpreter}` is not installed in {SANDBOX_PATH}, the system directories the sandbox shows"
                ));
            }
        }
        let tool = Self {
            limits: limits.clone(),
            prlimit,
            setpriv,
            bwrap,
            system_view: system_view(),
            slots: Mutex::new((0..u32::try_from(limits.concurrency).unwrap_or(u32::MAX)).collect()),
            freed: Semaphore::new(limits.concurrency),
        };
        tool.trial()?;
        Ok(tool)
    }

    /// One run of `true` in the sandbox, as every run will be started.
    fn trial(&self) -> Result<(), String> {
        let scratch = self.scratch().map_err(|e| e.to_string())?;
        let argv = self.argv(scratch.path(), 0, &["sh", "-c", "exit 0"]);
        let output = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not start {}: {e}", argv[0]))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "a trial run in the sandbox failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// A fresh scratch directory the run may write to.
    fn scratch(&self) -> std::io::Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-run-")
            .tempdir()?;
        if self.setpriv.is_some() {
            // The run is a user of its own: it needs to write its
            // directory.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        Ok(dir)
    }

    /// The command line that runs `program` in the sandbox on `scratch`,
    /// in run slot `slot`.
    fn argv(&self, scratch: &Path, slot: u32, program: &[&str]) -> Vec<String> {
        let limits = &self.limits;
        let mib = 1024 * 1024;
        let mut argv = vec![
            self.prlimit.display().to_string(),
            // Soft then hard: SIGXCPU at the limit, SIGKILL a second later
            // for a run that ignores it.
            format!("--cpu={}:{}", limits.cpu_secs, limits.cpu_secs + 1),
            format!("--as={}", limits.memory_mb * mib),
            format!("--nproc={}", limits.max_processes),
            format!("--fsize={}", limits.max_file_mb * mib),
            "--nofile=256".into(),
            "--core=0".into(),
            "--".into(),
        ];
        if let Some(setpriv) = &self.setpriv {
            let user = SANDBOX_UID_BASE.saturating_add(slot);
            argv.extend([
                setpriv.display().to_string(),
                format!("--reuid={user}"),
                format!("--regid={user}"),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--bounding-set=-all".into(),
                "--".into(),
            ]);
        }
        argv.push(self.bwrap.display().to_string());
        argv.extend(
            [
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--hostname",
                "sandbox",
                "--clearenv",
                "--setenv",
                "PATH",
                SANDBOX_PATH,
                "--setenv",
                "HOME",
                "/work",
                "--setenv",
                "LANG",
                "C.UTF-8",
                "--setenv",
                "PYTHONDONTWRITEBYTECODE",
                "1",
            ]
            .map(str::to_owned),
        );
        argv.extend(self.system_view.iter().cloned());
        argv.extend(
            [
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind",
            ]
            .map(str::to_owned),
        );
        argv.push(scratch.display().to_string());
        // The root the mounts hang from is read-only; /work and /tmp,
        // mounts of their own, stay writable.
        argv.extend(["/work", "--remount-ro", "/", "--chdir", "/work", "--"].map(str::to_owned));
        argv.extend(program.iter().map(|s| (*s).to_owned()));
        argv
    }

    /// Runs `code` in `language` in a fresh sandbox.
    pub async fn run(&self, language: SandboxLanguage, code: &str) -> Result<RunReport, ToolError> {
        if !self.limits.languages.contains(&language) {
            return Err(ToolError::Arguments(format!(
                "this server runs {}",
                self.limits
                    .languages
                    .iter()
                    .map(|l| language_name(*l))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if code.len() > self.limits.max_code_bytes {
            return Err(ToolError::Arguments(format!(
                "the code is longer than {} bytes",
                self.limits.max_code_bytes
            )));
        }
        let slot = self.take_slot().await?;
        let scratch = self
            .scratch()
            .map_err(|e| ToolError::Failed(format!("no scratch directory: {e}")))?;
        let file = match language {
            SandboxLanguage::Python => "main.py",
            SandboxLanguage::Shell => "main.sh",
        };
        tokio::fs::write(scratch.path().join(file), code)
            .await
            .map_err(|e| ToolError::Failed(format!("could not write the code: {e}")))?;
        let inside = format!("/work/{file}");
        let program: Vec<&str> = match language {
            // -I: no user site or environment; -B: no bytecode files.
            SandboxLanguage::Python => vec![interpreter(language), "-I", "-B", &inside],
            SandboxLanguage::Shell => vec![interpreter(language), &inside],
        };
        let argv = self.argv(scratch.path(), slot.number, &program);
        let started = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ToolError::Unavailable(format!("could not start the sandbox: {e}")))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ToolError::Failed("the sandbox's output is missing".into()));
        };
        let max = self.limits.max_output_bytes;
        let overflow = Notify::new();
        let reading = async {
            tokio::join!(
                collect(stdout, max, &overflow),
                collect(stderr, max, &overflow)
            )
        };
        tokio::pin!(reading);
        let deadline = tokio::time::sleep(Duration::from_secs(self.limits.wall_secs));
        tokio::pin!(deadline);
        let mut stopped = None;
        let (stdout, stderr) = loop {
            tokio::select! {
                outputs = &mut reading => break outputs,
                () = overflow.notified(), if stopped.is_none() => {
                    stopped = Some(Limit::Output);
                    let _ = child.start_kill();
                }
                () = &mut deadline, if stopped.is_none() => {
                    stopped = Some(Limit::WallTime);
                    let _ = child.start_kill();
                }
            }
        };
        // Output closed; a run that lives on without it still ends at the
        // deadline.
        let status = tokio::select! {
            status = child.wait() => status,
            () = &mut deadline, if stopped.is_none() => {
                stopped = Some(Limit::WallTime);
                let _ = child.start_kill();
                child.wait().await
            }
        }
        .map_err(|e| ToolError::Failed(format!("the sandbox failed: {e}")))?;
        let exit_code = status.code();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        let limit = stopped.or_else(|| limit_from(exit_code, &stderr));
        Ok(RunReport {
            exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
            limit,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// A run slot in use; given back when dropped.
struct Slot<'a> {
    number: u32,
    tool: &'a RunCode,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.tool
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(self.number);
        self.tool.freed.add_permits(1);
    }
}

impl RunCode {
    /// A free run slot, waiting for one when all are in use.
    async fn take_slot(&self) -> Result<Slot<'_>, ToolError> {
        self.freed
            .acquire()
            .await
            .map_err(|_| ToolError::Unavailable("the sandbox is shutting down".into()))?
            .forget();
        let number = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .ok_or_else(|| ToolError::Failed("no run slot is free".into()))?;
        Ok(Slot { number, tool: self })
    }
}

/// Which limit made a run that ended by itself fail, from its status and
/// what it printed: the kernel's refusals surface as the interpreter's own
/// errors (`MemoryError`, a failed fork), which is all there is to read.
fn limit_from(exit_code: Option<i32>, stderr: &str) -> Option<Limit> {
    match exit_code {
        Some(0) => None,
        // SIGXCPU at the soft limit, or SIGKILL (128 + 9) at the hard one
        // for a run that ignored it (the kernel's OOM killer aside, nothing
        // else kills a run the gateway did not stop itself).
        Some(EXIT_CPU_LIMIT | 137) => Some(Limit::CpuTime),
        _ if stderr.contains("MemoryError") || stderr.contains("Cannot allocate memory") => {
            Some(Limit::Memory)
        }
        _ if stderr.contains("Resource temporarily unavailable") => Some(Limit::Processes),
        _ => None,
    }
}

/// Reads `pipe` to its end, keeping at most `max` bytes; past that it
/// signals `overflow` once and reads on without keeping.
async fn collect(mut pipe: impl AsyncRead + Unpin, max: usize, overflow: &Notify) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut signalled = false;
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(read) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..read.min(room)]);
                if read > room && !signalled {
                    signalled = true;
                    overflow.notify_one();
                }
            }
        }
    }
}

fn interpreter(language: SandboxLanguage) -> &'static str {
    match language {
        SandboxLanguage::Python => "python3",
        SandboxLanguage::Shell => "sh",
    }
}

fn language_name(language: SandboxLanguage) -> &'static str {
    match language {
        SandboxLanguage::Python => "python",
        SandboxLanguage::Shell => "shell",
    }
}

/// `name` on `PATH` (a file lookup; there is no crate worth adding for it).
fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether the gateway's real user is root (`/proc/self/status` says so
/// without a system call wrapper).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                .map(|real| real == "0")
        })
        .unwrap_or(false)
}

/// The host's system directories as the run sees them: `/usr` read-only,
/// and `/bin`, `/lib`... as the host has them (symbolic links into `/usr`
/// on a merged-`/usr` system, read-only directories elsewhere).
fn system_view() -> Vec<String> {
    let mut view = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(dir) {
            Ok(target) => view.extend([
                "--symlink".into(),
                target.display().to_string(),
                dir.to_owned(),
            ]),
            Err(_) if Path::new(dir).is_dir() => {
                view.extend(["--ro-bind".into(), dir.to_owned(), dir.to_owned()]);
            }
            Err(_) => {}
        }
    }
    view
}

impl Tool for RunCode {
    fn definition(&self) -> ToolDefinition {
        let languages: Vec<&str> = self
            .limits
            .languages
            .iter()
            .map(|l| language_name(*l))
            .collect();
        ToolDefinition {
            name: "run_code".into(),
            description: Some(format!(
                "Runs a program in an isolated sandbox and returns its stdout, stderr and exit \
                 code. No network; only /work (empty at start) is writable; limits: {} s of CPU, \
                 {} s in all, {} MiB of memory. Print what you need to see. Languages: {}.",
                self.limits.cpu_secs,
                self.limits.wall_secs,
                self.limits.memory_mb,
                languages.join(", ")
            )),
            parameters: json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": languages},
                    "code": {"type": "string", "description": "The whole program"}
                },
                "required": ["code"],
                "additionalProperties": false
            }),
        }
    }

    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let Arguments { language, code } = parse_arguments(arguments)?;
            let language = language
                .or_else(|| self.limits.languages.first().copied())
                .unwrap_or(SandboxLanguage::Python);
            let report = self.run(language, &code).await?;
            serde_json::to_string(&report).map_err(|e| ToolError::Failed(e.to_string()))
        })
    }
}
