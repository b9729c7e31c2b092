//! Passes on only the messages whose payload contains the text of the user config `contains`
//! (default `error`).

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct Filter {
    needle: Option<Vec<u8>>,
}

impl Function for Filter {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        // Read once per instance: the config does not change while it runs.
        let needle = self.needle.get_or_insert_with(|| {
            ctx.config("contains")
                .unwrap_or_else(|| "error".to_owned())
                .into_bytes()
        });
        let matches = needle.is_empty()
            || msg
                .payload
                .windows(needle.len())
                .any(|window| window == needle.as_slice());
        if matches {
            ctx.output(msg.key, msg.payload)
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

export_function!(Filter);
