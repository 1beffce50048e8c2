//! `kube-proxy`: see the `kube_proxy` library for everything.

/// jemalloc, not glibc's malloc: a cold start (and a relist) decodes and
/// renders far more than the proxy keeps, and glibc keeps most of that
/// freed heap resident (fragmented arenas). Measured with the e2e bench
/// (3k Services x 10 endpoints, live heap ~1.3 KiB/endpoint by heaptrack):
/// RSS after cold start nftables 117 -> 84 MiB, iptables 112 -> 52 MiB;
/// background threads return freed pages while the proxy is idle.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kube_proxy::main()
}
