//! Fuzz the xorb parser (see `cas_core::fuzzing::check_xorb_bytes`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cas_core::fuzzing::check_xorb_bytes(data));
