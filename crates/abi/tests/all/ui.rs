//! Compile-time behaviour of `#[hook]` and `#[chio_guard]`: what compiles, and the message and span
//! of every misuse (pinned in `tests/ui/*.stderr`; regenerate with `TRYBUILD=overwrite` and read them).

#[test]
fn macros_accept_good_functions_and_reject_misuse_at_the_offending_span() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
