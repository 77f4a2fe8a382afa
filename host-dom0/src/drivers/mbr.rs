//! The MBR partition table (the layout the Raspberry Pi firmware reads):
//! which sectors of the SD card are dom0's data partition.
//!
//! Hand-written: four 16-byte entries at offset 446 and the 0x55AA
//! signature are all there is to it; a crate would bring GPT and
//! filesystems along.

/// One primary partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1..=4.
    pub number: u8,
    /// The partition type byte (0x0c FAT32 LBA, 0xda non-FS data, ...).
    pub kind: u8,
    pub start: u64,
    pub sectors: u64,
}

/// Why the table gives no usable partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MbrError {
    /// Sector 0 does not end in 0x55AA.
    NoSignature,
    /// The entry is empty (type 0 or no sectors).
    Empty(u8),
    /// The entry reaches past the end of the disk (`capacity` sectors).
    PastEnd { number: u8, capacity: u64 },
}

impl core::fmt::Display for MbrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoSignature => f.write_str("no MBR partition table (sector 0 has no 0x55AA signature)"),
            Self::Empty(n) => write!(f, "MBR partition {n} is empty"),
            Self::PastEnd { number, capacity } => {
                write!(f, "MBR partition {number} reaches past the end of the card ({capacity} sectors)")
            }
        }
    }
}

/// Primary partition `number` (1..=4) of the table in `sector0`, checked
/// against a disk of `capacity` sectors.
pub fn partition(sector0: &[u8; 512], number: u8, capacity: u64) -> Result<Partition, MbrError> {
    if sector0[510..512] != [0x55, 0xaa] {
        return Err(MbrError::NoSignature);
    }
    let i = usize::from(number.clamp(1, 4) - 1);
    let e = &sector0[446 + 16 * i..446 + 16 * (i + 1)];
    let kind = e[4];
    let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
    let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
    if kind == 0 || sectors == 0 {
        return Err(MbrError::Empty(number));
    }
    if start == 0 || start + sectors > capacity {
        return Err(MbrError::PastEnd { number, capacity });
    }
    Ok(Partition { number, kind, start, sectors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(u8, u32, u32)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        for (i, &(kind, start, n)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
            e[4] = kind;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&n.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    #[test]
    fn the_second_partition_is_found_and_checked_against_the_card() {
        let t = table(&[(0x0c, 8192, 262_144), (0xda, 270_336, 253_952)]);
        assert_eq!(
            partition(&t, 2, 524_288),
            Ok(Partition { number: 2, kind: 0xda, start: 270_336, sectors: 253_952 })
        );
        assert_eq!(partition(&t, 2, 524_287), Err(MbrError::PastEnd { number: 2, capacity: 524_287 }));
        assert_eq!(partition(&t, 3, 524_288), Err(MbrError::Empty(3)));
        let mut unsigned = t;
        unsigned[511] = 0;
        assert_eq!(partition(&unsigned, 1, 524_288), Err(MbrError::NoSignature));
    }
}
