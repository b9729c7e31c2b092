//! Publishes every message to two topics: `audit` always, and `large` or `small` by payload
//! size (threshold from the user config `threshold`, default 100 bytes).

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct Fanout;

impl Function for Fanout {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        let threshold = ctx
            .config("threshold")
            .and_then(|text| text.parse::<usize>().ok())
            .unwrap_or(100);
        let size_topic = if msg.payload.len() >= threshold {
            "large"
        } else {
            "small"
        };
        for topic in ["audit", size_topic] {
            ctx.publish_to(topic, msg.key, msg.payload, &[("source", msg.topic)])
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

export_function!(Fanout);
