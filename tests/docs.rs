//! The docs say what happens: the README names every package the test tools installer
//! installs, and docs/writing-apps.md shows examples/upper_tun.rs as it is (its other
//! snippets are doc tests, through src/lib.rs). No root needed.

use std::path::Path;
use std::process::Command;

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The README's "Two commands" and "Tests" sections name every package
/// scripts/install-test-tools.sh installs, so what a new user reads is what runs.
#[test]
fn the_readme_names_every_package_the_installer_installs() {
    let installer = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-test-tools.sh");
    let output = Command::new(installer).arg("--list").output().unwrap();
    assert!(
        output.status.success(),
        "install-test-tools.sh --list failed: {output:?}"
    );
    let packages = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        packages.lines().count() > 10,
        "too few packages:\n{packages}"
    );
    let readme = repo_file("README.md");
    for heading in ["## Two commands", "## Tests"] {
        let section = readme
            .split("\n## ")
            .map(|s| format!("## {s}"))
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("README.md has no {heading:?} section"));
        let words: Vec<&str> = section
            .split(|c: char| c.is_whitespace() || "`(),;:".contains(c))
            .collect();
        for package in packages.lines().chain(["cargo-fuzz"]) {
            assert!(
                words.contains(&package),
                "README.md {heading:?} does not name {package}:\n{section}"
            );
        }
    }
}

#[test]
fn writing_apps_shows_the_example_app_as_it_is() {
    let doc = repo_file("docs/writing-apps.md");
    let example = repo_file("examples/upper_tun.rs");
    let block = doc
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("docs/writing-apps.md has no rust,no_run block");
    assert!(
        block == example,
        "the first rust,no_run block of docs/writing-apps.md is not examples/upper_tun.rs: \
         copy the example into it"
    );
}
