//! Memory management: translation tables, address ranges, page frames.

pub mod frames;
pub mod pagetable;
pub mod ranges;
