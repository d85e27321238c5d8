//! Where the library's progress goes: by default an indicatif bar on stderr (rate and ETA), drawn
//! only when stderr is a terminal, and one-line notes on stderr; a program that wants them
//! elsewhere (its own bar, a log, a GUI, nowhere) installs a sink once.
//!
//! Each long call also has a `progress: bool` in its options (e.g.
//! [`ExtractOptions::progress`](crate::extract::ExtractOptions::progress)): `false` silences
//! that call's bar whatever the sink. Notes (a stage starting, a figure not drawn, a file being
//! waited for) go to the sink as [`Event::Note`].
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use puppetlens::progress::{self, Event};
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! progress::set_sink(move |e: &Event| {
//!     if let Event::Finish { label, done, .. } = e {
//!         log.lock().unwrap().push(format!("{label}: {done} done"));
//!     }
//! });
//! // ... long calls (extraction, sweeps, training) report here ...
//! progress::reset_sink(); // back to the bar on stderr
//! ```

use std::sync::{Arc, RwLock};

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A stage of `total` steps starts.
    Start {
        /// The stage's label (e.g. `"extract"`, `"patch sweep"`).
        label: &'a str,
        /// Steps it will take.
        total: usize,
    },
    /// Steps done so far in a stage.
    Advance {
        /// The stage's label.
        label: &'a str,
        /// Steps done so far.
        done: usize,
        /// Steps in all.
        total: usize,
    },
    /// A stage ended (after its last step, or early on an error).
    Finish {
        /// The stage's label.
        label: &'a str,
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
    },
    /// A one-line note (printed on stderr by default).
    Note(&'a str),
}

type Sink = Arc<dyn Fn(&Event) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Sends every later progress report of this process to `sink` instead of stderr (bars are then
/// not drawn). The sink is called from the thread doing the work; keep it quick.
pub fn set_sink(sink: impl Fn(&Event) + Send + Sync + 'static) {
    if let Ok(mut s) = SINK.write() {
        *s = Some(Arc::new(sink));
    }
}

/// Back to the default: bars and notes on stderr.
pub fn reset_sink() {
    if let Ok(mut s) = SINK.write() {
        *s = None;
    }
}

/// The installed sink, if any.
pub(crate) fn sink() -> Option<Sink> {
    SINK.read().ok().and_then(|s| s.clone())
}

/// A one-line note: to the sink, or stderr.
pub(crate) fn note(msg: &str) {
    match sink() {
        Some(s) => s(&Event::Note(msg)),
        None => eprintln!("{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Progress;
    use std::sync::Mutex;

    #[test]
    fn a_sink_sees_a_stage_and_notes() {
        // Other unit tests may report while this sink is installed: keep only this test's label.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        set_sink(move |e: &Event| {
            let line = match *e {
                Event::Start {
                    label: "sink-test",
                    total,
                } => format!("start {total}"),
                Event::Advance {
                    label: "sink-test",
                    done,
                    total,
                } => format!("{done}/{total}"),
                Event::Finish {
                    label: "sink-test",
                    done,
                    total,
                } => format!("finish {done}/{total}"),
                Event::Note(m) if m.starts_with("sink-test") => format!("note {m}"),
                _ => return,
            };
            log.lock().unwrap().push(line);
        });
        let mut bar = Progress::new("sink-test", 3, true);
        bar.advance(1);
        bar.say("sink-test: halfway");
        bar.advance(2);
        bar.finish();
        // A silenced stage reports nothing.
        let mut quiet = Progress::new("sink-test", 5, false);
        quiet.advance(5);
        quiet.finish();
        note("sink-test: done");
        reset_sink();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "start 3",
                "1/3",
                "note sink-test: halfway",
                "3/3",
                "finish 3/3",
                "note sink-test: done"
            ]
        );
    }
}
