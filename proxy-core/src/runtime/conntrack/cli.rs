//! [`CliConntrack`]: the conntrack table through the `conntrack` tool
//! (conntrack-tools), the fallback when netlink fails.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::backend::CommandLimits;
use crate::exec::{Command, Output, run_blocking};
use crate::model::IpFamily;

use super::entry::{ConntrackEntry, FlowTuple, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
use super::table::ConntrackTable;

/// The `conntrack` binary, run once per list and once per delete, each
/// run killed when it outlives its [`CommandLimits`].
#[derive(Debug, Clone)]
pub struct CliConntrack {
    program: String,
    limits: CommandLimits,
}

impl Default for CliConntrack {
    fn default() -> Self {
        CliConntrack {
            program: "conntrack".to_string(),
            limits: CommandLimits::default(),
        }
    }
}

fn family_arg(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

impl CliConntrack {
    /// The `conntrack` found on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A specific binary.
    pub fn with_program(program: impl Into<String>) -> Self {
        CliConntrack {
            program: program.into(),
            ..Self::default()
        }
    }

    /// The same tool, killed when a run outlives `limits`.
    pub fn with_limits(mut self, limits: CommandLimits) -> Self {
        self.limits = limits;
        self
    }

    fn run(&self, args: &[String]) -> io::Result<Output> {
        run_blocking(&Command::new(&self.program, args.iter()), &self.limits)
    }
}

impl ConntrackTable for CliConntrack {
    fn list(&mut self, family: IpFamily) -> io::Result<Vec<ConntrackEntry>> {
        let args = ["-L", "-f", family_arg(family)].map(String::from);
        let output = self.run(&args)?;
        if !output.success() {
            return Err(io::Error::other(format!(
                "{} -L failed: {}",
                self.program,
                output.stderr.trim()
            )));
        }
        Ok(output.stdout.lines().filter_map(parse_line).collect())
    }

    fn delete(&mut self, entry: &ConntrackEntry) -> io::Result<()> {
        let o = entry.original;
        let args = vec![
            "-D".to_string(),
            "-f".to_string(),
            family_arg(IpFamily::of(&o.src.ip())).to_string(),
            "-p".to_string(),
            entry.protocol.to_string(),
            "--orig-src".to_string(),
            o.src.ip().to_string(),
            "--orig-dst".to_string(),
            o.dst.ip().to_string(),
            "--orig-port-src".to_string(),
            o.src.port().to_string(),
            "--orig-port-dst".to_string(),
            o.dst.port().to_string(),
        ];
        let output = self.run(&args)?;
        let stderr = &output.stderr;
        // "0 flow entries have been deleted" (exit 1): already gone.
        if output.success() || stderr.contains("0 flow entries") {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} -D failed: {}",
                self.program,
                stderr.trim()
            )))
        }
    }
}

/// One line of `conntrack -L`, e.g.
/// `udp 17 29 src=10.0.0.1 dst=10.96.0.10 sport=4000 dport=53 [UNREPLIED] src=10.244.0.5 dst=10.0.0.1 sport=53 dport=4000 mark=0 use=1`.
/// The first `src/dst/sport/dport` group is the original direction, the
/// second the reply.
pub fn parse_line(line: &str) -> Option<ConntrackEntry> {
    let mut words = line.split_whitespace();
    let protocol = match words.next()? {
        "udp" => IPPROTO_UDP,
        "tcp" => IPPROTO_TCP,
        "sctp" => IPPROTO_SCTP,
        _ => return None,
    };
    let mut groups: Vec<[Option<&str>; 4]> = Vec::new();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let slot = match key {
            "src" => 0,
            "dst" => 1,
            "sport" => 2,
            "dport" => 3,
            _ => continue,
        };
        if groups.last().is_none_or(|g| g[slot].is_some()) {
            groups.push([None; 4]);
        }
        if let Some(group) = groups.last_mut() {
            group[slot] = Some(value);
        }
    }
    let tuple = |g: &[Option<&str>; 4]| -> Option<FlowTuple> {
        let src: IpAddr = g[0]?.parse().ok()?;
        let dst: IpAddr = g[1]?.parse().ok()?;
        Some(FlowTuple {
            src: SocketAddr::new(src, g[2]?.parse().ok()?),
            dst: SocketAddr::new(dst, g[3]?.parse().ok()?),
        })
    };
    Some(ConntrackEntry {
        protocol,
        original: tuple(groups.first()?)?,
        reply: tuple(groups.get(1)?)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_list_lines() {
        let e = parse_line(
            "udp      17 29 src=10.0.0.1 dst=10.96.0.10 sport=4000 dport=53 [UNREPLIED] src=10.244.0.5 dst=10.0.0.1 sport=53 dport=4000 mark=0 use=1",
        )
        .unwrap();
        assert_eq!(e.protocol, IPPROTO_UDP);
        assert_eq!(e.original.dst, "10.96.0.10:53".parse().unwrap());
        assert_eq!(e.original.src, "10.0.0.1:4000".parse().unwrap());
        assert_eq!(e.reply.src, "10.244.0.5:53".parse().unwrap());

        let v6 = parse_line("udp 17 20 src=fd00::1 dst=fd00::10 sport=1 dport=53 src=fd00::5 dst=fd00::1 sport=53 dport=1").unwrap();
        assert_eq!(v6.reply.src, "[fd00::5]:53".parse().unwrap());

        assert_eq!(
            parse_line("icmp 1 29 src=1.1.1.1 dst=2.2.2.2 type=8 code=0 id=1"),
            None
        );
        assert_eq!(
            parse_line("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown."),
            None
        );
    }
}
