//! The difference between the kernel's IPVS table and the desired one, as
//! the operations that close it. Pure: the sync lists the kernel, plans,
//! then applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::netlink::{Destination, RealServer, ServiceKey, VirtualServer};

use super::desired::DesiredService;

/// One change to the IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Add a virtual server.
    NewService(VirtualServer),
    /// Change a virtual server's scheduler or persistence.
    SetService(VirtualServer),
    /// Delete a virtual server (and its real servers).
    DeleteService(ServiceKey),
    /// Add a real server.
    NewServer(ServiceKey, RealServer),
    /// Change a real server (weight, forwarding).
    SetServer(ServiceKey, RealServer),
    /// Delete a real server.
    DeleteServer(ServiceKey, IpAddr, u16),
}

impl Operation {
    /// The virtual server the operation writes.
    pub(crate) fn key(&self) -> ServiceKey {
        match self {
            Operation::NewService(s) | Operation::SetService(s) => s.key,
            Operation::DeleteService(k)
            | Operation::NewServer(k, _)
            | Operation::SetServer(k, _)
            | Operation::DeleteServer(k, _, _) => *k,
        }
    }
}

/// What the kernel holds: virtual servers with their real servers.
pub(crate) type KernelTable = BTreeMap<ServiceKey, (VirtualServer, Vec<Destination>)>;

/// The operations turning `kernel` into `desired`, for the services
/// `owned` says are this proxy's (the others are left alone).
///
/// A real server that is no longer wanted is not deleted at once while it
/// still has connections: it gets weight 0 and stays (graceful
/// termination) until `terminated` says it may go.
pub(crate) fn plan(
    kernel: &KernelTable,
    desired: &BTreeMap<ServiceKey, DesiredService>,
    owned: impl Fn(&ServiceKey) -> bool,
    mut terminated: impl FnMut(&ServiceKey, &Destination) -> bool,
) -> Vec<Operation> {
    let mut operations = Vec::new();
    for (key, (service, _)) in kernel {
        if !desired.contains_key(key) && owned(key) {
            operations.push(Operation::DeleteService(*key));
        } else if let Some(want) = desired.get(key)
            && !same_service(service, &want.service)
        {
            operations.push(Operation::SetService(want.service.clone()));
        }
    }
    for (key, want) in desired {
        let have: &[Destination] = match kernel.get(key) {
            Some((_, destinations)) => destinations,
            None => {
                operations.push(Operation::NewService(want.service.clone()));
                &[]
            }
        };
        for server in want.servers.values() {
            match have
                .iter()
                .find(|d| (d.server.address, d.server.port) == (server.address, server.port))
            {
                None => operations.push(Operation::NewServer(*key, *server)),
                Some(d) if d.server != *server => {
                    operations.push(Operation::SetServer(*key, *server))
                }
                Some(_) => {}
            }
        }
        for d in have {
            let (address, port) = (d.server.address, d.server.port);
            if want.servers.contains_key(&(address, port)) {
                continue;
            }
            if terminated(key, d) {
                operations.push(Operation::DeleteServer(*key, address, port));
            } else if d.server.weight != 0 {
                operations.push(Operation::SetServer(*key, d.server.with_weight(0)));
            }
        }
    }
    operations
}

/// Whether two services agree on what a sync sets (the kernel adds its
/// `HASHED` flag).
pub(crate) fn same_service(a: &VirtualServer, b: &VirtualServer) -> bool {
    a.scheduler == b.scheduler
        && a.flags.settable() == b.flags.settable()
        && (a.timeout == b.timeout || !b.flags.contains(crate::netlink::ServiceFlags::PERSISTENT))
}

#[cfg(test)]
mod tests {
    use crate::netlink::{IpvsProtocol, ServiceFlags};

    use super::*;

    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            address: "10.96.0.10".parse().unwrap(),
            protocol: IpvsProtocol::Tcp,
            port,
        }
    }

    fn server(last: u8) -> RealServer {
        RealServer::masquerade(IpAddr::from([10, 244, 1, last]), 8080)
    }

    fn listed(server: RealServer, connections: u32) -> Destination {
        Destination {
            server,
            active_connections: connections,
            inactive_connections: 0,
            persistent_connections: 0,
        }
    }

    fn want(port: u16, servers: &[RealServer]) -> (ServiceKey, DesiredService) {
        (
            key(port),
            DesiredService {
                service: VirtualServer::new(key(port), "rr"),
                servers: servers.iter().map(|s| ((s.address, s.port), *s)).collect(),
            },
        )
    }

    fn kernel_of(port: u16, destinations: Vec<Destination>) -> KernelTable {
        let mut service = VirtualServer::new(key(port), "rr");
        service.flags = ServiceFlags::HASHED;
        BTreeMap::from([(key(port), (service, destinations))])
    }

    fn no_connections(_: &ServiceKey, d: &Destination) -> bool {
        d.active_connections + d.inactive_connections == 0
    }

    #[test]
    fn an_empty_kernel_gets_the_services_then_their_servers() {
        let desired = BTreeMap::from([want(80, &[server(10), server(11)])]);
        let ops = plan(&KernelTable::new(), &desired, |_| true, no_connections);
        assert_eq!(
            ops,
            [
                Operation::NewService(VirtualServer::new(key(80), "rr")),
                Operation::NewServer(key(80), server(10)),
                Operation::NewServer(key(80), server(11)),
            ]
        );
    }

    #[test]
    fn a_kernel_equal_to_the_desired_state_needs_nothing() {
        let desired = BTreeMap::from([want(80, &[server(10)])]);
        let kernel = kernel_of(80, vec![listed(server(10), 3)]);
        assert_eq!(plan(&kernel, &desired, |_| true, no_connections), []);
    }

    #[test]
    fn a_removed_server_with_connections_is_drained_then_deleted() {
        let desired = BTreeMap::from([want(80, &[server(10)])]);
        let kernel = kernel_of(80, vec![listed(server(10), 0), listed(server(11), 2)]);
        assert_eq!(
            plan(&kernel, &desired, |_| true, no_connections),
            [Operation::SetServer(key(80), server(11).with_weight(0))]
        );
        let drained = kernel_of(
            80,
            vec![listed(server(10), 0), listed(server(11).with_weight(0), 2)],
        );
        assert_eq!(
            plan(&drained, &desired, |_| true, no_connections),
            [],
            "still draining"
        );
        let idle = kernel_of(
            80,
            vec![listed(server(10), 0), listed(server(11).with_weight(0), 0)],
        );
        assert_eq!(
            plan(&idle, &desired, |_| true, no_connections),
            [Operation::DeleteServer(key(80), server(11).address, 8080)]
        );
    }

    #[test]
    fn a_server_back_from_draining_gets_its_weight_again() {
        let desired = BTreeMap::from([want(80, &[server(10)])]);
        let kernel = kernel_of(80, vec![listed(server(10).with_weight(0), 1)]);
        assert_eq!(
            plan(&kernel, &desired, |_| true, no_connections),
            [Operation::SetServer(key(80), server(10))]
        );
    }

    #[test]
    fn services_not_wanted_are_deleted_only_when_owned() {
        let kernel = kernel_of(81, vec![]);
        let none = BTreeMap::new();
        assert_eq!(
            plan(&kernel, &none, |_| true, no_connections),
            [Operation::DeleteService(key(81))]
        );
        assert_eq!(plan(&kernel, &none, |_| false, no_connections), []);
    }

    #[test]
    fn a_scheduler_or_persistence_change_updates_the_service() {
        let (k, mut d) = want(80, &[]);
        d.service = d.service.persistent(600);
        let desired = BTreeMap::from([(k, d.clone())]);
        assert_eq!(
            plan(&kernel_of(80, vec![]), &desired, |_| true, no_connections),
            [Operation::SetService(d.service)]
        );
    }
}
