use backend_iptables::IptablesBackend;
use proxy_core::conformance::netns::kernel_harness_factory;
use proxy_core::conformance::{Tier, load_scenarios, run_scenarios};
use proxy_core::Backend;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one() {
    let names: Vec<String> = std::env::var("SCEN").unwrap().split(',').map(String::from).collect();
    let s: Vec<_> = load_scenarios().into_iter().filter(|s| names.iter().any(|n| n == s.name())).collect();
    let factory = kernel_harness_factory(|ctx| Ok(Box::new(IptablesBackend::new(ctx)?) as Box<dyn Backend>));
    let report = run_scenarios(&factory, Tier::Kernel, &s).await;
    println!("{report}");
}
