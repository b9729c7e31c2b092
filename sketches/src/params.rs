//! Named parameters: how a sketch is configured, named in its envelope, and how queries take
//! their arguments. Text `name=value` pairs, so a function config and a query URL map onto them
//! directly.

use crate::error::{Result, SketchError};

/// The longest parameter text an envelope may carry; a bound so that decoding foreign bytes
/// never parses an unbounded string.
pub const MAX_PARAMS_LEN: usize = 4096;

/// An ordered list of `name=value` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// No parameters: every kind then uses its defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one pair, builder style.
    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.set(name, value);
        self
    }

    /// Adds or replaces one pair.
    pub fn set(&mut self, name: &str, value: impl ToString) {
        let value = value.to_string();
        match self.pairs.iter_mut().find(|(existing, _)| existing == name) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((name.to_owned(), value)),
        }
    }

    /// The raw value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }

    /// A copy without the pair `name`.
    pub fn without(&self, name: &str) -> Params {
        Params {
            pairs: self
                .pairs
                .iter()
                .filter(|(existing, _)| existing != name)
                .cloned()
                .collect(),
        }
    }

    /// All pairs in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Parses `name=value;name=value`. Names and values may not contain `;` or `=`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut params = Params::new();
        for pair in text.split(';').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| SketchError::corrupt(format!("parameter `{pair}` has no `=`")))?;
            params.set(name.trim(), value.trim());
        }
        Ok(params)
    }

    /// Builds from pairs, as given by a config file or a query string.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut params = Params::new();
        for (name, value) in pairs {
            params.set(name, value);
        }
        params
    }

    /// A `u64` parameter of `kind`, `default` when absent, rejected outside `range`.
    pub fn u64_in(
        &self,
        kind: &'static str,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64> {
        let value = match self.get(name) {
            None => default,
            Some(text) => text.parse::<u64>().map_err(|_| {
                SketchError::parameter(
                    kind,
                    name,
                    format!(
                        "`{text}` is not an integer; valid range {}..={}",
                        range.start(),
                        range.end()
                    ),
                )
            })?,
        };
        if !range.contains(&value) {
            return Err(SketchError::parameter(
                kind,
                name,
                format!(
                    "{value} is out of range; valid range {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }

    /// An `f64` parameter of `kind`, `None` when absent, rejected unless strictly inside
    /// `(low, high)`.
    pub fn f64_open(
        &self,
        kind: &'static str,
        name: &'static str,
        low: f64,
        high: f64,
    ) -> Result<Option<f64>> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value: f64 = text.parse().map_err(|_| {
            SketchError::parameter(
                kind,
                name,
                format!("`{text}` is not a number; valid range ({low}, {high}) exclusive"),
            )
        })?;
        if !(value > low && value < high) {
            return Err(SketchError::parameter(
                kind,
                name,
                format!("{value} is out of range; valid range ({low}, {high}) exclusive"),
            ));
        }
        Ok(Some(value))
    }

    /// A boolean parameter (`true`/`false`), `default` when absent.
    pub fn bool_or(&self, kind: &'static str, name: &'static str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(SketchError::parameter(
                kind,
                name,
                format!("`{other}` is not a boolean; valid values true, false"),
            )),
        }
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, (name, value)) in self.pairs.iter().enumerate() {
            if index > 0 {
                formatter.write_str(";")?;
            }
            write!(formatter, "{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let params = Params::new().with("width", 100).with("conservative", true);
        let text = params.to_string();
        assert_eq!(text, "width=100;conservative=true");
        assert_eq!(Params::parse(&text), Ok(params));
    }

    #[test]
    fn out_of_range_names_the_range() {
        let params = Params::new().with("lg_k", 30);
        let error = params.u64_in("hll", "lg_k", 12, 4..=21).unwrap_err();
        assert!(error.to_string().contains("4..=21"), "{error}");
        let error = Params::new()
            .with("k", "abc")
            .u64_in("kll", "k", 200, 8..=65535)
            .unwrap_err();
        assert!(error.to_string().contains("8..=65535"), "{error}");
    }
}
