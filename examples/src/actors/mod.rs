mod account;
mod counter;
mod crasher;
mod game;
mod sleeper;

pub use account::Account;
pub use counter::Counter;
pub use crasher::Crasher;
pub use game::GameActor;
pub use sleeper::Sleeper;
