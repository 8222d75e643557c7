//! `pbxlink import`: what an import run did, shown while it runs and summed up at its end.
//!
//! The readers (the CDR pipeline's [`crate::pipeline::FileSource::import_file`], the
//! json_cdr directory's import) count into one shared [`ImportProgress`]: how far into the
//! input they are (bytes of a CDR file, files of a json_cdr directory), records read,
//! corrupt lines, and what became of each call (queued new, already in the outbox, not
//! posted). [`Reporter`] shows it: a progress bar with rows/s and ETA when stderr is a
//! terminal (indicatif), else a plain line every few seconds ([`plain_line`]). At the end
//! [`ImportSummary`] says what was found and how long delivering the outbox's pending call
//! logs takes at the CRM's configured rate limit (`[leadsquared] rate_limit_requests` per
//! `rate_limit_period_ms`).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::logtext::Escaped;

/// How far into an input the reader is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressUnit {
    /// Bytes of a CDR file.
    Bytes,
    /// Files of a json_cdr directory.
    Files,
}

/// What an import run did so far; the readers add to it, the reporter reads it. Every
/// figure only grows, except the position and total of the current input.
#[derive(Debug, Default)]
pub struct ImportProgress {
    position: AtomicU64,
    total: AtomicU64,
    unit: AtomicU8,
    rows: AtomicU64,
    corrupt: AtomicU64,
    new_calls: AtomicU64,
    duplicates: AtomicU64,
    skipped: AtomicU64,
}

/// A reading of [`ImportProgress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// How far into the current input (see `unit`).
    pub position: u64,
    /// The current input's size (0: not known yet).
    pub total: u64,
    /// What `position` and `total` count.
    pub files: bool,
    /// Records read (CDR rows, json_cdr legs).
    pub rows: u64,
    /// Lines (or json_cdr files) that are no record: corrupt, cut short, too long.
    pub corrupt: u64,
    /// Calls queued in the outbox by this run.
    pub new_calls: u64,
    /// Calls whose log was already in the outbox: delivered, or queued before.
    pub duplicates: u64,
    /// Calls the CRM is not told about (internal calls, calls outside the contexts).
    pub skipped: u64,
}

impl ProgressSnapshot {
    /// Records and corrupt lines: every line looked at.
    pub fn lines(&self) -> u64 {
        self.rows + self.corrupt
    }

    /// The figures of `self` since `earlier` (position and total are `self`'s).
    pub fn since(&self, earlier: &ProgressSnapshot) -> ProgressSnapshot {
        ProgressSnapshot {
            rows: self.rows.saturating_sub(earlier.rows),
            corrupt: self.corrupt.saturating_sub(earlier.corrupt),
            new_calls: self.new_calls.saturating_sub(earlier.new_calls),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            skipped: self.skipped.saturating_sub(earlier.skipped),
            ..*self
        }
    }
}

impl ImportProgress {
    /// A new input of `total` units begins (position 0).
    pub fn start_input(&self, unit: ProgressUnit, total: u64) {
        self.unit
            .store(u8::from(unit == ProgressUnit::Files), Relaxed);
        self.total.store(total, Relaxed);
        self.position.store(0, Relaxed);
    }

    /// The reader is `position` units into the input.
    pub fn set_position(&self, position: u64) {
        self.position.store(position, Relaxed);
    }

    /// Records read and lines rejected.
    pub fn add_lines(&self, rows: u64, corrupt: u64) {
        self.rows.fetch_add(rows, Relaxed);
        self.corrupt.fetch_add(corrupt, Relaxed);
    }

    /// What became of a batch of settled calls.
    pub fn add_calls(&self, new_calls: u64, duplicates: u64, skipped: u64) {
        self.new_calls.fetch_add(new_calls, Relaxed);
        self.duplicates.fetch_add(duplicates, Relaxed);
        self.skipped.fetch_add(skipped, Relaxed);
    }

    /// The figures now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            position: self.position.load(Relaxed),
            total: self.total.load(Relaxed),
            files: self.unit.load(Relaxed) == 1,
            rows: self.rows.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            new_calls: self.new_calls.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
        }
    }
}

/// `n` bytes as the plain line shows them (`12.3 MB`).
fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration as `1h 02m 03s`, `4m 05s` or `6s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Units of the input done per second, and the time left at that pace.
fn eta(snapshot: &ProgressSnapshot, elapsed: Duration) -> Option<Duration> {
    let secs = elapsed.as_secs_f64();
    if snapshot.total == 0 || snapshot.position == 0 || secs <= 0.0 {
        return None;
    }
    let left = snapshot.total.saturating_sub(snapshot.position) as f64;
    let pace = snapshot.position as f64 / secs;
    Some(Duration::from_secs_f64(left / pace))
}

/// Where an input is: being read, read whole (its calls being grouped and queued), done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Still running.
    Running,
    /// The reader has returned.
    Done,
}

/// What the line and the bar say instead of a bare ETA.
fn outlook(snapshot: &ProgressSnapshot, elapsed: Duration, stage: Stage) -> String {
    match stage {
        Stage::Done => format!("done in {}", human_duration(elapsed)),
        Stage::Running if snapshot.total > 0 && snapshot.position >= snapshot.total => {
            "read; queueing the calls".into()
        }
        Stage::Running => match eta(snapshot, elapsed) {
            Some(left) => format!("ETA {}", human_duration(left)),
            None => "ETA unknown".into(),
        },
    }
}

/// The line printed every few seconds when stderr is not a terminal, for input `name`:
/// `snapshot` holds this input's figures (see [`ProgressSnapshot::since`]) after `elapsed`.
pub fn plain_line(
    name: &str,
    snapshot: &ProgressSnapshot,
    elapsed: Duration,
    stage: Stage,
) -> String {
    let done = if snapshot.files {
        format!("{} of {} files", snapshot.position, snapshot.total)
    } else {
        format!("{} of {}", size(snapshot.position), size(snapshot.total))
    };
    let percent = match snapshot.total {
        0 => 100,
        total => snapshot.position.min(total) * 100 / total,
    };
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (snapshot.lines() as f64 / secs).round() as u64
    } else {
        0
    };
    let calls = snapshot.new_calls + snapshot.duplicates + snapshot.skipped;
    format!(
        "import {name}: {percent}% ({done}), {} rows ({rate} rows/s), {} corrupt, {calls} calls; {}",
        snapshot.rows,
        snapshot.corrupt,
        outlook(snapshot, elapsed, stage)
    )
}

/// The CRM's rate limit: at most `requests` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// `[leadsquared] rate_limit_requests`.
    pub requests: u32,
    /// `[leadsquared] rate_limit_period_ms`.
    pub period: Duration,
}

impl RateLimit {
    /// The time `calls` call logs take to post at this rate (one request each).
    pub fn time_for(&self, calls: u64) -> Duration {
        if self.requests == 0 {
            return Duration::ZERO;
        }
        let periods = calls as f64 / f64::from(self.requests);
        self.period.mul_f64(periods)
    }
}

/// What a whole import run found, and what the outbox holds at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// The run's figures.
    pub figures: ProgressSnapshot,
    /// Call logs pending in the outbox now (this run's and any queued before).
    pub pending: u64,
    /// The configured rate limit.
    pub rate: RateLimit,
    /// How long the run took.
    pub elapsed: Duration,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.figures;
        let calls = s.new_calls + s.duplicates + s.skipped;
        writeln!(
            f,
            "import done in {}: {} rows read, {calls} calls",
            human_duration(self.elapsed),
            s.rows
        )?;
        for (what, n) in [
            ("new, queued for the CRM:", s.new_calls),
            ("already delivered or queued:", s.duplicates),
            ("skipped (internal etc., not posted):", s.skipped),
            ("corrupt lines (skipped, logged):", s.corrupt),
        ] {
            writeln!(f, "  {what:<38}{n}")?;
        }
        let per_second =
            f64::from(self.rate.requests) / self.rate.period.as_secs_f64().max(f64::EPSILON);
        write!(
            f,
            "delivery: {} call log(s) pending in the outbox; at the CRM rate limit of {} per {} ({per_second:.1}/s) that takes about {}. The running daemon delivers them.",
            self.pending,
            self.rate.requests,
            human_duration(self.rate.period),
            human_duration(self.rate.time_for(self.pending))
        )
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStyle {
    /// A redrawn progress bar (stderr is a terminal).
    Bar,
    /// A plain line every `every`, and one when an input is done.
    Lines {
        /// The interval between lines.
        every: Duration,
    },
}

impl ReportStyle {
    /// A bar when stderr is a terminal, else a line every `every`.
    pub fn for_stderr(every: Duration) -> ReportStyle {
        if std::io::stderr().is_terminal() {
            ReportStyle::Bar
        } else {
            ReportStyle::Lines { every }
        }
    }
}

/// Shows one input's progress on stderr from a thread of its own until
/// [`Reporter::finish`].
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing the progress of input `path` (its figures counted from now).
    pub fn start(progress: Arc<ImportProgress>, path: &Path, style: ReportStyle) -> Reporter {
        let name = Escaped(&path.to_string_lossy()).to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let begin = progress.snapshot();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("import progress".into())
            .spawn(move || match style {
                ReportStyle::Bar => show_bar(&progress, &name, begin, started, &stopped),
                ReportStyle::Lines { every } => {
                    show_lines(&progress, &name, begin, started, every, &stopped)
                }
            })
            .ok();
        Reporter { stop, thread }
    }

    /// Shows the input's last figures and stops.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// How often the thread looks at the figures (and at `stop`).
const TICK: Duration = Duration::from_millis(100);

fn show_lines(
    progress: &ImportProgress,
    name: &str,
    begin: ProgressSnapshot,
    started: Instant,
    every: Duration,
    stop: &AtomicBool,
) {
    let mut last = Instant::now();
    while !stop.load(Relaxed) {
        std::thread::sleep(TICK.min(every));
        if last.elapsed() >= every {
            last = Instant::now();
            let now = progress.snapshot().since(&begin);
            let line = plain_line(name, &now, started.elapsed(), Stage::Running);
            eprintln!("{line}");
        }
    }
    let now = progress.snapshot().since(&begin);
    eprintln!("{}", plain_line(name, &now, started.elapsed(), Stage::Done));
}

fn show_bar(
    progress: &ImportProgress,
    name: &str,
    begin: ProgressSnapshot,
    started: Instant,
    stop: &AtomicBool,
) {
    let first = progress.snapshot();
    let bar = indicatif::ProgressBar::new(first.total);
    let style = |files: bool| {
        let position = if files {
            "{pos}/{len} files"
        } else {
            "{bytes}/{total_bytes}"
        };
        indicatif::ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{percent:>3}}% {position} {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
    };
    let mut files = first.files;
    bar.set_style(style(files));
    bar.set_prefix(name.to_owned());
    let update = |bar: &indicatif::ProgressBar, files: &mut bool, stage: Stage| {
        let now = progress.snapshot();
        if now.files != *files {
            *files = now.files;
            bar.set_style(style(*files));
        }
        bar.set_length(now.total);
        bar.set_position(now.position);
        let here = now.since(&begin);
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (here.lines() as f64 / secs).round() as u64
        } else {
            0
        };
        let calls = here.new_calls + here.duplicates + here.skipped;
        bar.set_message(format!(
            "{} rows, {rate} rows/s, {} corrupt, {calls} calls; {}",
            here.rows,
            here.corrupt,
            outlook(&now, started.elapsed(), stage)
        ));
    };
    while !stop.load(Relaxed) {
        update(&bar, &mut files, Stage::Running);
        std::thread::sleep(TICK);
    }
    update(&bar, &mut files, Stage::Done);
    bar.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> ProgressSnapshot {
        ProgressSnapshot {
            position: 2_500_000,
            total: 10_000_000,
            files: false,
            rows: 49_990,
            corrupt: 10,
            new_calls: 20_000,
            duplicates: 3,
            skipped: 7,
        }
    }

    #[test]
    fn the_plain_line_says_how_far_how_fast_and_how_long_still() {
        let line = plain_line(
            "/var/log/Master.csv",
            &figures(),
            Duration::from_secs(5),
            Stage::Running,
        );
        assert_eq!(
            line,
            "import /var/log/Master.csv: 25% (2.5 MB of 10.0 MB), 49990 rows (10000 rows/s), \
             10 corrupt, 20010 calls; ETA 15s"
        );
        let read = ProgressSnapshot {
            position: 10_000_000,
            ..figures()
        };
        assert!(
            plain_line("f", &read, Duration::from_secs(9), Stage::Running)
                .ends_with("; read; queueing the calls")
        );
        assert!(
            plain_line("f", &read, Duration::from_secs(75), Stage::Done)
                .ends_with("; done in 1m 15s")
        );
        let files = ProgressSnapshot {
            position: 3,
            total: 3,
            files: true,
            ..figures()
        };
        assert!(
            plain_line("dir", &files, Duration::from_secs(1), Stage::Done)
                .starts_with("import dir: 100% (3 of 3 files), "),
        );
    }

    #[test]
    fn figures_since_the_start_of_an_input_leave_out_the_earlier_inputs() {
        let earlier = ProgressSnapshot {
            rows: 40_000,
            corrupt: 4,
            new_calls: 15_000,
            duplicates: 1,
            skipped: 2,
            ..ProgressSnapshot::default()
        };
        let here = figures().since(&earlier);
        assert_eq!(
            (
                here.rows,
                here.corrupt,
                here.new_calls,
                here.duplicates,
                here.skipped
            ),
            (9_990, 6, 5_000, 2, 5)
        );
        assert_eq!(here.position, 2_500_000);
    }

    #[test]
    fn the_summary_gives_the_delivery_time_at_the_configured_rate() {
        let summary = ImportSummary {
            figures: figures(),
            pending: 200_000,
            rate: RateLimit {
                requests: 25,
                period: Duration::from_secs(5),
            },
            elapsed: Duration::from_secs(75),
        };
        let text = summary.to_string();
        assert!(
            text.starts_with("import done in 1m 15s: 49990 rows read, 20010 calls\n"),
            "{text}"
        );
        for line in [
            "\n  new, queued for the CRM:              20000\n",
            "\n  already delivered or queued:          3\n",
            "\n  skipped (internal etc., not posted):  7\n",
            "\n  corrupt lines (skipped, logged):      10\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        // 200,000 at 5 per second: 40,000 s.
        assert!(
            text.ends_with(
                "delivery: 200000 call log(s) pending in the outbox; at the CRM rate limit of \
                 25 per 5s (5.0/s) that takes about 11h 06m 40s. The running daemon delivers them."
            ),
            "{text}"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::from_secs(0)), "0s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 7)),
            "3h 00m 07s"
        );
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_234_567), "1.2 MB");
    }
}
