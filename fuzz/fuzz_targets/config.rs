//! Configuration files with `${VAR}` interpolation: any text loads or is
//! refused with an error, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard_config::Config;

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-fuzz".into()),
        "PORT" => Some("8080".into()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${OPENAI_API_KEY}".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(Path::new("fuzz.toml"), text, &env);
});
