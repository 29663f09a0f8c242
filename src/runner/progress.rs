//! Progress on long work (installs, stack start-up), on stderr, hidden when it is not a TTY
//! so CI logs get one line per step instead of spinner frames.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub fn spinner(msg: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("gauntlet: {msg}");
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix} {wide_msg}").expect("template"));
    pb.set_prefix(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}
