//! The compile errors a user sees for the common mistakes, pinned (tests/ui/*.stderr): each
//! says what to add, and none sends the reader to mesh's internals first. Regenerate with
//! `TRYBUILD=overwrite cargo test -p mesh-actix --test ui` after an intended change.

#[test]
fn mistakes_get_errors_that_say_what_to_do() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
