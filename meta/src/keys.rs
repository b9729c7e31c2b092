//! Key rules: keys are `/`-separated paths, checked before anything is proposed.
//!
//! A key starts with `/`, has no empty, `.` or `..` segment, no trailing `/`, no control
//! characters, and fits the size limit. Prefixes given to list and watch only need to start
//! with `/` (so `/ledgers/` and `/ledgers/00` are both valid prefixes).

use crate::errors::{MetaError, Result};

/// Checks a key that is about to be written or read.
pub fn validate_key(key: &str, max_key_bytes: usize) -> Result<()> {
    if key.len() > max_key_bytes {
        return Err(MetaError::KeyTooLarge {
            size: key.len(),
            limit: max_key_bytes,
        });
    }
    let malformed = |reason| MetaError::MalformedKey {
        key: key.to_string(),
        reason,
    };
    let Some(rest) = key.strip_prefix('/') else {
        return Err(malformed("a key starts with '/'"));
    };
    if rest.is_empty() {
        return Err(malformed("the root '/' is not a key"));
    }
    if key.chars().any(char::is_control) {
        return Err(malformed("control characters are not allowed"));
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err(malformed("empty segment ('//' or a trailing '/')")),
            "." | ".." => return Err(malformed("'.' and '..' segments are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a prefix given to list or watch.
pub fn validate_prefix(prefix: &str, max_key_bytes: usize) -> Result<()> {
    if prefix.len() > max_key_bytes {
        return Err(MetaError::KeyTooLarge {
            size: prefix.len(),
            limit: max_key_bytes,
        });
    }
    if !prefix.starts_with('/') {
        return Err(MetaError::MalformedKey {
            key: prefix.to_string(),
            reason: "a prefix starts with '/'",
        });
    }
    if prefix.chars().any(char::is_control) {
        return Err(MetaError::MalformedKey {
            key: prefix.to_string(),
            reason: "control characters are not allowed",
        });
    }
    Ok(())
}

/// Checks a value's size.
pub fn validate_value(value: &[u8], max_value_bytes: usize) -> Result<()> {
    if value.len() > max_value_bytes {
        return Err(MetaError::ValueTooLarge {
            size: value.len(),
            limit: max_value_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_proto::meta::ErrorCode;

    #[test]
    fn keys_are_checked_by_the_rules() {
        let cases: &[(&str, Option<ErrorCode>)] = &[
            ("/a", None),
            ("/ledgers/00000042", None),
            ("/a b/c-d_e.f", None),
            ("", Some(ErrorCode::MalformedKey)),
            ("a/b", Some(ErrorCode::MalformedKey)),
            ("/", Some(ErrorCode::MalformedKey)),
            ("/a/", Some(ErrorCode::MalformedKey)),
            ("/a//b", Some(ErrorCode::MalformedKey)),
            ("/a/./b", Some(ErrorCode::MalformedKey)),
            ("/a/..", Some(ErrorCode::MalformedKey)),
            ("/a\nb", Some(ErrorCode::MalformedKey)),
            ("/0123456789abcdefghijklmnopq", Some(ErrorCode::KeyTooLarge)),
        ];
        for (key, expected) in cases {
            let got = validate_key(key, 24).err().map(|e| e.code());
            assert_eq!(got, *expected, "key {key:?}");
        }
    }

    #[test]
    fn prefixes_and_values_are_checked() {
        assert!(validate_prefix("/", 10).is_ok());
        assert!(validate_prefix("/ledgers/", 10).is_ok());
        assert_eq!(
            validate_prefix("ledgers", 10).err().map(|e| e.code()),
            Some(ErrorCode::MalformedKey)
        );
        assert!(validate_value(&[0; 4], 4).is_ok());
        assert_eq!(
            validate_value(&[0; 5], 4).err().map(|e| e.code()),
            Some(ErrorCode::ValueTooLarge)
        );
    }
}
