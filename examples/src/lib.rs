//! The example actors of the mesh contract, registered by `mesh-node`:
//! [`Counter`], [`GameActor`], [`Crasher`] and [`Sleeper`]. Each lives in its own module and
//! is an ordinary actix actor with `#[derive(MeshActor)]`.

mod actors;

pub use actors::{Counter, Crasher, GameActor, Sleeper};

use mesh_actix::Mesh;

/// Logs every panic as one line. Actor panics are caught and answered with `actor_crashed`,
/// so a node's log needs to say that one happened, not to print a backtrace for each.
pub fn log_panics_briefly(program: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{program}: caught panic: {info}")
    }));
}

/// Resolves on ctrl-c or SIGTERM: how the example binaries learn it is time to leave.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// Registers every example actor type on `mesh`.
pub fn register_examples(mesh: &Mesh) {
    mesh.register::<Counter>()
        .register::<GameActor>()
        .register::<Crasher>()
        .register::<Sleeper>();
}
