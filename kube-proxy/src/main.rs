//! `kube-proxy`: see the `kube_proxy` library for everything.

fn main() -> std::process::ExitCode {
    kube_proxy::main()
}
