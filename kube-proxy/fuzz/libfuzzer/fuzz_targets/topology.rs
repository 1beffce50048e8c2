//! libFuzzer entry of the `topology` target (`kube_proxy_fuzz::targets::topology`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_proxy_fuzz::targets::topology(data));
