//! The filter a built-in function may apply before updating its sketch: one comparison on a
//! JSON field, written `path OP literal` (`country == "DE"`, `price >= 10`, `vip != true`) or
//! `exists path`. No I/O.

use serde_json::Value;

use crate::extract::{FieldPath, InvalidPath};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// The field is present and not null.
    Exists(FieldPath),
    Compare {
        path: FieldPath,
        comparison: Comparison,
        literal: Value,
    },
}

fn refuse(text: &str, reason: &str) -> InvalidPath {
    InvalidPath {
        path: text.to_string(),
        reason: reason.to_string(),
    }
}

impl Predicate {
    /// Parses `exists PATH` or `PATH OP LITERAL`, where OP is one of `== != < <= > >=` and the
    /// literal is JSON (a number, `true`, `false`, `null` or a double-quoted string).
    pub fn parse(text: &str) -> Result<Self, InvalidPath> {
        let trimmed = text.trim();
        if let Some(path) = trimmed.strip_prefix("exists ") {
            return Ok(Predicate::Exists(FieldPath::parse(path.trim())?));
        }
        // Two-character operators first, so `<=` is not read as `<`.
        const OPERATORS: [(&str, Comparison); 6] = [
            ("==", Comparison::Equal),
            ("!=", Comparison::NotEqual),
            ("<=", Comparison::LessOrEqual),
            (">=", Comparison::GreaterOrEqual),
            ("<", Comparison::Less),
            (">", Comparison::Greater),
        ];
        let (at, symbol, comparison) = OPERATORS
            .iter()
            .filter_map(|(symbol, comparison)| {
                trimmed.find(symbol).map(|at| (at, *symbol, *comparison))
            })
            .min_by_key(|(at, symbol, _)| (*at, std::cmp::Reverse(symbol.len())))
            .ok_or_else(|| {
                refuse(
                    text,
                    "expected `PATH OP LITERAL` (OP one of == != < <= > >=) or `exists PATH`",
                )
            })?;
        let path = FieldPath::parse(trimmed[..at].trim())?;
        let literal_text = trimmed[at + symbol.len()..].trim();
        let literal: Value = serde_json::from_str(literal_text).map_err(|_| {
            refuse(
                text,
                "the value must be JSON: a number, true, false, null or a \"quoted string\"",
            )
        })?;
        if matches!(literal, Value::Array(_) | Value::Object(_)) {
            return Err(refuse(
                text,
                "compare with a number, boolean, null or string",
            ));
        }
        Ok(Predicate::Compare {
            path,
            comparison,
            literal,
        })
    }

    /// Whether a JSON document passes. A missing field fails every comparison but `!=`.
    pub fn matches(&self, document: &Value) -> bool {
        match self {
            Predicate::Exists(path) => path.lookup(document).is_some_and(|v| !v.is_null()),
            Predicate::Compare {
                path,
                comparison,
                literal,
            } => {
                let Some(value) = path.lookup(document) else {
                    return *comparison == Comparison::NotEqual;
                };
                let ordering = match (value, literal) {
                    (Value::Number(left), Value::Number(right)) => left
                        .as_f64()
                        .zip(right.as_f64())
                        .and_then(|(left, right)| left.partial_cmp(&right)),
                    (Value::String(left), Value::String(right)) => Some(left.cmp(right)),
                    (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
                    (Value::Null, Value::Null) => Some(std::cmp::Ordering::Equal),
                    _ => None,
                };
                use std::cmp::Ordering::{Equal, Greater, Less};
                match (comparison, ordering) {
                    (Comparison::Equal, Some(order)) => order == Equal,
                    (Comparison::NotEqual, Some(order)) => order != Equal,
                    (Comparison::NotEqual, None) => true,
                    (Comparison::Less, Some(order)) => order == Less,
                    (Comparison::LessOrEqual, Some(order)) => order != Greater,
                    (Comparison::Greater, Some(order)) => order == Greater,
                    (Comparison::GreaterOrEqual, Some(order)) => order != Less,
                    (_, None) => false,
                }
            }
        }
    }

    /// Whether a payload passes; a payload that is not JSON never does.
    pub fn matches_payload(&self, payload: &[u8]) -> bool {
        serde_json::from_slice::<Value>(payload)
            .map(|document| self.matches(&document))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_on_numbers_strings_and_booleans() {
        let order = br#"{"country":"DE","price":12.5,"vip":true,"tags":["a"]}"#;
        let passes = |filter: &str| Predicate::parse(filter).unwrap().matches_payload(order);
        assert!(passes(r#"country == "DE""#));
        assert!(!passes(r#"country != "DE""#));
        assert!(passes("price >= 12.5"));
        assert!(passes("price > 10"));
        assert!(!passes("price < 12.5"));
        assert!(passes("price <= 12.5"));
        assert!(passes("vip == true"));
        assert!(passes("exists tags[0]"));
        assert!(!passes("exists tags[3]"));
        // A missing field or a different type never compares, except as "not equal".
        assert!(!passes("missing == 1"));
        assert!(passes("missing != 1"));
        assert!(!passes(r#"price == "12.5""#));
        assert!(!Predicate::parse("price > 1")
            .unwrap()
            .matches_payload(b"not json"));
    }

    #[test]
    fn malformed_filters_are_refused_with_the_reason() {
        for (filter, fragment) in [
            ("price", "expected"),
            ("price > ten", "must be JSON"),
            ("price > [1]", "compare with"),
            ("> 3", "empty"),
        ] {
            let error = Predicate::parse(filter).unwrap_err();
            assert!(error.to_string().contains(fragment), "{filter}: {error}");
        }
    }
}
