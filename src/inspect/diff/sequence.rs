//! Comparing two lists of rule keys: as multisets, and as sequences (longest common
//! subsequence). Knows nothing about rules beyond equality.

use std::collections::{BTreeMap, VecDeque};

/// Largest `len(a) × len(b)` (after trimming the common prefix and suffix) for which a full
/// LCS table is built: 4M cells of `u32`, 16 MB.
const MAX_LCS_CELLS: usize = 4_000_000;

/// One step of an edit script from `a` to `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Edit {
    /// `a[i]` is only in `a`.
    Remove(usize),
    /// `b[j]` is only in `b`.
    Add(usize),
}

/// Multiset difference: indices of `a` not matched in `b` and of `b` not matched in `a`,
/// each in ascending order.
pub(super) fn multiset<T: Ord>(a: &[T], b: &[T]) -> (Vec<usize>, Vec<usize>) {
    let mut unmatched_b: BTreeMap<&T, VecDeque<usize>> = BTreeMap::new();
    for (j, key) in b.iter().enumerate() {
        unmatched_b.entry(key).or_default().push_back(j);
    }
    let mut only_a = Vec::new();
    for (i, key) in a.iter().enumerate() {
        match unmatched_b.get_mut(key).and_then(VecDeque::pop_front) {
            Some(_) => {}
            None => only_a.push(i),
        }
    }
    let mut only_b: Vec<usize> = unmatched_b.into_values().flatten().collect();
    only_b.sort_unstable();
    (only_a, only_b)
}

/// A shortest edit script keeping a longest common subsequence, in order; `None` when the
/// differing middle is too large for the quadratic table.
pub(super) fn lcs_edits<T: Eq>(a: &[T], b: &[T]) -> Option<Vec<Edit>> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let (n, m) = (a_mid.len(), b_mid.len());
    if n.saturating_mul(m) > MAX_LCS_CELLS {
        return None;
    }
    // table[i][j] = LCS length of a_mid[i..] and b_mid[j..], stored row-major.
    let width = m + 1;
    let mut table = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i * width + j] = if a_mid[i] == b_mid[j] {
                table[(i + 1) * width + j + 1] + 1
            } else {
                table[(i + 1) * width + j].max(table[i * width + j + 1])
            };
        }
    }
    let mut edits = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a_mid[i] == b_mid[j] {
            i += 1;
            j += 1;
        } else if j == m || (i < n && table[(i + 1) * width + j] >= table[i * width + j + 1]) {
            edits.push(Edit::Remove(prefix + i));
            i += 1;
        } else {
            edits.push(Edit::Add(prefix + j));
            j += 1;
        }
    }
    Some(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_ignores_order_and_counts_duplicates() {
        assert_eq!(multiset(&[1, 2, 3], &[3, 1, 2]), (vec![], vec![]));
        assert_eq!(multiset(&[1, 1, 2], &[2, 1, 4]), (vec![1], vec![2]));
        assert_eq!(multiset::<u8>(&[], &[5]), (vec![], vec![0]));
    }

    #[test]
    fn lcs_edit_scripts() {
        let cases: &[(&[u8], &[u8], &[Edit])] = &[
            (&[1, 2, 3], &[1, 2, 3], &[]),
            (&[1, 2, 3], &[1, 3], &[Edit::Remove(1)]),
            (&[1, 3], &[1, 2, 3], &[Edit::Add(1)]),
            (&[1, 2, 3], &[2, 1, 3], &[Edit::Remove(0), Edit::Add(1)]),
            (&[], &[7, 8], &[Edit::Add(0), Edit::Add(1)]),
            (&[1, 2, 9, 4], &[1, 2, 8, 4], &[Edit::Remove(2), Edit::Add(2)]),
        ];
        for (a, b, want) in cases {
            assert_eq!(lcs_edits(a, b).unwrap(), *want, "{a:?} {b:?}");
        }
    }

    #[test]
    fn huge_differing_chains_give_up() {
        let a: Vec<u32> = (0..3000).collect();
        let b: Vec<u32> = (0..3000).rev().collect();
        assert!(lcs_edits(&a, &b).is_none());
        let same: Vec<u32> = (0..100_000).collect();
        assert_eq!(lcs_edits(&same, &same), Some(vec![]));
    }
}
