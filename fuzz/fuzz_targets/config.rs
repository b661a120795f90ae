//! `Config::parse` on any UTF-8 text with a fixed environment: never panics, and a config
//! it accepts can be summarised. Note: a `[guard] page = "<path>"` key makes the parser read
//! that file, so the fuzzer may read files on this machine (read only, never written).
#![no_main]

use libfuzzer_sys::fuzz_target;
use writeguard::config::Config;

/// Named by the seeds' `token_env` / `shared_key_env`; no `WRITEGUARD_*` override, so the
/// file's own values are what gets parsed.
const ENV: [(&str, &str); 2] = [("FUZZ_TOKEN", "fuzz-token"), ("FUZZ_KEY", "fuzz-key")];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, &ENV) {
        let _ = config.summary();
    }
});
