#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_gateway::framing::fuzz_check(data));
