//! The WebAssembly runtime: one wasmtime [`Engine`] per worker, each function's module compiled
//! once (and cached on disk) and shared by all its instances, which are cheap instantiations
//! of a pre-linked [`InstancePre`].
//!
//! - [`cache`]: compiled modules on disk, keyed by the SHA-256 of the WebAssembly bytes.
//! - [`abi`]: the batch encoding and the host functions (the ABI is documented in the SDK).
//! - [`instance`]: a running instance with its limits, its restarts after traps, metering.

pub mod abi;
pub mod cache;
pub mod instance;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, Store, ValType,
};

use crate::error::{FunctionError, Result};
use crate::state::FunctionState;
use abi::HostState;
use cache::{ModuleCache, ModuleHash};
pub use instance::{Limits, WasmInstance};

/// How a worker's WebAssembly runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled modules are kept across restarts; `None`: compile on every deploy.
    pub cache_directory: Option<PathBuf>,
    /// Live instances the pooling allocator keeps slots for (instantiation then costs a few
    /// microseconds); past it, instantiation fails with [`FunctionError::Runtime`]. 0 turns
    /// pooling off: instances are allocated on demand, without a bound, more slowly.
    pub pooled_instances: u32,
    /// The largest linear memory any instance may reach, in bytes: the size of a pool slot.
    /// A function's own [`Limits::memory_bytes`] must not exceed it.
    pub max_memory_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_directory: None,
            pooled_instances: 64,
            max_memory_bytes: 256 << 20,
        }
    }
}

impl RuntimeConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<()> {
        if self.max_memory_bytes < 64 << 10 {
            return Err(FunctionError::InvalidConfig(format!(
                "max_memory_bytes {} is below one WebAssembly page (65536)",
                self.max_memory_bytes
            )));
        }
        Ok(())
    }
}

/// A deployed module: compiled, checked against the ABI, linked, ready to instantiate.
pub struct FunctionModule {
    hash: ModuleHash,
    pre: InstancePre<HostState>,
    from_cache: bool,
    compile_time: Duration,
}

impl std::fmt::Debug for FunctionModule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FunctionModule")
            .field("hash", &cache::hex(&self.hash))
            .field("from_cache", &self.from_cache)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
}

impl FunctionModule {
    /// The SHA-256 of the WebAssembly bytes.
    pub fn hash(&self) -> &ModuleHash {
        &self.hash
    }

    /// Whether the compiled code came from the disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Time spent compiling (or loading from the cache) at deploy.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}

/// The runtime of one worker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ModuleCache>,
    config: RuntimeConfig,
}

/// What a function instance is started with.
#[derive(Debug, Clone, Default)]
pub struct InstanceSettings {
    /// The function's name, for logs.
    pub name: String,
    pub limits: Limits,
    /// The user configuration the function reads with `config_get`.
    pub user_config: HashMap<String, String>,
}

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

impl Runtime {
    /// Builds the engine (and its instance pool) and opens the module cache.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        config.validate()?;
        let mut wasm_config = Config::new();
        // Fuel is both the CPU limit and the CPU metering; epochs would need a ticking
        // thread and would not measure.
        wasm_config.consume_fuel(true);
        wasm_config.cranelift_opt_level(OptLevel::Speed);
        if config.pooled_instances > 0 {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(config.pooled_instances)
                .total_memories(config.pooled_instances)
                .total_tables(config.pooled_instances)
                .max_memories_per_module(1)
                .max_memory_size(config.max_memory_bytes);
            wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm_config)
            .map_err(|error| FunctionError::Runtime(format!("creating the engine: {error:#}")))?;
        let mut linker = Linker::new(&engine);
        abi::add_host_functions(&mut linker)
            .map_err(|error| FunctionError::Runtime(format!("linking the ABI: {error:#}")))?;
        let cache = match &config.cache_directory {
            Some(directory) => Some(ModuleCache::open(directory, &engine)?),
            None => None,
        };
        Ok(Runtime {
            engine,
            linker,
            cache,
            config,
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles (or loads from the cache) and checks a module. A module that does not
    /// compile, lacks an export of the ABI, imports something the host does not offer, or
    /// speaks another ABI version is refused with the reason. Compilation is CPU-bound for
    /// milliseconds to seconds: async callers run this on a blocking thread.
    pub fn deploy(&self, wasm: &[u8]) -> Result<Arc<FunctionModule>> {
        let hash = cache::module_hash(wasm);
        let started = Instant::now();
        let mut from_cache = false;
        let mut module = None;
        if let Some(compiled) = self.cache.as_ref().and_then(|cache| cache.load(&hash)) {
            // SAFETY: the bytes were produced by `Module::serialize` of an engine with the same
            // compatibility hash (it is in the file name), written by this worker into its own
            // cache directory and verified against their CRC-32C just now.
            if let Ok(loaded) = unsafe { Module::deserialize(&self.engine, &compiled) } {
                module = Some(loaded);
                from_cache = true;
            }
        }
        let module = match module {
            Some(module) => module,
            None => {
                let module = Module::new(&self.engine, wasm)
                    .map_err(|error| FunctionError::InvalidModule(format!("{error:#}")))?;
                if let Some(cache) = &self.cache {
                    // A cache that cannot be written costs a compile at the next start, not
                    // the deploy.
                    match module.serialize() {
                        Ok(compiled) => {
                            if let Err(error) = cache.store(&hash, &compiled) {
                                tracing::warn!(%error, "compiled module not cached");
                            }
                        }
                        Err(error) => tracing::warn!(%error, "compiled module not serializable"),
                    }
                }
                module
            }
        };
        let compile_time = started.elapsed();
        check_exports(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|error| FunctionError::AbiMismatch(format!("{error:#}")))?;
        let function_module = FunctionModule {
            hash,
            pre,
            from_cache,
            compile_time,
        };
        self.check_abi_version(&function_module)?;
        Ok(Arc::new(function_module))
    }

    fn check_abi_version(&self, module: &FunctionModule) -> Result<()> {
        let host = HostState::new(
            Arc::from("deploy-check"),
            self.config.max_memory_bytes,
            1_000_000,
            0,
            None,
            Arc::new(HashMap::new()),
        );
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limiter);
        store
            .set_fuel(1_000_000)
            .map_err(|error| FunctionError::Runtime(format!("{error:#}")))?;
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|error| FunctionError::AbiMismatch(format!("instantiating: {error:#}")))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "magnetar_abi_version")
            .and_then(|function| function.call(&mut store, ()))
            .map_err(|error| {
                FunctionError::AbiMismatch(format!("magnetar_abi_version failed: {error:#}"))
            })?;
        if version != abi::ABI_VERSION {
            return Err(FunctionError::AbiMismatch(format!(
                "the module speaks ABI version {version}; this worker speaks {}",
                abi::ABI_VERSION
            )));
        }
        Ok(())
    }

    /// Starts an instance of a deployed module with its own state.
    pub fn instantiate(
        &self,
        module: &Arc<FunctionModule>,
        settings: InstanceSettings,
        state: FunctionState,
    ) -> Result<WasmInstance> {
        if settings.limits.memory_bytes > self.config.max_memory_bytes {
            return Err(FunctionError::InvalidConfig(format!(
                "memory limit {} is above the runtime's maximum {}",
                settings.limits.memory_bytes, self.config.max_memory_bytes
            )));
        }
        WasmInstance::start(&self.engine, Arc::clone(module), settings, state)
    }
}

fn check_exports(module: &Module) -> Result<()> {
    use ValType::I32;
    let expected: [(&str, &[ValType], &[ValType]); 3] = [
        ("magnetar_abi_version", &[], &[I32]),
        ("magnetar_alloc", &[I32], &[I32]),
        ("magnetar_process", &[I32, I32], &[I32]),
    ];
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        Some(_) => {
            return Err(FunctionError::AbiMismatch(
                "`memory` is not a memory".into(),
            ))
        }
        None => return Err(FunctionError::AbiMismatch("no `memory` export".into())),
    }
    for (name, params, results) in expected {
        let wanted = signature(params, results);
        match module.get_export(name) {
            Some(ExternType::Func(function)) => {
                let found = signature(
                    &function.params().collect::<Vec<_>>(),
                    &function.results().collect::<Vec<_>>(),
                );
                if found != wanted {
                    return Err(FunctionError::AbiMismatch(format!(
                        "`{name}` has type {found}; the ABI wants {wanted}"
                    )));
                }
            }
            Some(_) => {
                return Err(FunctionError::AbiMismatch(format!(
                    "`{name}` is not a function"
                )))
            }
            None => {
                return Err(FunctionError::AbiMismatch(format!(
                    "no `{name}` export (a function {wanted})"
                )))
            }
        }
    }
    Ok(())
}
