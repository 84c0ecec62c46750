//! The seam between the config model and the plugin implementations: the model asks a
//! catalog whether a plugin exists and whether its config is valid.

use serde_json::Value;

/// Knows which plugins this build has and how to check their config.
pub trait PluginCatalog: Send + Sync {
    /// Names of the available plugins (for error messages and the schema).
    fn names(&self) -> Vec<&'static str>;
    /// `None` if the plugin is unknown; otherwise the list of `(path in config, message)` problems.
    fn check(&self, name: &str, config: &Value) -> Option<Vec<(String, String)>>;
    /// JSON Schema of each plugin's config, for `gatehouse schema` and the OpenAPI document.
    fn schemas(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
    /// A plugin's config with every field, defaults filled in (admin reads show it so, as
    /// Kong's do); `None` if unknown or unreadable.
    fn filled(&self, _name: &str, _config: &Value) -> Option<Value> {
        None
    }
}

/// A catalog with no plugins: every plugin name is rejected as unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPlugins;

impl PluginCatalog for NoPlugins {
    fn names(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn check(&self, _name: &str, _config: &Value) -> Option<Vec<(String, String)>> {
        None
    }
}
