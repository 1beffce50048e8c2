//! From attempts to an [`Outcome`], and how many attempts to make.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::backend::BackendError;
use crate::conformance::{Outcome, Packet};

use super::probe::Attempt;

/// How many attempts a packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttemptPlan {
    /// Attempts when the first one was answered (coverage of the endpoints).
    pub(crate) forwarded: usize,
    /// Attempts when the first one was refused (cheap, checks consistency).
    pub(crate) refused: usize,
}

impl AttemptPlan {
    /// Whether to make another attempt after `attempts`. Unreachable and
    /// timed-out attempts are not repeated: a timeout costs the whole
    /// timeout, and IPv4 ICMP unreachables from routes are rate-limited per
    /// source by the kernel (`net.ipv4.route.error_cost`, global, 5 burst).
    pub(crate) fn keep_going(&self, attempts: &[Attempt]) -> bool {
        let Some(first) = attempts.first() else {
            return true;
        };
        let limit = match first {
            Attempt::Answered { .. } => self.forwarded,
            Attempt::Refused | Attempt::Reset => self.refused,
            Attempt::Unreachable | Attempt::TimedOut => 1,
        };
        attempts.len() < limit
    }
}

/// The outcome of `packet` given its attempts.
///
/// - answered by the destination itself (an endpoint addressed directly,
///   a host echo server): [`Outcome::NotMatched`];
/// - answered by others: [`Outcome::Forwarded`] with the set that answered;
///   `masqueraded` is whether they saw a source other than the packet's.
///   A hairpin answer (the client is the endpoint) is masqueraded by
///   upstream's rules while the others are not; it is left out of the
///   consistency check when other endpoints answered too;
/// - refused or reset: [`Outcome::Rejected`];
/// - unreachable: [`Outcome::NotMatched`];
/// - no answer: [`Outcome::Dropped`].
///
/// Attempts that disagree (some answered, some timed out; masquerading
/// that differs between non-hairpin answers) are an error naming them.
pub(crate) fn outcome(packet: &Packet, attempts: &[Attempt]) -> Result<Outcome, BackendError> {
    let inconsistent = |why: &str| {
        BackendError::dataplane(format!(
            "{packet}: inconsistent attempts ({why}): {}",
            summarize(attempts)
        ))
    };
    let Some(first) = attempts.first() else {
        return Err(BackendError::dataplane(format!(
            "{packet}: no attempt made"
        )));
    };
    let same_kind = attempts
        .iter()
        .all(|a| std::mem::discriminant(a) == std::mem::discriminant(first));
    if !same_kind {
        return Err(inconsistent("different results"));
    }
    let destination = SocketAddr::new(packet.destination, packet.port);
    match first {
        Attempt::Refused | Attempt::Reset => Ok(Outcome::Rejected),
        Attempt::Unreachable => Ok(Outcome::NotMatched),
        Attempt::TimedOut => Ok(Outcome::Dropped),
        Attempt::Answered { .. } => {
            let mut endpoints = BTreeSet::new();
            let mut masquerade = BTreeSet::new();
            let mut hairpin = BTreeSet::new();
            for attempt in attempts {
                if let Attempt::Answered { server, peer } = *attempt {
                    endpoints.insert(server);
                    let masqueraded = peer != packet.source;
                    if server.ip() == packet.source {
                        hairpin.insert(masqueraded);
                    } else {
                        masquerade.insert(masqueraded);
                    }
                }
            }
            if endpoints.contains(&destination) {
                return if endpoints.len() == 1 {
                    Ok(Outcome::NotMatched)
                } else {
                    Err(inconsistent(
                        "answered by the destination itself and by others",
                    ))
                };
            }
            let seen = if masquerade.is_empty() {
                hairpin
            } else {
                masquerade
            };
            match seen.into_iter().collect::<Vec<_>>()[..] {
                [masqueraded] => Ok(Outcome::Forwarded {
                    endpoints,
                    masqueraded,
                }),
                _ => Err(inconsistent("some answers masqueraded, some not")),
            }
        }
    }
}

/// `10.244.1.10:8080 saw 10.244.1.20 ×30, refused ×2` style.
fn summarize(attempts: &[Attempt]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in attempts {
        let key = match attempt {
            Attempt::Answered { server, peer } => format!("{server} saw {peer}"),
            Attempt::Refused => "refused".into(),
            Attempt::Reset => "reset".into(),
            Attempt::Unreachable => "unreachable".into(),
            Attempt::TimedOut => "timed out".into(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::Origin;
    use crate::model::Protocol;

    fn packet() -> Packet {
        Packet {
            origin: Origin::LocalPod,
            source: "10.244.1.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            destination: "10.96.0.10".parse().unwrap(),
            port: 80,
        }
    }

    fn answered(server: &str, peer: &str) -> Attempt {
        Attempt::Answered {
            server: server.parse().unwrap(),
            peer: peer.parse().unwrap(),
        }
    }

    #[test]
    fn answers_from_endpoints_are_forwarded_with_the_set_that_answered() {
        let attempts = [
            answered("10.244.1.11:8080", "10.244.1.10"),
            answered("10.244.1.12:8080", "10.244.1.10"),
        ];
        let expected = Outcome::Forwarded {
            endpoints: [
                "10.244.1.11:8080".parse().unwrap(),
                "10.244.1.12:8080".parse().unwrap(),
            ]
            .into(),
            masqueraded: false,
        };
        assert_eq!(outcome(&packet(), &attempts).unwrap(), expected);
    }

    #[test]
    fn a_hairpin_answer_does_not_break_the_masquerade_check() {
        let attempts = [
            answered("10.244.1.10:8080", "10.244.1.1"),
            answered("10.244.1.11:8080", "10.244.1.10"),
        ];
        let Outcome::Forwarded { masqueraded, .. } = outcome(&packet(), &attempts).unwrap() else {
            panic!("not forwarded");
        };
        assert!(!masqueraded);
        let only_self = [answered("10.244.1.10:8080", "10.244.1.1")];
        let Outcome::Forwarded { masqueraded, .. } = outcome(&packet(), &only_self).unwrap() else {
            panic!("not forwarded");
        };
        assert!(masqueraded);
    }

    #[test]
    fn mixed_masquerading_is_an_error() {
        let attempts = [
            answered("10.244.1.11:8080", "10.244.1.10"),
            answered("10.244.1.12:8080", "192.168.0.10"),
        ];
        assert!(outcome(&packet(), &attempts).is_err());
    }

    #[test]
    fn an_answer_from_the_destination_itself_is_not_matched() {
        let attempts = [answered("10.96.0.10:80", "10.244.1.10")];
        assert_eq!(outcome(&packet(), &attempts).unwrap(), Outcome::NotMatched);
    }

    #[test]
    fn errors_map_to_rejected_not_matched_and_dropped() {
        assert_eq!(
            outcome(&packet(), &[Attempt::Refused]).unwrap(),
            Outcome::Rejected
        );
        assert_eq!(
            outcome(&packet(), &[Attempt::Reset]).unwrap(),
            Outcome::Rejected
        );
        assert_eq!(
            outcome(&packet(), &[Attempt::Unreachable]).unwrap(),
            Outcome::NotMatched
        );
        assert_eq!(
            outcome(&packet(), &[Attempt::TimedOut]).unwrap(),
            Outcome::Dropped
        );
    }

    #[test]
    fn different_results_are_an_error() {
        let attempts = [
            answered("10.244.1.11:8080", "10.244.1.10"),
            Attempt::TimedOut,
        ];
        assert!(outcome(&packet(), &attempts).is_err());
    }

    #[test]
    fn the_plan_repeats_answers_and_refusals_only() {
        let plan = AttemptPlan {
            forwarded: 3,
            refused: 2,
        };
        let answer = answered("10.244.1.11:8080", "10.244.1.10");
        assert!(plan.keep_going(&[]));
        assert!(plan.keep_going(&[answer, answer]));
        assert!(!plan.keep_going(&[answer, answer, answer]));
        assert!(plan.keep_going(&[Attempt::Refused]));
        assert!(!plan.keep_going(&[Attempt::Refused, Attempt::Refused]));
        assert!(!plan.keep_going(&[Attempt::Unreachable]));
        assert!(!plan.keep_going(&[Attempt::TimedOut]));
    }
}
