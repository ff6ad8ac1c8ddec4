//! A run's sizes: defaults and bounds of the vCPU count, guest memory and
//! the latency histogram's range. Shared by `rtswitch run`'s options
//! (`cli`) and the benchmark suite, which sit above it.

pub const DEFAULT_VCPUS: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u64 = 128;
pub const MIN_MEMORY_MIB: u64 = 16;
/// Guest memory stays below the 32-bit MMIO hole (LAPIC, IOAPIC).
pub const MAX_MEMORY_MIB: u64 = 3072;

pub const DEFAULT_HIST_MAX_US: u32 = 10_000;
pub const MAX_HIST_MAX_US: u32 = 100_000;

/// The default histogram range: 10 ms, or 10 periods of a longer interval.
pub fn default_hist_max_us(interval_us: Option<u32>) -> u32 {
    let interval = interval_us.unwrap_or(switcher::telemetry::defaults::INTERVAL_US);
    DEFAULT_HIST_MAX_US.max(interval.saturating_mul(10)).min(MAX_HIST_MAX_US)
}
