//! The suffix array of the old file, and bsdiff's match search over it.
//!
//! The array is built with SA-IS (suffix sorting by induced copying, Nong, Zhang and Chan,
//! 2009): linear time, and little memory beyond the array itself (4 bytes per old byte), where
//! bsdiff 4.3's Larsson–Sadakane sort keeps two arrays of 8-byte offsets.

/// Marks a slot of the suffix array not yet filled while it is being built.
const EMPTY: u32 = u32::MAX;

/// A symbol of a string being sorted: a byte of the old file, or a name in a reduced string.
trait Symbol: Copy + Ord {
    fn index(self) -> usize;
}

impl Symbol for u8 {
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl Symbol for u32 {
    fn index(self) -> usize {
        self as usize
    }
}

/// The starting positions of all non-empty suffixes of `text`, in lexicographic order.
///
/// `text` must be shorter than `u32::MAX` bytes; callers keep it under [`super::MAX_SIZE`].
pub(super) fn suffix_array(text: &[u8]) -> Vec<u32> {
    debug_assert!(text.len() < EMPTY as usize);
    let mut sa = vec![EMPTY; text.len()];
    sort_suffixes(text, 256, &mut sa);
    sa
}

/// A long prefix of `query` that occurs in `text`, as bsdiff 4.3's search finds it: its
/// position in `text` and its length. `sa` is the suffix array of `text`. An empty `text`
/// gives `(0, 0)`.
///
/// A binary search over the sorted suffixes, with the empty suffix (at `text.len()`) first as
/// in bsdiff's array, taking the same steps as bsdiff's search, so that it picks the same
/// match and the patches come out the same. A suffix goes before the query if it differs from
/// it by a smaller byte within the shorter of the two; one being a prefix of the other counts
/// as equal, which sends the search left and now and then past a longer match further right.
/// The better of the last two suffixes is taken, the right one on a tie.
///
/// The search skips the bytes already known to agree: every suffix between two others shares
/// with the query at least the shorter of their two common prefixes with it.
pub(super) fn find_match(text: &[u8], sa: &[u32], query: &[u8]) -> (usize, usize) {
    // Entry 0 is the empty suffix; entry k > 0 is sa[k - 1].
    let start_of = |k: usize| if k == 0 { text.len() } else { sa[k - 1] as usize };
    let common_from = |start: usize, known: usize| known + common_prefix(&text[start + known..], &query[known..]);
    let (mut lo, mut hi) = (0, sa.len());
    let mut lo_len = 0;
    let mut hi_len = common_from(start_of(hi), 0);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let start = start_of(mid);
        let len = common_from(start, lo_len.min(hi_len));
        let before = start + len < text.len() && len < query.len() && text[start + len] < query[len];
        if before {
            lo = mid;
            lo_len = len;
        } else {
            hi = mid;
            hi_len = len;
        }
    }
    if lo_len > hi_len {
        (start_of(lo), lo_len)
    } else {
        (start_of(hi), hi_len)
    }
}

/// How many leading bytes `a` and `b` have in common; compares eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut done = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let mut wx = [0u8; 8];
        let mut wy = [0u8; 8];
        wx.copy_from_slice(x);
        wy.copy_from_slice(y);
        let diff = u64::from_le_bytes(wx) ^ u64::from_le_bytes(wy);
        if diff != 0 {
            return done + (diff.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + a[done..].iter().zip(&b[done..]).take_while(|(x, y)| x == y).count()
}

/// Fills `sa` (as long as `s`) with the suffix array of `s`, whose symbols are below
/// `alphabet`. The end of `s` is treated as a sentinel smaller than every symbol.
///
/// Each suffix is S-type if it sorts before the next suffix and L-type if after; the last is
/// L-type, being followed by the sentinel. An S-type suffix after an L-type one is
/// "leftmost S" (LMS). Sorting the LMS suffixes is enough: one left-to-right pass then places
/// the L-type suffixes in order and one right-to-left pass the S-type ones. The LMS suffixes
/// are sorted by naming each LMS substring (from one LMS position to the next) by its rank and
/// sorting the shorter string of names recursively.
fn sort_suffixes<T: Symbol>(s: &[T], alphabet: usize, sa: &mut [u32]) {
    let n = s.len();
    match n {
        0 => return,
        1 => {
            sa[0] = 0;
            return;
        }
        _ => {}
    }
    let mut s_type = vec![false; n];
    for i in (0..n - 1).rev() {
        s_type[i] = s[i] < s[i + 1] || (s[i] == s[i + 1] && s_type[i + 1]);
    }
    let is_lms = |i: usize| i > 0 && s_type[i] && !s_type[i - 1];
    let mut counts = vec![0u32; alphabet];
    for &c in s {
        counts[c.index()] += 1;
    }

    // Sort the LMS substrings: seed the LMS positions, in any order, at their bucket ends.
    sa.fill(EMPTY);
    let mut tails = bucket_tails(&counts);
    for i in (1..n).filter(|&i| is_lms(i)) {
        let c = s[i].index();
        tails[c] -= 1;
        sa[tails[c] as usize] = i as u32;
    }
    induce(s, &s_type, &counts, sa);

    // Gather the LMS positions, now in the order of their substrings, at the front.
    let mut lms_count = 0;
    for k in 0..n {
        let p = sa[k];
        if p != EMPTY && is_lms(p as usize) {
            sa[lms_count] = p;
            lms_count += 1;
        }
    }
    // Name each substring by its rank, equal substrings alike. LMS positions are at least two
    // apart and fewer than n / 2, so `lms_count + p / 2` is a distinct free slot for each.
    sa[lms_count..].fill(EMPTY);
    let mut names = 0u32;
    let mut previous: Option<usize> = None;
    for k in 0..lms_count {
        let p = sa[k] as usize;
        if previous.is_none_or(|q| !same_lms_substring(s, &s_type, q, p)) {
            names += 1;
        }
        previous = Some(p);
        sa[lms_count + p / 2] = names - 1;
    }
    let mut reduced: Vec<u32> = sa[lms_count..].iter().copied().filter(|&name| name != EMPTY).collect();

    // Sort the suffixes of the string of names: directly when every name is distinct.
    let mut reduced_sa = vec![EMPTY; lms_count];
    if (names as usize) < lms_count {
        sort_suffixes(&reduced, names as usize, &mut reduced_sa);
    } else {
        for (i, &name) in reduced.iter().enumerate() {
            reduced_sa[name as usize] = i as u32;
        }
    }

    // Map the sorted reduced suffixes back to LMS positions and induce the whole array.
    reduced.clear();
    reduced.extend((1..n).filter(|&i| is_lms(i)).map(|i| i as u32));
    sa.fill(EMPTY);
    let mut tails = bucket_tails(&counts);
    for &r in reduced_sa.iter().rev() {
        let p = reduced[r as usize];
        let c = s[p as usize].index();
        tails[c] -= 1;
        sa[tails[c] as usize] = p;
    }
    induce(s, &s_type, &counts, sa);
}

/// Whether the LMS substrings starting at `a` and `b` are equal: same symbols and same types
/// up to and including the next LMS position. One that runs into the end of `s` (the
/// sentinel, which is unique) equals no other.
fn same_lms_substring<T: Symbol>(s: &[T], s_type: &[bool], a: usize, b: usize) -> bool {
    let n = s.len();
    let mut d = 0;
    loop {
        let (i, j) = (a + d, b + d);
        if i == n || j == n || s[i] != s[j] || s_type[i] != s_type[j] {
            return false;
        }
        // The types before were equal too, so i and j are both LMS positions or neither.
        if d > 0 && s_type[i] && !s_type[i - 1] {
            return true;
        }
        d += 1;
    }
}

/// Where each symbol's bucket starts in the suffix array.
fn bucket_heads(counts: &[u32]) -> Vec<u32> {
    let mut sum = 0;
    counts
        .iter()
        .map(|&c| {
            sum += c;
            sum - c
        })
        .collect()
}

/// Where each symbol's bucket ends (exclusive) in the suffix array.
fn bucket_tails(counts: &[u32]) -> Vec<u32> {
    let mut sum = 0;
    counts
        .iter()
        .map(|&c| {
            sum += c;
            sum
        })
        .collect()
}

/// From LMS suffixes seeded at their bucket ends, places every L-type suffix (left to right,
/// each after the suffix that follows it) and then every S-type suffix (right to left).
fn induce<T: Symbol>(s: &[T], s_type: &[bool], counts: &[u32], sa: &mut [u32]) {
    let n = s.len();
    let mut heads = bucket_heads(counts);
    // The last suffix is followed by the sentinel, the smallest of all: it comes first.
    let c = s[n - 1].index();
    sa[heads[c] as usize] = (n - 1) as u32;
    heads[c] += 1;
    for k in 0..n {
        let p = sa[k];
        if p != EMPTY && p > 0 && !s_type[p as usize - 1] {
            let c = s[p as usize - 1].index();
            sa[heads[c] as usize] = p - 1;
            heads[c] += 1;
        }
    }
    let mut tails = bucket_tails(counts);
    for k in (0..n).rev() {
        let p = sa[k];
        if p != EMPTY && p > 0 && s_type[p as usize - 1] {
            let c = s[p as usize - 1].index();
            tails[c] -= 1;
            sa[tails[c] as usize] = p - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(text: &[u8]) -> Vec<u32> {
        let mut sa: Vec<u32> = (0..text.len() as u32).collect();
        sa.sort_by(|&a, &b| text[a as usize..].cmp(&text[b as usize..]));
        sa
    }

    /// bsdiff 4.3's search as it is described: a naive suffix array with the empty suffix
    /// first, and full comparisons at every step.
    fn reference_match(text: &[u8], query: &[u8]) -> (usize, usize) {
        let mut order = vec![text.len()];
        order.extend(naive(text).into_iter().map(|p| p as usize));
        let (mut lo, mut hi) = (0, order.len() - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let suffix = &text[order[mid]..];
            let shorter = suffix.len().min(query.len());
            if suffix[..shorter] < query[..shorter] {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (lo_len, hi_len) = (
            common_prefix(&text[order[lo]..], query),
            common_prefix(&text[order[hi]..], query),
        );
        if lo_len > hi_len {
            (order[lo], lo_len)
        } else {
            (order[hi], hi_len)
        }
    }

    #[test]
    fn sorts_known_strings() {
        for text in [
            &b""[..],
            b"a",
            b"aa",
            b"ab",
            b"ba",
            b"banana",
            b"mississippi",
            b"aaaaaaaaaaaa",
            b"abababababab",
            b"\xff\x00\xff\x00\x00",
        ] {
            assert_eq!(suffix_array(text), naive(text), "{text:?}");
        }
    }

    #[test]
    fn sorts_repetitive_text_that_recurses_deeply() {
        let mut text = Vec::new();
        let mut fib = (b"a".to_vec(), b"ab".to_vec());
        while fib.1.len() < 5000 {
            let next = [fib.1.clone(), fib.0.clone()].concat();
            fib = (fib.1, next);
        }
        text.extend_from_slice(&fib.1);
        assert_eq!(suffix_array(&text), naive(&text));
    }

    #[test]
    fn search_keeps_bsdiffs_quirk() {
        // The suffix [1] at 3 is a prefix of the query, so the search turns left of it and
        // never sees [1, 0, 0, 1] at 0, the longer match; bsdiff does the same.
        let text = [1, 0, 0, 1];
        let sa = suffix_array(&text);
        assert_eq!(find_match(&text, &sa, &[1, 0]), (3, 1));
        assert_eq!(reference_match(&text, &[1, 0]), (3, 1));
        assert_eq!(find_match(&text, &sa, &[0, 0, 1, 7]), (1, 3));
    }

    #[test]
    fn common_prefix_counts_across_words() {
        assert_eq!(common_prefix(b"abcdefghijkl", b"abcdefghijXl"), 10);
        assert_eq!(common_prefix(b"abcdefgh", b"abcdefgh"), 8);
        assert_eq!(common_prefix(b"abc", b"abcdef"), 3);
        assert_eq!(common_prefix(b"", b"abc"), 0);
        assert_eq!(common_prefix(b"xbcdefghijk", b"abcdefghijk"), 0);
    }

    proptest! {
        #[test]
        fn matches_a_naive_sort(text in proptest::collection::vec(0u8..4, 0..300)) {
            prop_assert_eq!(suffix_array(&text), naive(&text));
        }

        #[test]
        fn finds_the_match_bsdiff_finds(
            text in proptest::collection::vec(0u8..3, 0..200),
            query in proptest::collection::vec(0u8..3, 0..20),
        ) {
            let sa = suffix_array(&text);
            let (pos, len) = find_match(&text, &sa, &query);
            prop_assert_eq!(&text[pos..pos + len], &query[..len]);
            prop_assert_eq!((pos, len), reference_match(&text, &query));
        }
    }
}
