#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = magnetar_sketches::fuzzing::run("datasketches_hll", data);
});
