//! What a user writes: an actix actor that handles [`Payload`] and knows how to [`MeshInit`].

use actix::dev::MessageResponse;
use actix::prelude::*;
use mesh_core::ActorId;
use serde_json::Value;

/// Whether a payload came from `call` (the reply goes back to the caller) or `cast` (the reply
/// is discarded).
///
/// ```
/// use mesh_actix::{Delivery, Payload};
/// use serde_json::json;
///
/// assert_eq!(Payload::cast(json!({"action": "reset"})).delivery, Delivery::Cast);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// `Mesh::call`: the caller waits for the reply.
    Call,
    /// `Mesh::cast`: nobody waits; the reply is discarded.
    Cast,
}

/// The message mesh delivers to an actor: the request's JSON payload.
///
/// The handler's reply is a JSON value. Sync handlers return
/// `MessageResult<Payload>`; handlers that wait return `ResponseActFuture<Self, Value>`.
///
/// ```
/// use mesh_actix::{Delivery, Payload};
/// use serde_json::json;
///
/// // What a handler sees for `POST /call` with `"payload": {"action": "deposit", "amount": 5}`:
/// let msg = Payload::call(json!({"action": "deposit", "amount": 5}));
/// assert_eq!(msg.action(), Some("deposit"));
/// assert_eq!(msg.body["amount"].as_u64(), Some(5));
/// assert_eq!(msg.delivery, Delivery::Call);
/// ```
#[derive(Debug)]
pub struct Payload {
    /// The request's payload (`null` when the request had none).
    pub body: Value,
    /// Call or cast.
    pub delivery: Delivery,
    /// When the request stops being worth executing: a payload still queued then is dropped,
    /// never executed late.
    pub(crate) deadline: Option<std::time::Instant>,
}

impl Payload {
    /// A payload delivered by `call`.
    pub fn call(body: Value) -> Payload {
        Payload {
            body,
            delivery: Delivery::Call,
            deadline: None,
        }
    }

    /// A payload delivered by `cast`.
    pub fn cast(body: Value) -> Payload {
        Payload {
            body,
            delivery: Delivery::Cast,
            deadline: None,
        }
    }

    /// The same payload, dropped unexecuted if it is still queued at `deadline`.
    pub(crate) fn until(mut self, deadline: std::time::Instant) -> Payload {
        self.deadline = Some(deadline);
        self
    }

    /// The string at `body.action`, the convention of the example actors.
    pub fn action(&self) -> Option<&str> {
        self.body.get("action").and_then(Value::as_str)
    }
}

impl Message for Payload {
    type Result = Value;
}

/// Why an actor refused to start; becomes `init_failed` (HTTP 422) for the caller.
///
/// ```
/// use mesh_actix::InitError;
/// use serde_json::{json, Value};
///
/// fn starting_level(init_arg: Option<&Value>) -> Result<u64, InitError> {
///     match init_arg.map(|arg| &arg["starting_level"]) {
///         None | Some(Value::Null) => Ok(1),
///         Some(level) => level.as_u64().ok_or_else(|| InitError::new("starting_level must be a non-negative integer")),
///     }
/// }
/// assert_eq!(starting_level(Some(&json!({"starting_level": 3}))), Ok(3));
/// assert!(starting_level(Some(&json!({"starting_level": -1}))).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InitError(pub String);

impl InitError {
    /// An init error with a message for a person.
    pub fn new(message: impl Into<String>) -> InitError {
        InitError(message.into())
    }
}

/// An actor that answers mesh payloads: implemented for every actix actor with a
/// `Handler<Payload>` whose `Result` is `MessageResult<Payload>` or
/// `ResponseActFuture<Self, Value>`. Mesh calls the handler through it; it exists so that a
/// missing or mistyped handler is reported in these words rather than through mesh's
/// internals.
///
/// Both handler forms, a sync one and one that waits:
///
/// ```
/// use mesh_actix::{HandlesPayload, InitError, Mesh, MeshActor, MeshInit, NodeId, Payload};
/// use mesh_actix::Request;
/// use mesh_actix::actix::prelude::*;
/// use serde_json::{json, Value};
///
/// #[derive(MeshActor)]
/// struct Echo;
///
/// impl Actor for Echo {
///     type Context = Context<Self>;
/// }
///
/// impl MeshInit for Echo {
///     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> {
///         Ok(Echo)
///     }
/// }
///
/// impl Handler<Payload> for Echo {
///     type Result = MessageResult<Payload>;
///     fn handle(&mut self, msg: Payload, _: &mut Context<Self>) -> Self::Result {
///         MessageResult(json!({"ok": msg.body}))
///     }
/// }
///
/// #[derive(MeshActor)]
/// struct Relay {
///     relayed: u64,
/// }
///
/// impl Actor for Relay {
///     type Context = Context<Self>;
/// }
///
/// impl MeshInit for Relay {
///     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> {
///         Ok(Relay { relayed: 0 })
///     }
/// }
///
/// impl Handler<Payload> for Relay {
///     type Result = ResponseActFuture<Self, Value>;
///     fn handle(&mut self, msg: Payload, _: &mut Context<Self>) -> Self::Result {
///         // Waits (here for nothing) without blocking the actor's arbiter; the state is
///         // touched again only once the wait is over.
///         Box::pin(async move { msg.body }.into_actor(self).map(|body, relay, _| {
///             relay.relayed += 1;
///             json!({"ok": body, "relayed": relay.relayed})
///         }))
///     }
/// }
///
/// fn answers_payloads<A: HandlesPayload>() {}
/// answers_payloads::<Echo>();
/// answers_payloads::<Relay>();
///
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .register::<Echo>()
///     .register::<Relay>()
///     .capabilities(["demo"])
///     .start()
///     .unwrap();
/// let request = Request::new("Relay", "r1", "demo").unwrap().with_payload(json!("hi"));
/// let reply = mesh.call(request).await.unwrap();
/// assert_eq!(reply.result, json!({"ok": "hi", "relayed": 1}));
/// # });
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not answer mesh payloads: it needs `impl Handler<Payload> for {Self}`",
    label = "no usable `Handler<Payload>` for `{Self}`",
    note = "add `impl Handler<Payload> for {Self} {{ type Result = MessageResult<Payload>; fn handle(&mut self, msg: Payload, ctx: &mut Context<Self>) -> Self::Result {{ .. }} }}`; a handler that waits uses `type Result = ResponseActFuture<Self, serde_json::Value>`"
)]
pub trait HandlesPayload: Actor<Context = Context<Self>> {
    /// Calls the `Handler<Payload>` and normalises its result.
    #[doc(hidden)]
    fn handle_payload(&mut self, payload: Payload, ctx: &mut Context<Self>) -> MeshResponse<Self>;
}

// `do_not_recommend`: without it rustc reports the missing `Handler<Payload>` through this impl
// and adds that the derive's `Handler<Envelope>` "is implemented", an internal the user cannot
// act on; with it the error is `HandlesPayload`'s own message, which names the fix.
#[diagnostic::do_not_recommend]
impl<A> HandlesPayload for A
where
    A: Actor<Context = Context<A>> + Handler<Payload>,
    <A as Handler<Payload>>::Result: IntoMeshResponse<A>,
{
    fn handle_payload(&mut self, payload: Payload, ctx: &mut Context<Self>) -> MeshResponse<Self> {
        self.handle(payload, ctx).into_mesh_response()
    }
}

/// How an activation's state is built: on first use and again after every crash.
///
/// `init_arg` is the request's `init_arg` of the call that activated the actor; later
/// requests' `init_arg`s are ignored. A restart after a crash calls `init` again with the same
/// arguments, so the actor starts over with fresh state.
///
/// ```
/// use mesh_actix::{ActorId, InitError, MeshInit};
/// use serde_json::{json, Value};
///
/// struct Player { id: String, level: u64 }
///
/// impl MeshInit for Player {
///     fn init(id: &ActorId, init_arg: Option<&Value>) -> Result<Self, InitError> {
///         let level = init_arg.and_then(|arg| arg["level"].as_u64()).unwrap_or(1);
///         Ok(Player { id: id.to_string(), level })
///     }
/// }
///
/// let id = ActorId::new("player_1").unwrap();
/// let player = Player::init(&id, Some(&json!({"level": 10}))).unwrap();
/// assert_eq!((player.id.as_str(), player.level), ("player_1", 10));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say how to build its state: it needs `impl MeshInit for {Self}`",
    label = "no `MeshInit` for `{Self}`",
    note = "add `impl MeshInit for {Self} {{ fn init(id: &ActorId, init_arg: Option<&serde_json::Value>) -> Result<Self, InitError> {{ .. }} }}`"
)]
pub trait MeshInit: Sized {
    /// Builds the state of the actor `id`, or rejects `init_arg`.
    fn init(id: &ActorId, init_arg: Option<&Value>) -> Result<Self, InitError>;
}

/// An actor mesh can activate, supervise and route to. Derive it:
///
/// ```
/// use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// use serde_json::{json, Value};
///
/// #[derive(MeshActor)]
/// #[mesh(name = "Greeter")] // optional; the default is the struct's name
/// struct Greeter {
///     name: String,
///     greeted: u64,
/// }
///
/// impl Actor for Greeter {
///     type Context = Context<Self>;
/// }
///
/// impl MeshInit for Greeter {
///     fn init(id: &mesh_actix::ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
///         Ok(Greeter { name: id.to_string(), greeted: 0 })
///     }
/// }
///
/// impl Handler<Payload> for Greeter {
///     type Result = MessageResult<Payload>;
///     fn handle(&mut self, _msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
///         self.greeted += 1;
///         MessageResult(json!({"ok": format!("hello #{} from {}", self.greeted, self.name)}))
///     }
/// }
///
/// assert_eq!(<Greeter as MeshActor>::MODULE, "Greeter");
/// ```
///
/// The derive also implements `Supervised` (mesh restarts the actor in place after a panic)
/// and the internal handler mesh delivers through, which catches panics.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a mesh actor",
    label = "add `#[derive(MeshActor)]` to `{Self}`",
    note = "a mesh actor is an actix actor with `#[derive(MeshActor)]`, `impl MeshInit` (how to build its state) and `impl Handler<Payload>` (how it answers calls and casts)"
)]
pub trait MeshActor:
    MeshInit
    + Actor<Context = Context<Self>>
    + HandlesPayload
    + Handler<crate::activation::Envelope>
    + Supervised
    + Send
{
    /// The module name requests use to reach this actor type.
    const MODULE: &'static str;

    /// How to reach the type's state, for `#[mesh(snapshot)]` and `#[mesh(durable)]` types
    /// (see [`Snapshot`]). Generated by the derive.
    #[doc(hidden)]
    const STATE: Option<StateGlue<Self>> = None;

    /// Whether the type keeps its state in the node's store (`#[mesh(durable)]`).
    #[doc(hidden)]
    const DURABLE: bool = false;

    /// The type's own idle timeout in seconds (`#[mesh(idle_timeout_secs = n)]`, 0 = never);
    /// `None`: the node's default for durable types, never for the others.
    #[doc(hidden)]
    const IDLE_TIMEOUT_SECS: Option<u64> = None;

    /// The actor's state for its next owner, if its type can snapshot it.
    #[doc(hidden)]
    fn snapshot_state(&self) -> Option<Result<Value, String>> {
        Self::STATE.map(|glue| (glue.snapshot)(self))
    }

    /// Rebuilds the actor from a handed-over snapshot, if its type can (`None`: the new
    /// owner calls `init`).
    #[doc(hidden)]
    fn restore_state(id: &ActorId, state: Value) -> Option<Result<Self, InitError>> {
        Self::STATE.map(|glue| (glue.restore)(id, state))
    }

    /// The state to store, serialised, for durable types.
    #[doc(hidden)]
    fn save_state(&self) -> Option<Result<Vec<u8>, String>> {
        Self::STATE
            .filter(|_| Self::DURABLE)
            .map(|glue| (glue.save)(self))
    }

    /// Rebuilds the actor from its stored state, for durable types.
    #[doc(hidden)]
    fn load_state(id: &ActorId, state: &[u8]) -> Option<Result<Self, InitError>> {
        Self::STATE
            .filter(|_| Self::DURABLE)
            .map(|glue| (glue.load)(id, state))
    }
}

/// An actor whose state survives planned moves: when a join, a graceful leave or a
/// capability change moves one of its identities to another node, mesh takes a snapshot after
/// the last call the old activation handled and the new owner starts from it instead of from
/// `init` (shared/CONTRACT.md rule 13). A node's death (kill -9) still loses it: the state is
/// only in memory.
///
/// Implement it and mark the derive with `#[mesh(snapshot)]`:
///
/// ```
/// use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload, Snapshot};
/// use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// use serde_json::{json, Value};
///
/// #[derive(MeshActor)]
/// #[mesh(snapshot)]
/// struct Tally {
///     count: u64,
/// }
///
/// impl Actor for Tally {
///     type Context = Context<Self>;
/// }
///
/// impl MeshInit for Tally {
///     fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
///         Ok(Tally { count: 0 })
///     }
/// }
///
/// impl Snapshot for Tally {
///     type State = u64;
///     fn snapshot(&self) -> u64 {
///         self.count
///     }
///     fn restore(_: &ActorId, count: u64) -> Result<Self, InitError> {
///         Ok(Tally { count })
///     }
/// }
///
/// impl Handler<Payload> for Tally {
///     type Result = MessageResult<Payload>;
///     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
///         self.count += 1;
///         MessageResult(json!({"ok": self.count}))
///     }
/// }
///
/// let tally = Tally { count: 41 };
/// let state = tally.snapshot_state().unwrap().unwrap();
/// let restored = Tally::restore_state(&ActorId::new("t").unwrap(), state).unwrap().unwrap();
/// assert_eq!(restored.count, 41);
/// ```
///
/// A snapshot that fails to serialise, or a handed-over state that no longer deserialises
/// (an older or newer version of the type), is logged and the new activation starts from
/// `init`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is marked `#[mesh(snapshot)]` or `#[mesh(durable)]` but does not implement `Snapshot`",
    label = "no `Snapshot` for `{Self}`",
    note = "add `impl Snapshot for {Self} {{ type State = ..; fn snapshot(&self) -> Self::State {{ .. }} fn restore(id: &ActorId, state: Self::State) -> Result<Self, InitError> {{ .. }} }}`, or drop the attribute"
)]
pub trait Snapshot: MeshInit {
    /// What is handed over; travels between nodes as JSON.
    type State: serde::Serialize + serde::de::DeserializeOwned;

    /// The state to hand over, taken after the last call the old activation handled.
    fn snapshot(&self) -> Self::State;

    /// The actor rebuilt on its new owner from a snapshot; `Err` fails the activation like a
    /// rejected `init`.
    fn restore(id: &ActorId, state: Self::State) -> Result<Self, InitError>;
}

/// A [`Snapshot`] type's state functions, as plain function pointers: the derive names them
/// once (`StateGlue::<Self>::OF`), so that a type marked `#[mesh(snapshot)]` or
/// `#[mesh(durable)]` without a `Snapshot` impl gets one error, not one per use.
#[doc(hidden)]
pub struct StateGlue<A> {
    snapshot: fn(&A) -> Result<Value, String>,
    restore: fn(&ActorId, Value) -> Result<A, InitError>,
    save: fn(&A) -> Result<Vec<u8>, String>,
    load: fn(&ActorId, &[u8]) -> Result<A, InitError>,
}

impl<A> Clone for StateGlue<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for StateGlue<A> {}

impl<A: Snapshot> StateGlue<A> {
    /// The glue of `A`.
    pub const OF: StateGlue<A> = StateGlue {
        snapshot: |actor| serde_json::to_value(actor.snapshot()).map_err(|e| e.to_string()),
        restore: |id, state| match serde_json::from_value(state) {
            Ok(state) => A::restore(id, state),
            Err(e) => Err(InitError::new(format!(
                "the handed-over state does not deserialise: {e}"
            ))),
        },
        save: |actor| serde_json::to_vec(&actor.snapshot()).map_err(|e| e.to_string()),
        load: |id, state| match serde_json::from_slice(state) {
            Ok(state) => A::restore(id, state),
            Err(e) => Err(InitError::new(format!(
                "the stored state does not deserialise into this version of the type ({e}); \
                 it was left in the store untouched"
            ))),
        },
    };
}

/// A handler's reply, ready now or later. Internal glue of the derive.
#[doc(hidden)]
pub enum MeshResponse<A: Actor> {
    Ready(Value),
    Later(ResponseActFuture<A, Value>),
}

/// The handler result types a [`MeshActor`] may use for `Handler<Payload>`.
#[doc(hidden)]
pub trait IntoMeshResponse<A: Actor>: MessageResponse<A, Payload> {
    fn into_mesh_response(self) -> MeshResponse<A>;
}

impl<A: Actor> IntoMeshResponse<A> for MessageResult<Payload> {
    fn into_mesh_response(self) -> MeshResponse<A> {
        MeshResponse::Ready(self.0)
    }
}

impl<A: Actor> IntoMeshResponse<A> for ResponseActFuture<A, Value>
where
    A::Context: AsyncContext<A>,
{
    fn into_mesh_response(self) -> MeshResponse<A> {
        MeshResponse::Later(self)
    }
}
