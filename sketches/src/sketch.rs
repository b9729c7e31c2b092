//! The trait every kind implements, and the answers queries return.

use crate::envelope;
use crate::error::Result;
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;

/// A mergeable, serialisable summary of a stream.
pub trait Sketch: Clone + Send + Sync + 'static {
    /// Which kind this is.
    fn kind(&self) -> Kind;

    /// The parameters it was built with; equal parameters are what make two sketches mergeable.
    fn params(&self) -> Params;

    /// Adds one item. Fails only for items the kind cannot hold (NaN in a quantile sketch).
    fn update(&mut self, item: Item<'_>) -> Result<()>;

    /// Folds `other` into `self`, as if `self` had also seen `other`'s stream. Fails, leaving
    /// `self` unchanged, when the parameters differ.
    fn merge(&mut self, other: &Self) -> Result<()>;

    /// An empty sketch with the same parameters.
    fn empty_like(&self) -> Self;

    /// Whether no item has been added.
    fn is_empty(&self) -> bool;

    /// The kind-specific bytes inside the envelope.
    fn payload(&self) -> Vec<u8>;

    /// Rebuilds from bytes written by [`Sketch::to_bytes`]; any malformed input is an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self>;

    /// Answers a query by name; arguments come as named parameters.
    fn query(&self, name: &str, args: &Params) -> Result<Answer>;

    /// The versioned, checksummed envelope naming kind and parameters around the payload.
    fn to_bytes(&self) -> Vec<u8> {
        envelope::encode(self.kind(), &self.params(), &self.payload())
    }
}

/// One row of a heavy-hitters answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequentRow {
    pub item: String,
    pub estimate: u64,
    pub lower_bound: u64,
    pub upper_bound: u64,
}

/// What a query returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A single number (a quantile, a rank, a count).
    Number(f64),
    /// An estimate with the interval holding the true value at the documented confidence.
    Estimate {
        estimate: f64,
        lower: f64,
        upper: f64,
    },
    /// Several numbers (a CDF or PMF).
    Numbers(Vec<f64>),
    /// Heavy hitters, most frequent first.
    Rows(Vec<FrequentRow>),
    /// A yes/no answer (Bloom membership: "maybe" is `true`).
    Flag(bool),
    /// Sampled items.
    Items(Vec<String>),
}

pub(crate) fn bad_query(kind: Kind, query: &str, message: impl Into<String>) -> crate::SketchError {
    crate::SketchError::BadQuery {
        kind: kind.name(),
        query: query.to_owned(),
        message: message.into(),
    }
}

/// A required `item` argument of a query, hashed like the update it looks up: text unless
/// `item_type` says `int` or `float` (a function that counted integers is queried with
/// `item=42&item_type=int`).
pub(crate) fn hashed_item_argument<'a>(
    kind: Kind,
    query: &str,
    args: &'a Params,
) -> Result<Item<'a>> {
    let text = item_argument(kind, query, args)?;
    let invalid =
        |expected: &str| bad_query(kind, query, format!("item `{text}` is not {expected}"));
    match args.get("item_type").unwrap_or("str") {
        "str" => Ok(Item::Str(text)),
        "int" => text
            .trim()
            .parse()
            .map(Item::Int)
            .map_err(|_| invalid("an integer")),
        "float" => text
            .trim()
            .parse()
            .map(Item::Float)
            .map_err(|_| invalid("a number")),
        other => Err(bad_query(
            kind,
            query,
            format!("item_type `{other}` is not one of str, int, float"),
        )),
    }
}

/// A required `item` argument of a query.
pub(crate) fn item_argument<'a>(kind: Kind, query: &str, args: &'a Params) -> Result<&'a str> {
    args.get("item")
        .ok_or_else(|| bad_query(kind, query, "needs an `item` argument"))
}

/// A required numeric argument of a query.
pub(crate) fn number_argument(kind: Kind, query: &str, args: &Params, name: &str) -> Result<f64> {
    let text = args
        .get(name)
        .ok_or_else(|| bad_query(kind, query, format!("needs a `{name}` argument")))?;
    text.parse()
        .map_err(|_| bad_query(kind, query, format!("`{name}={text}` is not a number")))
}

/// A required list of numbers, comma separated (split points of a CDF or PMF).
pub(crate) fn numbers_argument(
    kind: Kind,
    query: &str,
    args: &Params,
    name: &str,
) -> Result<Vec<f64>> {
    let text = args
        .get(name)
        .ok_or_else(|| bad_query(kind, query, format!("needs a `{name}` argument")))?;
    text.split(',')
        .map(|part| {
            part.trim().parse().map_err(|_| {
                bad_query(kind, query, format!("`{part}` in `{name}` is not a number"))
            })
        })
        .collect()
}
