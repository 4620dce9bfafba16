//! Commands that must succeed, names unique to a test run, and child
//! processes that are stopped when their guard drops (a failed
//! assertion included).

use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Runs `cmd ARGS` and insists it succeeds; its output.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// `PREFIX<pid><n>-TAG`: unique to this process and call (`n` counts the
/// calls), so tests running at once, in one binary or several, never
/// share a namespace, socket or folder. With a short prefix and tag it
/// fits an interface name (15 bytes).
pub fn unique(prefix: &str, tag: &str) -> String {
    format!(
        "{prefix}{}{}-{tag}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process a test started: on drop it gets SIGTERM and, if it
/// has not exited within its grace period, SIGKILL.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    grace: Duration,
}

impl Process {
    /// Guards `child` (called `name` in messages); `grace`: how long a
    /// stop waits for it to exit before killing it.
    pub fn new(name: impl Into<String>, child: Child, grace: Duration) -> Process {
        Process {
            name: name.into(),
            child: Some(child),
            grace,
        }
    }

    /// The child's pid, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` and waits for the exit; whether it exited with
    /// status 0 (false when it had to be killed). A stopped process stays
    /// stopped: later calls return true.
    pub fn stop_with(&mut self, signal: Signal) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = i32::try_from(child.id()).expect("pid fits an i32");
        let _ = kill(Pid::from_raw(pid), signal);
        let deadline = Instant::now() + self.grace;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                eprintln!("{} did not stop; killing it", self.name);
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Process::stop_with`] SIGTERM.
    pub fn stop(&mut self) -> bool {
        self.stop_with(Signal::SIGTERM)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
