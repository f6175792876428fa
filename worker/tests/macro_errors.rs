//! A misuse of the attribute macros is a compile error that says what to do, at the place to
//! fix. Each case in `tests/macros/` is compiled and its error compared with the `.stderr`
//! beside it (regenerate them with `TRYBUILD=overwrite cargo test -p mainstay --test
//! macro_errors`, then read the diff: a message must stay a clear instruction).

#[test]
fn misuses_fail_to_compile_with_clear_errors() {
    trybuild::TestCases::new().compile_fail("tests/macros/*.rs");
}
