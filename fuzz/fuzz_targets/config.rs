#![no_main]
//! The config file parser belongs to the `jobvisor` binary (src/cli), not
//! to the library, so this target compiles the binary's modules in.

#[allow(dead_code, unused_imports)]
#[path = "../../src/bench/mod.rs"]
mod bench;
#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/mod.rs"]
mod cli;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cli::config::parse(std::path::Path::new("fuzz.toml"), &text);
});
