//! Optional diagnostics. When the configuration's `log_level` asks for
//! them, lines are appended to [`LOG_FILE`]; otherwise nothing is written.
//! Never stdout, which belongs to the runtime, and a log that cannot be
//! opened is skipped rather than failing the command.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the plugin logs when `log_level` is set.
pub const LOG_FILE: &str = "/var/log/caracal/cni.log";

/// How much to log; each level includes the ones above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    /// `error`, `warn` (or `warning`), `info`, `debug`; any case.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        }
    }
}

/// A line logger for one invocation; a no-op unless opened with a level.
#[derive(Debug, Default)]
pub struct Logger {
    sink: Option<(File, LogLevel)>,
    /// Prefix naming the invocation, e.g. `ADD 0a1b2c/eth0`.
    tag: String,
}

impl Logger {
    /// Appends to `path` (creating its directory) when `level` is set.
    pub fn open(level: Option<LogLevel>, path: &Path, tag: String) -> Logger {
        let sink = level.and_then(|level| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).ok()?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            Some((file, level))
        });
        Logger { sink, tag }
    }

    pub fn log(&self, level: LogLevel, msg: impl Display) {
        let Some((file, max)) = &self.sink else {
            return;
        };
        if level > *max {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // One write per line: with O_APPEND, concurrent plugin processes
        // do not interleave within a line.
        let line = format!(
            "{}.{:03} {:5} caracal[{}] {}: {msg}\n",
            now.as_secs(),
            now.subsec_millis(),
            level.label(),
            std::process::id(),
            self.tag,
        );
        let mut file: &File = file;
        let _ = file.write_all(line.as_bytes());
    }

    pub fn error(&self, msg: impl Display) {
        self.log(LogLevel::Error, msg);
    }

    pub fn warn(&self, msg: impl Display) {
        self.log(LogLevel::Warn, msg);
    }

    pub fn info(&self, msg: impl Display) {
        self.log(LogLevel::Info, msg);
    }

    pub fn debug(&self, msg: impl Display) {
        self.log(LogLevel::Debug, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(LogLevel::parse("INFO"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("warning"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("trace"), None);
        assert!(LogLevel::Error < LogLevel::Debug);
    }

    #[test]
    fn writes_lines_at_or_above_the_level() {
        let path = std::env::temp_dir()
            .join(format!("caracal-cni-log-{}", std::process::id()))
            .join("cni.log");
        let _ = std::fs::remove_file(&path);
        let log = Logger::open(Some(LogLevel::Info), &path, "ADD c1/eth0".into());
        log.debug("hidden");
        log.info("shown");
        log.error("also shown");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("ADD c1/eth0: shown"), "{text}");
        assert!(lines[1].contains("ERROR"), "{text}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn without_a_level_nothing_is_opened() {
        let path =
            std::env::temp_dir().join(format!("caracal-cni-nolog-{}/cni.log", std::process::id()));
        Logger::open(None, &path, String::new()).error("dropped");
        assert!(!path.exists());
    }
}
