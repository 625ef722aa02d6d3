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

fn main() -> anyhow::Result<()> {
    mesh_tests::lifeline::exit_when_stdin_closes("mesh-node-under-test")?;
    mesh_examples::node::run()
}
