//! Putting it together: file text and environment in, typed and validated [`Config`] plus warnings out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::decode::Decoder;
use crate::defaults::state_dir_from;
use crate::error::{ConfigError, FieldError, Warning};
use crate::keys::{apply_env, check_keys};
use crate::model::Config;

/// Everything a configuration is built from. [`Config::load`] fills this from a file and the process
/// environment; tests and tools can build one by hand.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The YAML (or JSON) text; `None` means defaults only.
    pub yaml: Option<String>,
    /// The file the text came from. Relative key, certificate and SQLite paths in it are resolved against its
    /// directory, as Headscale does.
    pub file: Option<PathBuf>,
    /// Environment variables. `TAILWARDEN_<KEY>` and `HEADSCALE_<KEY>` (the key path upper-cased, `.` → `_`)
    /// override scalar and list keys, `TAILWARDEN_` first; `TAILWARDEN_STATE_DIR` moves the default state
    /// directory; others are only used to expand `oidc.client_secret_path`.
    pub env: BTreeMap<String, String>,
}

impl Sources {
    /// The process environment (variables that are not valid UTF-8 are skipped).
    pub fn process_env() -> BTreeMap<String, String> {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    }
}

/// What a successful load returns: the settings and the warnings to log.
pub type Loaded = (Config, Vec<Warning>);

impl Config {
    /// Reads `path`, applies environment overrides from the process environment, and validates.
    ///
    /// Unknown keys and other non-fatal findings come back as warnings; every invalid value is reported at once
    /// in [`ConfigError::Invalid`].
    pub fn load(path: impl AsRef<Path>) -> Result<Loaded, ConfigError> {
        let path = path.as_ref();
        let yaml =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_sources(&Sources { yaml: Some(yaml), file: Some(path.to_path_buf()), env: Sources::process_env() })
    }

    /// The defaults with environment overrides from the process environment, validated; for running without a
    /// file.
    pub fn from_env() -> Result<Loaded, ConfigError> {
        Config::from_sources(&Sources { yaml: None, file: None, env: Sources::process_env() })
    }

    /// Parses YAML text without consulting the environment; relative paths stay relative to the working
    /// directory.
    pub fn from_yaml_str(yaml: &str) -> Result<Loaded, ConfigError> {
        Config::from_sources(&Sources { yaml: Some(yaml.to_owned()), ..Sources::default() })
    }

    /// Builds and validates a configuration from explicit sources.
    pub fn from_sources(sources: &Sources) -> Result<Loaded, ConfigError> {
        let env_lookup = |k: &str| sources.env.get(k).cloned();
        let mut root = match &sources.yaml {
            Some(text) => {
                parse_yaml(text).map_err(|source| ConfigError::Syntax { path: sources.file.clone(), source })?
            }
            None => Value::Null,
        };
        let origins = apply_env(&mut root, &sources.env);

        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        check_keys(&root, &mut warnings, &mut errors);

        let mut config = Config::with_state_dir(state_dir_from(env_lookup));
        let base_dir = sources.file.as_deref().and_then(Path::parent).filter(|d| !d.as_os_str().is_empty());
        let mut decoder = Decoder::new(&root, &origins, base_dir, &env_lookup);
        decoder.decode(&mut config);
        errors.append(&mut decoder.errors);
        warnings.append(&mut decoder.warnings);

        // A value that failed to decode kept its default; rules about it would only confuse.
        let failed: BTreeSet<String> = errors.iter().map(|e| e.path.clone()).collect();
        let mut rule_errors = Vec::new();
        config.check(&mut rule_errors, &mut warnings);
        for mut e in rule_errors {
            if let Some(alias) = decoder.aliases.get(e.path.as_str()) {
                e.path = (*alias).to_owned();
            }
            if let Some(var) = origins.get(e.path.as_str()) {
                e.message.push_str(&format!(" (set by environment variable {var})"));
            }
            if !failed.contains(&e.path) {
                errors.push(e);
            }
        }

        if errors.is_empty() { Ok((config, warnings)) } else { Err(ConfigError::Invalid(dedup(errors))) }
    }
}

/// Parses YAML into a tree with merge keys (`<<: *anchor`) applied. An empty document is an empty config.
fn parse_yaml(text: &str) -> Result<Value, serde_yaml::Error> {
    let mut value: Value = serde_yaml::from_str(text)?;
    value.apply_merge()?;
    Ok(value)
}

fn dedup(errors: Vec<FieldError>) -> Vec<FieldError> {
    let mut seen = BTreeSet::new();
    errors.into_iter().filter(|e| seen.insert((e.path.clone(), e.message.clone()))).collect()
}
