//! The documentation's own checks: the error table in `docs/errors.md` is the one
//! `src/api/error.rs` defines. `UPDATE_DOCS=1 cargo test --test docs` rewrites it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use spacet::api::error::Reason;

const REASONS_START: &str = "<!-- reasons:start -->";
const REASONS_END: &str = "<!-- reasons:end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &Path) -> String {
    fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("{}: {e}", relative.display()))
}

/// The gRPC code's canonical name: `InvalidArgument` → `INVALID_ARGUMENT`.
fn code_name(reason: Reason) -> String {
    let mut name = String::new();
    for (i, c) in format!("{:?}", reason.code()).chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The error table as `docs/errors.md` holds it between its markers.
fn reason_table() -> String {
    let mut table = String::from("| Reason | gRPC code | HTTP | When |\n|---|---|---|---|\n");
    for &reason in Reason::ALL {
        table.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            reason.as_str(),
            code_name(reason),
            reason.http_status().as_str(),
            reason.when().replace('|', "\\|"),
        ));
    }
    table
}

#[test]
fn the_error_table_in_docs_is_the_one_the_code_defines() {
    let path = root().join("docs/errors.md");
    let doc = fs::read_to_string(&path).unwrap();
    let start = doc
        .find(REASONS_START)
        .expect("docs/errors.md has its start marker");
    let end = doc
        .find(REASONS_END)
        .expect("docs/errors.md has its end marker");
    assert!(
        start < end,
        "the markers of docs/errors.md are out of order"
    );
    let body_start = start + REASONS_START.len();
    let committed = doc[body_start..end].trim_start_matches('\n');
    let generated = reason_table();
    if committed == generated {
        return;
    }
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let updated = format!("{}\n{generated}{}", &doc[..body_start], &doc[end..]);
        fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        committed, generated,
        "docs/errors.md's table differs from Reason in src/api/error.rs: \
         run `UPDATE_DOCS=1 cargo test --test docs`"
    );
}

#[test]
fn every_reason_the_hand_written_part_of_docs_errors_names_exists() {
    let doc = read(Path::new("docs/errors.md"));
    let (before, rest) = doc.split_once(REASONS_START).expect("the start marker");
    let (_, after) = rest.split_once(REASONS_END).expect("the end marker");
    let mut named = 0;
    for line in [before, after]
        .iter()
        .flat_map(|part| part.lines())
        .filter(|l| l.starts_with("| `"))
    {
        let cell = line.split('|').nth(1).unwrap().trim().trim_matches('`');
        assert!(
            Reason::parse(cell).is_some(),
            "docs/errors.md names `{cell}`, which is not a reason: {line}"
        );
        named += 1;
    }
    assert!(named > 0, "no reason found in the hand-written tables");
}
