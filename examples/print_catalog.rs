//! Prints the README's rule and mutator tables: `cargo run --example print_catalog`.
fn main() {
    print!(
        "{}\n{}",
        stsguard::catalog::rules_markdown(),
        stsguard::catalog::mutators_markdown()
    );
}
