//! The seed corpus of the cargo-fuzz target `request` (`fuzz/corpus/request`), run on stable
//! through the very checks the target makes (`fuzz/src/checks.rs`): every file parses or is a
//! `bad_request`, never a panic. Files named `ok-*` must parse and `bad-*` must be refused;
//! any other file (one a fuzzing run added) may go either way.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn every_seed_parses_or_is_a_bad_request() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/request");
    let mut seen = 0;
    for entry in std::fs::read_dir(&corpus).expect("the seed corpus") {
        let path = entry.expect("a corpus entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&path).expect("a corpus file");
        let outcome = checks::request(&body);
        if name.starts_with("ok-") {
            assert!(outcome.is_ok(), "{name} is refused: {:?}", outcome.err());
        } else if name.starts_with("bad-") {
            assert!(outcome.is_err(), "{name} parses: {outcome:?}");
        }
        seen += 1;
    }
    assert!(seen >= 30, "only {seen} seeds in {}", corpus.display());
}
