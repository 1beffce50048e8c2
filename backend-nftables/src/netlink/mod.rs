//! [`NetlinkExecutor`]: transactions sent to the kernel over one persistent
//! `NETLINK_NETFILTER` socket, as one nfnetlink batch each, encoded as
//! nft 1.0.6 encodes the same commands (so `nft list` prints the same
//! table whichever wrote it). No process is spawned, and no cache of the
//! table is loaded: a one-element change costs one `sendmsg`.
//!
//! What it cannot encode faithfully (an interval set's prefixes, an
//! interface name nft would escape) sends the whole transaction to `nft -f -` instead
//! ([`NftCli`]), logged at debug with the command that forced it.

mod attr;
mod batch;
mod consts;
mod element;
mod expr;
mod message;
mod set;
mod socket;

use std::time::Instant;

use proxy_core::IpFamily;
use proxy_core::exec::{CommandLimits, ToolError, record_child};

use crate::error::NftError;
use crate::exec::{Executor, NftCli};
use crate::ir::{CommandDisplay, Transaction};

pub use batch::{Batch, encode};
pub use socket::{Answer, Channel};

/// The program name errors and timeouts of this executor are reported as.
const PROGRAM: &str = "nf_tables netlink";

/// Applies transactions over netlink in the network namespace of the
/// thread that created it, falling back to `nft` for what it cannot
/// encode. The socket is opened at creation, so it belongs to the creating
/// thread's namespace wherever it is used.
#[derive(Debug)]
pub struct NetlinkExecutor {
    channel: Result<Channel, String>,
    seq: u32,
    fallback: NftCli,
    limits: CommandLimits,
    counts: Counts,
}

/// How transactions were sent, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Transactions sent as netlink batches (committed or refused).
    pub netlink: u64,
    /// Transactions sent to `nft` because netlink could not carry one of
    /// their commands.
    pub nft: u64,
}

impl NetlinkExecutor {
    /// Opens the socket in the calling thread's network namespace; `nft`
    /// (for what netlink cannot carry and for table lookups) runs with the
    /// same `limits`. A socket that cannot be opened is an error at the
    /// first transaction, not here.
    pub fn new(limits: CommandLimits) -> Self {
        let channel = Channel::open(limits.timeout()).map_err(|e| e.to_string());
        NetlinkExecutor {
            channel,
            seq: 1,
            fallback: NftCli::default().with_limits(limits.clone()),
            limits,
            counts: Counts::default(),
        }
    }

    /// How many transactions went which way so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn next_seq(&mut self, messages: usize) -> u32 {
        let need = u32::try_from(messages + 2).unwrap_or(u32::MAX);
        if self.seq.checked_add(need).is_none() {
            self.seq = 1;
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(need);
        seq
    }

    /// Sends `batch`; `Ok(false)` when it could not be sent at all (the
    /// caller gives the transaction to nft).
    fn exchange(&mut self, tx: &Transaction, batch: &Batch) -> Result<bool, NftError> {
        let channel = match &mut self.channel {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(%reason, "no nf_tables netlink socket; nft applies the transaction");
                return Ok(false);
            }
        };
        // The commit's NFT_MSG_NEWGEN names the sending thread: ours.
        record_child(Some(nix::unistd::gettid().as_raw() as u32));
        let deadline = Instant::now() + self.limits.timeout();
        let answer = channel.exchange(&batch.bytes, batch.begin, batch.last, deadline);
        if !matches!(answer, Ok(Answer::NotSent(_))) {
            self.counts.netlink += 1;
        }
        match answer {
            Ok(Answer::Committed) => Ok(true),
            Ok(Answer::NotSent(e)) => {
                tracing::warn!(
                    error = %e,
                    bytes = batch.bytes.len(),
                    commands = tx.len(),
                    "cannot send the nf_tables batch over netlink; nft applies it"
                );
                Ok(false)
            }
            Ok(Answer::Refused { seq, errno }) => {
                let reason = std::io::Error::from_raw_os_error(errno);
                let index = seq.wrapping_sub(batch.first) as usize;
                let what = match tx.commands.get(index) {
                    Some(command) if seq != batch.begin => format!(
                        "Error: Could not process rule: {reason}\n{}",
                        CommandDisplay {
                            family: tx.family,
                            command
                        }
                    ),
                    _ => format!("Error: the kernel refused to commit the batch: {reason}"),
                };
                Err(NftError::Apply(ToolError::Failed {
                    command: PROGRAM.to_string(),
                    code: Some(1),
                    stderr: what,
                    context: String::new(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.limits.record_timeout(PROGRAM);
                Err(NftError::Apply(ToolError::Spawn {
                    program: PROGRAM.to_string(),
                    source: self.limits.timeout_error(PROGRAM),
                }))
            }
            Err(e) => Err(NftError::Apply(ToolError::Spawn {
                program: PROGRAM.to_string(),
                source: e,
            })),
        }
    }
}

#[async_trait::async_trait]
impl Executor for NetlinkExecutor {
    async fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq(tx.len());
        match encode(tx, seq) {
            Ok(batch) => {
                if self.exchange(tx, &batch)? {
                    return Ok(());
                }
                self.counts.nft += 1;
                self.fallback.apply(tx).await
            }
            Err(index) => {
                if let Some(command) = tx.commands.get(index) {
                    tracing::debug!(
                        command = %CommandDisplay { family: tx.family, command },
                        commands = tx.len(),
                        "transaction sent to nft: netlink does not carry this command"
                    );
                }
                self.counts.nft += 1;
                self.fallback.apply(tx).await
            }
        }
    }

    async fn table_exists(&mut self, family: IpFamily) -> Result<bool, NftError> {
        self.fallback.table_exists(family).await
    }
}
