//! Outputs every message unchanged: the baseline the runtime's call overhead is measured with.

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct Identity;

impl Function for Identity {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        ctx.output(msg.key, msg.payload)
            .map_err(|error| error.to_string())
    }
}

export_function!(Identity);
