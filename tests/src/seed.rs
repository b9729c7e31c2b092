//! Seeds of randomised crash tests: printed at the start so a failure can be replayed.

/// `MAGNETAR_CRASH_SEED` when set, else one taken from the clock; printed either way.
pub fn crash_seed() -> u64 {
    let seed = std::env::var("MAGNETAR_CRASH_SEED")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(7)
        });
    println!("seed {seed} (replay with MAGNETAR_CRASH_SEED={seed})");
    seed
}
