//! libFuzzer entry of the `nft_output` target (`kube_proxy_fuzz::targets::nft_output`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_proxy_fuzz::targets::nft_output(data));
