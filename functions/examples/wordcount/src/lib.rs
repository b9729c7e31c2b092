//! Counts words (split on whitespace, lower-cased) in host counters named `word:<word>`, and
//! the messages seen in `messages`; keeps the last payload of each message key in the state as
//! `last:<key>`, and the running word total as the metric `words`. Outputs nothing, except
//! for a query message `?last <key>`, which it answers with the keys listed under `last:` and
//! the payload stored for `<key>` (`keys=a,b;value=...`) instead of counting it.

use magnetar_function_sdk::{export_function, Context, Function, Message};

#[derive(Default)]
struct WordCount {
    name: String,
}

impl Function for WordCount {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        let text = std::str::from_utf8(msg.payload).map_err(|_| "payload is not UTF-8")?;
        if let Some(key) = text.strip_prefix("?last ") {
            return answer(ctx, key).map_err(|error| error.to_string());
        }
        for word in text.split_whitespace() {
            // One reused buffer: no allocation per word once it has grown.
            self.name.clear();
            self.name.push_str("word:");
            self.name.extend(word.chars().flat_map(char::to_lowercase));
            ctx.counter_incr(&self.name, 1)
                .map_err(|error| error.to_string())?;
        }
        let words = ctx
            .counter_incr("messages", 1)
            .and_then(|_| ctx.counter_incr("words", text.split_whitespace().count() as i64))
            .map_err(|error| error.to_string())?;
        ctx.metric("words", words as f64);
        if let Some(key) = msg.key {
            let mut state_key = b"last:".to_vec();
            state_key.extend_from_slice(key);
            ctx.state_put(&state_key, msg.payload)
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

fn answer(ctx: &mut Context, key: &str) -> Result<(), magnetar_function_sdk::HostError> {
    let keys: Vec<String> = ctx
        .state_list(b"last:", 100)?
        .into_iter()
        .map(|(key, _)| String::from_utf8_lossy(&key[5..]).into_owned())
        .collect();
    let value = ctx
        .state_get(format!("last:{key}").as_bytes())?
        .unwrap_or_default();
    let answer = format!(
        "keys={};value={}",
        keys.join(","),
        String::from_utf8_lossy(&value)
    );
    ctx.output(None, answer.as_bytes())
}

export_function!(WordCount);
