//! Counts words (split on whitespace, lower-cased) in host counters named `word:<word>`, and
//! the messages seen in `messages`. Outputs nothing.

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct WordCount {
    name: String,
}

impl Function for WordCount {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        let text = std::str::from_utf8(msg.payload).map_err(|_| "payload is not UTF-8")?;
        for word in text.split_whitespace() {
            // One reused buffer: no allocation per word once it has grown.
            self.name.clear();
            self.name.push_str("word:");
            self.name.extend(word.chars().flat_map(char::to_lowercase));
            ctx.counter_incr(&self.name, 1)
                .map_err(|error| error.to_string())?;
        }
        ctx.counter_incr("messages", 1)
            .map_err(|error| error.to_string())?;
        Ok(())
    }
}

export_function!(WordCount);
