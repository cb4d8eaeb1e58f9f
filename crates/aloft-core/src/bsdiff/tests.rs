//! Round trips, refused patches, and checks against Debian's `bsdiff` and `bspatch` commands.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use bzip2::Compression;
use bzip2::write::BzEncoder;
use proptest::prelude::*;

use super::*;

/// A small deterministic generator (splitmix64), so the inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// About `len` bytes of text that looks like a minified JavaScript bundle: lines of
/// functions, requires and object literals over a small vocabulary, numbered like modules.
fn bundle_like(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "value",
        "props",
        "state",
        "render",
        "children",
        "style",
        "onPress",
        "navigation",
        "useEffect",
        "useState",
        "module",
        "exports",
        "default",
        "create",
        "element",
        "string",
        "number",
        "object",
        "length",
        "push",
        "map",
        "filter",
        "reduce",
        "then",
        "catch",
        "resolve",
        "key",
        "index",
        "theme",
        "color",
        "width",
        "height",
        "flex",
        "margin",
        "padding",
        "text",
        "view",
        "image",
        "source",
        "uri",
    ];
    let mut rng = Rng(seed);
    let mut out = String::new();
    let mut line = 0;
    while out.len() < len {
        let w = |rng: &mut Rng| WORDS[rng.below(WORDS.len())];
        let (a, b, c) = (w(&mut rng), w(&mut rng), w(&mut rng));
        let n = rng.below(1000);
        match rng.below(4) {
            0 => out.push_str(&format!(
                "__d(function(g,r,i,a,m,e,d){{var {a}=r(d[{n}]);function {b}{line}(t){{return t.{c}.{a}({b},{n})}}e.{c}={b}{line}}},{line},[{n},{}]);\n",
                n + 1
            )),
            1 => out.push_str(&format!("var {a}{n}=require(\"./{b}/{c}\");{a}{n}.{b}=\"{c} {a} {n}\";\n")),
            2 => out.push_str(&format!("const {c}{line}={{{a}:{n},{b}:\"{c}\",{c}:function(){{return this.{a}+{n}}}}};\n")),
            _ => out.push_str(&format!("if({a}.{b}>{n}){{{c}.push({a});}}else{{{b}={c}[{n}]||null;}}\n")),
        }
        line += 1;
    }
    out.into_bytes()
}

/// The lines of `text`, each with its line break.
fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|&b| b == b'\n').collect()
}

fn round_trip(old: &[u8], new: &[u8]) -> Vec<u8> {
    let made = diff(old, new).expect("diff");
    assert_eq!(&made[..8], MAGIC);
    let rebuilt = patch(old, &made).expect("patch");
    assert!(
        rebuilt == new,
        "round trip changed the file ({} bytes in, {} out)",
        new.len(),
        rebuilt.len()
    );
    made
}

#[test]
fn round_trips_edge_cases() {
    let text = b"hello, patch world".repeat(20);
    round_trip(b"", b"");
    round_trip(b"", &text);
    round_trip(&text, b"");
    round_trip(&text, &text);
    round_trip(b"a", b"b");
    round_trip(&[0; 1000], &[0; 999]);
    round_trip(&[0; 1000], &[1; 1000]);
}

#[test]
fn identical_files_make_a_tiny_patch() {
    let text = bundle_like(1, 100_000);
    let made = round_trip(&text, &text);
    assert!(made.len() < 200, "{} bytes", made.len());
}

#[test]
fn round_trips_random_bytes() {
    let mut rng = Rng(7);
    for len in [1, 10, 1000, 50_000] {
        let (old, new) = (rng.bytes(len), rng.bytes(len + 17));
        round_trip(&old, &new);
        // A mostly shared pair: a random tail replaced.
        let mut edited = old.clone();
        edited.truncate(len / 2);
        edited.extend(rng.bytes(len / 3));
        round_trip(&old, &edited);
    }
}

#[test]
fn round_trips_insertions_and_deletions_in_the_middle() {
    let old = bundle_like(2, 60_000);
    let mid = old.len() / 2;
    let inserted = [&old[..mid], b"function added(){return 42}\n".as_slice(), &old[mid..]].concat();
    let deleted = [&old[..mid], &old[mid + 5000..]].concat();
    let moved = [&old[mid..], &old[..mid]].concat();
    for new in [inserted, deleted, moved] {
        let made = round_trip(&old, &new);
        assert!(made.len() < 2_000, "{} bytes", made.len());
    }
}

#[test]
fn round_trips_a_large_input_with_scattered_edits() {
    let old = bundle_like(3, 1_500_000);
    let mut new = Vec::with_capacity(old.len());
    for (i, line) in lines(&old).into_iter().enumerate() {
        match i % 97 {
            0 => new.extend_from_slice(b"var inserted=1;\n"),
            50 => continue,
            _ => {}
        }
        new.extend_from_slice(line);
    }
    round_trip(&old, &new);
}

proptest! {
    #[test]
    fn patch_of_diff_rebuilds_new(
        old in proptest::collection::vec(0u8..8, 0..2000),
        edits in proptest::collection::vec((0usize..2000, 0usize..40, proptest::collection::vec(0u8..8, 0..40)), 0..6),
        unrelated in proptest::collection::vec(any::<u8>(), 0..300),
        use_unrelated in any::<bool>(),
    ) {
        // Either an edited copy of old (the usual case) or bytes unrelated to it.
        let new = if use_unrelated {
            unrelated
        } else {
            let mut new = old.clone();
            for (at, remove, insert) in edits {
                let at = at.min(new.len());
                let end = (at + remove).min(new.len());
                new.splice(at..end, insert);
            }
            new
        };
        let made = diff(&old, &new).expect("diff");
        prop_assert_eq!(patch(&old, &made).expect("patch"), new);
    }
}

// --- Refused patches ---

fn compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = BzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

/// A patch made by hand: header numbers as given, then the three blocks compressed.
fn handmade(entries: &[[i64; 3]], diff: &[u8], extra: &[u8], new_size: i64) -> Vec<u8> {
    let control: Vec<u8> = entries.iter().flatten().flat_map(|&n| encode_i64(n)).collect();
    let (control, diff, extra) = (compress(&control), compress(diff), compress(extra));
    let mut patch = MAGIC.to_vec();
    for n in [control.len() as i64, diff.len() as i64, new_size] {
        patch.extend_from_slice(&encode_i64(n));
    }
    [patch, control, diff, extra].concat()
}

#[test]
fn numbers_are_encoded_as_bsdiff_does() {
    assert_eq!(encode_i64(0), [0; 8]);
    assert_eq!(encode_i64(0x0102), [2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(encode_i64(-5), [5, 0, 0, 0, 0, 0, 0, 0x80]);
    for n in [0, 1, -1, 300, -70_000, i64::MAX, -i64::MAX] {
        assert_eq!(decode_i64(encode_i64(n)), n);
    }
    assert_eq!(decode_i64([0, 0, 0, 0, 0, 0, 0, 0x80]), 0);
}

#[test]
fn a_handmade_patch_applies() {
    let old = b"abcdef";
    let made = handmade(&[[3, 2, 1], [2, 0, 0]], &[0, 0, 1, 0, 0], b"XY", 7);
    assert_eq!(patch(old, &made).unwrap(), b"abdXYef");
}

#[test]
fn refuses_malformed_headers() {
    let good = diff(b"old file", b"new file").unwrap();
    assert!(matches!(patch(b"", b""), Err(PatchError::TruncatedHeader { len: 0 })));
    assert!(matches!(
        patch(b"", &good[..31]),
        Err(PatchError::TruncatedHeader { len: 31 })
    ));
    let mut bad = good.clone();
    bad[..8].copy_from_slice(b"BSDIFF41");
    assert!(matches!(patch(b"old file", &bad), Err(PatchError::BadMagic)));

    let with = |at: usize, n: i64| {
        let mut p = good.clone();
        p[at..at + 8].copy_from_slice(&encode_i64(n));
        p
    };
    let field = |at| match patch(b"old file", &with(at, -1)) {
        Err(PatchError::NegativeLength { field, value: -1 }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(8), HeaderField::ControlLength);
    assert_eq!(field(16), HeaderField::DiffLength);
    assert_eq!(field(24), HeaderField::NewSize);
    assert!(matches!(
        patch(b"", &with(24, i64::MAX)),
        Err(PatchError::NewTooLarge { .. })
    ));
    assert!(matches!(
        patch(b"", &with(24, MAX_SIZE as i64 + 1)),
        Err(PatchError::NewTooLarge { .. })
    ));
    assert!(matches!(
        patch(b"", &with(8, 1 << 40)),
        Err(PatchError::BlocksPastEnd { .. })
    ));
    assert!(matches!(
        patch(b"", &with(16, i64::MAX)),
        Err(PatchError::BlocksPastEnd { .. })
    ));
}

#[test]
fn refuses_truncated_patches_at_every_length() {
    let old = bundle_like(4, 20_000);
    let mut new = old.clone();
    new.splice(5000..5010, *b"a change, bigger than the bytes it replaces");
    new.extend_from_slice(&Rng(5).bytes(3000));
    let made = diff(&old, &new).unwrap();
    for len in 0..made.len() {
        let result = patch(&old, &made[..len]);
        assert!(result.is_err(), "a patch cut to {len} of {} bytes applied", made.len());
    }
}

#[test]
fn refuses_blocks_that_are_not_bzip2() {
    let mut made = handmade(&[[0, 2, 0]], b"", b"XY", 2);
    // The byte after the header is the start of the control block's "BZh9".
    made[HEADER_LEN] = b'X';
    assert!(matches!(
        patch(b"", &made),
        Err(PatchError::Corrupt {
            block: Block::Control,
            ..
        })
    ));
}

#[test]
fn refuses_control_entries_out_of_range() {
    let old = b"abcdef";
    let refuse = |entries: &[[i64; 3]], diff: &[u8], extra: &[u8], size| {
        patch(old, &handmade(entries, diff, extra, size)).expect_err("applied")
    };
    // Diff bytes past the new file's size.
    assert!(matches!(
        refuse(&[[4, 0, 0]], &[0; 4], b"", 3),
        PatchError::PastNewEnd { entry: 0, len: 4, .. }
    ));
    // Extra bytes past it.
    assert!(matches!(
        refuse(&[[1, 0, 0], [0, 5, 0]], &[0], b"abcde", 3),
        PatchError::PastNewEnd {
            entry: 1,
            at: 1,
            len: 5,
            ..
        }
    ));
    // Diff bytes past the old file's end, and before its start.
    assert!(matches!(
        refuse(&[[7, 0, 0]], &[0; 7], b"", 7),
        PatchError::PastOldEnd { entry: 0, len: 7, .. }
    ));
    assert!(matches!(
        refuse(&[[1, 0, -3], [2, 0, 0]], &[0; 3], b"", 3),
        PatchError::PastOldEnd { entry: 1, at: -2, .. }
    ));
    // A seek that overflows.
    assert!(matches!(
        refuse(&[[1, 0, i64::MAX], [1, 0, 0]], &[0; 2], b"", 2),
        PatchError::SeekOverflow { entry: 0 }
    ));
    // Negative lengths.
    assert!(matches!(
        refuse(&[[-1, 0, 0]], b"", b"", 3),
        PatchError::NegativeControl { entry: 0, value: -1 }
    ));
    assert!(matches!(
        refuse(&[[0, -2, 0]], b"", b"", 3),
        PatchError::NegativeControl { entry: 0, value: -2 }
    ));
    // The control block ends before the new file is complete: its size does not match.
    assert!(matches!(
        refuse(&[[2, 0, 0]], &[0; 2], b"", 5),
        PatchError::BlockEnded {
            block: Block::Control,
            written: 2,
            expected: 5
        }
    ));
    // The diff and extra blocks end before the entries are done with them.
    assert!(matches!(
        refuse(&[[3, 0, 0]], &[0; 2], b"", 3),
        PatchError::BlockEnded { block: Block::Diff, .. }
    ));
    assert!(matches!(
        refuse(&[[0, 3, 0]], b"", b"ab", 3),
        PatchError::BlockEnded {
            block: Block::Extra,
            ..
        }
    ));
    // Empty entries, more than the new file's size allows.
    let empty = vec![[0, 0, 0]; 10];
    assert!(matches!(
        refuse(&empty, b"", b"", 3),
        PatchError::TooManyEntries { expected: 3 }
    ));
}

proptest! {
    #[test]
    fn damaged_patches_are_refused_or_applied_never_panic(
        damage in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        in_header in any::<bool>(),
    ) {
        let old = bundle_like(11, 3000);
        let new = [&old[..1000], b"an edit".as_slice(), &old[1500..]].concat();
        let mut made = diff(&old, &new).unwrap();
        for (at, flip) in damage {
            let at = if in_header { at % HEADER_LEN } else { at % made.len() };
            made[at] ^= flip;
        }
        if let Ok(rebuilt) = patch(&old, &made) {
            // A damaged size in the header could only be refused: the blocks would not fit it.
            prop_assert_eq!(rebuilt.len(), new.len());
        }
    }

    #[test]
    fn arbitrary_control_entries_are_refused_or_applied_never_panic(
        entries in proptest::collection::vec(proptest::array::uniform3(-20i64..20), 0..8),
        diff_bytes in proptest::collection::vec(any::<u8>(), 0..40),
        extra_bytes in proptest::collection::vec(any::<u8>(), 0..40),
        new_size in -2i64..50,
    ) {
        let made = handmade(&entries, &diff_bytes, &extra_bytes, new_size);
        if let Ok(rebuilt) = patch(b"0123456789", &made) {
            prop_assert_eq!(rebuilt.len() as i64, new_size);
        }
    }
}

#[test]
fn errors_read_as_sentences() {
    let err = patch(b"", &handmade(&[[0, 0, 0]], b"", b"", 5)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the control block ended early, with 0 of the new file's 5 bytes written"
    );
}

// --- Against Debian's bsdiff and bspatch ---

/// The path of a command of Debian's `bsdiff` package; fails the test when it is missing.
fn debian_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: these tests check the patches against an independent \
             implementation, Debian's `bsdiff` package (apt-get install bsdiff)"
            )
        })
}

/// Runs Debian's `bsdiff` on the pair; returns its patch.
fn debian_diff(old: &[u8], new: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (o, n, p) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("patch"));
    std::fs::write(&o, old).unwrap();
    std::fs::write(&n, new).unwrap();
    let status = Command::new(debian_tool("bsdiff"))
        .arg(&o)
        .arg(&n)
        .arg(&p)
        .status()
        .unwrap();
    assert!(status.success(), "bsdiff failed: {status}");
    std::fs::read(&p).unwrap()
}

/// Runs Debian's `bspatch` on old and the patch; returns the file it made.
fn debian_patch(old: &[u8], made: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (o, n, p) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("patch"));
    std::fs::write(&o, old).unwrap();
    std::fs::write(&p, made).unwrap();
    let status = Command::new(debian_tool("bspatch"))
        .arg(&o)
        .arg(&n)
        .arg(&p)
        .status()
        .unwrap();
    assert!(status.success(), "bspatch failed: {status}");
    std::fs::read(&n).unwrap()
}

/// Pairs for the checks against Debian's commands: edge cases, edits and unrelated bytes.
fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    let old = bundle_like(6, 80_000);
    let mid = old.len() / 2;
    let mut rng = Rng(8);
    vec![
        (Vec::new(), b"from nothing".to_vec()),
        (b"to nothing".to_vec(), Vec::new()),
        (old.clone(), old.clone()),
        (
            old.clone(),
            [&old[..mid], b"/* inserted */".as_slice(), &old[mid + 100..]].concat(),
        ),
        (old.clone(), [&old[mid..], &old[..mid]].concat()),
        (old.clone(), bundle_like(9, 70_000)),
        (rng.bytes(5000), rng.bytes(6000)),
    ]
}

#[test]
fn debian_bspatch_applies_our_patches() {
    for (old, new) in pairs() {
        let made = diff(&old, &new).unwrap();
        assert!(debian_patch(&old, &made) == new, "bspatch made a different file");
    }
}

#[test]
fn we_apply_debian_bsdiff_patches() {
    // Debian's bsdiff maps its inputs into memory and fails on an empty one.
    for (old, new) in pairs()
        .into_iter()
        .filter(|(old, new)| !old.is_empty() && !new.is_empty())
    {
        let theirs = debian_diff(&old, &new);
        assert!(patch(&old, &theirs).unwrap() == new, "our patch made a different file");
    }
}

#[test]
fn patches_are_byte_for_byte_those_of_debian_bsdiff() {
    // The matching follows bsdiff 4.3 step by step, down to which of several equally long
    // matches it picks, and the bzip2 backend compresses as libbz2 does: the same patch.
    for (old, new) in pairs()
        .into_iter()
        .filter(|(old, new)| !old.is_empty() && !new.is_empty())
    {
        let (ours, theirs) = (diff(&old, &new).unwrap(), debian_diff(&old, &new));
        assert!(
            ours == theirs,
            "ours {} bytes, Debian bsdiff {} bytes",
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn patches_are_no_larger_than_debian_bsdiff() {
    let old = bundle_like(10, 300_000);
    let old_lines = lines(&old);
    let mid = old_lines.len() / 2;
    let join = |parts: Vec<&[u8]>| parts.concat();

    let mut one_line = old_lines.clone();
    one_line[mid] = b"var changed=require(\"./changed\");changed.value=\"a new value\";\n";
    let mut shifted = old_lines.clone();
    shifted.splice(
        10..10,
        [b"import \"./polyfill\";\n".as_slice(), b"const banner=\"v2\";\n"],
    );
    let mut scattered = old_lines.clone();
    for line in scattered.iter_mut().step_by(40) {
        *line = b"e.default=null;\n";
    }
    let cases = [
        ("one line changed", join(one_line)),
        ("offsets shifted", join(shifted)),
        ("scattered", join(scattered)),
    ];
    for (name, new) in cases {
        let ours = round_trip(&old, &new).len();
        let theirs = debian_diff(&old, &new).len();
        eprintln!("{name}: ours {ours} bytes, Debian bsdiff {theirs} bytes");
        assert!(
            ours as f64 <= theirs as f64 * 1.02,
            "{name}: ours {ours} bytes, Debian bsdiff {theirs} bytes"
        );
    }
}
