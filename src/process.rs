//! Child processes that never outlive smolpaws.
//!
//! The kernel sends a child its parent-death signal when the *thread* that
//! spawned it exits, not the process. Test threads and tokio's blocking
//! threads come and go, so every child is spawned from one thread that lives
//! as long as the process: when the process dies, however it dies (a panic,
//! SIGKILL), its children are killed too.
//!
//! Each child leads its own process group, which is killed as a whole: a
//! Ctrl-C in the terminal reaches smolpaws alone, which then stops its
//! children in order, and an agent's own commands die with it.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};
use std::thread;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

struct SpawnRequest {
    command: Command,
    reply: Sender<io::Result<Child>>,
}

fn spawner() -> &'static Sender<SpawnRequest> {
    static SPAWNER: OnceLock<Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("smolpaws-spawner".into())
            .spawn(move || {
                // Ends only when the process does: the sender lives in a static.
                for mut request in incoming {
                    // The requester may have given up waiting; the child is
                    // then dropped and reaped by nobody, like any orphan.
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .expect("the OS refused to start the spawner thread");
        requests
    })
}

/// A running child process, killed when this value is dropped and, through
/// its parent-death signal, when this process exits.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command`, its stdout and stderr written to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> io::Result<Self> {
        let output = File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        command.process_group(0);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid).
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died before prctl took effect.
                if nix::unistd::getppid().as_raw().cast_unsigned() != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        spawner()
            .send(SpawnRequest { command, reply })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        let child = answer
            .recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))??;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The exit status, if the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process's output, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process's name, as given to [`Process::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The child is not reaped yet, so its group id cannot have been
        // reused. Already exited is fine; anything else leaves nothing to do
        // either.
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills every process of group `group` (a leader's pid). The caller must
/// not have reaped the leader yet, so the id cannot belong to a new group.
pub fn kill_group(group: u32) {
    if let Ok(group) = i32::try_from(group) {
        // Already gone is fine: there is nothing left to kill.
        let _ = nix::sys::signal::killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
}

/// Whether process `pid` still runs. A zombie has finished, though it stays
/// listed until its parent reaps it.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| runs(&stat))
}

/// A process held by its `/proc` directory: once it has ended, its id
/// taken by a new process cannot make it look alive.
pub struct Held(cap_std::fs::Dir);

impl Held {
    /// Holds process `pid`.
    pub fn new(pid: u32) -> io::Result<Self> {
        cap_std::fs::Dir::open_ambient_dir(format!("/proc/{pid}"), cap_std::ambient_authority())
            .map(Self)
    }

    /// Whether the process still runs (see [`running`]).
    pub fn running(&self) -> bool {
        self.0.read_to_string("stat").is_ok_and(|stat| runs(&stat))
    }
}

/// Whether a `/proc/<pid>/stat` line is of a process that has not ended.
fn runs(stat: &str) -> bool {
    // The state follows the command name, which may hold anything but ends
    // at the last `)`.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// Whether the owner of directory `dir`, the process named in its file
/// `owner_file`, still runs. A directory without the file is being set up,
/// unless it has been for ten minutes.
pub fn owner_alive(dir: &Path, owner_file: &str) -> bool {
    match std::fs::read_to_string(dir.join(owner_file)) {
        Ok(pid) => pid.trim().parse::<u32>().is_ok_and(running),
        Err(_) => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < std::time::Duration::from_secs(600)),
    }
}

/// The last `lines` lines of the log at `path` (none when unreadable).
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
