//! [`Config`]: the configuration a processor is deployed with.

use std::str::FromStr;

use crate::Error;

/// The key-value configuration given at deploy time, plus the entries the
/// host reserves (keys starting with `leat.`): the processor's name, its
/// input streams and its output streams.
///
/// ```
/// # use leat_sdk::Config;
/// let config = Config::new([
///     ("field", "kind"),
///     ("leat.processor", "orders-filter"),
///     ("leat.outputs", "big-orders,audit"),
/// ]);
/// assert_eq!(config.require("field").unwrap(), "kind");
/// assert!(config.require("equals").is_err());
/// assert_eq!(config.name(), "orders-filter");
/// assert_eq!(config.outputs(), ["big-orders", "audit"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Config {
    /// The reserved key holding the processor's name.
    pub const PROCESSOR: &'static str = "leat.processor";
    /// The reserved key holding the input stream names, comma-separated.
    pub const INPUTS: &'static str = "leat.inputs";
    /// The reserved key holding the output stream names, comma-separated,
    /// in declaration order.
    pub const OUTPUTS: &'static str = "leat.outputs";

    /// A configuration of these entries. When a key appears more than once,
    /// the last entry wins.
    pub fn new<I, K, V>(entries: I) -> Config
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let entries: Vec<(String, String)> = entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let mut config = Config {
            entries,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        config.inputs = split_list(config.get(Config::INPUTS));
        config.outputs = split_list(config.get(Config::OUTPUTS));
        config
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::new(format!("missing configuration `{key}`")))
    }

    /// The value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key` parsed with [`FromStr`]: `Ok(None)` when it is not
    /// set, an error naming the key when it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| Error::new(format!("configuration `{key}` = {v:?}: {e}"))),
        }
    }

    /// The processor's name (reserved entry `leat.processor`); empty when
    /// the host did not give one.
    pub fn name(&self) -> &str {
        self.get(Config::PROCESSOR).unwrap_or_default()
    }

    /// The processor's input streams (reserved entry `leat.inputs`).
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The processor's output streams in declaration order (reserved entry
    /// `leat.outputs`). The first one is the default output.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Every entry, reserved ones included, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn split_list(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_entries_are_parsed() {
        let c = Config::new([
            ("leat.processor", "p"),
            ("leat.inputs", "a, b,,c "),
            ("leat.outputs", "out"),
        ]);
        assert_eq!(c.name(), "p");
        assert_eq!(c.inputs(), ["a", "b", "c"]);
        assert_eq!(c.outputs(), ["out"]);
    }

    #[test]
    fn missing_reserved_entries_are_empty() {
        let c = Config::default();
        assert_eq!(c.name(), "");
        assert!(c.inputs().is_empty() && c.outputs().is_empty());
        let c = Config::new([("leat.outputs", "")]);
        assert!(c.outputs().is_empty());
    }

    #[test]
    fn get_require_and_defaults() {
        let c = Config::new([("a", "1"), ("b", ""), ("a", "2")]);
        assert_eq!(c.get("a"), Some("2"), "the last entry wins");
        assert_eq!(c.require("b").unwrap(), "");
        let err = c.require("zzz").unwrap_err();
        assert_eq!(err.message(), "missing configuration `zzz`");
        assert_eq!(c.get_or("zzz", "dflt"), "dflt");
        assert_eq!(c.get_or("a", "dflt"), "2");
        assert_eq!(c.iter().count(), 3);
    }

    #[test]
    fn parse_reports_the_key_and_value() {
        let c = Config::new([("n", "12"), ("bad", "x")]);
        assert_eq!(c.parse::<u32>("n").unwrap(), Some(12));
        assert_eq!(c.parse::<u32>("none").unwrap(), None);
        let err = c.parse::<u32>("bad").unwrap_err();
        assert!(
            err.message().starts_with("configuration `bad` = \"x\": "),
            "{err}"
        );
    }
}
