//! A Count-Min sketch per message key over a JSON field of the payload: the value of field
//! `field` (user config, default `page`) is counted in sketch `<prefix><key>` (prefix from the
//! user config `prefix`, default `cm:`). A payload without the field fails that message.

use magnetar_function_sdk::{export_function, Context, Function, Message};

const SPEC: &str = "count_min:width=1024;depth=4";

#[derive(Default)]
struct PerKeyCountMin {
    settings: Option<(String, String)>,
}

/// The raw text of a top-level string or number field: enough JSON for flat event records,
/// without pulling a parser into the module.
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let quoted = format!("\"{name}\"");
    let after = &json[json.find(&quoted)? + quoted.len()..];
    let value = after.trim_start().strip_prefix(':')?.trim_start();
    if let Some(text) = value.strip_prefix('"') {
        return Some(&text[..text.find('"')?]);
    }
    let end = value
        .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
        .unwrap_or(value.len());
    (end > 0).then(|| &value[..end])
}

impl Function for PerKeyCountMin {
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
        let (field_name, prefix) = self.settings.get_or_insert_with(|| {
            (
                ctx.config("field").unwrap_or_else(|| "page".to_owned()),
                ctx.config("prefix").unwrap_or_else(|| "cm:".to_owned()),
            )
        });
        let json = std::str::from_utf8(msg.payload).map_err(|_| "payload is not UTF-8")?;
        let value = field(json, field_name).ok_or_else(|| format!("no field {field_name}"))?;
        let key = msg.key.map(String::from_utf8_lossy).unwrap_or_default();
        let name = format!("{prefix}{key}");
        ctx.sketch_update(&name, SPEC, value.as_bytes(), msg.event_time_ms)
            .map_err(|error| error.to_string())
    }
}

export_function!(PerKeyCountMin);
