#![no_main]
//! See gatehouse_proxy::fuzzing::request_head for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_proxy::fuzzing::request_head(data));
