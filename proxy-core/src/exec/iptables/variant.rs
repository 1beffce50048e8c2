//! [`Variant`]: which iptables implementation a host uses, and how it is
//! chosen when both are installed.

use crate::IpFamily;

/// Which iptables implementation the tools are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy` (x_tables kernel API).
    Legacy,
    /// Only unsuffixed `iptables` binaries exist; whatever they are.
    Unsuffixed,
}

/// Chains kubelet creates to tell which variant it uses.
pub const HINT_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// The canary chain kube-proxy itself keeps in `mangle` (upstream's
/// `KUBE-PROXY-CANARY`): the variant holding it is the one this proxy wrote
/// with, a hint when kubelet left none.
pub const OWN_HINT_CHAIN: &str = "KUBE-PROXY-CANARY";

impl Variant {
    /// The suffixed variants, in the order they are preferred.
    pub const SUFFIXED: [Variant; 2] = [Variant::Nft, Variant::Legacy];

    /// `-nft`, `-legacy` or nothing.
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Nft => "-nft",
            Variant::Legacy => "-legacy",
            Variant::Unsuffixed => "",
        }
    }

    /// The program `iptables` (or `ip6tables`) of this variant for
    /// `family`, followed by `tool`: `""`, `"-save"`, `"-restore"`
    /// (`ip6tables-legacy-restore`).
    pub fn program(self, family: IpFamily, tool: &str) -> String {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        format!("{base}{}{tool}", self.suffix())
    }

    /// The variant a hint chain names, from the chains of nft's `mangle`
    /// tables and of legacy's tables (both families): kubelet's
    /// ([`HINT_CHAINS`]) first, nft before legacy; then our own canary
    /// ([`OWN_HINT_CHAIN`]).
    pub fn hinted(nft_chains: &[String], legacy_chains: &[String]) -> Option<Variant> {
        let holds =
            |chains: &[String], names: &[&str]| chains.iter().any(|c| names.contains(&c.as_str()));
        for names in [&HINT_CHAINS[..], &[OWN_HINT_CHAIN][..]] {
            if holds(nft_chains, names) {
                return Some(Variant::Nft);
            }
            if holds(legacy_chains, names) {
                return Some(Variant::Legacy);
            }
        }
        None
    }

    /// Picks between both installed variants like kubelet's iptables
    /// wrapper, from the `iptables-save` output of each (both families): a
    /// hint chain decides ([`Variant::hinted`]); otherwise the variant
    /// holding more rules wins; `nft` when tied (e.g. both empty).
    pub fn choose(nft_saved: &str, legacy_saved: &str) -> Variant {
        let chains = super::save::chains;
        Variant::hinted(&chains(nft_saved), &chains(legacy_saved)).unwrap_or_else(|| {
            if super::save::rule_count(legacy_saved) > super::save::rule_count(nft_saved) {
                Variant::Legacy
            } else {
                Variant::Nft
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: &str = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
    const CANARY: &str = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
    const RULES: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n";

    #[test]
    fn a_kubelet_hint_decides_then_the_rule_count_then_nft() {
        assert_eq!(Variant::choose("", ""), Variant::Nft);
        assert_eq!(Variant::choose("", RULES), Variant::Legacy);
        assert_eq!(Variant::choose(RULES, ""), Variant::Nft);
        assert_eq!(Variant::choose(HINT, RULES), Variant::Nft);
        assert_eq!(Variant::choose(RULES, CANARY), Variant::Legacy);
        assert_eq!(Variant::choose(CANARY, HINT), Variant::Nft);
    }

    #[test]
    fn kubelets_hint_outranks_our_canary_which_outranks_the_rule_count() {
        const OWN: &str = "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n";
        let hinted = |nft: &str, legacy: &str| {
            let chains = super::super::save::chains;
            Variant::hinted(&chains(nft), &chains(legacy))
        };
        assert_eq!(hinted("", ""), None);
        assert_eq!(hinted(RULES, RULES), None);
        assert_eq!(hinted(OWN, ""), Some(Variant::Nft));
        assert_eq!(hinted("", OWN), Some(Variant::Legacy));
        assert_eq!(hinted(OWN, HINT), Some(Variant::Legacy));
        assert_eq!(Variant::choose(OWN, RULES), Variant::Nft);
    }

    #[test]
    fn programs_are_named_by_family_variant_and_tool() {
        assert_eq!(Variant::Nft.program(IpFamily::V4, ""), "iptables-nft");
        assert_eq!(
            Variant::Legacy.program(IpFamily::V6, "-restore"),
            "ip6tables-legacy-restore"
        );
        assert_eq!(
            Variant::Unsuffixed.program(IpFamily::V4, "-save"),
            "iptables-save"
        );
    }
}
