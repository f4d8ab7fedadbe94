#![no_main]
// The generated-answer parser (kvrec_core::fuzz_harness).
libfuzzer_sys::fuzz_target!(|data: &[u8]| kvrec_core::fuzz_harness::answer(data));
