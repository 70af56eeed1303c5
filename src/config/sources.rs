//! The layers as text: the built-in defaults (config/default.yaml, embedded), then a
//! file, then the environment. Each setting ends with one text value and, when that
//! did not come from the setting's own name, where it came from (named in errors).

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::LazyLock,
};

use super::{go, ConfigError, PLACEHOLDER};

/// The built-in defaults: every setting, with its description as the comment above it.
const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

/// Every setting: `(key, default, description)`, in the order of
/// config/default.yaml, which they are read from.
pub static SETTINGS: LazyLock<Vec<(&'static str, String, String)>> = LazyLock::new(|| {
    let mut defaults: BTreeMap<String, String> = read_file(
        "config/default.yaml (built in)",
        &config::File::from_str(DEFAULT_YAML, config::FileFormat::Yaml),
        |_| true,
    )
    .expect("the built-in defaults parse")
    .into_iter()
    .map(|(key, text, _)| (key, text))
    .collect();
    let settings: Vec<_> = described_keys()
        .into_iter()
        .map(|(key, description)| {
            let default = defaults.remove(key).expect("a key line is a YAML key");
            (key, default, description)
        })
        .collect();
    assert!(
        defaults.is_empty(),
        "keys not at the start of a line: {defaults:?}"
    );
    settings
});

/// The top-level keys of config/default.yaml, each with the comment lines just
/// above it joined.
fn described_keys() -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in DEFAULT_YAML.lines() {
        if let Some(text) = line.strip_prefix('#') {
            comment.push(text.trim());
        } else if line.trim().is_empty() {
            comment.clear();
        } else if let Some((key, _)) = line.split_once(':') {
            keys.push((key, comment.join(" ")));
            comment.clear();
        }
    }
    keys
}

/// The setting `key` names, as the table's `&'static str`.
fn setting(key: &str) -> Option<&'static str> {
    SETTINGS.iter().map(|(k, _, _)| *k).find(|k| *k == key)
}

/// One setting's value and, when not from its own name, where it came from.
struct Value {
    text: String,
    origin: Option<String>,
}

/// Every setting's value after the layers.
pub(super) struct Values {
    map: BTreeMap<&'static str, Value>,
    /// The settings the typed reading asked for.
    read: RefCell<BTreeSet<&'static str>>,
}

impl Values {
    /// Defaults, then the file (`config_file`, or `config/default.yaml` when it
    /// exists; ours or the Go service's), then the variables `env` returns (the Go
    /// service's names too).
    pub(super) fn load(
        config_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Values, ConfigError> {
        let mut values = Values {
            map: SETTINGS
                .iter()
                .map(|(key, default, _)| {
                    let value = Value {
                        text: default.clone(),
                        origin: None,
                    };
                    (*key, value)
                })
                .collect(),
            read: RefCell::default(),
        };
        let known = |key: &str| setting(key).is_some();
        let file = match config_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError {
                        setting: "--config".into(),
                        problem: format!("file {} does not exist", path.display()),
                    });
                }
                let source = config::File::from(path).required(true);
                read_file(&path.display().to_string(), &source, known)?
            }
            None => {
                let source = config::File::with_name("config/default").required(false);
                read_file("config/default.yaml", &source, known)?
            }
        };
        for (key, text, origin) in file {
            values.set(setting(&key).expect("read_file checked it"), text, origin);
        }
        for (key, _, _) in SETTINGS.iter() {
            if let Some((text, alias)) = env_value(key, env)? {
                values.set(key, text, alias);
            }
        }
        Ok(values)
    }

    fn set(&mut self, key: &'static str, text: String, origin: Option<String>) {
        self.map.insert(key, Value { text, origin });
    }

    /// The text of `key` as the layers left it, unchecked: for a setting whose
    /// value depends on another's.
    pub(super) fn raw(&self, key: &str) -> &str {
        self.map.get(key).map_or("", |v| v.text.as_str())
    }

    /// Replaces the text of `key`, keeping where it came from.
    pub(super) fn replace(&mut self, key: &str, text: String) {
        if let Some(value) = self.map.get_mut(key) {
            value.text = text;
        }
    }

    /// The value of `key` for the typed reading, refused when it is still a
    /// deployment template's placeholder (`REPLACE_ME...`): such a value must never
    /// reach a running service.
    pub(super) fn text(&self, key: &'static str) -> Result<String, ConfigError> {
        self.read.borrow_mut().insert(key);
        let Some(value) = self.map.get(key) else {
            return Err(self.error(key, "has no default in config/default.yaml"));
        };
        if value.text.trim_start().starts_with(PLACEHOLDER) {
            return Err(self.error(
                key,
                format!(
                    "is still the placeholder {:?}: set it to the real value",
                    value.text
                ),
            ));
        }
        Ok(value.text.clone())
    }

    /// The settings no typed field has read.
    #[cfg(test)]
    pub(super) fn unread(&self) -> Vec<&'static str> {
        let read = self.read.borrow();
        self.map
            .keys()
            .filter(|k| !read.contains(*k))
            .copied()
            .collect()
    }

    /// An error naming `key` (its environment name) and, when the value came from
    /// another name, that one.
    pub(super) fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        let mut problem = problem.into();
        if let Some(origin) = self.map.get(key).and_then(|v| v.origin.as_ref()) {
            problem = format!("{problem} (set by {origin})");
        }
        ConfigError {
            setting: key.to_uppercase(),
            problem,
        }
    }

    /// `error` as a problem of `key`, unless it already names a setting.
    pub(super) fn attribute(&self, error: ConfigError, key: &str) -> ConfigError {
        if error.setting.is_empty() {
            self.error(key, error.problem)
        } else {
            error
        }
    }
}

/// A setting's environment value, and the Go service's name it came from.
fn env_value(
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, Option<String>)>, ConfigError> {
    let name = key.to_uppercase();
    let own = env(&name);
    let Some(alias) = go::env_alias(key) else {
        return Ok(own.map(|v| (v, None)));
    };
    match (own, env(&alias)) {
        (Some(own), Some(go)) if own != go => Err(ConfigError {
            problem: format!(
                "{name} and {alias} (the Go service's name) are both set, to different values"
            ),
            setting: name,
        }),
        (Some(own), _) => Ok(Some((own, None))),
        (None, Some(go)) => Ok(Some((go, Some(alias)))),
        (None, None) => Ok(None),
    }
}

/// The settings a file gives, flattened: `(setting, value, origin)`, where origin
/// names the Go service's key (`http.port in FILE`). Our flat file, the Go
/// service's nested one, or a mix (top-level keys are ours, sections the Go
/// service's); a key neither knows (`known` tells ours) is an error naming it.
fn read_file(
    file: &str,
    source: &dyn config::Source,
    known: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String, Option<String>)>, ConfigError> {
    let map = source.collect().map_err(|e| ConfigError {
        setting: "--config".into(),
        problem: e.to_string(),
    })?;
    let mut values = Vec::new();
    let mut entries: Vec<(String, config::Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        if let config::ValueKind::Table(section) = value.kind {
            let mut keys: Vec<(String, config::Value)> = section.into_iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            for (sub, value) in keys {
                let path = format!("{key}.{sub}");
                let Some(&go::GoKey { setting, .. }) = go::key(&key, &sub) else {
                    return Err(ConfigError {
                        setting: path,
                        problem: format!(
                            "unknown key in {file} (the Go service's keys: {}; or our flat settings at the top level, see docs/configuration.md)",
                            go::known_keys()
                        ),
                    });
                };
                let text = scalar(value).map_err(|problem| ConfigError {
                    setting: setting.to_uppercase(),
                    problem: format!("{path} in {file}: {problem}"),
                })?;
                values.push((setting.to_string(), text, Some(format!("{path} in {file}"))));
            }
        } else {
            if !known(&key) {
                return Err(ConfigError {
                    setting: key.to_uppercase(),
                    problem: format!("unknown setting in {file} (see docs/configuration.md)"),
                });
            }
            let text = scalar(value).map_err(|problem| ConfigError {
                setting: key.to_uppercase(),
                problem: format!("in {file}: {problem}"),
            })?;
            values.push((key, text, None));
        }
    }
    // A setting given twice (`http_port` and `http.port`) would be ambiguous.
    for (i, (key, _, origin)) in values.iter().enumerate() {
        if let Some((_, _, other)) = values[..i].iter().find(|(k, _, _)| k == key) {
            let name = |o: &Option<String>| o.clone().unwrap_or_else(|| format!("{key} in {file}"));
            return Err(ConfigError {
                setting: key.to_uppercase(),
                problem: format!("set twice: by {} and by {}", name(other), name(origin)),
            });
        }
    }
    Ok(values)
}

/// One value of a file as text: YAML numbers and booleans as written, an empty key
/// as the empty string.
fn scalar(value: config::Value) -> Result<String, String> {
    match value.kind {
        config::ValueKind::Nil => Ok(String::new()),
        config::ValueKind::Table(_) => Err("expected a single value, found a section".into()),
        config::ValueKind::Array(_) => Err("expected a single value, found a list".into()),
        _ => value.into_string().map_err(|e| e.to_string()),
    }
}
