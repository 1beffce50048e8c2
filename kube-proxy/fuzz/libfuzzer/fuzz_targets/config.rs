//! libFuzzer entry of the `config` target (`kube_proxy_fuzz::targets::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_proxy_fuzz::targets::config(data));
