//! [`IpvsBackend`]'s syncs in the guest: a large table, an idle sync that
//! writes nothing, one endpoint change, graceful termination with a real
//! open connection, a removed service, and `cleanup`; timed against
//! `ipvsadm -R` of the same table.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_ipvs::netlink::{IpvsNetlink, IpvsProtocol, ServiceKey};
use backend_ipvs::{DRAIN_RECHECK, IpvsBackend, SystemHost};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy_core::backend::{BackendContext, LocalTrafficDetector};
use proxy_core::conformance::netns::Netns;
use proxy_core::exec::{Command, Executor, Output, SystemExecutor};
use proxy_core::{
    Backend, ChangeSet, IpFamily, NodeInfo, NodeView, ServiceKey as Svc, ServiceTopology, SyncStats,
};

use crate::guest::{self, Node};

fn node() -> Arc<NodeInfo> {
    let mut node = NodeInfo::named("node-a");
    node.addresses = vec!["10.0.0.1".parse().unwrap()];
    node.pod_cidrs = vec!["10.244.1.0/24".parse().unwrap()];
    Arc::new(node)
}

fn context() -> BackendContext {
    let mut ctx = BackendContext::for_tests(IpFamily::V4, node());
    ctx.local_detector = LocalTrafficDetector::Cidr("10.244.0.0/16".parse().unwrap());
    ctx
}

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32)
}

fn service(i: usize) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "t"},
        "spec": {"clusterIP": vip(i).to_string(),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn slice(i: usize, endpoints: &[Ipv4Addr]) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "nodeName": "node-b", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "t",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .unwrap()
}

/// The endpoints of service `i` in a table of `per` endpoints each.
fn endpoints(i: usize, per: usize) -> Vec<Ipv4Addr> {
    (0..per)
        .map(|e| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 245, 0, 0)) + (i * per + e) as u32))
        .collect()
}

/// The endpoint a change brings in: outside every table's endpoints
/// (10.245.0.0 upwards, 100,000 of them at 10,000 x 10).
const CHANGED_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

fn view(topology: &ServiceTopology) -> NodeView {
    NodeView::build(topology, node(), IpFamily::V4)
}

fn backend() -> IpvsBackend {
    IpvsBackend::new(
        &context(),
        Arc::new(SystemExecutor::default()),
        Arc::new(SystemHost::default()),
    )
    .unwrap()
}

/// The system's executor, recording every command it runs.
#[derive(Default)]
struct Counting {
    inner: SystemExecutor,
    commands: Mutex<Vec<String>>,
}

impl Counting {
    /// The commands run since the first `since` of them.
    fn since(&self, since: usize) -> Vec<String> {
        self.commands.lock().unwrap()[since..].to_vec()
    }

    fn count(&self) -> usize {
        self.commands.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Executor for Counting {
    async fn run(&self, cmd: &Command) -> std::io::Result<Output> {
        self.commands.lock().unwrap().push(cmd.to_string());
        self.inner.run(cmd).await
    }

    fn has_program(&self, program: &str) -> bool {
        self.inner.has_program(program)
    }
}

/// A backend whose commands `Counting` records.
fn counted_backend() -> (IpvsBackend, Arc<Counting>) {
    let exec = Arc::new(Counting::default());
    let backend =
        IpvsBackend::new(&context(), exec.clone(), Arc::new(SystemHost::default())).unwrap();
    (backend, exec)
}

/// Runs `f` with a current-thread runtime on a thread inside `ns`.
fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> T {
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        f(&rt)
    })
    .unwrap()
}

fn key(ip: Ipv4Addr) -> ServiceKey {
    ServiceKey {
        address: IpAddr::V4(ip),
        protocol: IpvsProtocol::Tcp,
        port: 80,
    }
}

fn timed(
    rt: &tokio::runtime::Runtime,
    b: &mut IpvsBackend,
    v: &NodeView,
    c: &ChangeSet,
) -> (SyncStats, Duration) {
    let t = Instant::now();
    let stats = rt.block_on(b.sync(v, c)).unwrap();
    (stats, t.elapsed())
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn a_large_table_syncs_idles_without_writes_and_changes_one_endpoint_cheaply() {
    guest::require("a_large_table_syncs_idles_without_writes_and_changes_one_endpoint_cheaply");
    large_table(1000);
}

/// The benchmark of issue 10: 10,000 services x 10 endpoints. Not in the
/// tier (its command line skips `bench`); `ipvs_vm_bench` on the host
/// boots a VM for it alone.
#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_bench boots it)"]
fn bench_ten_thousand_services() {
    guest::require("bench_ten_thousand_services");
    large_table(10_000);
}

/// `services` x 10 endpoints: a full sync, an idle one that writes
/// nothing, one endpoint change (few writes, the new endpoint in the
/// kernel), and `ipvsadm -R` of the same table in a fresh namespace, timed.
fn large_table(services: usize) {
    const PER: usize = 10;
    let ns = Netns::new().unwrap();
    guest::ip_batch(&ns, "link set lo up\n");
    let mut topology = ServiceTopology::new();
    for i in 0..services {
        assert!(topology.apply_service(&service(i)).errors.is_empty());
        assert!(
            topology
                .apply_endpoint_slice(&slice(i, &endpoints(i, PER)))
                .errors
                .is_empty()
        );
    }
    let first = view(&topology);
    let (full, verify, idle, change, checked) = in_ns(&ns, |rt| {
        let (mut b, commands) = counted_backend();
        let full = timed(rt, &mut b, &first, &ChangeSet::full());
        // the runtime's idle periodic run: the verify, then a sync with
        // nothing changed (the runtime itself skips it)
        let before = commands.count();
        let t = Instant::now();
        assert!(
            !rt.block_on(b.dataplane_lost()),
            "the verify finds what the sync wrote"
        );
        let verify = t.elapsed();
        let idle = timed(rt, &mut b, &first, &ChangeSet::partial([]));
        assert_eq!(idle.0.objects_written, 0, "an idle sync writes nothing");
        assert_eq!(
            commands.since(before),
            Vec::<String>::new(),
            "the idle periodic run runs no ipset, iptables or ip command"
        );
        let before = commands.count();
        // one endpoint of service 7 replaced
        let mut eps = endpoints(7, PER);
        eps[0] = CHANGED_ENDPOINT;
        assert!(
            topology
                .apply_endpoint_slice(&slice(7, &eps))
                .errors
                .is_empty()
        );
        let second = view(&topology);
        let changes = ChangeSet::between(&first, &second, [Svc::new("t", "svc-7")].iter());
        let change = timed(rt, &mut b, &second, &changes);
        assert_eq!(
            commands.since(before),
            Vec::<String>::new(),
            "an endpoint change changes no set, rule or address: no command"
        );
        let mut ipvs = IpvsNetlink::open().unwrap();
        let listed = ipvs.services().unwrap();
        let servers: BTreeSet<IpAddr> = ipvs
            .destinations(&key(vip(7)))
            .unwrap()
            .iter()
            .map(|d| d.server.address)
            .collect();
        (full, verify, idle, change, (listed.len(), servers))
    });
    assert_eq!(checked.0, services);
    let mut want: BTreeSet<IpAddr> = endpoints(7, PER).into_iter().map(IpAddr::V4).collect();
    want.remove(&IpAddr::V4(endpoints(7, PER)[0]));
    want.insert(IpAddr::V4(CHANGED_ENDPOINT));
    assert_eq!(
        checked.1, want,
        "the changed service has its new endpoint (the old one had no connection: deleted)"
    );
    assert!(
        change.0.objects_written <= 3,
        "one change, few writes: {:?}",
        change.0
    );

    // the same table through `ipvsadm -R` in a fresh namespace
    let other = Netns::new().unwrap();
    guest::ip_batch(&other, "link set lo up\n");
    let mut rules = String::new();
    for i in 0..services {
        rules += &format!("-A -t {}:80 -s rr\n", vip(i));
        for ep in endpoints(i, PER) {
            rules += &format!("-a -t {}:80 -r {ep}:8080 -m -w 1\n", vip(i));
        }
    }
    let t = Instant::now();
    let out = other
        .command("ipvsadm")
        .arg("-R")
        .output_with_input(rules.as_bytes())
        .unwrap();
    let restore = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "IPVS sync, {services} services x {PER} endpoints (TCG): full {:?} ({} objects), ipvsadm -R {:?} (ratio {:.2}), idle periodic run: verify {:?} + sync {:?} ({} writes, 0 commands), one endpoint change {:?} ({} writes, 0 commands)",
        full.1,
        full.0.objects_written,
        restore,
        full.1.as_secs_f64() / restore.as_secs_f64(),
        verify,
        idle.1,
        idle.0.objects_written,
        change.1,
        change.0.objects_written
    );
}

/// The real servers of `vip`'s virtual server.
fn servers_of(ipvs: &mut IpvsNetlink, vip: Ipv4Addr) -> BTreeSet<IpAddr> {
    ipvs.destinations(&key(vip))
        .unwrap()
        .iter()
        .map(|d| d.server.address)
        .collect()
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn changes_from_outside_are_found_by_the_periodic_verify_and_repaired_by_a_full_sync() {
    guest::require(
        "changes_from_outside_are_found_by_the_periodic_verify_and_repaired_by_a_full_sync",
    );
    const SERVICES: usize = 20;
    let ns = Netns::new().unwrap();
    guest::ip_batch(&ns, "link set lo up\n");
    let mut topology = ServiceTopology::new();
    for i in 0..SERVICES {
        assert!(topology.apply_service(&service(i)).errors.is_empty());
        assert!(
            topology
                .apply_endpoint_slice(&slice(i, &endpoints(i, 3)))
                .errors
                .is_empty()
        );
    }
    let v = view(&topology);
    let mut b = backend();
    let all =
        |i: usize| -> BTreeSet<IpAddr> { endpoints(i, 3).into_iter().map(IpAddr::V4).collect() };
    in_ns(&ns, |rt| {
        rt.block_on(b.sync(&v, &ChangeSet::full())).unwrap()
    });
    let mut ipvs = ns.run(IpvsNetlink::open).unwrap().unwrap();
    assert!(
        !in_ns(&ns, |rt| rt.block_on(b.dataplane_lost())),
        "nothing changed"
    );

    // a real server deleted from outside
    let gone = format!("{}:8080", endpoints(5, 3)[1]);
    guest::run(
        &ns,
        "ipvsadm",
        &["-d", "-t", &format!("{}:80", vip(5)), "-r", &gone],
    );
    assert!(
        in_ns(&ns, |rt| rt.block_on(b.dataplane_lost())),
        "the verify finds the missing real server"
    );
    in_ns(&ns, |rt| {
        rt.block_on(b.sync(&v, &ChangeSet::full())).unwrap()
    });
    assert_eq!(servers_of(&mut ipvs, vip(5)), all(5), "repaired");

    // an ipset entry deleted from outside
    let entry = format!("{},tcp:80", vip(4));
    guest::run(&ns, "ipset", &["del", "KUBE-CLUSTER-IP", &entry]);
    assert!(
        in_ns(&ns, |rt| rt.block_on(b.dataplane_lost())),
        "the verify finds the missing set entry"
    );
    // what the runtime does then: a full sync
    in_ns(&ns, |rt| {
        rt.block_on(b.sync(&v, &ChangeSet::full())).unwrap()
    });
    guest::run(&ns, "ipset", &["test", "KUBE-CLUSTER-IP", &entry]);

    // a virtual server deleted from outside
    guest::run(&ns, "ipvsadm", &["-D", "-t", &format!("{}:80", vip(3))]);
    assert!(
        in_ns(&ns, |rt| rt.block_on(b.dataplane_lost())),
        "the verify finds the missing virtual server"
    );
    in_ns(&ns, |rt| {
        rt.block_on(b.sync(&v, &ChangeSet::full())).unwrap()
    });
    assert_eq!(ipvs.services().unwrap().len(), SERVICES);
    assert_eq!(servers_of(&mut ipvs, vip(3)), all(3), "repaired");
    assert!(
        !in_ns(&ns, |rt| rt.block_on(b.dataplane_lost())),
        "nothing left to repair"
    );
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn a_removed_endpoint_with_an_open_connection_drains_and_cleanup_removes_everything() {
    guest::require(
        "a_removed_endpoint_with_an_open_connection_drains_and_cleanup_removes_everything",
    );
    let (a, b, c) = (
        Ipv4Addr::new(10, 244, 1, 10),
        Ipv4Addr::new(10, 244, 1, 11),
        Ipv4Addr::new(10, 244, 1, 12),
    );
    let node = Node::new(&[
        ("pod-a", a),
        ("pod-b", b),
        ("pod-c", c),
        ("client", Ipv4Addr::new(10, 244, 1, 20)),
    ]);
    for pod in ["pod-a", "pod-b", "pod-c"] {
        node.serve_tcp(pod, 8080);
    }
    let mut topology = ServiceTopology::new();
    assert!(topology.apply_service(&service(0)).errors.is_empty());
    assert!(topology.apply_service(&service(1)).errors.is_empty());
    assert!(
        topology
            .apply_endpoint_slice(&slice(0, &[a, b, c]))
            .errors
            .is_empty()
    );
    assert!(
        topology
            .apply_endpoint_slice(&slice(1, &[c]))
            .errors
            .is_empty()
    );
    let first = view(&topology);
    let mut b_end = backend();
    in_ns(&node.node, |rt| {
        rt.block_on(b_end.sync(&first, &ChangeSet::full())).unwrap()
    });

    // one connection, held open by the client (the server closed its side:
    // IPVS counts it until the state expires)
    let (client, _) = node.pod("client");
    let to = SocketAddr::from((vip(0), 80));
    let held = client
        .run(move || std::net::TcpStream::connect(to))
        .unwrap()
        .unwrap();
    let mut ipvs = node.node.run(IpvsNetlink::open).unwrap().unwrap();
    let busy = ipvs
        .destinations(&key(vip(0)))
        .unwrap()
        .into_iter()
        .find(|d| d.active_connections + d.inactive_connections > 0)
        .expect("the connection is counted")
        .server
        .address;
    let others: Vec<Ipv4Addr> = [a, b, c]
        .into_iter()
        .filter(|ip| IpAddr::V4(*ip) != busy)
        .collect();
    let (idle, kept) = (others[0], others[1]);

    // the busy endpoint and an idle one go; service 1 goes
    assert!(
        topology
            .apply_endpoint_slice(&slice(0, &[kept]))
            .errors
            .is_empty()
    );
    topology.delete_service("t", "svc-1");
    let second = view(&topology);
    in_ns(&node.node, |rt| {
        rt.block_on(b_end.sync(&second, &ChangeSet::full()))
            .unwrap()
    });
    let now: Vec<(IpAddr, u32)> = ipvs
        .destinations(&key(vip(0)))
        .unwrap()
        .iter()
        .map(|d| (d.server.address, d.server.weight))
        .collect();
    assert!(
        now.contains(&(busy, 0)),
        "the busy real server drains at weight 0: {now:?}"
    );
    assert!(now.contains(&(IpAddr::V4(kept), 1)), "{now:?}");
    assert!(
        !now.iter().any(|(ip, _)| *ip == IpAddr::V4(idle)),
        "the idle one is deleted: {now:?}"
    );
    for _ in 0..4 {
        let (name, _) = guest::connect(client, to).expect("a new connection");
        let pod = ["pod-a", "pod-b", "pod-c"][[a, b, c].iter().position(|ip| *ip == kept).unwrap()];
        assert_eq!(name, pod, "new connections avoid the draining real server");
    }
    let services: Vec<ServiceKey> = ipvs.services().unwrap().iter().map(|s| s.key).collect();
    assert_eq!(services, [key(vip(0))], "the removed service is deleted");
    let bound = guest::run(
        &node.node,
        "ip",
        &["-o", "addr", "show", "dev", "kube-ipvs0"],
    );
    assert!(
        bound.contains(&vip(0).to_string()) && !bound.contains(&vip(1).to_string()),
        "{bound}"
    );
    // while it drains the backend asks for a resync; one (a partial sync
    // naming no port) keeps it at weight 0 while the connection is open
    assert_eq!(b_end.next_resync(), Some(DRAIN_RECHECK));
    in_ns(&node.node, |rt| {
        rt.block_on(b_end.sync(&second, &ChangeSet::partial([])))
            .unwrap()
    });
    assert!(
        servers_of(&mut ipvs, vip(0)).contains(&busy),
        "still draining"
    );
    // the client resets the connection: IPVS counts it until its CLOSE
    // state expires (10 s); the resyncs delete the real server then
    nix::sys::socket::setsockopt(
        &held,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(held);
    let reset = Instant::now();
    while b_end.next_resync().is_some() {
        assert!(
            reset.elapsed() < Duration::from_secs(60),
            "the drained real server is deleted once its connection is gone"
        );
        std::thread::sleep(DRAIN_RECHECK);
        in_ns(&node.node, |rt| {
            rt.block_on(b_end.sync(&second, &ChangeSet::partial([])))
                .unwrap()
        });
    }
    assert!(!servers_of(&mut ipvs, vip(0)).contains(&busy), "deleted");
    println!(
        "a drained real server deleted {:?} after its connection was reset",
        reset.elapsed()
    );

    // cleanup: no virtual server, no kube-ipvs0, no set, no chain
    in_ns(&node.node, |rt| rt.block_on(b_end.cleanup()).unwrap());
    assert_eq!(ipvs.services().unwrap(), []);
    let links = guest::run(&node.node, "ip", &["-o", "link"]);
    assert!(!links.contains("kube-ipvs0"), "{links}");
    let sets = guest::run(&node.node, "ipset", &["list", "-n"]);
    assert_eq!(sets.trim(), "", "{sets}");
    let nat = guest::run(&node.node, "iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("KUBE-"), "{nat}");
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn the_configured_timeouts_and_strict_arp_are_applied_by_a_full_sync() {
    guest::require("the_configured_timeouts_and_strict_arp_are_applied_by_a_full_sync");
    let ns = Netns::new().unwrap();
    guest::ip_batch(&ns, "link set lo up\n");
    let mut ctx = context();
    let mut config = (*ctx.config).clone();
    config.ipvs.tcp_timeout = proxy_core::config::Duration::from_secs(900);
    config.ipvs.tcp_fin_timeout = proxy_core::config::Duration::from_secs(120);
    config.ipvs.udp_timeout = proxy_core::config::Duration::from_secs(300);
    config.ipvs.strict_arp = true;
    ctx.config = Arc::new(config);
    let topology = ServiceTopology::new();
    let empty = view(&topology);
    let (timeouts, arp) = in_ns(&ns, |rt| {
        let mut b = IpvsBackend::new(
            &ctx,
            Arc::new(SystemExecutor::default()),
            Arc::new(SystemHost::default()),
        )
        .unwrap();
        rt.block_on(b.sync(&empty, &ChangeSet::full())).unwrap();
        let timeouts = IpvsNetlink::open().unwrap().timeouts().unwrap();
        let read =
            |k: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/all/{k}")).unwrap();
        (timeouts, (read("arp_ignore"), read("arp_announce")))
    });
    assert_eq!(
        (timeouts.tcp, timeouts.tcp_fin, timeouts.udp),
        (900, 120, 300),
        "ipvs.tcpTimeout, tcpFinTimeout, udpTimeout"
    );
    assert_eq!((arp.0.trim(), arp.1.trim()), ("1", "2"), "strictARP");
}

#[test]
#[ignore = "runs inside the IPVS VM (ipvs_vm_tier boots it)"]
fn virtual_servers_in_exclude_cidrs_survive_syncs_and_the_verify() {
    guest::require("virtual_servers_in_exclude_cidrs_survive_syncs_and_the_verify");
    let ns = Netns::new().unwrap();
    // two node addresses: node ports are served on both, so a virtual
    // server on either that no Service wants is stale (ours to delete)
    // unless ipvs.excludeCIDRs leaves it to its owner
    guest::ip_batch(
        &ns,
        "link set lo up\n\
         link add eth0 type dummy\n\
         link set eth0 up\n\
         addr add 10.0.0.1/24 dev eth0\n\
         addr add 10.0.1.1/24 dev eth0\n",
    );
    for foreign in ["10.0.0.1:9999", "10.0.1.1:9999"] {
        guest::run(&ns, "ipvsadm", &["-A", "-t", foreign, "-s", "rr"]);
    }
    let mut ctx = context();
    let mut config = (*ctx.config).clone();
    config.ipvs.exclude_cidrs = Some(vec!["10.0.1.0/24".into()]);
    ctx.config = Arc::new(config);
    let mut topology = ServiceTopology::new();
    assert!(topology.apply_service(&service(0)).errors.is_empty());
    let v = view(&topology);
    let (left, lost) = in_ns(&ns, |rt| {
        let mut b = IpvsBackend::new(
            &ctx,
            Arc::new(SystemExecutor::default()),
            Arc::new(SystemHost::default()),
        )
        .unwrap();
        rt.block_on(b.sync(&v, &ChangeSet::full())).unwrap();
        let lost = rt.block_on(b.dataplane_lost());
        let left: BTreeSet<String> = IpvsNetlink::open()
            .unwrap()
            .services()
            .unwrap()
            .into_iter()
            .map(|s| format!("{}:{}", s.key.address, s.key.port))
            .collect();
        (left, lost)
    });
    assert!(
        left.contains("10.0.1.1:9999"),
        "the virtual server in excludeCIDRs stays: {left:?}"
    );
    assert!(
        !left.contains("10.0.0.1:9999"),
        "a stale virtual server on a node address outside excludeCIDRs is deleted: {left:?}"
    );
    assert!(left.contains(&format!("{}:80", vip(0))), "ours: {left:?}");
    assert!(!lost, "the verify does not count the excluded one as drift");
}
