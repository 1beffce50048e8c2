//! A transaction as one nfnetlink batch: `NFNL_MSG_BATCH_BEGIN`, one
//! message per command, `NFNL_MSG_BATCH_END`, so the kernel commits all of
//! it or nothing. Every refused message is answered with its sequence
//! number (which names the command); the last command also asks for an
//! acknowledgement, the sign that the kernel has answered everything. (An
//! acknowledgement per message would queue one answer per command: a cold
//! start's would overflow any receive buffer.)

use proxy_core::IpFamily;

use std::collections::BTreeSet;

use crate::ir::{Command, ElemKey, KeyType, Transaction};

use super::attr::Writer;
use super::consts::{
    NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NLM_F_ACK, NLM_F_REQUEST,
};
use super::message::write_command;

/// An encoded batch.
#[derive(Debug)]
pub struct Batch {
    /// The bytes to send.
    pub bytes: Vec<u8>,
    /// Sequence number of the begin message.
    pub begin: u32,
    /// Sequence number of the first command (command `i` has `first + i`).
    pub first: u32,
    /// Sequence number of the last command (acknowledged).
    pub last: u32,
}

/// Encodes `tx` with sequence numbers from `seq`; `Err(i)` when command
/// `i` cannot be written as nft writes it.
pub fn encode(tx: &Transaction, seq: u32) -> Result<Batch, usize> {
    encode_commands(tx.family, &tx.commands, seq)
}

/// [`encode`] for `commands` of `family`'s table.
pub fn encode_commands(family: IpFamily, commands: &[Command], seq: u32) -> Result<Batch, usize> {
    let mut w = Writer::new();
    let begin = seq;
    let start = w.begin(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        begin,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(start);
    let first = begin.wrapping_add(1);
    let mut zero_end = zero_end_sets(commands);
    let mut last_start = 0;
    for (i, command) in commands.iter().enumerate() {
        last_start = w.len();
        if !write_command(
            &mut w,
            family,
            command,
            first.wrapping_add(i as u32),
            &mut zero_end,
        ) {
            return Err(i);
        }
    }
    let last = first.wrapping_add(commands.len() as u32).wrapping_sub(1);
    let end_seq = last.wrapping_add(1);
    let start = w.begin(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end_seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(start);
    let mut bytes = w.into_bytes();
    if !commands.is_empty() {
        let flags = u16::from_ne_bytes([bytes[last_start + 6], bytes[last_start + 7]]) | NLM_F_ACK;
        bytes[last_start + 6..last_start + 8].copy_from_slice(&flags.to_ne_bytes());
    }
    Ok(Batch {
        bytes,
        begin,
        first,
        last,
    })
}

/// Interval sets declared in `commands` and filled there, none of whose
/// prefixes starts at address 0: nft sends an interval end at 0 before
/// their first element.
fn zero_end_sets(commands: &[Command]) -> BTreeSet<String> {
    let declared: BTreeSet<&str> = commands
        .iter()
        .filter_map(|c| match c {
            Command::AddSet(s) if s.key == KeyType::Net => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    let mut filled = BTreeSet::new();
    let mut from_zero = BTreeSet::new();
    for c in commands {
        if let Command::AddElement(e) = c
            && let ElemKey::Net(net) = &e.key
            && declared.contains(e.set.as_str())
        {
            filled.insert(e.set.clone());
            if net.network().is_unspecified() {
                from_zero.insert(e.set.clone());
            }
        }
    }
    filled.difference(&from_zero).cloned().collect()
}
