//! libFuzzer target: a guest's TSO frame and virtio-net header through the
//! TX header checks, the segmentation and the RX header for a TSO guest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::targets::tso_header(data));
