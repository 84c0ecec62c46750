#![no_main]
//! The config loader on arbitrary text: YAML parsing (size, depth and alias limits),
//! deserialization, normalization and validation must answer with errors, never panic or
//! exhaust the stack.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = gatehouse_model::yaml::parse(text) {
            assert!(s.positions.len() <= text.len() + 1);
        }
        let _ = gatehouse_model::parse_document(text, &gatehouse_model::NoPlugins);
    }
});
