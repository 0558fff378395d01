//! The fuzz targets' properties on every `cargo test`, without the fuzzer:
//! each target's seed corpus (`fuzz/corpus/<target>/`), the inputs a fuzzer
//! once found failing (`fuzz/regressions/<target>/`, kept after the fix)
//! and the generated seeds (signed headers and documents, DNS answers,
//! pictures) go through the same checks as under libFuzzer.
//!
//! `MXMEDIA_WRITE_SEEDS=1 cargo test --test fuzz_corpus` writes the
//! generated seeds into `fuzz/corpus/` (for the fuzzer to start from).
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mxmedia::fuzzing::{TARGETS, generated_seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_keeps_its_properties_on_it() {
    let write = std::env::var_os("MXMEDIA_WRITE_SEEDS").is_some();
    let generated = generated_seeds();
    for (target, check) in TARGETS {
        let corpus = fuzz_dir().join("corpus").join(target);
        if write {
            std::fs::create_dir_all(&corpus).unwrap();
            for (_, name, bytes) in generated.iter().filter(|(t, _, _)| t == target) {
                std::fs::write(corpus.join(name), bytes).unwrap();
            }
        }
        let seeds = files(&corpus);
        assert!(
            !seeds.is_empty(),
            "{target}: no seeds in {}",
            corpus.display()
        );
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let input = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(
                outcome.is_ok(),
                "{target}: {} breaks a property",
                path.display()
            );
        }
        for (_, name, bytes) in generated.iter().filter(|(t, _, _)| t == target) {
            let outcome = std::panic::catch_unwind(|| check(bytes));
            assert!(
                outcome.is_ok(),
                "{target}: generated seed {name} breaks a property"
            );
        }
        println!(
            "{target}: {} seeds, {} regressions",
            seeds.len(),
            regressions.len()
        );
    }
}

/// The corpus directories are exactly the targets' (a renamed target
/// leaves no corpus behind unchecked).
#[test]
fn no_corpus_without_a_target() {
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir)) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{dir}/{name} belongs to no target"
            );
        }
    }
}
