//! The `console` transcripts in the book run against the built binary and must print what the
//! page shows (`TRYCMD=overwrite cargo test --test docs_transcripts` rewrites them).
//!
//! Only pages whose transcripts can run here are listed; `kubectl` and `helm` examples that need
//! a real cluster are in `sh` blocks, which trycmd does not read, and are listed on the book's
//! "Illustrative examples" page.

#[test]
fn book_transcripts() {
    trycmd::TestCases::new()
        .register_bin(
            "stsguard",
            std::path::Path::new(env!("CARGO_BIN_EXE_stsguard")),
        )
        // A terminal's colours and the reader's locale must not change what a page shows.
        .env("NO_COLOR", "1")
        .case("docs/src/first-denial.md")
        .case("docs/src/cli.md")
        .case("docs/src/backstop.md");
}
