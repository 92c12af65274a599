#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_auth::jwt::fuzz_check(data));
