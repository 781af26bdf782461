//! Progress bars on standard error (indicatif), drawn only when standard
//! error is a terminal (never in pipes, files or tests), for long work:
//! consuming a stream to its end, replaying or catching up, applying a
//! topology. A bar is erased when dropped.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressFinish, ProgressStyle};

/// A progress bar: `label [=====>      ] done/total  42%  1234/s`.
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for `total` units of work, shown when standard error is a terminal.
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        Progress::when(label, total, true)
    }

    /// A bar for work whose results go to standard output: shown only when
    /// standard output is not a terminal (e.g. redirected to a file), so
    /// that the bar never mixes with the results.
    pub fn beside_output(label: impl Into<String>, total: u64) -> Progress {
        Progress::when(label, total, !std::io::stdout().is_terminal())
    }

    fn when(label: impl Into<String>, total: u64, show: bool) -> Progress {
        if !show || total == 0 {
            return Progress(ProgressBar::hidden());
        }
        // `ProgressBar::new` draws on standard error, and not at all when
        // it is not a terminal.
        Progress(bar(label.into(), total))
    }

    /// Moves the bar to `done` units.
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Adds `n` units.
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Erases the bar, so that the next line prints cleanly.
    pub fn clear(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar of `total` units: `label [=====>      ] done/total  42%  1234/s`.
fn bar(label: String, total: u64) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {percent:>3}% {per_sec:.0}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total)
        .with_style(style)
        .with_message(label)
        .with_finish(ProgressFinish::AndClear)
}

/// Bars drawn together, a line each, on standard error when it is a
/// terminal: work that runs side by side (the restores of several
/// instances).
#[derive(Debug, Default)]
pub struct Bars(MultiProgress);

impl Bars {
    /// A new bar for `total` units, drawn below the others until dropped.
    pub fn add(&self, label: impl Into<String>, total: u64) -> Progress {
        Progress(self.0.add(bar(label.into(), total)))
    }
}
