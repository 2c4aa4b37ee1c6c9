#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jobvisor::fuzzing::duration_size(data));
