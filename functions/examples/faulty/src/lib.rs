//! Misbehaves on purpose, by payload: `loop` spins forever, `bomb` allocates without end,
//! `trap` executes `unreachable`, `fail` returns an error; anything else is output unchanged.
//! The runtime's limit tests use it.

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct Faulty {
    hoard: Vec<Vec<u8>>,
}

impl Function for Faulty {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        match msg.payload {
            b"loop" => {
                let mut spins: u64 = 0;
                loop {
                    // black_box keeps the optimiser from proving the loop has no effect.
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            b"bomb" => loop {
                // Reserved, not written: the bomb hits the memory limit, not the CPU budget.
                let mut block = Vec::<u8>::with_capacity(1 << 20);
                block.push(1);
                self.hoard.push(std::hint::black_box(block));
            },
            b"trap" => std::process::abort(),
            b"fail" => Err("asked to fail".to_owned()),
            payload => ctx
                .output(msg.key, payload)
                .map_err(|error| error.to_string()),
        }
    }
}

export_function!(Faulty);
