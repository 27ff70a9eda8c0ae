//! Drakkar's quick start: a replicated counter, one replica, in one process.
//! `cargo run -p drakkar --example quickstart`

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use drakkar::statemachine::{SmEntry, SmError, StateMachine, Stop};
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, GroupId, NodeHost, NodeHostConfig, ReplicaId, StartMode, StateMachineBox};

/// The state machine: a counter that every committed entry increments by its command's length.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        for e in entries {
            self.0 += e.cmd.len() as u64;
            e.result.value = self.0;
        }
        Ok(())
    }
    fn lookup(&self, _query: &[u8]) -> Result<Bytes, SmError> {
        Ok(Bytes::from(self.0.to_string()))
    }
    fn save_snapshot(&self, w: &mut dyn Write, _stop: &Stop) -> Result<(), SmError> {
        Ok(w.write_all(&self.0.to_le_bytes())?)
    }
    fn recover_from_snapshot(&mut self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        let mut b = [0; 8];
        r.read_exact(&mut b)?;
        self.0 = u64::from_le_bytes(b);
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("drakkar-quickstart-{}", std::process::id()));
    // One NodeHost (one per process), reachable by its peers at its address.
    let net = InProcessNetwork::new();
    let host = NodeHost::new(NodeHostConfig::new(&dir, "127.0.0.1:7001"), net.transport())?;
    net.register("127.0.0.1:7001", host.sink());
    // Group 1, a one-replica group whose replica 1 lives here.
    let members = [(ReplicaId(1), "127.0.0.1:7001".to_string())].into();
    let sm = StateMachineBox::regular(Counter::default());
    host.start_replica(GroupId(1), ReplicaId(1), StartMode::Founding(members), sm, GroupConfig::default())?;
    // A proposal returns once committed and applied; a linearizable read sees it.
    let t = Duration::from_secs(10);
    let r = host.propose(GroupId(1), Bytes::from_static(b"hello"), t).await?;
    assert_eq!(r.value, 5);
    assert_eq!(host.read(GroupId(1), Bytes::new(), t).await?, "5");
    host.close();
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
