//! libFuzzer entry of the `iptables_save` target (`kube_proxy_fuzz::targets::iptables_save`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_proxy_fuzz::targets::iptables_save(data));
