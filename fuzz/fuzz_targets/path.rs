#![no_main]
//! See gatehouse_proxy::fuzzing::path for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_proxy::fuzzing::path(data));
