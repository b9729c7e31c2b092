//! What a sketch is updated with: bytes, text or numbers, each with one canonical byte form.

/// One stream element.
///
/// Every kind that hashes its input hashes the canonical bytes below, which are the bytes the
/// other DataSketches libraries hash for the same value: text and bytes as they are, integers as
/// eight little-endian bytes of an `i64`, floats as the little-endian bytes of an `f64` with
/// `-0.0` folded into `0.0` and every NaN folded into one. So `"apple"` counted in Python and in
/// Rust lands in the same HLL register.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// Opaque bytes.
    Bytes(&'a [u8]),
    /// UTF-8 text; hashes like its bytes.
    Str(&'a str),
    /// A signed integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
}

/// The canonical bytes of an item, kept on the stack for numbers.
pub(crate) enum CanonicalBytes<'a> {
    Borrowed(&'a [u8]),
    Number([u8; 8]),
}

impl CanonicalBytes<'_> {
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            CanonicalBytes::Borrowed(bytes) => bytes,
            CanonicalBytes::Number(bytes) => bytes,
        }
    }
}

/// Folds the float values that compare equal, or that mean the same, into one bit pattern.
#[inline]
pub(crate) fn canonical_float(value: f64) -> f64 {
    if value == 0.0 {
        0.0
    } else if value.is_nan() {
        f64::NAN
    } else {
        value
    }
}

impl<'a> Item<'a> {
    #[inline]
    pub(crate) fn canonical_bytes(&self) -> CanonicalBytes<'a> {
        match *self {
            Item::Bytes(bytes) => CanonicalBytes::Borrowed(bytes),
            Item::Str(text) => CanonicalBytes::Borrowed(text.as_bytes()),
            Item::Int(value) => CanonicalBytes::Number(value.to_le_bytes()),
            Item::Float(value) => CanonicalBytes::Number(canonical_float(value).to_le_bytes()),
        }
    }

    /// The item as text, for kinds that keep items (frequent items, samples): numbers in
    /// decimal, bytes as UTF-8 with invalid sequences replaced.
    pub(crate) fn to_text(self) -> String {
        match self {
            Item::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Item::Str(text) => text.to_owned(),
            Item::Int(value) => value.to_string(),
            Item::Float(value) => value.to_string(),
        }
    }

    /// The item as a number, for quantile kinds; text that parses as a number counts too.
    pub(crate) fn to_number(self) -> Option<f64> {
        match self {
            Item::Int(value) => Some(value as f64),
            Item::Float(value) => Some(value),
            Item::Str(text) => text.trim().parse().ok(),
            Item::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
        }
    }
}

impl<'a> From<&'a [u8]> for Item<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Item::Bytes(bytes)
    }
}

impl<'a> From<&'a str> for Item<'a> {
    fn from(text: &'a str) -> Self {
        Item::Str(text)
    }
}

impl<'a> From<&'a String> for Item<'a> {
    fn from(text: &'a String) -> Self {
        Item::Str(text)
    }
}

impl From<i64> for Item<'_> {
    fn from(value: i64) -> Self {
        Item::Int(value)
    }
}

impl From<u64> for Item<'_> {
    /// Values above `i64::MAX` wrap, as they do in the Java and C++ libraries, which have no
    /// unsigned 64-bit update.
    fn from(value: u64) -> Self {
        Item::Int(value as i64)
    }
}

impl From<i32> for Item<'_> {
    fn from(value: i32) -> Self {
        Item::Int(i64::from(value))
    }
}

impl From<f64> for Item<'_> {
    fn from(value: f64) -> Self {
        Item::Float(value)
    }
}
