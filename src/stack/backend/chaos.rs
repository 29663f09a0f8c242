//! [`Chaos`]: what the chaos suite can do to one running service. Each backend owns how:
//! processes get signals or a respawn; containers get the engine's pause, kill, restart and
//! network disconnect (faults a process cannot have).

/// One thing done to a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chaos {
    /// Frozen: connections open, nothing answers (SIGSTOP / `docker pause`).
    Pause,
    Unpause,
    /// Gone at once, no shutdown (SIGKILL).
    Kill,
    /// Stopped and started again as it was, on the same address (a container keeps the host
    /// port it was given); the stack re-reads it all the same.
    Restart,
    /// Off the stack's network: peers get no route to it (containers only).
    Disconnect,
    Connect,
}

impl Chaos {
    pub const ALL: [Chaos; 6] = [
        Chaos::Pause,
        Chaos::Unpause,
        Chaos::Kill,
        Chaos::Restart,
        Chaos::Disconnect,
        Chaos::Connect,
    ];
}

impl std::fmt::Display for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chaos::Pause => "pause",
            Chaos::Unpause => "unpause",
            Chaos::Kill => "kill",
            Chaos::Restart => "restart",
            Chaos::Disconnect => "disconnect",
            Chaos::Connect => "connect",
        })
    }
}
