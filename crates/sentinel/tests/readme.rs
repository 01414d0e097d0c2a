//! The README's library example is the compiled example, not a copy that can drift.

#[test]
fn readme_library_example_is_the_compiled_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/payment.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let body = example
        .split("// README-BEGIN\n")
        .nth(1)
        .and_then(|rest| rest.split("// README-END").next())
        .expect("README markers in examples/payment.rs");
    let dedented: String = body
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    let block = format!(
        "```rust\n{}```\n",
        dedented.trim_end_matches([' ', '\n']).to_owned() + "\n"
    );
    assert!(
        readme.contains(&block),
        "README.md's library example differs from examples/payment.rs; paste this block:\n{block}"
    );
}
