//! Memory management: translation tables, address ranges, page frames and
//! the machine's page allocator.

pub mod frames;
pub mod machine_frames;
pub mod pagetable;
pub mod ranges;
