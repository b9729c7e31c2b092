//! Built-in functions: no code, a name and parameters. Each feeds one sketch with a value
//! taken from every message (the key, the payload or a JSON field), optionally in tumbling
//! time buckets and behind a filter on a field:
//!
//! | name | sketch | value |
//! |---|---|---|
//! | `count-min` | Count-Min frequencies | any |
//! | `distinct` | HyperLogLog | any |
//! | `quantiles` | KLL | a number (numbers, or text that parses as one) |
//! | `top-k` | frequent items | any |
//! | `bloom` | Bloom filter | any |
//! | `sample` | reservoir sample | any |
//!
//! A message the value cannot be taken from (no key, not JSON, no such field, not a number) is
//! counted as malformed and skipped, or, with a dead-letter topic configured, emitted there
//! unchanged with an `error` property; the instance never stops for it.
//!
//! The sketch lives in memory and is written to the state store when it changed and
//! [`BuiltinConfig::persist_interval_ms`] passed, or on [`FunctionInstance::flush`]: rewriting
//! a Count-Min of 80 KB after each batch would cost more than the updates themselves.

use std::time::Instant;

use magnetar_sketches::{registry, Item, Params, Stored, WindowShape};

use crate::error::{FunctionError, Result};
use crate::extract::Extractor;
use crate::message::{BatchOutcome, FunctionInstance, Message, MessageFailure, Output};
use crate::metering::InstanceMetrics;
use crate::predicate::Predicate;
use crate::state::FunctionState;

/// Which built-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinKind {
    CountMin,
    Distinct,
    Quantiles,
    TopK,
    Bloom,
    Sample,
}

impl BuiltinKind {
    /// Every built-in.
    pub const ALL: [BuiltinKind; 6] = [
        BuiltinKind::CountMin,
        BuiltinKind::Distinct,
        BuiltinKind::Quantiles,
        BuiltinKind::TopK,
        BuiltinKind::Bloom,
        BuiltinKind::Sample,
    ];

    /// The name a function config uses.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinKind::CountMin => "count-min",
            BuiltinKind::Distinct => "distinct",
            BuiltinKind::Quantiles => "quantiles",
            BuiltinKind::TopK => "top-k",
            BuiltinKind::Bloom => "bloom",
            BuiltinKind::Sample => "sample",
        }
    }

    /// The sketches crate's kind behind it.
    pub fn sketch_kind(self) -> &'static str {
        match self {
            BuiltinKind::CountMin => "count_min",
            BuiltinKind::Distinct => "hll",
            BuiltinKind::Quantiles => "kll",
            BuiltinKind::TopK => "frequent_items",
            BuiltinKind::Bloom => "bloom",
            BuiltinKind::Sample => "reservoir",
        }
    }

    /// The built-in called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        BuiltinKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = BuiltinKind::ALL.iter().map(|kind| kind.name()).collect();
                FunctionError::InvalidConfig(format!(
                    "unknown built-in `{name}`; one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// A built-in function's configuration.
#[derive(Debug, Clone)]
pub struct BuiltinConfig {
    pub kind: BuiltinKind,
    /// Where the value comes from.
    pub extract: Extractor,
    /// Only messages passing it are counted; a payload that is not JSON never passes.
    pub filter: Option<Predicate>,
    /// Tumbling buckets, if windowed.
    pub window: Option<WindowShape>,
    /// Where malformed messages go; `None`: counted and skipped.
    pub dead_letter_topic: Option<String>,
    /// The state name of the sketch (what the query API asks for).
    pub sketch_name: String,
    /// The sketch's own parameters, as the sketches crate names them (`width`, `lg_k`, `k`...).
    pub sketch_params: Params,
    /// How often a changed sketch is written to the state store, at most.
    pub persist_interval_ms: u64,
}

/// The keys of [`BuiltinConfig::from_params`] that are not the sketch's.
const OWN_KEYS: [&str; 9] = [
    "extract",
    "filter",
    "dead_letter",
    "sketch_name",
    "persist_interval_ms",
    "window",
    "bucket_width_ms",
    "bucket_count",
    "allowed_lateness_ms",
];

impl BuiltinConfig {
    /// A built-in with its defaults: the payload as value, no filter, no window.
    pub fn new(kind: BuiltinKind) -> Self {
        BuiltinConfig {
            kind,
            extract: Extractor::Payload,
            filter: None,
            window: None,
            dead_letter_topic: None,
            sketch_name: kind.sketch_kind().to_owned(),
            sketch_params: Params::new(),
            persist_interval_ms: 1000,
        }
    }

    /// Reads a config given as a name and `name=value` parameters: `extract` (`key`,
    /// `payload`, or a field path; default `payload`), `filter` (`PATH OP LITERAL` or
    /// `exists PATH`), `window=true` with `bucket_width_ms`, `bucket_count`,
    /// `allowed_lateness_ms`, `dead_letter` (a topic), `sketch_name`, `persist_interval_ms`;
    /// every other parameter goes to the sketch. Everything is checked here, at deploy.
    pub fn from_params(name: &str, params: &Params) -> Result<Self> {
        let invalid = |error: String| FunctionError::InvalidConfig(error);
        let mut config = BuiltinConfig::new(BuiltinKind::from_name(name)?);
        if let Some(text) = params.get("extract") {
            config.extract = Extractor::parse(text).map_err(|error| invalid(error.to_string()))?;
        }
        if let Some(text) = params.get("filter") {
            config.filter =
                Some(Predicate::parse(text).map_err(|error| invalid(error.to_string()))?);
        }
        let windowed =
            params.get("window") == Some("true") || params.get("bucket_width_ms").is_some();
        if windowed {
            config.window = Some(WindowShape::from_params(params)?);
        }
        config.dead_letter_topic = params.get("dead_letter").map(str::to_owned);
        if let Some(name) = params.get("sketch_name") {
            config.sketch_name = name.to_owned();
        }
        if let Some(text) = params.get("persist_interval_ms") {
            config.persist_interval_ms = text
                .parse()
                .map_err(|_| invalid(format!("persist_interval_ms `{text}` is not an integer")))?;
        }
        let mut sketch_params = params.clone();
        for key in OWN_KEYS {
            sketch_params = sketch_params.without(key);
        }
        config.sketch_params = sketch_params;
        config.build_sketch()?;
        Ok(config)
    }

    /// An empty sketch as this config describes it.
    pub fn build_sketch(&self) -> Result<Stored> {
        match self.window {
            None => Ok(registry::build(
                self.kind.sketch_kind(),
                &self.sketch_params,
            )?),
            Some(shape) => {
                let params = self
                    .sketch_params
                    .clone()
                    .with("inner", self.kind.sketch_kind())
                    .with("bucket_width_ms", shape.bucket_width_ms)
                    .with("bucket_count", shape.bucket_count)
                    .with("allowed_lateness_ms", shape.allowed_lateness_ms);
                Ok(registry::build("window", &params)?)
            }
        }
    }
}

/// A running built-in function.
pub struct BuiltinInstance {
    config: BuiltinConfig,
    sketch: Stored,
    state: FunctionState,
    dirty: bool,
    last_persist: Instant,
    metrics: InstanceMetrics,
    malformed: u64,
    filtered_out: u64,
}

impl BuiltinInstance {
    /// Starts the built-in over `state`, resuming the sketch stored there if there is one.
    pub fn new(config: BuiltinConfig, mut state: FunctionState) -> Result<Self> {
        let sketch = match state.sketch(&config.sketch_name)? {
            Some(stored) => stored.clone(),
            None => config.build_sketch()?,
        };
        Ok(BuiltinInstance {
            config,
            sketch,
            state,
            dirty: false,
            last_persist: Instant::now(),
            metrics: InstanceMetrics::default(),
            malformed: 0,
            filtered_out: 0,
        })
    }

    /// The sketch as it stands (not necessarily written yet).
    pub fn sketch(&self) -> &Stored {
        &self.sketch
    }

    /// Messages skipped because no value could be taken from them.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Messages the filter left out.
    pub fn filtered_out(&self) -> u64 {
        self.filtered_out
    }

    /// The state, to snapshot or restore (restore with [`BuiltinInstance::reload`] after).
    pub fn state_mut(&mut self) -> &mut FunctionState {
        &mut self.state
    }

    /// Reads the sketch back from the state (after a restore).
    pub fn reload(&mut self) -> Result<()> {
        self.sketch = match self.state.sketch(&self.config.sketch_name)? {
            Some(stored) => stored.clone(),
            None => self.config.build_sketch()?,
        };
        self.dirty = false;
        Ok(())
    }

    /// Adds one message's value; an `Err` names why the message was malformed.
    fn update(&mut self, message: &Message) -> std::result::Result<(), String> {
        let key = message.key.as_deref();
        let time = message.event_time_ms;
        // Key and payload are fed in place: no copy on the hot path.
        let result = match (&self.config.extract, self.config.kind) {
            (_, BuiltinKind::Quantiles) => {
                let value = self
                    .config
                    .extract
                    .extract_number(key, &message.payload)
                    .map_err(|error| error.to_string())?;
                self.sketch.update(time, Item::Float(value))
            }
            (Extractor::Key, _) => {
                let key = key.ok_or("the message has no key")?;
                let item = match std::str::from_utf8(key) {
                    Ok(text) => Item::Str(text),
                    Err(_) => Item::Bytes(key),
                };
                self.sketch.update(time, item)
            }
            (Extractor::Payload, _) => self.sketch.update(time, Item::Bytes(&message.payload)),
            (extractor, _) => {
                let value = extractor
                    .extract(key, &message.payload)
                    .map_err(|error| error.to_string())?;
                self.sketch.update(time, value.as_item())
            }
        };
        result.map_err(|error| error.to_string())
    }

    fn persist(&mut self) -> Result<()> {
        if self.dirty {
            self.state
                .insert_sketch(&self.config.sketch_name, self.sketch.clone());
            self.state.flush()?;
            self.dirty = false;
            let size = self.sketch.to_bytes().len() as u64;
            self.metrics.peak_memory_bytes = self.metrics.peak_memory_bytes.max(size);
        }
        self.last_persist = Instant::now();
        Ok(())
    }
}

impl FunctionInstance for BuiltinInstance {
    fn process_batch(&mut self, messages: &[Message]) -> Result<BatchOutcome> {
        let started = Instant::now();
        let mut outcome = BatchOutcome::default();
        for (index, message) in messages.iter().enumerate() {
            if let Some(filter) = &self.config.filter {
                if !filter.matches_payload(&message.payload) {
                    self.filtered_out += 1;
                    continue;
                }
            }
            match self.update(message) {
                Ok(()) => self.dirty = true,
                Err(reason) => {
                    self.malformed += 1;
                    if let Some(topic) = &self.config.dead_letter_topic {
                        let mut properties = message.properties.clone();
                        properties.push(("error".to_owned(), reason.clone()));
                        outcome.outputs.push(Output {
                            topic: Some(topic.clone()),
                            key: message.key.clone(),
                            payload: message.payload.clone(),
                            properties,
                        });
                    }
                    outcome.failures.push(MessageFailure {
                        index,
                        error: FunctionError::MalformedInput(reason),
                    });
                }
            }
        }
        if self.dirty
            && self.last_persist.elapsed().as_millis() as u64 >= self.config.persist_interval_ms
        {
            self.persist()?;
        }
        self.metrics.messages_in += messages.len() as u64;
        self.metrics.messages_out += outcome.outputs.len() as u64;
        self.metrics.messages_failed += outcome.failures.len() as u64;
        self.metrics.wall_time_ns += started.elapsed().as_nanos() as u64;
        Ok(outcome)
    }

    fn flush(&mut self) -> Result<()> {
        self.persist()
    }

    fn metrics(&self) -> InstanceMetrics {
        self.metrics
    }
}
