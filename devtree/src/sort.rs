//! Sorting the short lists a device tree yields (memory regions,
//! reservations, the SPIs of dom0's devices, memory spans): an insertion
//! sort. Hand-written rather than `core`'s sorts, which are made for long
//! slices and cost the hypervisor's image about 5 KiB in three
//! instantiations; these lists have tens of entries at most and are sorted
//! once, at boot or when a tree is built, where O(n²) is nothing.

/// Sorts `v` in place, ascending; equal elements keep their order.
pub fn small<T: Ord>(v: &mut [T]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1] > v[j] {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    #[test]
    fn sorts_as_the_standard_sort_does() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..40 {
            for _ in 0..20 {
                let mut v: Vec<(u8, u32)> = (0..len)
                    .map(|i| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        ((seed % 7) as u8, i)
                    })
                    .collect();
                let mut want = v.clone();
                want.sort_by_key(|&(k, _)| k); // stable, as `small` is
                let keys: Vec<u8> = v.iter().map(|&(k, _)| k).collect();
                let mut by_key: Vec<(u8, u32)> = v.clone();
                super::small(&mut by_key);
                // `small` sorts whole tuples; with the index second, equal
                // keys stay in index order, as the stable sort leaves them.
                assert_eq!(by_key, want, "{keys:?}");
                v.reverse();
                super::small(&mut v);
                assert!(v.windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }
}
