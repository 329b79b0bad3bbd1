//! The fuzz harness over generated inputs, so `cargo test` covers it on stable Rust. The
//! inputs are biased towards CSV and JSON fragments so the interesting paths are reached.

use proptest::prelude::*;

use crate::harness::exercise;

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::sample::select(vec![
            &b"a,b,c\n"[..],
            b"c,a,b,x\r\n",
            b"\xEF\xBB\xBF",
            b"\"",
            b",",
            b"\r\n",
            b"\n",
            b"1",
            b"61234.5",
            b"2024-05-15T13:45:00Z",
            b"2024-02-30",
            b"true",
            b"\xff",
            b"[",
            b"]",
            b"{",
            b"}",
            b"\"a\":",
            b"\"b\":1,",
            b"\"x\":[1,\n2]",
            b"null",
            b"a,a\n",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fuzz_harness_never_panics(control in any::<u8>(), pieces in prop::collection::vec(fragment(), 0..24)) {
        let mut data = vec![control];
        data.extend(pieces.concat());
        exercise(&data);
    }
}
