/// Which tier of the suite runs, and so which checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A fake dataplane with a packet tracer: every packet, plus the state
    /// checks (partial sync equals full sync, a no-op sync writes nothing,
    /// cleanup leaves nothing behind), which need [`Harness::dump`](super::Harness::dump).
    Fake,
    /// The real kernel, with real connections in network namespaces:
    /// packets only.
    Kernel,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Fake => "fake",
            Tier::Kernel => "kernel",
        })
    }
}
