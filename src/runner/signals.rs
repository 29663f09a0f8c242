//! SIGINT/SIGTERM: tear down what this process started, then exit 130. The trial threads may
//! be blocked in requests, so teardown cannot wait for them; the run's [`Teardown`] kills the
//! recorded process groups directly and removes the private folders.

use crate::stack::Teardown;

pub fn install(rt: &tokio::runtime::Runtime, teardown: Teardown) {
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        eprintln!("\ngauntlet: {name}: stopping the stack");
        teardown.now();
        std::process::exit(i32::from(crate::error::exit::INTERRUPTED));
    });
}
