//! Proves that the library builds inside an application that chose its own
//! Kubernetes version: registers every backend, validates a Service and
//! prints the modes.

use k8s_openapi::api::core::v1::Service;
use proxy_core::ServiceTopology;
use proxy_core::backend::Registry;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new()
        .with(backend_iptables::IptablesFactory::new())
        .with(backend_ipvs::IpvsFactory::new())
        .with(backend_nftables::NftablesFactory::new())
        .with(backend_userspace::UserspaceFactory);
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
    }))?;
    let mut topology = ServiceTopology::new();
    let applied = topology.apply_service(&service);
    if !applied.errors.is_empty() {
        return Err(format!("the Service was refused: {:?}", applied.errors).into());
    }
    let modes: Vec<String> = registry.modes().iter().map(ToString::to_string).collect();
    println!(
        "embed-check: modes {}, {} service(s)",
        modes.join(", "),
        topology.service_count()
    );
    Ok(())
}
