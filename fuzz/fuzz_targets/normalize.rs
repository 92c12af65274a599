#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_gateway::pipeline::normalize::fuzz_check(data));
