//! The embedded example's service (`mesh_examples::embedded`, an actix-web service with a mesh
//! node inside) as the test harness starts it: the very same program as
//! `cargo run --example embedded`, which exits when its standard input closes, as
//! `mesh-node-under-test` does (see there).

fn main() -> anyhow::Result<()> {
    mesh_tests::lifeline::exit_when_stdin_closes("embedded-under-test")?;
    mesh_examples::embedded::run()
}
