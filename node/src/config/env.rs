//! Environment overrides (`CAS_NODE__SECTION__FIELD=value`) and the mapping of
//! deserialization errors to field names.

use super::{ConfigError, ENV_PREFIX, ENV_SEPARATOR, FieldError, NodeConfig};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use toml::{Table, Value};

/// Which field paths were set by which environment variable, to name them in errors.
#[derive(Debug, Default)]
pub(super) struct Origins(BTreeMap<String, String>);

impl Origins {
    /// Appends `(from VAR)` to an error about a field that an environment variable set.
    pub(super) fn annotate(&self, mut error: FieldError) -> FieldError {
        if let Some(var) = self.0.get(&error.field) {
            error.message = format!("{} (from environment variable {var})", error.message);
        }
        error
    }
}

/// Applies every `CAS_NODE__…` variable of `env` to `table`, in name order.
pub(super) fn apply<I, K, V>(table: &mut Table, env: I) -> Result<Origins, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut vars = BTreeMap::new();
    for (key, value) in env {
        let key = key.as_ref().to_string_lossy();
        if key.starts_with(&prefix) {
            vars.insert(key.into_owned(), value.as_ref().to_owned());
        }
    }
    // The defaults give the type of each field (and the list of sections).
    let template = Table::try_from(NodeConfig::default()).unwrap_or_default();
    let mut origins = Origins::default();
    for (var, raw) in vars {
        let err = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let path = parse_name(&var[prefix.len()..]).map_err(err)?;
        let raw = raw
            .to_str()
            .ok_or_else(|| err("value is not valid UTF-8".to_owned()))?;
        if !template.contains_key(&path[0]) {
            let sections: Vec<&str> = template.keys().map(String::as_str).collect();
            return Err(err(format!(
                "unknown section `{}` (expected one of {})",
                path[0],
                sections.join(", ")
            )));
        }
        let dotted = path.join(".");
        if raw.is_empty() {
            remove(table, &path);
        } else {
            let value = typed_value(&template, &path, raw).map_err(err)?;
            insert(table, &path, value).map_err(err)?;
        }
        origins.0.insert(dotted, var.clone());
    }
    Ok(origins)
}

/// `S3__ACCESS_KEY_ID` → `["s3", "access_key_id"]`.
fn parse_name(rest: &str) -> Result<Vec<String>, String> {
    let path: Vec<String> = rest
        .split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    if path.len() < 2 {
        return Err(format!(
            "must name a section and a field: {ENV_PREFIX}{ENV_SEPARATOR}<SECTION>{ENV_SEPARATOR}<FIELD>"
        ));
    }
    if path
        .iter()
        .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err("name parts must be non-empty and use only letters, digits and `_`".to_owned());
    }
    Ok(path)
}

/// Reads `raw` as the type the field has in the defaults (a string if unknown there).
fn typed_value(template: &Table, path: &[String], raw: &str) -> Result<Value, String> {
    let mut current: Option<&Value> = None;
    let mut table = Some(template);
    for part in path {
        current = table.and_then(|t| t.get(part));
        table = current.and_then(Value::as_table);
    }
    match current {
        None | Some(Value::String(_)) => Ok(Value::String(raw.to_owned())),
        Some(Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Some(Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("{raw:?} is not a number")),
        Some(Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not a boolean (true or false)")),
        },
        Some(Value::Table(_)) => Err(format!(
            "`{}` is a section; set its fields one by one",
            path.join(".")
        )),
        Some(_) => Err(format!(
            "`{}` cannot be set from the environment",
            path.join(".")
        )),
    }
}

fn insert(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is not a section in the config file",
                path[..=depth].join(".")
            )
        })?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn remove(table: &mut Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for part in parents {
        match current.get_mut(part).and_then(Value::as_table_mut) {
            Some(next) => current = next,
            None => return,
        }
    }
    current.remove(last);
}

/// Turns a deserialization error into `field: message`, naming unknown fields.
///
/// `section` is where the deserialized value sits; `toml` reports the key path inside it
/// as a last line "in `a.b`".
pub(super) fn field_error(error: &toml::de::Error, section: &str) -> FieldError {
    let text = error.to_string();
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut path = section.to_owned();
    if let Some(keys) = lines
        .last()
        .and_then(|last| last.strip_prefix("in `"))
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path = format!("{section}.{keys}");
        lines.pop();
    }
    let message = lines.join(" ");
    if let Some((name, tail)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        let tail = tail.trim_start_matches(',').trim();
        let message = if tail.is_empty() {
            "unknown field".to_owned()
        } else {
            format!("unknown field; {tail}")
        };
        return FieldError::new(format!("{path}.{name}"), message);
    }
    FieldError::new(path, message)
}
