//! [`ShardedKv`]: one keyspace over many KV groups, keys mapped to groups by a stable hash.
//!
//! The mapping is FNV-1a (64 bit) of the key, then jump consistent hashing (Lamping and Veach, 2014) onto
//! the list of groups: it is the same in every process and every version, and growing the list from `n`
//! to `n + 1` groups moves only about `1 / (n + 1)` of the keys.

use bytes::Bytes;

use crate::client::Client;
use crate::error::ClientError;
use crate::pb::{self, Consistency};

/// FNV-1a, 64 bit.
pub fn fnv1a64(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash: a bucket in `0..buckets` for `key` (`buckets` > 0).
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    let n = i64::try_from(buckets).unwrap_or(i64::MAX);
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

/// A KV keyspace spread over several groups.
#[derive(Clone)]
pub struct ShardedKv {
    client: Client,
    groups: Vec<u64>,
}

impl ShardedKv {
    /// Keys spread over `groups` (in this order: the order is part of the mapping).
    pub fn new(client: Client, groups: Vec<u64>) -> Result<Self, ClientError> {
        if groups.is_empty() {
            return Err(ClientError::InvalidRequest("a sharded keyspace needs at least one group".into()));
        }
        Ok(ShardedKv { client, groups })
    }

    /// Asks the first endpoint that answers which KV groups it runs (sorted ascending).
    pub async fn discover(client: Client) -> Result<Self, ClientError> {
        let mut last = ClientError::NoEndpoints;
        for e in client.endpoints().to_vec() {
            match client.node_info(&e).await {
                Ok(info) if !info.kv_groups.is_empty() => {
                    let mut groups = info.kv_groups;
                    groups.sort_unstable();
                    return Self::new(client, groups);
                }
                Ok(_) => last = ClientError::Protocol(format!("{e} runs no KV group")),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// The groups, in mapping order.
    pub fn groups(&self) -> &[u64] {
        &self.groups
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The group holding `key`.
    pub fn group_of(&self, key: &[u8]) -> u64 {
        self.groups[jump_hash(fnv1a64(key), self.groups.len())]
    }

    /// Writes `key`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<pb::PutResponse, ClientError> {
        let key = key.into();
        self.client.put(self.group_of(&key), key, value).await
    }

    /// Reads `key`.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<pb::KeyValue>, ClientError> {
        let key = key.into();
        self.client.get(self.group_of(&key), key, consistency).await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<pb::DeleteResponse, ClientError> {
        let key = key.into();
        self.client.delete(self.group_of(&key), key).await
    }

    /// Reads keys starting with `prefix` across every group, merged in key order (at most `limit`, 0:
    /// 10 000 per group). `more` is set if any group had more.
    pub async fn scan_prefix(
        &self,
        prefix: impl Into<Bytes>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<pb::ScanResponse, ClientError> {
        let prefix = prefix.into();
        let mut items = Vec::new();
        let mut more = false;
        for &g in &self.groups {
            let r = self.client.scan(g, crate::kv::prefix(prefix.clone()), limit, false, consistency).await?;
            more |= r.more;
            items.extend(r.items);
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        if limit > 0 && items.len() > limit as usize {
            items.truncate(limit as usize);
            more = true;
        }
        Ok(pb::ScanResponse { items, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable() {
        // Fixed values: changing them would move keys between groups in running clusters.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(fnv1a64(b"user/42"), 1), 0);
        let v: Vec<usize> = (0..8u64).map(|k| jump_hash(fnv1a64(&k.to_le_bytes()), 4)).collect();
        assert!(v.iter().all(|&b| b < 4));
    }

    #[test]
    fn growing_moves_few_keys_and_only_to_the_new_group() {
        let keys: Vec<u64> = (0..10_000u64).map(|k| fnv1a64(format!("key-{k}").as_bytes())).collect();
        let moved = keys
            .iter()
            .filter(|&&k| {
                let (a, b) = (jump_hash(k, 10), jump_hash(k, 11));
                if a != b {
                    assert_eq!(b, 10, "a moved key goes to the new bucket");
                }
                a != b
            })
            .count();
        assert!((600..1300).contains(&moved), "{moved} of 10000 moved (expected about 909)");
        let mut counts = [0usize; 10];
        for &k in &keys {
            counts[jump_hash(k, 10)] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
