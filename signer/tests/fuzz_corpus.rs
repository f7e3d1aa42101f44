//! Replays every seed (`fuzz/seeds/<target>/`) and every local corpus file
//! (`fuzz/corpus/<target>/`, when a fuzzing run left one) through the harness the
//! fuzz target calls (`ekms_signer::fuzz_harness`), so a crash on a known input
//! fails `make test` without a nightly toolchain.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use ekms_signer::fuzz_harness::TARGETS;

#[test]
fn every_seed_and_corpus_file_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut total = 0;
    for (name, harness) in TARGETS {
        let seeds = fuzz.join("seeds").join(name);
        let files: Vec<_> = std::fs::read_dir(&seeds)
            .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
            .collect();
        assert!(!files.is_empty(), "target {name} has no seeds");
        for dir in [seeds, fuzz.join("corpus").join(name)] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let bytes = std::fs::read(&path).unwrap();
                    harness(&bytes);
                    total += 1;
                }
            }
        }
    }
    assert!(total >= TARGETS.len());
}

#[test]
fn every_harness_survives_trivial_inputs() {
    for (_, harness) in TARGETS {
        for input in [
            &[][..],
            &[0],
            &[0xff; 64],
            b"{}",
            b"[[[[[[[[",
            &[3, 1, 2, 3, 4, 5, 6, 7, 8],
        ] {
            harness(input);
        }
    }
}
