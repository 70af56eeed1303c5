//! The layer rule, read from the source: `main` → `app` → `api` → features
//! (`booking`, `launchpads`, `rockets`, `spacex`, `outbox`) → leaves. Features never
//! import `app` or `api`; `api` never imports `app`; leaves import no feature;
//! every table has one owning module, the only one whose SQL names it; no two
//! modules import each other, directly or around a loop, at any level; SQL is
//! checked at build time except where it is assembled at run time.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
};

const FEATURES: [&str; 5] = ["booking", "launchpads", "rockets", "spacex", "outbox"];
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

/// Every `.rs` and `.sql` file under `dir`, with its text.
fn source_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs" || e == "sql") {
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
            &[
                "app",
                "api",
                "booking",
                "launchpads",
                "rockets",
                "spacex",
                "outbox",
            ]
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

// ---------------------------------------------------------------------------
// Reading Rust source: comments dropped, string literals set apart.
// ---------------------------------------------------------------------------

/// A source file split into its code (comments removed, every string literal
/// emptied to `""`) and the text of its string literals (escapes decoded).
struct Lexed {
    code: String,
    strings: Vec<String>,
}

/// Splits Rust source into code and string literals. Knows line, block (nested)
/// and doc comments; normal, byte, C and raw strings (`r#"…"#`); char literals
/// (`'"'`, `'\''`) apart from lifetimes (`'a`).
fn lex(text: &str) -> Lexed {
    let chars: Vec<char> = text.chars().collect();
    let (mut code, mut strings) = (String::new(), Vec::new());
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            code.push(' ');
        } else if let Some((quote, hashes)) = raw_string_at(&chars, i).filter(|_| !after_ident) {
            // Up to a quote followed by as many hashes.
            let start = quote + 1;
            let mut j = start;
            while j < chars.len()
                && !(chars[j] == '"'
                    && chars[j + 1..].iter().take_while(|&&h| h == '#').count() >= hashes)
            {
                j += 1;
            }
            strings.push(chars[start..j].iter().collect());
            code.push_str("\"\"");
            i = j + 1 + hashes;
        } else if c == '"' || (!after_ident && (c == 'b' || c == 'c') && next == Some('"')) {
            let mut j = if c == '"' { i + 1 } else { i + 2 };
            let mut literal = String::new();
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    j += 1;
                    match chars.get(j) {
                        Some('n') => literal.push('\n'),
                        Some('t') => literal.push('\t'),
                        Some('r') => literal.push('\r'),
                        Some('0') => literal.push('\0'),
                        // A line continuation: the newline and the next line's indent go.
                        Some('\n') => {
                            while chars.get(j + 1).is_some_and(|w| w.is_whitespace()) {
                                j += 1;
                            }
                            literal.push(' ');
                        }
                        Some(&other) => literal.push(other),
                        None => {}
                    }
                } else {
                    literal.push(chars[j]);
                }
                j += 1;
            }
            strings.push(literal);
            code.push_str("\"\"");
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 3;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                code.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                code.push_str("' '");
            } else {
                code.push(c);
                i += 1;
            }
        } else {
            code.push(c);
            i += 1;
        }
    }
    Lexed { code, strings }
}

/// Where a raw string starting at `i` (`r"`, `r#"`, `br#"`, `cr"`, ...) has its
/// opening quote, and its number of hashes.
fn raw_string_at(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let r = match chars[i] {
        'r' => i,
        'b' | 'c' if chars.get(i + 1) == Some(&'r') => i + 1,
        _ => return None,
    };
    let hashes = chars[r + 1..].iter().take_while(|&&h| h == '#').count();
    (chars.get(r + 1 + hashes) == Some(&'"')).then_some((r + 1 + hashes, hashes))
}

/// The tokens of code: identifiers (and numbers), `::`, and single characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_string());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// One owner per table.
// ---------------------------------------------------------------------------

/// The tables the migrations create (and do not drop), in order.
fn migration_tables() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    paths.sort();
    let mut tables: Vec<String> = Vec::new();
    for path in paths {
        let sql = sql_without_comments(&fs::read_to_string(&path).unwrap()).to_lowercase();
        let words: Vec<&str> = sql
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .filter(|w| !w.is_empty())
            .collect();
        for (i, pair) in words.windows(2).enumerate() {
            let verb = match pair {
                ["create", _] => "create",
                ["drop", "table"] => "drop",
                _ => continue,
            };
            // CREATE [UNLOGGED | TEMP …] TABLE [IF NOT EXISTS] name
            let Some(at) = words[i + 1..].iter().take(3).position(|w| *w == "table") else {
                continue;
            };
            let name = words[i + 2 + at..]
                .iter()
                .find(|w| !matches!(**w, "if" | "not" | "exists"))
                .map(|w| w.trim_start_matches("public.").to_string());
            if let Some(name) = name {
                match verb {
                    "create" if !tables.contains(&name) => tables.push(name),
                    "drop" => tables.retain(|t| *t != name),
                    _ => {}
                }
            }
        }
    }
    tables
}

fn sql_without_comments(sql: &str) -> String {
    sql.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Words after which SQL names a table.
const TABLE_KEYWORDS: [&str; 8] = [
    "from",
    "join",
    "into",
    "update",
    "table",
    "truncate",
    "references",
    "copy",
];

/// Words that end a table reference in a FROM list (a table's alias is any other
/// word).
const AFTER_TABLE: [&str; 24] = [
    "where",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "group",
    "order",
    "limit",
    "offset",
    "for",
    "union",
    "except",
    "intersect",
    "set",
    "values",
    "select",
    "returning",
    "window",
    "having",
];

/// The `tables` that an SQL text names as tables: a table is named where it
/// follows FROM, JOIN, INTO, UPDATE, TABLE, TRUNCATE, REFERENCES or COPY (any
/// case; after an optional ONLY, IF [NOT] EXISTS and `public.`), and further
/// tables of a FROM list (`FROM a x, b`). A name elsewhere (a column, a word in a
/// message, `sync_state.resource = 'spacex_launches'`) is not a table reference.
fn tables_named(sql: &str, tables: &[String]) -> BTreeSet<String> {
    let lower = sql.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ','))
        .flat_map(|w| {
            // A comma is a word of its own.
            let mut parts = Vec::new();
            for (i, piece) in w.split(',').enumerate() {
                if i > 0 {
                    parts.push(",");
                }
                if !piece.is_empty() {
                    parts.push(piece);
                }
            }
            parts
        })
        .collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < words.len() {
        if !TABLE_KEYWORDS.contains(&words[i]) {
            i += 1;
            continue;
        }
        let in_from = words[i] == "from";
        i += 1;
        loop {
            while i < words.len() && matches!(words[i], "only" | "if" | "not" | "exists") {
                i += 1;
            }
            let Some(word) = words.get(i) else { break };
            let name = word.trim_start_matches("public.");
            if tables.iter().any(|t| t == name) {
                found.insert(name.to_string());
            }
            i += 1;
            if !in_from {
                break;
            }
            // An alias, then a comma: another table of the FROM list.
            if words.get(i) == Some(&"as") {
                i += 1;
            }
            if words.get(i).is_some_and(|w| {
                *w != "," && !AFTER_TABLE.contains(w) && !TABLE_KEYWORDS.contains(w)
            }) {
                i += 1;
            }
            if words.get(i) == Some(&",") {
                i += 1;
            } else {
                break;
            }
        }
    }
    found
}

/// The owner of each table: the one top-level module whose SQL names it. Every
/// table the migrations create is listed; the test fails when a table is named by
/// none or by several modules, or when an owner moves without this list.
const OWNERS: [(&str, &str); 9] = [
    ("launchpads", "launchpads"),
    ("spacex_launches", "launchpads"),
    ("sync_state", "spacex"),
    ("flights", "booking"),
    ("tickets", "booking"),
    ("ticket_names", "booking"),
    ("outbox", "outbox"),
    ("rocket_messages", "rockets"),
    ("rockets", "rockets"),
];

/// Every table created in `migrations/` has exactly one owning module: the only
/// top-level module of `src/` whose SQL names it. The SQL of a module is:
/// - every string literal of its `.rs` files — the SQL of `sqlx::query!` and
///   friends, runtime query strings, `format!` templates and fragments pushed into
///   a `QueryBuilder` (comments are not SQL, so a doc comment may name any table);
/// - every `.sql` file under its directory (what `sqlx::query_file!` or
///   `include_str!` would read).
///
/// A table name must be written out where the SQL names it (after FROM, JOIN,
/// INTO, UPDATE, TABLE, ...: see [`tables_named`]), not spliced in from a
/// constant; other modules reach the table through its owner's functions.
#[test]
fn every_table_has_exactly_one_owner() {
    let tables = migration_tables();
    let mut named_by: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = tables
        .iter()
        .map(|t| (t.clone(), BTreeMap::new()))
        .collect();
    for (path, text) in source_files(&src()) {
        let relative = path.strip_prefix(src()).unwrap().display().to_string();
        let sql: Vec<String> = if path.extension().is_some_and(|e| e == "sql") {
            vec![sql_without_comments(&text)]
        } else {
            lex(&text).strings
        };
        for literal in sql {
            for table in tables_named(&literal, &tables) {
                named_by
                    .get_mut(&table)
                    .unwrap()
                    .entry(module_of(&path))
                    .or_default()
                    .insert(relative.clone());
            }
        }
    }
    let mut problems = Vec::new();
    for (table, modules) in &named_by {
        let files = |m: &BTreeSet<String>| m.iter().cloned().collect::<Vec<_>>().join(", ");
        match modules.len() {
            0 => problems.push(format!("{table}: no module's SQL names it")),
            1 => {}
            _ => problems.push(format!(
                "{table}: named by {} modules: {}",
                modules.len(),
                modules
                    .iter()
                    .map(|(m, f)| format!("{m} ({})", files(f)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "tables without exactly one owner:\n{}",
        problems.join("\n")
    );
    let found: BTreeMap<&str, &str> = named_by
        .iter()
        .map(|(t, m)| (t.as_str(), m.keys().next().unwrap().as_str()))
        .collect();
    let expected: BTreeMap<&str, &str> = OWNERS.into_iter().collect();
    assert_eq!(
        found, expected,
        "the owners the source shows (left) differ from OWNERS (right)"
    );
}

#[test]
fn sql_is_told_from_comments_and_words() {
    let tables: Vec<String> = ["tickets", "flights", "spacex_launches", "rockets", "outbox"]
        .map(String::from)
        .to_vec();
    let source = r##"
        //! Cancels tickets FROM flights (a comment names no table).
        const KEY: &str = "spacex_launches"; // a resource name, not SQL
        fn f() {
            sqlx::query!("SELECT id FROM flights f JOIN tickets t ON t.flight_id = f.id");
            sqlx::query!(r#"UPDATE outbox SET note = 'a "quoted" word' WHERE id = $1"#);
            let _ = format!("SELECT a FROM rockets r, spacex_launches WHERE {}", "done");
            let _ = 'x';
        }
    "##;
    let lexed = lex(source);
    assert!(!lexed.code.contains("flights"), "{}", lexed.code);
    let named: BTreeSet<String> = lexed
        .strings
        .iter()
        .flat_map(|s| tables_named(s, &tables))
        .collect();
    assert_eq!(
        named,
        ["flights", "outbox", "rockets", "spacex_launches", "tickets"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let only_key = tables_named("spacex_launches", &tables);
    assert!(only_key.is_empty());
    assert_eq!(
        tables_named("INSERT INTO public.tickets AS t (id) VALUES ($1)", &tables),
        BTreeSet::from(["tickets".to_string()])
    );
}

// ---------------------------------------------------------------------------
// No import cycle.
// ---------------------------------------------------------------------------

/// A module's path (`["rockets", "list"]`); the crate root is empty.
type ModPath = Vec<String>;

fn show(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_string()
    } else {
        path.join("::")
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// What one file of the crate defines and names.
#[derive(Default)]
struct FileModule {
    /// Items defined at the top level of the file (functions, types, constants,
    /// modules, macros).
    items: BTreeSet<String>,
    /// Its top-level `pub use`s: the name each exports (`*` for a glob) and the path.
    exports: Vec<(String, Vec<String>)>,
    /// Every path it names, through `use` or written out from `crate::`, `super::`
    /// or `self::`, with the scope it is named in (the file's module or an inline
    /// module in it).
    paths: Vec<(ModPath, Vec<String>)>,
}

/// Flattens the use tree at `pos` (`a::{b, c::{self, D as E}, f::*}`) into paths
/// and the names they bring in; returns the position after the tree.
fn use_tree(
    toks: &[String],
    mut pos: usize,
    mut path: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    loop {
        match toks.get(pos).map(String::as_str) {
            Some("::") => pos += 1,
            Some("{") => {
                pos += 1;
                loop {
                    match toks.get(pos).map(String::as_str) {
                        Some("}") => return pos + 1,
                        Some(",") => pos += 1,
                        None | Some(";") => return pos,
                        _ => pos = use_tree(toks, pos, path.clone(), out),
                    }
                }
            }
            Some("*") => {
                path.push("*".to_string());
                out.push((path, "*".to_string()));
                return pos + 1;
            }
            Some(word) if is_ident(word) => {
                path.push(word.to_string());
                pos += 1;
                if toks.get(pos).map(String::as_str) == Some("::") {
                    continue;
                }
                // `list::{self}` brings in `list`.
                let mut name = match (word, path.len()) {
                    ("self", n) if n >= 2 => path[n - 2].clone(),
                    _ => word.to_string(),
                };
                if toks.get(pos).map(String::as_str) == Some("as") {
                    name = toks.get(pos + 1).cloned().unwrap_or_default();
                    pos += 2;
                }
                out.push((path, name));
                return pos;
            }
            _ => return pos,
        }
    }
}

/// Reads what the file of `module` defines and names.
fn read_module(module: &ModPath, text: &str) -> FileModule {
    let toks = tokens(&lex(text).code);
    let token = |i: usize| toks.get(i).map(String::as_str).unwrap_or("");
    let mut m = FileModule::default();
    let mut depth = 0usize;
    // Inline modules open at this point, with the depth inside their braces.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let scope = |inline: &[(String, usize)]| {
        let mut scope = module.clone();
        scope.extend(inline.iter().map(|(name, _)| name.clone()));
        scope
    };
    let mut i = 0;
    while i < toks.len() {
        match token(i) {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if is_ident(token(i + 1)) && token(i + 2) == "{" => {
                if depth == 0 {
                    m.items.insert(token(i + 1).to_string());
                }
                depth += 1;
                inline.push((token(i + 1).to_string(), depth));
                i += 3;
                continue;
            }
            "use" if is_ident(token(i + 1)) || token(i + 1) == "{" || token(i + 1) == "::" => {
                let public = token(i.wrapping_sub(1)) == "pub"
                    || (token(i.wrapping_sub(1)) == ")"
                        && toks[..i]
                            .iter()
                            .rposition(|t| t == "(")
                            .is_some_and(|open| open > 0 && toks[open - 1] == "pub"));
                let mut out = Vec::new();
                i = use_tree(&toks, i + 1, Vec::new(), &mut out);
                for (path, name) in out {
                    if public && depth == 0 {
                        m.exports.push((name, path.clone()));
                    }
                    m.paths.push((scope(&inline), path));
                }
                continue;
            }
            "crate" | "super" | "self" if token(i + 1) == "::" => {
                let mut path = vec![token(i).to_string()];
                let mut j = i + 1;
                while token(j) == "::" && is_ident(token(j + 1)) {
                    path.push(token(j + 1).to_string());
                    j += 2;
                }
                m.paths.push((scope(&inline), path));
                i = j;
                continue;
            }
            "fn" | "struct" | "enum" | "static" | "type" | "trait" | "union" | "const" | "mod"
                if depth == 0 && is_ident(token(i + 1)) && token(i + 1) != "fn" =>
            {
                m.items.insert(token(i + 1).to_string());
            }
            "macro_rules" if depth == 0 && token(i + 1) == "!" => {
                m.items.insert(token(i + 2).to_string());
            }
            _ => {}
        }
        i += 1;
    }
    m
}

/// The crate's modules, one per file, and where the paths they name lead.
struct Crate {
    modules: BTreeMap<ModPath, FileModule>,
}

impl Crate {
    fn new(sources: &[(ModPath, String)]) -> Crate {
        Crate {
            modules: sources
                .iter()
                .map(|(path, text)| (path.clone(), read_module(path, text)))
                .collect(),
        }
    }

    /// The library crate under `src/` (`main.rs` is a crate of its own).
    fn read() -> Crate {
        let mut sources = Vec::new();
        for (path, text) in files(&src()) {
            let relative = path.strip_prefix(src()).unwrap();
            let mut module: ModPath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            if module == ["main"] {
                continue;
            }
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            // A string or comment misread would unbalance the braces of the code.
            let code = lex(&text).code;
            assert_eq!(
                code.matches('{').count(),
                code.matches('}').count(),
                "the lexer misread {}",
                path.display()
            );
            sources.push((module, text));
        }
        Crate::new(&sources)
    }

    /// The module of the file a scope is in (an inline module is part of its file).
    fn file_of(&self, scope: &[String]) -> ModPath {
        let mut path = scope.to_vec();
        while !self.modules.contains_key(&path) && path.pop().is_some() {}
        path
    }

    /// The module a path named in `scope` leads to: the module it names, or the
    /// module that defines the item it names (through `pub use` re-exports,
    /// globs included). `None` for a path out of the crate.
    fn resolve(&self, scope: &[String], path: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 || path.is_empty() {
            return None;
        }
        let (mut at, rest): (ModPath, &[String]) = match path[0].as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (scope.to_vec(), &path[1..]),
            "super" => {
                let supers = path.iter().take_while(|s| *s == "super").count();
                let mut base = scope.to_vec();
                for _ in 0..supers {
                    base.pop()?;
                }
                (base, &path[supers..])
            }
            first => {
                // A child module named relatively; any other first name is another crate's.
                let mut child = scope.to_vec();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
                (scope.to_vec(), path)
            }
        };
        for segment in rest {
            if segment == "self" {
                continue;
            }
            let mut child = at.clone();
            child.push(segment.clone());
            if self.modules.contains_key(&child) {
                at = child;
                continue;
            }
            let module = self.file_of(&at);
            if segment == "*" {
                return Some(module);
            }
            return Some(self.find_item(&module, segment, depth).unwrap_or(module));
        }
        Some(self.file_of(&at))
    }

    /// The module that defines `name`, seen from `module`: itself, or where one of
    /// its `pub use`s leads.
    fn find_item(&self, module: &ModPath, name: &str, depth: usize) -> Option<ModPath> {
        let m = self.modules.get(module)?;
        if m.items.contains(name) {
            return Some(module.clone());
        }
        for (exported, path) in &m.exports {
            if exported == name {
                if let Some(home) = self.resolve(module, path, depth + 1) {
                    return Some(home);
                }
            }
        }
        for (exported, path) in &m.exports {
            if exported == "*" {
                let glob = self.resolve(module, &path[..path.len() - 1], depth + 1);
                if let Some(home) = glob
                    .filter(|g| g != module)
                    .and_then(|g| self.find_item(&g, name, depth + 1))
                {
                    return Some(home);
                }
            }
        }
        None
    }

    /// The dependencies between sibling modules: `a → b` when something in `a`
    /// (its file or a module under it) names something in `b` (or under it), and
    /// the first such use. A module and its own descendants are not siblings: a
    /// parent declares and re-exports its children, and a child may use its
    /// parent's items (`super::`); but a child's use of an item its parent only
    /// re-exports from a sibling is a use of that sibling. A path written through
    /// an imported name (`booking::book` after `use crate::booking`) is a use of
    /// what the import names.
    fn edges(&self) -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
        let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
        for (from, module) in &self.modules {
            for (scope, path) in &module.paths {
                let Some(to) = self.resolve(scope, path, 0) else {
                    continue;
                };
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue;
                }
                edges
                    .entry(from[..=common].to_vec())
                    .or_default()
                    .entry(to[..=common].to_vec())
                    .or_insert_with(|| {
                        let written = path.strip_suffix(&["self".to_string()]).unwrap_or(path);
                        format!("{} names {}", show(from), written.join("::"))
                    });
            }
        }
        edges
    }

    /// Every import cycle, each as the modules around it (the first repeated at
    /// the end) and the use behind each step.
    fn cycles(&self) -> Vec<(Vec<ModPath>, Vec<String>)> {
        let edges = self.edges();
        let mut cycles = Vec::new();
        for component in strongly_connected(&edges) {
            if component.len() < 2 {
                continue;
            }
            // A path around the component, from its first module back to it.
            let start = component.iter().next().unwrap().clone();
            let mut cycle = vec![start.clone()];
            let mut seen: BTreeSet<ModPath> = BTreeSet::new();
            if !walk_back(&edges, &component, &start, &mut cycle, &mut seen) {
                continue;
            }
            let uses = cycle
                .windows(2)
                .map(|step| edges[&step[0]][&step[1]].clone())
                .collect();
            cycles.push((cycle, uses));
        }
        cycles
    }
}

/// Extends `cycle` within `component` until it returns to its first module.
fn walk_back(
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
    component: &BTreeSet<ModPath>,
    start: &ModPath,
    cycle: &mut Vec<ModPath>,
    seen: &mut BTreeSet<ModPath>,
) -> bool {
    let at = cycle.last().unwrap().clone();
    for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
        if next == start {
            cycle.push(next.clone());
            return true;
        }
        if component.contains(next) && seen.insert(next.clone()) {
            cycle.push(next.clone());
            if walk_back(edges, component, start, cycle, seen) {
                return true;
            }
            cycle.pop();
        }
    }
    false
}

/// Tarjan's strongly connected components of a graph.
fn strongly_connected(
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
) -> Vec<BTreeSet<ModPath>> {
    #[derive(Default)]
    struct State {
        next: usize,
        index: HashMap<ModPath, usize>,
        low: HashMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        components: Vec<BTreeSet<ModPath>>,
    }
    fn visit(v: &ModPath, edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>, s: &mut State) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in edges.get(v).into_iter().flat_map(|e| e.keys()) {
            if !s.index.contains_key(w) {
                visit(w, edges, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == *v;
                component.insert(w);
                if done {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut state = State::default();
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(v, edges, &mut state);
        }
    }
    state.components
}

/// No two modules depend on each other, directly or around a loop, at any level
/// of the module tree: not features (`booking` ↔ `spacex`), not files of one
/// feature (`rockets::list` ↔ `rockets::store`). Dependencies are read from `use`
/// declarations and from paths written out from `crate::`, `super::` and `self::`
/// (see [`Crate::edges`] for what counts).
#[test]
fn no_import_cycle_among_modules() {
    let cycles = Crate::read().cycles();
    let report: Vec<String> = cycles
        .iter()
        .map(|(cycle, uses)| {
            let names: Vec<String> = cycle.iter().map(|m| show(m)).collect();
            format!("{}\n    {}", names.join(" → "), uses.join("\n    "))
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_cycle_finder_names_a_cycle_and_follows_re_exports() {
    let module = |path: &str, text: &str| {
        let path: ModPath = path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        (path, text.to_string())
    };
    let sources = [
        module("", "pub mod booking; pub mod rockets; pub mod spacex;"),
        // A parent using its child and the child its parent's item: no cycle.
        module(
            "booking",
            "pub mod events;\npub struct Ticket;\nfn f() { events::booked(); }\npub use events::booked as announce;",
        ),
        module("booking::events", "use super::Ticket;\npub fn booked() {}"),
        // Siblings through the parent's re-export: a cycle.
        module("rockets", "pub mod list;\npub mod store;\npub use store::*;"),
        module("rockets::list", "use super::Rocket;\npub enum Sort {}"),
        module(
            "rockets::store",
            "/// [`super::list::Sort`] in a comment is no use.\npub struct Rocket;\nfn f(s: super::list::Sort) {}",
        ),
        // Features through written-out paths and a grouped import.
        module("spacex", "use crate::{booking::{self, announce}, rockets};"),
    ];
    let crate_ = Crate::new(&sources);
    let names: Vec<String> = crate_
        .cycles()
        .iter()
        .map(|(cycle, _)| {
            cycle
                .iter()
                .map(|m| show(m))
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .collect();
    assert_eq!(names, ["rockets::list → rockets::store → rockets::list"]);
    let edges = crate_.edges();
    let to = |m: &str| -> Vec<String> {
        edges
            .get(&m.split("::").map(String::from).collect::<ModPath>())
            .map(|e| e.keys().map(|k| show(k)).collect())
            .unwrap_or_default()
    };
    assert_eq!(to("spacex"), ["booking", "rockets"]);
    assert_eq!(to("booking"), Vec::<String>::new());
    assert_eq!(
        crate_.resolve(
            &["spacex".into()],
            &["crate".into(), "booking".into(), "announce".into()],
            0
        ),
        Some(vec!["booking".to_string(), "events".to_string()])
    );
}
