//! `switchyard models pull` and `switchyard models list`.

use std::io::Write;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use switchyard_models::{CATALOG, CatalogEntry, ModelStore, PullOutcome, lookup};

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:<40} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Pulls one model, or every catalogue model.
pub fn pull(name: Option<&str>) -> anyhow::Result<()> {
    let store = ModelStore::default_location()?;
    let entries: Vec<&CatalogEntry> = match name {
        Some(name) => vec![lookup(name)?],
        None => CATALOG.iter().collect(),
    };
    for entry in entries {
        let bar = progress_bar();
        let outcome = store
            .pull(entry, &bar)
            .with_context(|| format!("pulling {}", entry.name))?;
        bar.finish_and_clear();
        let (verb, path) = match &outcome {
            PullOutcome::AlreadyPresent(path) => ("already present", path),
            PullOutcome::Downloaded(path) => ("downloaded", path),
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}: {verb}, sha256 verified ({})",
            entry.name,
            path.display()
        )?;
    }
    Ok(())
}

/// Lists the catalogue with each model's local state.
pub fn list() -> anyhow::Result<()> {
    let store = ModelStore::default_location()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<8} {:>8}  {:<12} DESCRIPTION",
        "NAME", "KIND", "SIZE", "STATUS"
    )?;
    for entry in CATALOG {
        let status = if store.is_present(entry) {
            "pulled"
        } else {
            "not pulled"
        };
        writeln!(
            out,
            "{:<24} {:<8} {:>6}MB  {:<12} {} ({})",
            entry.name,
            format!("{:?}", entry.kind).to_lowercase(),
            entry.size() / 1_000_000,
            status,
            entry.description,
            entry.license
        )?;
    }
    writeln!(out, "\nmodels folder: {}", store.dir().display())?;
    Ok(())
}
