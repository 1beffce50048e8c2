//! libFuzzer entry of the `manifest` target (`kube_proxy_fuzz::targets::manifest`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_proxy_fuzz::targets::manifest(data));
