//! openraft's own storage conformance suite against `RocksLogStore` and
//! `MachineStore<MemMachine>`, each case on fresh stores in a fresh directory.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use veritrace_consensus::testkit::MemMachine;
use veritrace_consensus::{MachineStore, RocksLogStore, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, RocksLogStore, MachineStore<MemMachine>, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, RocksLogStore, MachineStore<MemMachine>), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = RocksLogStore::open(&dir.path().join("log")).expect("open log store");
        let machine = MachineStore::open(MemMachine::new(), &dir.path().join("snapshots"), 1024 * 1024)
            .expect("open machine store");
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
