//! Finding the manifests under a directory: `*.yaml`, `*.yml` and `*.json`, in name order, with
//! `.gitignore` honoured, `--exclude` globs applied, symlink loops and unrendered Helm chart
//! templates passed over with a note rather than read again and again or failing on `{{ }}`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use ignore::{WalkBuilder, overrides::OverrideBuilder};

const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// What a walk found, and what it passed over that the user should hear about.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// The manifest files under `dir`, recursively, in name order; `exclude` holds gitignore-style
/// globs, relative to `dir`, of paths to leave out.
pub fn manifest_files(dir: &Path, exclude: &[String]) -> Result<Walk, String> {
    let mut overrides = OverrideBuilder::new(dir);
    for glob in exclude {
        overrides
            .add(&format!("!{glob}"))
            .map_err(|e| format!("--exclude {glob:?} is not a valid glob: {e}"))?;
    }
    let overrides = overrides.build().map_err(|e| format!("--exclude: {e}"))?;
    let charts: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let skipped = charts.clone();
    let walker = WalkBuilder::new(dir)
        .follow_links(true)
        .require_git(false)
        .overrides(overrides)
        .sort_by_file_path(|a, b| a.cmp(b))
        // A chart's templates are not manifests until Helm renders them.
        .filter_entry(move |entry| {
            let path = entry.path();
            let template_dir = entry.file_type().is_some_and(|t| t.is_dir())
                && path.file_name().is_some_and(|n| n == "templates")
                && path
                    .parent()
                    .is_some_and(|p| p.join("Chart.yaml").is_file());
            if template_dir {
                skipped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(path.parent().unwrap_or(path).to_owned());
            }
            !template_dir
        })
        .build();
    let mut walk = Walk::default();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.is_io() => return Err(format!("cannot read directory: {e}")),
            // Symlink loops and unreadable ignore files: say so and go on.
            Err(e) => {
                walk.notes
                    .push(format!("{}: passed over: {e}", dir.display()));
                continue;
            }
        };
        let path = entry.path();
        let manifest = entry.file_type().is_some_and(|t| t.is_file())
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
        if manifest {
            walk.files.push(path.to_owned());
        }
    }
    for chart in charts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        walk.notes.push(format!(
            "{}: a Helm chart; its templates/ were not read (render it first: helm template {} | \
             stsguard audit -f -)",
            chart.display(),
            chart.display()
        ));
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(walk: &Walk, root: &Path) -> Vec<String> {
        walk.files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn loops_ignored_files_excludes_and_chart_templates_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("apps/sub")).unwrap();
        std::fs::write(root.join("apps/a.yaml"), "kind: A\n").unwrap();
        std::fs::write(root.join("apps/sub/b.yml"), "kind: B\n").unwrap();
        std::fs::write(root.join("apps/sub/notes.txt"), "x").unwrap();
        // A link back up: followed once, never in a loop.
        std::os::unix::fs::symlink(root.join("apps"), root.join("apps/sub/loop")).unwrap();
        std::fs::write(root.join(".gitignore"), "generated/\n").unwrap();
        std::fs::create_dir_all(root.join("generated")).unwrap();
        std::fs::write(root.join("generated/x.yaml"), "kind: X\n").unwrap();
        std::fs::create_dir_all(root.join("chart/templates")).unwrap();
        std::fs::write(root.join("chart/Chart.yaml"), "apiVersion: v2\n").unwrap();
        std::fs::write(root.join("chart/templates/sts.yaml"), "{{ .Values }}\n").unwrap();
        std::fs::create_dir_all(root.join("vendor")).unwrap();
        std::fs::write(root.join("vendor/v.json"), "{}").unwrap();

        let walk = manifest_files(root, &["vendor/**".to_owned()]).unwrap();
        assert_eq!(
            names(&walk, root),
            ["apps/a.yaml", "apps/sub/b.yml", "chart/Chart.yaml"]
        );
        assert!(
            walk.notes.iter().any(|n| n.contains("a Helm chart")),
            "{:?}",
            walk.notes
        );
        assert!(
            walk.notes.iter().any(|n| n.contains("loop")),
            "{:?}",
            walk.notes
        );
        let bad = manifest_files(root, &["[".to_owned()]).unwrap_err();
        assert!(bad.contains("--exclude \"[\""), "{bad}");
    }
}
