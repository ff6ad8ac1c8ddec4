//! The guest's ring-0 shim entries, per CPU and service, read from the
//! `ShimStats` page (`switcher::abi::SHIM_STATS_ADDR`) that the guest's
//! shim gate updates: how often the deprivileged kernel needed CPL0.

use std::fmt;

use serde::{Deserialize, Serialize};
use switcher::abi::{self, ShimStats, shim};

use crate::vstate::memory::{GuestMemory, read_abi};

/// One CPU's shim entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuShimEntries {
    pub cpu: u32,
    /// Entries by service, in `switcher::abi::shim::NAMES` order.
    pub entries: Vec<u64>,
    /// Entries the shim refused (unknown service, argument not allowed).
    pub rejected: u64,
}

/// Every CPU's shim entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimEntries {
    /// The service names, in the order of each CPU's `entries`.
    pub services: Vec<String>,
    pub cpus: Vec<CpuShimEntries>,
}

impl ShimEntries {
    /// Reads the counts of CPUs `0..cpus` (the page is plain counters: a
    /// guest that scribbles over it only garbles its own report).
    pub fn read(mem: &GuestMemory, cpus: u32) -> Self {
        let cpus = (0..cpus.min(abi::MAX_CPUS as u32))
            .map(|cpu| {
                let addr = abi::SHIM_STATS_ADDR + u64::from(cpu) * std::mem::size_of::<ShimStats>() as u64;
                let s = read_abi::<ShimStats>(mem, addr).unwrap_or_default();
                CpuShimEntries { cpu, entries: s.entries.to_vec(), rejected: s.rejected }
            })
            .collect();
        Self { services: shim::NAMES.iter().map(|s| s.to_string()).collect(), cpus }
    }

    /// Entries of `service` over all CPUs.
    pub fn total(&self, service: usize) -> u64 {
        self.cpus.iter().fold(0u64, |a, c| a.saturating_add(c.entries.get(service).copied().unwrap_or(0)))
    }
}

impl fmt::Display for ShimEntries {
    /// `ring-0 shim entries: cpu 0: halt 812, wrmsr 2, set-page-tables 1; cpu 1: ...`
    /// (services with no entry left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ring-0 shim entries")?;
        for (i, c) in self.cpus.iter().enumerate() {
            write!(f, "{} cpu {}:", if i == 0 { ":" } else { ";" }, c.cpu)?;
            let mut any = false;
            for (name, n) in self.services.iter().zip(&c.entries).filter(|(_, n)| **n > 0) {
                write!(f, "{} {name} {n}", if any { "," } else { "" })?;
                any = true;
            }
            if c.rejected > 0 {
                write!(f, "{} refused {}", if any { "," } else { "" }, c.rejected)?;
                any = true;
            }
            if !any {
                write!(f, " none")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{Abi, create};
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn reads_and_prints_per_cpu_counts() {
        let mem = create(16 << 20).unwrap();
        let mut s = ShimStats::default();
        s.entries[shim::HALT] = 812;
        s.entries[shim::WRMSR] = 2;
        mem.write_obj(Abi(s), GuestAddress(abi::SHIM_STATS_ADDR + 64)).unwrap();
        let e = ShimEntries::read(&mem, 2);
        assert_eq!(e.cpus.len(), 2);
        assert_eq!(e.total(shim::HALT), 812);
        assert_eq!(e.to_string(), "ring-0 shim entries: cpu 0: none; cpu 1: halt 812, wrmsr 2");
        assert_eq!(e.cpus[1].entries.len(), shim::SERVICES);
    }
}
