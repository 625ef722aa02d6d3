use actix::prelude::*;
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A player's game state. `init_arg` `{"starting_level": n}` sets the level (default 1);
/// `{"action": "increment"}` adds to the score, `{"action": "get_state"}` returns the state.
/// Level and score are handed over on planned moves.
#[derive(MeshActor)]
#[mesh(snapshot)]
pub struct GameActor {
    id: ActorId,
    level: u64,
    score: u64,
}

impl Actor for GameActor {
    type Context = Context<Self>;
}

impl MeshInit for GameActor {
    fn init(id: &ActorId, init_arg: Option<&Value>) -> Result<Self, InitError> {
        let level = match init_arg.and_then(|arg| arg.get("starting_level")) {
            None => 1,
            Some(level) => level.as_u64().ok_or_else(|| {
                InitError::new(format!(
                    "`starting_level` must be a non-negative integer, got {level}"
                ))
            })?,
        };
        Ok(GameActor {
            id: id.clone(),
            level,
            score: 0,
        })
    }
}

/// What a `GameActor` hands over: `{"level": n, "score": n}`.
#[derive(Serialize, Deserialize)]
pub struct GameState {
    level: u64,
    score: u64,
}

impl Snapshot for GameActor {
    type State = GameState;

    fn snapshot(&self) -> GameState {
        GameState {
            level: self.level,
            score: self.score,
        }
    }

    fn restore(id: &ActorId, state: GameState) -> Result<Self, InitError> {
        Ok(GameActor {
            id: id.clone(),
            level: state.level,
            score: state.score,
        })
    }
}

impl Handler<Payload> for GameActor {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg.action() {
            Some("increment") => {
                self.score += 1;
                json!({"ok": self.score})
            }
            Some("get_state") => {
                json!({"ok": {"id": self.id.as_str(), "level": self.level, "score": self.score}})
            }
            _ => json!({"ok": "noop"}),
        })
    }
}
