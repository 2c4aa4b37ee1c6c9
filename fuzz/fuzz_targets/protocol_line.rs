#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jobvisor::fuzzing::protocol_line(data));
