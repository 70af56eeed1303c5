//! The layer rule, read from the source: `main` → `app` → `api` → features
//! (`booking`, `rockets`, `spacex`, `outbox`) → leaves. Features never import `app`
//! or `api`; `api` never imports `app`; leaves import no feature; only `booking`
//! touches the `tickets` and `flights` tables; SQL is checked at build time except
//! where it is assembled at run time.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

const FEATURES: [&str; 4] = ["booking", "rockets", "spacex", "outbox"];
const LEAVES: [&str; 9] = [
    "proto",
    "db",
    "clock",
    "config",
    "telemetry",
    "metrics",
    "health",
    "embedded_pg",
    "lib",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).unwrap();
            out.push((path, text));
        }
    }
    out
}

/// The top-level module of a source file (`src/booking/list.rs` → `booking`).
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The crate modules a file names through `crate::` paths, grouped imports
/// (`use crate::{api::x, app}`) included. Comments are skipped.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, up to its matching brace.
            let (mut depth, mut item, mut end) = (0usize, String::new(), group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_ident(&item));
            rest = &group[end..];
        } else {
            found.insert(first_ident(rest));
        }
    }
    found.remove("");
    found
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    let mut broken = Vec::new();
    for (path, text) in files(&src()) {
        let module = module_of(&path);
        let uses = crate_modules(&text);
        let forbidden: &[&str] = if FEATURES.contains(&module.as_str()) {
            &["app", "api"]
        } else if module == "api" {
            &["app"]
        } else if LEAVES.contains(&module.as_str()) {
            &["app", "api", "booking", "rockets", "spacex", "outbox"]
        } else {
            &[]
        };
        for name in forbidden {
            if uses.contains(*name) {
                broken.push(format!(
                    "{} ({module}) imports crate::{name}",
                    path.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_parser_sees_grouped_and_nested_imports() {
    let text = "use crate::{\n    api::{error::ApiError, ApiState},\n    booking,\n};\nfn f() { crate::app::run(); }\n// crate::outbox in a comment\n";
    let found = crate_modules(text);
    assert_eq!(
        found,
        ["api", "app", "booking"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[test]
fn only_booking_touches_tickets_and_flights() {
    let mut offenders = Vec::new();
    for (path, text) in files(&src()) {
        if module_of(&path) == "booking" {
            continue;
        }
        let lower = text.to_lowercase();
        for verb in ["from", "join", "update", "into"] {
            for table in ["tickets", "flights"] {
                let needle = format!("{verb} {table}");
                if lower.match_indices(&needle).any(|(i, _)| {
                    !lower[i + needle.len()..]
                        .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                }) {
                    offenders.push(format!("{}: {needle}", path.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL on booking's tables outside src/booking:\n{}",
        offenders.join("\n")
    );
}

/// Runtime (unchecked) SQL is allowed only where the statement is assembled at run
/// time: the two list queries.
#[test]
fn static_sql_is_checked_at_build_time() {
    const DYNAMIC: [&str; 2] = ["booking/list.rs", "rockets/list.rs"];
    let mut offenders = Vec::new();
    for (path, text) in files(&src()) {
        let relative = path
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if DYNAMIC.contains(&relative.as_str()) {
            continue;
        }
        for call in [
            "sqlx::query(",
            "sqlx::query_as(",
            "sqlx::query_scalar(",
            "sqlx::query_as::<",
            "sqlx::query_scalar::<",
        ] {
            if text.contains(call) {
                offenders.push(format!("{relative}: {call}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "runtime SQL outside the dynamic list queries:\n{}",
        offenders.join("\n")
    );
}
