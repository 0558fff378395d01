//! Loading: YAML file -> JSON-like tree -> `MXMEDIA__*` env overrides -> typed
//! `Config` -> `problems()`. Deserialisation stops at the first error, so the
//! loader removes each offending node and tries again, collecting every
//! problem with its path before giving up.

use std::path::Path;

use serde_json::{Map, Value};
use serde_path_to_error::{Path as ErrPath, Segment};

use super::Config;

/// Env vars with this prefix override config keys: `MXMEDIA__HOMESERVER__URL`
/// sets `homeserver.url`. The separator is a double underscore because key
/// names contain single ones; list items are addressed by index.
pub const ENV_PREFIX: &str = "MXMEDIA__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// The individual problems, for tests and tooling.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Read { .. } => vec![self.to_string()],
            Self::Invalid(problems) => problems.clone(),
        }
    }
}

impl Config {
    /// Loads `file`, applies the process environment, and checks everything.
    /// Relative paths in it (and in env overrides) are taken from the config
    /// file's directory, never from the process's working directory: a
    /// service started elsewhere must find the same database and datastores.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.display().to_string(),
            source,
        })?;
        let base = std::path::absolute(file)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .ok_or_else(|| ConfigError::Read {
                path: file.display().to_string(),
                source: std::io::Error::other("cannot tell the config file's directory"),
            })?;
        Self::parse(&text, std::env::vars(), Some(&base))
    }

    /// Makes every relative path in the config relative to `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |path: &mut std::path::PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        fix(&mut self.data_dir);
        let fix_opt = |path: &mut Option<std::path::PathBuf>| {
            if let Some(path) = path {
                fix(path);
            }
        };
        fix_opt(&mut self.control_socket);
        fix_opt(&mut self.cache.path);
        fix_opt(&mut self.federation.signing_key_path);
        fix_opt(&mut self.homeserver.admin_token_file);
        fix_opt(&mut self.federation.extra_ca_path);
        match &mut self.database {
            super::DatabaseConfig::Sled { path, .. } => fix_opt(path),
            super::DatabaseConfig::Postgres { url_file, .. } => fix_opt(url_file),
        }
        for store in &mut self.datastores {
            store.resolve_paths(&fix_opt);
        }
    }

    /// Parses YAML text with the given environment overrides; relative
    /// paths stay as written (tests pass absolute ones).
    pub fn from_yaml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::parse(text, env, None)
    }

    fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        base: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let mut tree: Value = serde_norway::from_str(text)
            .map_err(|e| ConfigError::Invalid(vec![format!("YAML: {e}")]))?;
        if tree.is_null() {
            tree = Value::Object(Map::new());
        }
        let mut problems = Vec::new();
        let mut from_env = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if segments.iter().any(String::is_empty) {
                problems.push(format!("{name}: malformed override name"));
                continue;
            }
            match set_path(&mut tree, &segments, env_value(&raw)) {
                Ok(()) => from_env.push((segments, raw)),
                Err(why) => problems.push(format!("{name}: {why}")),
            }
        }

        // Each round either succeeds, or removes (or re-types) the node that
        // failed, so the loop ends; the bound is a second guarantee.
        for _ in 0..256 {
            match serde_path_to_error::deserialize::<_, Config>(&tree) {
                Ok(mut config) => {
                    if let Some(base) = base {
                        config.resolve_paths(base);
                    }
                    problems.extend(config.problems());
                    return if problems.is_empty() {
                        Ok(config)
                    } else {
                        Err(ConfigError::Invalid(problems))
                    };
                }
                Err(err) => {
                    let segments = segments_of(err.path());
                    // An env value like `8009` parses as a number; if a string
                    // was wanted, use the raw text instead of complaining.
                    if let Some((_, raw)) = from_env.iter().find(|(p, _)| *p == segments)
                        && !get_path(&tree, &segments).is_some_and(Value::is_string)
                    {
                        let raw = Value::String(raw.clone());
                        if set_path(&mut tree, &segments, raw).is_ok() {
                            continue;
                        }
                    }
                    let location = if segments.is_empty() {
                        "(top level)".to_owned()
                    } else {
                        err.path().to_string()
                    };
                    problems.push(format!("{location}: {}", err.inner()));
                    if !remove_path(&mut tree, &segments) {
                        break;
                    }
                }
            }
        }
        Err(ConfigError::Invalid(problems))
    }
}

/// An env value is read as YAML (`true`, `30s`, `104857600`, and lists
/// such as `["127.0.0.1/32", "::1/128"]` or `[a, b]`), so overrides have the
/// same syntax as the file. Anything else is taken as a plain string.
fn env_value(raw: &str) -> Value {
    match serde_norway::from_str::<Value>(raw) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_))) => v,
        _ => Value::String(raw.to_owned()),
    }
}

fn segments_of(path: &ErrPath) -> Vec<String> {
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn get_path<'a>(tree: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments.iter().try_fold(tree, |node, seg| match node {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => items.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

fn set_path(tree: &mut Value, segments: &[String], value: Value) -> Result<(), OverrideError> {
    let Some((last, parents)) = segments.split_last() else {
        return Err(OverrideError::EmptyKey);
    };
    let mut node = tree;
    for seg in parents {
        node = match node {
            Value::Object(map) => map
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                let index: usize = seg
                    .parse()
                    .map_err(|_| OverrideError::NotAnIndex(seg.clone()))?;
                let len = items.len();
                items
                    .get_mut(index)
                    .ok_or(OverrideError::OutOfRange { index, len })?
            }
            _ => return Err(OverrideError::NotASection(seg.clone())),
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index: usize = last
                .parse()
                .map_err(|_| OverrideError::NotAnIndex(last.clone()))?;
            let len = items.len();
            let slot = items
                .get_mut(index)
                .ok_or(OverrideError::OutOfRange { index, len })?;
            *slot = value;
            Ok(())
        }
        _ => Err(OverrideError::NotASection(last.clone())),
    }
}

/// Why an environment override cannot be applied.
#[derive(Debug, thiserror::Error)]
enum OverrideError {
    #[error("empty key")]
    EmptyKey,
    #[error("{0:?} is not a list index")]
    NotAnIndex(String),
    #[error("list index {index} out of range (the list has {len})")]
    OutOfRange { index: usize, len: usize },
    #[error("{0:?} is inside a value that is not a section")]
    NotASection(String),
}

/// Removes the node at `segments`; false when there is nothing to remove.
fn remove_path(tree: &mut Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = tree;
    for seg in parents {
        let next = match node {
            Value::Object(map) => map.get_mut(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match node {
        Value::Object(map) => map.remove(last).is_some(),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}
