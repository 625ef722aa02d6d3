//! The child's half of the harness's lifeline (see [`crate::node`]): a program under test
//! exits as soon as its standard input, a pipe the test holds, reaches end of file.

use std::io::Read as _;

/// Exit status when the test process went away (`EX_SOFTWARE` of sysexits.h).
pub const ORPHANED: i32 = 70;

/// Watches standard input on a thread of its own and exits the process (status [`ORPHANED`])
/// at its end of file, or on an error reading it. `program` names the process in the line it
/// prints then.
pub fn exit_when_stdin_closes(program: &'static str) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin-watchdog".into())
        .spawn(move || {
            // Discards whatever comes; returns at end of file (or on an error reading).
            let mut buf = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            eprintln!("{program}: standard input closed (the test is gone); exiting");
            std::process::exit(ORPHANED);
        })
        .map(drop)
}
