//! The `mesh-node` program as the test harness starts it: the very same [`mesh_examples::node::run`]
//! as the `mesh-node` binary, plus one thing: it exits as soon as its standard input reaches end of
//! file.
//!
//! The harness (`mesh_tests::MeshNode`) gives every node a pipe as standard input and keeps the
//! write end for as long as the node should live. The kernel closes that end when the test process
//! goes away in any way at all (a test that panics, a harness that is killed with SIGKILL, a test
//! runner that times out), so no node outlives the tests that started it, without `unsafe` (no
//! `PR_SET_PDEATHSIG`, which Linux would also fire when merely the spawning *thread* exits). Being a
//! binary of the `mesh-tests` package, it is built by cargo with the tests and found through
//! `CARGO_BIN_EXE_mesh-node-under-test`: no test runs cargo.

use std::io::Read as _;

/// Exit status when the test process went away (`EX_SOFTWARE` of sysexits.h).
const ORPHANED: i32 = 70;

fn main() -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("stdin-watchdog".into())
        .spawn(|| {
            // Discards whatever comes; returns at end of file (or on an error reading).
            let mut buf = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            eprintln!("mesh-node-under-test: standard input closed (the test is gone); exiting");
            std::process::exit(ORPHANED);
        })?;
    mesh_examples::node::run()
}
