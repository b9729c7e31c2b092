//! What a built-in function feeds its sketch: the message key, the whole payload, or a field
//! of a JSON payload named by a path such as `user.country` or `items[0].price`. No I/O.

use std::fmt;

use serde_json::Value;
use thiserror::Error;

/// Why a value could not be taken from a message. Built-ins count these and skip the message
/// (or send it to a dead-letter output); they never stop the instance.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExtractError {
    #[error("the message has no key")]
    NoKey,
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("the payload has no field {0}")]
    MissingField(String),
    #[error("field {path} is {found}, not a number")]
    NotANumber { path: String, found: &'static str },
}

/// Why a path or extractor specification was refused (at deploy time).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid field path {path:?}: {reason}")]
pub struct InvalidPath {
    pub path: String,
    pub reason: String,
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
}

/// A parsed JSON field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    steps: Vec<Step>,
}

impl FieldPath {
    /// Parses dotted names with optional indexes: `a.b`, `a[2].b`, `m[0][1]`, with an optional
    /// leading `$.`. Names are letters, digits, `_` and `-`.
    pub fn parse(text: &str) -> Result<Self, InvalidPath> {
        let refuse = |reason: &str| InvalidPath {
            path: text.to_string(),
            reason: reason.to_string(),
        };
        let body = text.strip_prefix("$.").unwrap_or(text);
        if body.is_empty() {
            return Err(refuse("the path is empty"));
        }
        let mut steps = Vec::new();
        for part in body.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(open) => (&part[..open], &part[open..]),
                None => (part, ""),
            };
            if name.is_empty() && steps.is_empty() && rest.is_empty() {
                return Err(refuse("empty segment"));
            }
            if !name.is_empty() {
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(refuse("names use letters, digits, '_' and '-'"));
                }
                steps.push(Step::Field(name.to_string()));
            } else if rest.is_empty() {
                return Err(refuse("empty segment"));
            }
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| refuse("'[' without ']'"))?;
                let index = rest[1..close]
                    .parse::<usize>()
                    .map_err(|_| refuse("an index is a non-negative integer"))?;
                steps.push(Step::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(refuse("unexpected text after ']'"));
                }
            }
        }
        Ok(Self {
            text: text.to_string(),
            steps,
        })
    }

    /// The value at this path, if the document has one.
    pub fn lookup<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.steps
            .iter()
            .try_fold(document, |value, step| match step {
                Step::Field(name) => value.get(name.as_str()),
                Step::Index(index) => value.get(*index),
            })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// Where a built-in takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extractor {
    Key,
    Payload,
    Field(FieldPath),
}

/// A value taken from a message, owned so it can outlive the parsed document.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    Bytes(Vec<u8>),
    Text(String),
    Integer(i64),
    Number(f64),
}

impl Extracted {
    /// The sketches crate's view of the value.
    pub fn as_item(&self) -> magnetar_sketches::Item<'_> {
        match self {
            Extracted::Bytes(bytes) => magnetar_sketches::Item::Bytes(bytes),
            Extracted::Text(text) => magnetar_sketches::Item::Str(text),
            Extracted::Integer(value) => magnetar_sketches::Item::Int(*value),
            Extracted::Number(value) => magnetar_sketches::Item::Float(*value),
        }
    }
}

impl Extractor {
    /// `key`, `payload`, or a field path (optionally written `field:<path>`).
    pub fn parse(text: &str) -> Result<Self, InvalidPath> {
        match text {
            "key" => Ok(Extractor::Key),
            "payload" => Ok(Extractor::Payload),
            other => Ok(Extractor::Field(FieldPath::parse(
                other.strip_prefix("field:").unwrap_or(other),
            )?)),
        }
    }

    /// The value of a message, as text, bytes or a number. A JSON string gives its text, a
    /// whole number an integer, another number a float, and anything else (object, array,
    /// boolean) its compact JSON text.
    pub fn extract(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<Extracted, ExtractError> {
        match self {
            Extractor::Key => key
                .map(|key| match std::str::from_utf8(key) {
                    Ok(text) => Extracted::Text(text.to_string()),
                    Err(_) => Extracted::Bytes(key.to_vec()),
                })
                .ok_or(ExtractError::NoKey),
            Extractor::Payload => Ok(Extracted::Bytes(payload.to_vec())),
            Extractor::Field(path) => {
                let document: Value = serde_json::from_slice(payload)
                    .map_err(|error| ExtractError::NotJson(error.to_string()))?;
                let value = path
                    .lookup(&document)
                    .ok_or_else(|| ExtractError::MissingField(path.to_string()))?;
                Ok(match value {
                    Value::String(text) => Extracted::Text(text.clone()),
                    Value::Number(number) => match number.as_i64() {
                        Some(integer) => Extracted::Integer(integer),
                        None => Extracted::Number(number.as_f64().unwrap_or(f64::NAN)),
                    },
                    Value::Null => return Err(ExtractError::MissingField(path.to_string())),
                    other => Extracted::Text(other.to_string()),
                })
            }
        }
    }

    /// A numeric value (for quantiles): numbers, and strings that parse as numbers.
    pub fn extract_number(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<f64, ExtractError> {
        let path = match self {
            Extractor::Field(path) => path.to_string(),
            Extractor::Key => "key".to_string(),
            Extractor::Payload => "payload".to_string(),
        };
        match self.extract(key, payload)? {
            Extracted::Integer(value) => Ok(value as f64),
            Extracted::Number(value) if !value.is_nan() => Ok(value),
            Extracted::Text(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|value| !value.is_nan())
                .ok_or(ExtractError::NotANumber {
                    path,
                    found: "text that is not a number",
                }),
            Extracted::Bytes(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<f64>().ok())
                .filter(|value| !value.is_nan())
                .ok_or(ExtractError::NotANumber {
                    path,
                    found: "bytes",
                }),
            Extracted::Number(_) => Err(ExtractError::NotANumber { path, found: "NaN" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_refuse_nonsense() {
        let path = FieldPath::parse("$.items[1].price").unwrap();
        assert_eq!(
            path.steps,
            vec![
                Step::Field("items".into()),
                Step::Index(1),
                Step::Field("price".into())
            ]
        );
        assert_eq!(FieldPath::parse("matrix[0][2]").unwrap().steps.len(), 3);
        for bad in ["", "a..b", "a[x]", "a[1", "a[1]b", "a b"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fields_keys_and_payloads_extract() {
        let payload = br#"{"user":{"country":"DE","age":41},"items":[{"price":9.5}],"ok":true}"#;
        let field = |path: &str| Extractor::parse(path).unwrap().extract(None, payload);
        assert_eq!(field("user.country"), Ok(Extracted::Text("DE".into())));
        assert_eq!(field("user.age"), Ok(Extracted::Integer(41)));
        assert_eq!(field("items[0].price"), Ok(Extracted::Number(9.5)));
        assert_eq!(field("ok"), Ok(Extracted::Text("true".into())));
        assert_eq!(
            field("user.city"),
            Err(ExtractError::MissingField("user.city".into()))
        );
        assert_eq!(
            Extractor::Key.extract(Some(b"k1"), payload),
            Ok(Extracted::Text("k1".into()))
        );
        assert_eq!(
            Extractor::Key.extract(None, payload),
            Err(ExtractError::NoKey)
        );
        assert!(matches!(
            Extractor::parse("a").unwrap().extract(None, b"not json"),
            Err(ExtractError::NotJson(_))
        ));
    }

    #[test]
    fn numbers_come_from_numbers_and_numeric_text() {
        let payload = br#"{"a":3,"b":"2.5","c":"x","d":[1]}"#;
        let number = |path: &str| {
            Extractor::parse(path)
                .unwrap()
                .extract_number(None, payload)
        };
        assert_eq!(number("a"), Ok(3.0));
        assert_eq!(number("b"), Ok(2.5));
        assert!(matches!(number("c"), Err(ExtractError::NotANumber { .. })));
        assert!(matches!(number("d"), Err(ExtractError::NotANumber { .. })));
        assert_eq!(Extractor::Payload.extract_number(None, b" 7 "), Ok(7.0));
    }
}
