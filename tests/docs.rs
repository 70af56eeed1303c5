//! The documentation's own checks: the README stays a front door, every relative
//! link in `README.md` and `docs/*.md` resolves (file and `#anchor`), and the error
//! table in `docs/errors.md` is the one `src/api/error.rs` defines.
//! `UPDATE_DOCS=1 cargo test --test docs` rewrites the generated table.

use std::{
    collections::HashMap,
    fs,
    path::{Component, Path, PathBuf},
};

use spacet::api::error::Reason;

const README_MAX_LINES: usize = 250;
const FIRST_SCREEN_LINES: usize = 40;
const REASONS_START: &str = "<!-- reasons:start -->";
const REASONS_END: &str = "<!-- reasons:end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `docs/*.md`, relative to the crate root.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    docs.insert(0, PathBuf::from("README.md"));
    docs
}

fn read(relative: &Path) -> String {
    fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("{}: {e}", relative.display()))
}

/// The text outside fenced code blocks, with the contents of code spans blanked,
/// so neither a shell comment nor `[x](y)` inside backticks counts.
fn prose(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut in_fence = false;
    let mut in_span = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            out.push('\n');
            continue;
        }
        if !in_fence {
            for c in line.chars() {
                if c == '`' {
                    in_span = !in_span;
                    out.push(' ');
                } else {
                    out.push(if in_span { ' ' } else { c });
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, punctuation
/// dropped (letters, digits, `-` and `_` kept).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every anchor of a document's headings; a repeated heading gets `-1`, `-2`...
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if in_fence || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..].replace('`', ""));
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The destinations of inline links and images: `[text](dest)`, `![alt](dest)`.
fn links(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| match c {
                '(' => {
                    depth += 1;
                    false
                }
                ')' if depth == 0 => true,
                ')' => {
                    depth -= 1;
                    false
                }
                _ => false,
            })
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let dest = rest[..end].split_whitespace().next().unwrap_or("");
        out.push(dest.to_string());
        rest = &rest[end..];
    }
    out
}

/// `dir/../x` → `x`, without touching the file system; `None` above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What is wrong with each relative link of `document` (a path relative to
/// `root`), given its text; external links are not fetched.
fn broken_links(root: &Path, document: &Path, markdown: &str) -> Vec<String> {
    let dir = document.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for dest in links(markdown) {
        if dest.is_empty() {
            problems.push(format!("{}: an empty link", document.display()));
            continue;
        }
        if dest.contains("://") || dest.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match dest.split_once('#') {
            Some((file, anchor)) => (file, Some(anchor)),
            None => (dest.as_str(), None),
        };
        let target = if file.is_empty() {
            Some(document.to_path_buf())
        } else {
            normalize(&dir.join(file))
        };
        let Some(target) = target else {
            problems.push(format!(
                "{}: {dest} leaves the repository",
                document.display()
            ));
            continue;
        };
        let on_disk = root.join(&target);
        if !on_disk.exists() {
            problems.push(format!("{}: {dest}: no such file", document.display()));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if on_disk.extension().is_none_or(|ext| ext != "md") {
            problems.push(format!(
                "{}: {dest}: an anchor into a file that is not Markdown",
                document.display()
            ));
            continue;
        }
        let headings = anchors(&fs::read_to_string(&on_disk).unwrap());
        if !headings.iter().any(|h| h == anchor) {
            problems.push(format!(
                "{}: {dest}: no heading has the anchor #{anchor} (there are: {})",
                document.display(),
                headings.join(", ")
            ));
        }
    }
    problems
}

#[test]
fn every_relative_link_in_the_readme_and_docs_reaches_a_file_and_heading() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for document in documents() {
        let text = read(&document);
        checked += links(&text).len();
        problems.extend(broken_links(&root(), &document, &text));
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_link_checker_reports_a_missing_file_a_missing_anchor_and_an_escape() {
    let text = "[a](docs/nowhere.md) [b](README.md#no-such-heading) [c](../outside.md) \
                [d](README.md#the-two-commands) [e](https://example.com/x) `[f](gone.md)`";
    let problems = broken_links(&root(), Path::new("README.md"), text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("docs/nowhere.md: no such file"));
    assert!(problems[1].contains("#no-such-heading"));
    assert!(problems[2].contains("leaves the repository"));
}

#[test]
fn anchors_follow_githubs_slugs() {
    assert_eq!(
        slug("Shipping: Docker, compose, Kubernetes, examples"),
        "shipping-docker-compose-kubernetes-examples"
    );
    assert_eq!(
        slug("Compatibility with the Go service (spacet.v1)"),
        "compatibility-with-the-go-service-spacetv1"
    );
    assert_eq!(
        slug("Ticket lists at 1,000,000 tickets (issue 21)"),
        "ticket-lists-at-1000000-tickets-issue-21"
    );
    assert_eq!(
        slug("The Go service's config file"),
        "the-go-services-config-file"
    );
    let doc = "# Title\n\n```sh\n# not a heading\n```\n## Retrying: `UNAVAILABLE`\n## Title\n";
    assert_eq!(
        anchors(doc),
        ["title", "retrying-unavailable", "title-1"].map(String::from)
    );
}

#[test]
fn the_readme_is_a_front_door_with_the_two_commands_on_its_first_screen() {
    let readme = read(Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move the detail under docs/"
    );
    let first_screen: Vec<&str> = readme.lines().take(FIRST_SCREEN_LINES).collect();
    for command in ["cargo run --release", "./scripts/test"] {
        assert!(
            first_screen.iter().any(|line| line.contains(command)),
            "`{command}` is not in the README's first {FIRST_SCREEN_LINES} lines"
        );
    }
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
