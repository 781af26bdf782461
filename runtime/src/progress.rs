//! A small progress bar on standard error, drawn only when standard error is
//! a terminal (never in pipes, files or tests), for long work: consuming a
//! stream to its end, replaying or catching up, applying a topology.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the bar is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);
/// The bar's width in characters.
const WIDTH: usize = 30;

/// A progress bar: `label [=====>      ] done/total  42%  1234/s`.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A bar for `total` units of work, shown when standard error is a terminal.
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        Progress::when(label, total, std::io::stderr().is_terminal())
    }

    /// A bar for work whose results go to standard output: shown only when
    /// standard error is a terminal and standard output is not (e.g.
    /// redirected to a file), so that the bar never mixes with the results.
    pub fn beside_output(label: impl Into<String>, total: u64) -> Progress {
        let show = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
        Progress::when(label, total, show)
    }

    fn when(label: impl Into<String>, total: u64, show: bool) -> Progress {
        Progress {
            label: label.into(),
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            enabled: show && total > 0,
        }
    }

    /// Moves the bar to `done` units.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        self.draw(false);
    }

    /// Adds `n` units.
    pub fn inc(&mut self, n: u64) {
        self.set(self.done.saturating_add(n));
    }

    /// Erases the bar, so that the next line prints cleanly.
    pub fn clear(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.last_draw = None;
        }
    }

    fn draw(&mut self, force: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t) < REDRAW)
        {
            return;
        }
        self.last_draw = Some(now);
        let done = self.done.min(self.total);
        let filled = (done as u128 * WIDTH as u128 / self.total as u128) as usize;
        let mut bar = "=".repeat(filled);
        if filled < WIDTH {
            bar.push('>');
            bar.push_str(&" ".repeat(WIDTH - filled - 1));
        }
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} [{bar}] {done}/{} {:>3}% {rate:.0}/s",
            self.label,
            self.total,
            done * 100 / self.total
        );
        let _ = err.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
