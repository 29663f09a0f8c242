//! `gauntlet bench sse`: the SSE decoder's time on generated streams of growing size, fed in
//! small and large reads, so linearity (or its absence) shows in the numbers: the time per
//! megabyte should stay flat as the stream grows. Prints numbers; asserts nothing.

use std::time::{Duration, Instant};

use super::sse::Parser;

#[derive(Debug, Clone, clap::Args)]
pub struct SseBenchArgs {
    /// Stream sizes in megabytes (each run on a fresh decoder).
    #[arg(long, value_delimiter = ',', default_values_t = [2.5, 5.0, 10.0, 20.0])]
    pub mb: Vec<f64>,
    /// Bytes per read (network chunk sizes).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 65536])]
    pub reads: Vec<usize>,
    /// Runs per point; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// An OpenAI-shaped stream of about `bytes` bytes: ~100-byte events of mixed scripts, so
/// reads split code points as often as real CJK/emoji traffic does.
fn stream(bytes: usize) -> Vec<u8> {
    const WORDS: [&str; 6] = ["路由器", "👩🏽\u{200d}💻", "مرحبا", "e\u{301}te\u{301}", "token", "🇯🇵"];
    let mut out = Vec::with_capacity(bytes + 128);
    let mut i = 0;
    while out.len() < bytes {
        let content = format!("{} {}", WORDS[i % WORDS.len()], WORDS[(i / 6) % WORDS.len()]);
        let chunk = serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]});
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
        i += 1;
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn decode(wire: &[u8], read: usize) -> (Duration, usize) {
    let start = Instant::now();
    let mut parser = Parser::default();
    let mut events = 0;
    for piece in wire.chunks(read.max(1)) {
        events += parser.feed(piece).len();
    }
    (start.elapsed(), events)
}

pub fn bench_cli(args: SseBenchArgs) -> anyhow::Result<()> {
    println!(
        "{:>8} {:>8} {:>9} {:>10} {:>8}",
        "MB", "read B", "events", "ms", "ms/MB"
    );
    for &read in &args.reads {
        for &mb in &args.mb {
            anyhow::ensure!(mb > 0.0 && mb <= 1024.0, "--mb {mb}: between 0 and 1024");
            let wire = stream((mb * 1e6) as usize);
            let (best, events) = (0..args.runs.max(1))
                .map(|_| decode(&wire, read))
                .min_by_key(|(d, _)| *d)
                .unwrap_or_default();
            let ms = best.as_secs_f64() * 1e3;
            println!("{mb:>8.1} {read:>8} {events:>9} {ms:>10.1} {:>8.2}", ms / mb);
        }
    }
    Ok(())
}
