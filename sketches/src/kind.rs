//! The kinds of sketch, their names and their stable codes in the envelope.

use crate::error::{Result, SketchError};

/// A kind of sketch. The code is written into every envelope and never changes meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    CountMin,
    Hll,
    Theta,
    Kll,
    FrequentItems,
    Bloom,
    Reservoir,
    WeightedSample,
    Window,
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 9] = [
        Kind::CountMin,
        Kind::Hll,
        Kind::Theta,
        Kind::Kll,
        Kind::FrequentItems,
        Kind::Bloom,
        Kind::Reservoir,
        Kind::WeightedSample,
        Kind::Window,
    ];

    /// The stable code written into envelopes.
    pub fn code(self) -> u8 {
        match self {
            Kind::CountMin => 1,
            Kind::Hll => 2,
            Kind::Theta => 3,
            Kind::Kll => 4,
            Kind::FrequentItems => 5,
            Kind::Bloom => 6,
            Kind::Reservoir => 7,
            Kind::WeightedSample => 8,
            Kind::Window => 9,
        }
    }

    /// The name used in configs, queries and the registry.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CountMin => "count_min",
            Kind::Hll => "hll",
            Kind::Theta => "theta",
            Kind::Kll => "kll",
            Kind::FrequentItems => "frequent_items",
            Kind::Bloom => "bloom",
            Kind::Reservoir => "reservoir",
            Kind::WeightedSample => "weighted_sample",
            Kind::Window => "window",
        }
    }

    /// The kind with envelope code `code`.
    pub fn from_code(code: u8) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.code() == code)
            .ok_or_else(|| SketchError::corrupt(format!("unknown sketch kind code {code}")))
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| SketchError::UnknownKind(name.to_owned()))
    }
}
