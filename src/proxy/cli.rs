//! `gauntlet proxy`: a standalone proxy until SIGINT or SIGTERM.

use std::net::SocketAddr;

use super::server::start_seeded;

/// `gauntlet proxy` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on, for traffic and the control API alike; port 0 picks a free port
    /// (the bound address is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where each accepted connection is forwarded: HOST:PORT, resolved per connection.
    #[arg(long)]
    pub upstream: String,
    /// Seed of the per-connection toxicity draws, the jitter and the slice sizes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub async fn serve_cli(args: ProxyArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the line is printed: whoever reads it may signal at once.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let proxy = start_seeded(args.listen, &args.upstream, args.seed).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "gauntlet proxy listening on {} (upstream {})",
            proxy.url(),
            proxy.upstream()
        );
        let _ = out.flush();
    }
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
    drop(proxy);
    Ok(())
}
