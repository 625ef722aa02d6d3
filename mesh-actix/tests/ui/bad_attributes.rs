// Attribute mistakes stop at the first one, each with its own message.
use mesh_actix::MeshActor;

#[derive(MeshActor)]
#[mesh(durabel)]
struct Typo;

#[derive(MeshActor)]
#[mesh(name = "A", name = "B")]
struct TwoNames;

#[derive(MeshActor)]
#[mesh(idle_timeout_secs = "soon")]
struct NotANumber;

#[derive(MeshActor)]
struct Generic<T>(T);

fn main() {}
