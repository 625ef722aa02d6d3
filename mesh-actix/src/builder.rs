//! [`MeshBuilder`]: everything a node is made of, given before it starts.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::{LeaseConfig, NodeId, ShardCount};

use crate::actor::MeshActor;
use crate::mesh::{Mesh, MeshConfig, Placement, StartError};
use crate::store::StateStore;
use crate::transport::RemoteTransport;

/// Builds a node's [`Mesh`]: its settings ([`MeshConfig`]), its actor types, its first
/// capabilities and its transport, all given before it starts, so that a started node is
/// complete from its first request. Obtain one with [`Mesh::builder`] (or
/// [`MeshBuilder::from_config`]).
///
/// ```
/// use mesh_actix::{Mesh, NodeId, Request};
/// # use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// # use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload};
/// # use serde_json::{json, Value};
/// # #[derive(MeshActor)]
/// # struct Counter { count: u64 }
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl MeshInit for Counter {
/// #     fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> { Ok(Counter { count: 0 }) }
/// # }
/// # impl Handler<Payload> for Counter {
/// #     type Result = MessageResult<Payload>;
/// #     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
/// #         self.count += 1;
/// #         MessageResult(json!({"ok": self.count}))
/// #     }
/// # }
///
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .register::<Counter>()
///     .capabilities(["counter"])
///     .mailbox_capacity(256)
///     .start()
///     .unwrap();
/// let reply = mesh.call(Request::new("Counter", "c1", "counter").unwrap()).await.unwrap();
/// assert_eq!(reply.result, json!({"ok": 1}));
/// # });
/// ```
#[must_use = "a builder does nothing until `start`"]
pub struct MeshBuilder {
    config: MeshConfig,
    registrations: Vec<fn(&Mesh)>,
    capabilities: Vec<String>,
    transport: Option<Arc<dyn RemoteTransport>>,
}

impl MeshBuilder {
    /// A node with these settings, no actor types, no capabilities and no transport yet.
    pub fn from_config(config: MeshConfig) -> MeshBuilder {
        MeshBuilder {
            config,
            registrations: Vec::new(),
            capabilities: Vec::new(),
            transport: None,
        }
    }

    /// Registers actor type `A` under its module name ([`MeshActor::MODULE`]), as
    /// [`Mesh::register`] does once the node runs.
    pub fn register<A: MeshActor>(mut self) -> MeshBuilder {
        self.registrations.push(|mesh| {
            mesh.register::<A>();
        });
        self
    }

    /// Capabilities this node can own from its start; more may follow at run time with
    /// [`Mesh::register_capabilities`]. Checked by [`MeshBuilder::start`]: a name that is
    /// empty or too long, or a set over the bounds, fails the start with a `bad_request`.
    pub fn capabilities<C: AsRef<str>>(
        mut self,
        capabilities: impl IntoIterator<Item = C>,
    ) -> MeshBuilder {
        let names = capabilities.into_iter().map(|c| c.as_ref().to_owned());
        self.capabilities.extend(names);
        self
    }

    /// How this node reaches the other nodes (`mesh_http::HttpTransport` over HTTP, or an
    /// [`InProcessTransport`](crate::InProcessTransport) link). Without one, a request that
    /// another node owns fails with `owner_unavailable`: a node alone needs none.
    pub fn transport(mut self, transport: impl RemoteTransport) -> MeshBuilder {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// [`MeshConfig::shards`].
    pub fn shards(mut self, shards: ShardCount) -> MeshBuilder {
        self.config.shards = shards;
        self
    }

    /// [`MeshConfig::arbiters`].
    pub fn arbiters(mut self, arbiters: NonZeroUsize) -> MeshBuilder {
        self.config.arbiters = arbiters;
        self
    }

    /// [`MeshConfig::placement`].
    pub fn placement(mut self, placement: Placement) -> MeshBuilder {
        self.config.placement = placement;
        self
    }

    /// [`MeshConfig::mailbox_capacity`].
    pub fn mailbox_capacity(mut self, capacity: usize) -> MeshBuilder {
        self.config.mailbox_capacity = capacity;
        self
    }

    /// [`MeshConfig::lease`].
    pub fn lease(mut self, lease: LeaseConfig) -> MeshBuilder {
        self.config.lease = lease;
        self
    }

    /// [`MeshConfig::joining`]: this node joins an existing cluster and owns nothing until it
    /// has heard from it.
    pub fn joining(mut self, joining: bool) -> MeshBuilder {
        self.config.joining = joining;
        self
    }

    /// [`MeshConfig::store`]: where durable actor types keep their state.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> MeshBuilder {
        self.config.store = Some(store);
        self
    }

    /// [`MeshConfig::idle_timeout`]: `None` never passivates durable activations.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> MeshBuilder {
        self.config.idle_timeout = timeout;
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// The id of the node this builds.
    pub fn node_id(&self) -> &NodeId {
        &self.config.node_id
    }

    /// Starts the node: its arbiter pool and its `ShardRouter`, with every actor type,
    /// capability and the transport given. Must run inside an actix `System`.
    pub fn start(self) -> Result<Mesh, StartError> {
        let mesh = Mesh::launch(self.config, &self.capabilities, self.transport)?;
        for register in self.registrations {
            register(&mesh);
        }
        Ok(mesh)
    }
}

impl From<MeshConfig> for MeshBuilder {
    fn from(config: MeshConfig) -> MeshBuilder {
        MeshBuilder::from_config(config)
    }
}

#[cfg(test)]
mod tests {
    use actix::{Actor, Context, Handler, MessageResult};
    use mesh_core::{ActorId, MeshError, Request};
    use serde_json::{json, Value};

    use super::*;
    use crate::{InitError, MeshInit, Payload};

    #[derive(crate::MeshActor)]
    struct Echo;

    impl Actor for Echo {
        type Context = Context<Self>;
    }

    impl MeshInit for Echo {
        fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
            Ok(Echo)
        }
    }

    impl Handler<Payload> for Echo {
        type Result = MessageResult<Payload>;
        fn handle(&mut self, msg: Payload, _: &mut Context<Self>) -> Self::Result {
            MessageResult(msg.body)
        }
    }

    fn builder() -> MeshBuilder {
        Mesh::builder(NodeId::new("built").unwrap(), "127.0.0.1:1")
    }

    #[actix_rt::test]
    async fn a_started_node_has_its_types_and_capabilities_from_its_first_request() {
        let mesh = builder()
            .register::<Echo>()
            .capabilities(["echo", "other"])
            .start()
            .unwrap();
        let modules = mesh.modules();
        let names: Vec<&str> = modules.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["Echo"]);
        let capabilities = mesh.capabilities();
        let capabilities: Vec<&str> = capabilities.iter().map(|c| c.as_str()).collect();
        assert_eq!(capabilities, ["echo", "other"]);
        // No register_capabilities awaited: the node owns them as it starts.
        let shard = mesh.shard_for("e1");
        assert_eq!(mesh.owner(shard, "echo").unwrap(), *mesh.node_id());
        let request = Request::new("Echo", "e1", "echo")
            .unwrap()
            .with_payload(json!(7));
        assert_eq!(mesh.call(request).await.unwrap().result, json!(7));
    }

    #[actix_rt::test]
    async fn invalid_capabilities_fail_the_start_as_a_bad_request() {
        for bad in [vec![String::new()], vec!["x".repeat(256)]] {
            match builder().capabilities(bad).start() {
                Err(StartError::Capabilities(MeshError::BadRequest(_))) => {}
                Err(other) => panic!("expected a bad_request, got {other}"),
                Ok(_) => panic!("started with invalid capabilities"),
            }
        }
        let too_many = (0..=mesh_core::MAX_CAPABILITIES).map(|i| format!("c{i}"));
        assert!(matches!(
            builder().capabilities(too_many).start(),
            Err(StartError::Capabilities(MeshError::BadRequest(_)))
        ));
    }
}
