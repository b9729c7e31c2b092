//! Copies each message, keeping its properties and adding `region` (from the user config, default
//! `unknown`) and `payload-bytes`.

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct Enrich;

impl Function for Enrich {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        let region = ctx.config("region").unwrap_or_else(|| "unknown".to_owned());
        let size = msg.payload.len().to_string();
        let mut properties: Vec<(&str, &str)> = msg.properties.iter().collect();
        properties.push(("region", &region));
        properties.push(("payload-bytes", &size));
        ctx.output_with(msg.key, msg.payload, &properties)
            .map_err(|error| error.to_string())
    }
}

export_function!(Enrich);
