#![no_main]
// Request JSON parsing, prompt rendering, options and augmentation (kvrec_core::fuzz_harness).
libfuzzer_sys::fuzz_target!(|data: &[u8]| kvrec_core::fuzz_harness::request_prompt_augment(data));
