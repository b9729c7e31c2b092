//! Building sketches from a kind name and parameters (function configs), reading any stored
//! sketch back, and answering queries by name (the query API).

use crate::bloom::Bloom;
use crate::count_min::CountMin;
use crate::envelope;
use crate::error::{Result, SketchError};
use crate::frequent_items::FrequentItems;
use crate::hll::Hll;
use crate::item::Item;
use crate::kind::Kind;
use crate::kll::Kll;
use crate::params::Params;
use crate::reservoir::Reservoir;
use crate::sketch::{Answer, Sketch};
use crate::theta::Theta;
use crate::weighted_sample::WeightedSample;
use crate::window::{Window, WindowShape};

/// The names [`build`] accepts.
pub const KIND_NAMES: [&str; 9] = [
    "count_min",
    "hll",
    "theta",
    "kll",
    "frequent_items",
    "bloom",
    "reservoir",
    "weighted_sample",
    "window",
];

/// A sketch of any non-windowed kind.
#[derive(Debug, Clone)]
pub enum AnySketch {
    CountMin(CountMin),
    Hll(Hll),
    Theta(Theta),
    Kll(Kll),
    FrequentItems(FrequentItems),
    Bloom(Bloom),
    Reservoir(Reservoir),
    WeightedSample(WeightedSample),
}

macro_rules! each {
    ($value:expr, $sketch:ident => $body:expr) => {
        match $value {
            AnySketch::CountMin($sketch) => $body,
            AnySketch::Hll($sketch) => $body,
            AnySketch::Theta($sketch) => $body,
            AnySketch::Kll($sketch) => $body,
            AnySketch::FrequentItems($sketch) => $body,
            AnySketch::Bloom($sketch) => $body,
            AnySketch::Reservoir($sketch) => $body,
            AnySketch::WeightedSample($sketch) => $body,
        }
    };
}

impl AnySketch {
    /// Builds a sketch of `kind` from `params`; absent parameters take the kind's defaults.
    pub fn build(kind: Kind, params: &Params) -> Result<AnySketch> {
        Ok(match kind {
            Kind::CountMin => AnySketch::CountMin(CountMin::from_params(params)?),
            Kind::Hll => AnySketch::Hll(Hll::from_params(params)?),
            Kind::Theta => AnySketch::Theta(Theta::from_params(params)?),
            Kind::Kll => AnySketch::Kll(Kll::from_params(params)?),
            Kind::FrequentItems => AnySketch::FrequentItems(FrequentItems::from_params(params)?),
            Kind::Bloom => AnySketch::Bloom(Bloom::from_params(params)?),
            Kind::Reservoir => AnySketch::Reservoir(Reservoir::from_params(params)?),
            Kind::WeightedSample => AnySketch::WeightedSample(WeightedSample::from_params(params)?),
            Kind::Window => {
                return Err(SketchError::parameter(
                    "window",
                    "inner",
                    "a window is built with `build`, not as an inner sketch",
                ))
            }
        })
    }
}

impl Sketch for AnySketch {
    fn kind(&self) -> Kind {
        each!(self, sketch => sketch.kind())
    }

    fn params(&self) -> Params {
        each!(self, sketch => sketch.params())
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        each!(self, sketch => sketch.update(item))
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        match (self, other) {
            (AnySketch::CountMin(ours), AnySketch::CountMin(theirs)) => ours.merge(theirs),
            (AnySketch::Hll(ours), AnySketch::Hll(theirs)) => ours.merge(theirs),
            (AnySketch::Theta(ours), AnySketch::Theta(theirs)) => ours.merge(theirs),
            (AnySketch::Kll(ours), AnySketch::Kll(theirs)) => ours.merge(theirs),
            (AnySketch::FrequentItems(ours), AnySketch::FrequentItems(theirs)) => {
                ours.merge(theirs)
            }
            (AnySketch::Bloom(ours), AnySketch::Bloom(theirs)) => ours.merge(theirs),
            (AnySketch::Reservoir(ours), AnySketch::Reservoir(theirs)) => ours.merge(theirs),
            (AnySketch::WeightedSample(ours), AnySketch::WeightedSample(theirs)) => {
                ours.merge(theirs)
            }
            (ours, theirs) => Err(SketchError::mismatch(
                "sketch",
                format!("kind {}", ours.kind().name()),
                format!("kind {}", theirs.kind().name()),
            )),
        }
    }

    fn empty_like(&self) -> Self {
        match self {
            AnySketch::CountMin(sketch) => AnySketch::CountMin(sketch.empty_like()),
            AnySketch::Hll(sketch) => AnySketch::Hll(sketch.empty_like()),
            AnySketch::Theta(sketch) => AnySketch::Theta(sketch.empty_like()),
            AnySketch::Kll(sketch) => AnySketch::Kll(sketch.empty_like()),
            AnySketch::FrequentItems(sketch) => AnySketch::FrequentItems(sketch.empty_like()),
            AnySketch::Bloom(sketch) => AnySketch::Bloom(sketch.empty_like()),
            AnySketch::Reservoir(sketch) => AnySketch::Reservoir(sketch.empty_like()),
            AnySketch::WeightedSample(sketch) => AnySketch::WeightedSample(sketch.empty_like()),
        }
    }

    fn is_empty(&self) -> bool {
        each!(self, sketch => sketch.is_empty())
    }

    fn payload(&self) -> Vec<u8> {
        each!(self, sketch => sketch.payload())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let kind = envelope::decode(bytes)?.kind;
        Ok(match kind {
            Kind::CountMin => AnySketch::CountMin(CountMin::from_bytes(bytes)?),
            Kind::Hll => AnySketch::Hll(Hll::from_bytes(bytes)?),
            Kind::Theta => AnySketch::Theta(Theta::from_bytes(bytes)?),
            Kind::Kll => AnySketch::Kll(Kll::from_bytes(bytes)?),
            Kind::FrequentItems => AnySketch::FrequentItems(FrequentItems::from_bytes(bytes)?),
            Kind::Bloom => AnySketch::Bloom(Bloom::from_bytes(bytes)?),
            Kind::Reservoir => AnySketch::Reservoir(Reservoir::from_bytes(bytes)?),
            Kind::WeightedSample => AnySketch::WeightedSample(WeightedSample::from_bytes(bytes)?),
            Kind::Window => {
                return Err(SketchError::corrupt(
                    "a window cannot be a window's inner sketch",
                ))
            }
        })
    }

    fn query(&self, name: &str, args: &Params) -> Result<Answer> {
        each!(self, sketch => sketch.query(name, args))
    }
}

/// A sketch as a function keeps it: plain, or windowed in time.
#[derive(Debug, Clone)]
pub enum Stored {
    Plain(AnySketch),
    Windowed(Window<AnySketch>),
}

/// Builds a sketch from a kind name and parameters. Kind `window` takes `inner` (the kind of
/// its buckets), `bucket_width_ms`, `bucket_count`, `allowed_lateness_ms`, and passes the other
/// parameters to the inner kind.
pub fn build(kind_name: &str, params: &Params) -> Result<Stored> {
    let kind = Kind::from_name(kind_name)?;
    if kind != Kind::Window {
        return Ok(Stored::Plain(AnySketch::build(kind, params)?));
    }
    let inner_name = params.get("inner").ok_or_else(|| {
        SketchError::parameter(
            "window",
            "inner",
            format!("missing; one of {}", KIND_NAMES[..8].join(", ")),
        )
    })?;
    let inner = AnySketch::build(Kind::from_name(inner_name)?, params)?;
    Ok(Stored::Windowed(Window::new(
        WindowShape::from_params(params)?,
        inner,
    )?))
}

/// Reads any sketch this crate wrote.
pub fn decode(bytes: &[u8]) -> Result<Stored> {
    if envelope::decode(bytes)?.kind == Kind::Window {
        Ok(Stored::Windowed(Window::from_bytes(bytes)?))
    } else {
        Ok(Stored::Plain(AnySketch::from_bytes(bytes)?))
    }
}

impl Stored {
    /// Adds an item; `event_time_ms` places it in a window and is ignored otherwise.
    pub fn update(&mut self, event_time_ms: i64, item: Item<'_>) -> Result<()> {
        match self {
            Stored::Plain(sketch) => sketch.update(item),
            Stored::Windowed(window) => window.update(event_time_ms, item),
        }
    }

    /// Merges another stored sketch of the same kind and parameters.
    pub fn merge(&mut self, other: &Stored) -> Result<()> {
        match (self, other) {
            (Stored::Plain(ours), Stored::Plain(theirs)) => ours.merge(theirs),
            (Stored::Windowed(ours), Stored::Windowed(theirs)) => ours.merge(theirs),
            _ => Err(SketchError::mismatch(
                "sketch",
                "windowed and plain",
                "windowed and plain",
            )),
        }
    }

    /// The versioned, checksummed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Stored::Plain(sketch) => sketch.to_bytes(),
            Stored::Windowed(window) => window.to_bytes(),
        }
    }

    /// Answers `name`. On a window, `last_ms` picks the span (default: the whole ring).
    pub fn query(&self, name: &str, args: &Params) -> Result<Answer> {
        match self {
            Stored::Plain(sketch) => sketch.query(name, args),
            Stored::Windowed(window) => {
                let shape = window.shape();
                let whole_ring = shape
                    .bucket_width_ms
                    .saturating_mul(shape.bucket_count as i64);
                let last_ms =
                    args.u64_in("window", "last_ms", whole_ring as u64, 1..=i64::MAX as u64)?;
                window.last(last_ms as i64)?.query(name, args)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_every_kind_by_name_and_answers_by_name() {
        for name in KIND_NAMES {
            let params = Params::new().with("inner", "count_min");
            let mut stored = build(name, &params).unwrap();
            stored.update(1_000, Item::Str("7")).unwrap();
            let restored = decode(&stored.to_bytes()).unwrap();
            assert_eq!(restored.to_bytes(), stored.to_bytes(), "{name}");
        }
        let mut stored = build("kll", &Params::new().with("k", 100)).unwrap();
        for value in 0..1000 {
            stored.update(0, Item::Int(value)).unwrap();
        }
        let Answer::Number(median) = stored
            .query("quantile", &Params::new().with("rank", 0.5))
            .unwrap()
        else {
            panic!("quantile answers a number");
        };
        assert!((median - 500.0).abs() < 50.0, "median {median}");
        assert!(stored.query("nonsense", &Params::new()).is_err());
        assert!(matches!(
            build("nope", &Params::new()),
            Err(SketchError::UnknownKind(_))
        ));
    }

    #[test]
    fn queries_hash_items_like_the_updates_they_look_up() {
        let mut stored = build("count_min", &Params::new()).unwrap();
        stored.update(0, Item::Int(42)).unwrap();
        let estimate = |args: Params| match stored.query("estimate", &args).unwrap() {
            Answer::Estimate { estimate, .. } => estimate,
            other => panic!("estimate answers an estimate, not {other:?}"),
        };
        assert_eq!(
            estimate(Params::new().with("item", 42).with("item_type", "int")),
            1.0
        );
        assert_eq!(estimate(Params::new().with("item", 42)), 0.0);
        let bad = Params::new().with("item", "x").with("item_type", "int");
        assert!(stored.query("estimate", &bad).is_err());
    }

    #[test]
    fn merging_different_parameters_is_refused() {
        let mut left = build("hll", &Params::new().with("lg_k", 10)).unwrap();
        let right = build("hll", &Params::new().with("lg_k", 11)).unwrap();
        let error = left.merge(&right).unwrap_err();
        assert!(error.to_string().contains("lg_k=10"), "{error}");
        let other_kind = build("theta", &Params::new()).unwrap();
        assert!(left.merge(&other_kind).is_err());
    }
}
