//! What kube-proxy left in a namespace's kernel: its nftables tables and
//! its iptables chains, read with `nft` and `iptables-save`.

use proxy_core::ProxyMode;
use proxy_core::conformance::netns::Netns;

/// The nftables tables kube-proxy's modes own: nftables mode's and the
/// userspace mode's redirect table.
const OWN_TABLES: [&str; 2] = ["kube-proxy", "kube-proxy-userspace"];

/// kube-proxy's rules in one namespace, as `family name` tables and
/// `tool table chain` chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeRules {
    /// `ip kube-proxy`, `ip6 kube-proxy-userspace`.
    pub tables: Vec<String>,
    /// `iptables nat KUBE-SERVICES`.
    pub chains: Vec<String>,
}

impl KubeRules {
    /// Reads them in `ns`.
    pub fn read(ns: &Netns) -> Result<KubeRules, String> {
        let mut rules = KubeRules::default();
        let tables = tool_output(ns, "nft", &["list", "tables"])?;
        for line in tables.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["table", family, name] = words[..]
                && OWN_TABLES.contains(&name)
            {
                rules.tables.push(format!("{family} {name}"));
            }
        }
        for tool in ["iptables-save", "ip6tables-save"] {
            let mut table = "";
            let text = tool_output(ns, tool, &[])?;
            for line in text.lines() {
                if let Some(name) = line.strip_prefix('*') {
                    table = name;
                } else if let Some(chain) = line
                    .strip_prefix(':')
                    .and_then(|l| l.split_whitespace().next())
                    .filter(|c| c.starts_with("KUBE-"))
                {
                    let tool = tool.trim_end_matches("-save");
                    rules.chains.push(format!("{tool} {table} {chain}"));
                }
            }
        }
        Ok(rules)
    }

    /// Nothing at all.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.chains.is_empty()
    }

    /// Whether what `mode` programs is there: KUBE-SERVICES in the IPv4
    /// nat table (iptables), the `ip kube-proxy` table (nftables), the
    /// `ip kube-proxy-userspace` redirect table (userspace as root).
    pub fn has_rules_of(&self, mode: ProxyMode) -> bool {
        match mode {
            ProxyMode::Iptables => self
                .chains
                .iter()
                .any(|c| c == "iptables nat KUBE-SERVICES"),
            ProxyMode::Nftables => self.tables.iter().any(|t| t == "ip kube-proxy"),
            ProxyMode::Userspace => self.tables.iter().any(|t| t == "ip kube-proxy-userspace"),
            _ => false,
        }
    }
}

impl std::fmt::Display for KubeRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tables [{}], chains [{}]",
            self.tables.join(", "),
            self.chains.join(", ")
        )
    }
}

fn tool_output(ns: &Netns, program: &str, args: &[&str]) -> Result<String, String> {
    let output = ns
        .command(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
