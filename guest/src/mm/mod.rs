//! Memory management: today only the kernel's own page tables (`paging`).

pub mod paging;
