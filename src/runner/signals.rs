//! SIGINT/SIGTERM: tear down what this process started, then exit 130. The trial threads may
//! be blocked in requests, so teardown cannot wait for them; the recorded process groups
//! are killed directly and the private folders removed.

use std::path::PathBuf;
use std::sync::Mutex;

static PRIVATE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remembers a stack's private folder so an interrupt can remove it (it may hold keys).
pub fn set_private_stack_dirs(stack: &crate::stack::Stack) {
    if let Some(p) = stack.private_dir() {
        PRIVATE_DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }
}

pub fn install(rt: &tokio::runtime::Runtime) {
    rt.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        eprintln!("\ngauntlet: {name}: stopping the stack");
        crate::stack::process::kill_all_live();
        for d in PRIVATE_DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = std::fs::remove_dir_all(d);
        }
        std::process::exit(i32::from(crate::error::exit::INTERRUPTED));
    });
}
