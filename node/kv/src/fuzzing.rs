//! Entry points for the fuzz targets under `/fuzz` (feature `fuzzing`), also run by a deterministic test.
//! Not a stable API. Each function returns normally whatever its input, or panics when an invariant it
//! checks fails (the fuzzer reports both the same way).

use crate::{Command, CommandResult, Query, QueryResult};

/// Decodes `data` as each message of the KV codec ([`Command`], [`Query`], [`CommandResult`],
/// [`QueryResult`]). Invariant: what decodes re-encodes (a command or query without error) to bytes that
/// decode to the same value. Returns how many of the four decoded.
pub fn codec(data: &[u8]) -> usize {
    let mut decoded = 0;
    if let Ok(c) = Command::decode(data) {
        let again = c.encode().unwrap_or_else(|e| panic!("{c:?} decoded but does not encode: {e}"));
        assert_eq!(Command::decode(&again).ok().as_ref(), Some(&c), "a command that does not round-trip");
        decoded += 1;
    }
    if let Ok(q) = Query::decode(data) {
        let again = q.encode().unwrap_or_else(|e| panic!("{q:?} decoded but does not encode: {e}"));
        assert_eq!(Query::decode(&again).ok().as_ref(), Some(&q), "a query that does not round-trip");
        decoded += 1;
    }
    if let Ok(r) = CommandResult::decode(data) {
        assert_eq!(
            CommandResult::decode(&r.encode()).ok().as_ref(),
            Some(&r),
            "a command result that does not round-trip"
        );
        decoded += 1;
    }
    if let Ok(r) = QueryResult::decode(data) {
        assert_eq!(
            QueryResult::decode(&r.encode()).ok().as_ref(),
            Some(&r),
            "a query result that does not round-trip"
        );
        decoded += 1;
    }
    decoded
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use drakkar_raft::Rng;

    use super::*;
    use crate::{
        CasExpect, CasNew, Compare, CompareOp, CompareTarget, KeyMeta, KeyRange, KeyValue, Op, OpResult, Txn,
    };

    fn samples() -> Vec<Bytes> {
        let meta = KeyMeta { version: 2, mod_index: 9, create_index: 4 };
        let kv = KeyValue { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v"), meta };
        vec![
            Command::put("k", "v").encode().unwrap(),
            Command::CompareAndSwap {
                key: Bytes::from_static(b"k"),
                expected: CasExpect::Version(3),
                new: CasNew::Put(Bytes::from_static(b"w")),
            }
            .encode()
            .unwrap(),
            Command::Txn(Txn {
                compares: vec![Compare {
                    key: Bytes::from_static(b"a"),
                    op: CompareOp::Gt,
                    target: CompareTarget::ModIndex(5),
                }],
                success: vec![Op::DeleteRange { range: KeyRange::Prefix(Bytes::from_static(b"p")) }],
                failure: vec![Op::Get { key: Bytes::from_static(b"a") }],
            })
            .encode()
            .unwrap(),
            Query::Scan {
                range: KeyRange::Span { start: Bytes::new(), end: None },
                limit: 10,
                keys_only: true,
            }
            .encode()
            .unwrap(),
            CommandResult::Txn { succeeded: true, results: vec![OpResult::Get(Some(kv.clone()))] }.encode(),
            CommandResult::Rejected { reason: "no".into() }.encode(),
            QueryResult::Scan { items: vec![kv], more: false }.encode(),
        ]
    }

    /// With `DRAKKAR_FUZZ_SEEDS` set, writes `samples` as seeds of fuzz target `target`, in
    /// `$DRAKKAR_FUZZ_SEEDS/<target>/` (see docs/development.md, "Fuzzing").
    fn write_seeds(target: &str, samples: &[&[u8]]) {
        let Some(dir) = std::env::var_os("DRAKKAR_FUZZ_SEEDS") else { return };
        let dir = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in samples.iter().enumerate() {
            std::fs::write(dir.join(format!("{}-seed-{i}", env!("CARGO_PKG_NAME"))), s).unwrap();
        }
    }

    /// The real encoders' output decodes; mutations of it never panic and keep the round trip.
    #[test]
    fn codec_takes_valid_and_mutated_input() {
        let samples = samples();
        for s in &samples {
            assert!(codec(s) >= 1, "{s:?} decodes");
        }
        write_seeds("kv_codec", &samples.iter().map(|s| &s[..]).collect::<Vec<_>>());
        let mut rng = Rng::new(0xC0DEC);
        for _ in 0..2000 {
            let mut m = samples[rng.range(0, samples.len() as u64) as usize].to_vec();
            for _ in 0..rng.range(1, 4) {
                let i = rng.range(0, m.len() as u64) as usize;
                m[i] = rng.next_u64() as u8;
            }
            m.truncate(rng.range(0, m.len() as u64 + 1) as usize);
            codec(&m);
        }
    }
}
