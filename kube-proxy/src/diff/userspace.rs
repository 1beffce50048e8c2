//! `kube-proxy diff` for the userspace mode: the listener table the proxy
//! publishes (and the redirect elements the kernel holds) against the table
//! a dry-run backend builds for the current Services and EndpointSlices.
//!
//! Per service port it compares: its listeners (address, protocol, class,
//! refusing or open), its VIPs in the redirect rules (redirected to its
//! listener, or rejected, as the kernel holds them), and its balancer
//! (targets, affinity, endpoints). Listener ports the kernel picked and
//! the `serving`/`planned` state of a dry run are no difference.

use backend_userspace::{
    HostAddresses, KernelRedirects, ListenerTable, Options, RedirectMode, TableTarget,
    UserspaceBackend,
};
use proxy_core::backend::BackendContext;
use proxy_core::{Backend as _, ChangeSet, NodeView};

use super::model::{Group, Model, SHARED};
use crate::trace::InspectError;
use crate::trace::userspace::UserspaceRules;

/// The table a full sync of `view` would build, with redirect rules when
/// `redirecting` (as the live proxy has them), on this host's addresses.
pub async fn desired(
    ctx: &BackendContext,
    view: &NodeView,
    redirecting: bool,
) -> Result<UserspaceRules, InspectError> {
    let host = HostAddresses::discover().map_err(|e| InspectError::Read {
        what: "the node's addresses".into(),
        detail: e.to_string(),
    })?;
    let redirect = if redirecting {
        RedirectMode::On
    } else {
        RedirectMode::Off
    };
    let options = Options::from_context(ctx).with_redirect(redirect);
    let mut backend = UserspaceBackend::dry_run(ctx, host, options);
    backend
        .sync(view, &ChangeSet::full())
        .await
        .map_err(|e| InspectError::Rules(format!("building the userspace listener table: {e}")))?;
    Ok(UserspaceRules {
        table: backend.table(),
        kernel: None,
    })
}

fn target(t: TableTarget) -> &'static str {
    match t {
        TableTarget::Cluster => "cluster",
        TableTarget::Local => "local",
        TableTarget::Drop => "drop",
        TableTarget::Reject => "reject",
    }
}

fn add(model: &mut Model, group: &str, rule: String) {
    model
        .entry(group.to_string())
        .or_default()
        .rules
        .insert(rule.clone(), rule);
}

/// The comparable model of `rules`: the kernel's redirect elements when
/// read, else the table's record of them.
pub fn model(rules: &UserspaceRules) -> Model {
    let table: &ListenerTable = &rules.table;
    let mut model = Model::new();
    for l in &table.listeners {
        let state = if l.state == "refusing" {
            "refusing"
        } else {
            "open"
        };
        add(
            &mut model,
            &l.service_port,
            format!(
                "listener {} {} {} {state}",
                l.protocol.lower(),
                l.address,
                l.class.as_str()
            ),
        );
    }
    for f in &table.failures {
        add(
            &mut model,
            &f.service_port,
            format!(
                "listener {} {} {} NOT OPEN: {}",
                f.protocol.lower(),
                f.address,
                f.class.as_str(),
                f.reason
            ),
        );
    }
    let recorded;
    let elements: &KernelRedirects = match &rules.kernel {
        Some(k) => k,
        None => {
            recorded = table.recorded_redirects();
            &recorded
        }
    };
    let owner = |ip, protocol, port| {
        table
            .redirects
            .iter()
            .find(|r| r.ip == ip && r.protocol == protocol && r.port == port)
    };
    for (vip, port) in &elements.redirects {
        // The kernel's port names the listener; a dry run's record has none.
        let listener = match &rules.kernel {
            Some(_) => table
                .redirect_listeners
                .iter()
                .find(|l| l.protocol == vip.protocol && l.port == Some(*port)),
            None => owner(vip.ip, vip.protocol, vip.port).and_then(|r| {
                table
                    .redirect_listeners
                    .iter()
                    .find(|l| l.service_port == r.service_port && l.class == r.class)
            }),
        };
        match listener {
            Some(l) => add(
                &mut model,
                &l.service_port,
                format!("redirect {vip} to the {} listener", l.class.as_str()),
            ),
            None => {
                let group = owner(vip.ip, vip.protocol, vip.port)
                    .map_or(SHARED, |r| r.service_port.as_str());
                add(
                    &mut model,
                    group,
                    format!("redirect {vip} to port {port}, where no listener is open"),
                );
            }
        }
    }
    for vip in &elements.rejects {
        let group =
            owner(vip.ip, vip.protocol, vip.port).map_or(SHARED, |r| r.service_port.as_str());
        add(&mut model, group, format!("reject {vip}"));
    }
    for b in &table.balancers {
        let group: &mut Group = model.entry(b.service_port.clone()).or_default();
        let rule = format!(
            "balancer internal={} external={} affinity={}",
            target(b.internal),
            target(b.external),
            b.affinity_seconds
                .map_or_else(|| "none".to_string(), |s| format!("clientip/{s}s"))
        );
        group.rules.insert(rule.clone(), rule);
        for t in [b.internal, b.external] {
            group.endpoints.extend(b.endpoints(t).iter().copied());
        }
    }
    model
}
