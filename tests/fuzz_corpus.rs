//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) through the
//! entry points the cargo fuzz targets call, on stable Rust: CI covers the
//! corpus without a nightly toolchain.

use std::path::Path;

#[test]
fn every_input_of_every_fuzz_corpus_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in jobvisor::fuzzing::TARGETS {
        let dir = root.join(name);
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            inputs.len() >= 5,
            "{name}: a seed corpus of {} inputs",
            inputs.len()
        );
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panics on {}", input.display());
        }
    }
}
