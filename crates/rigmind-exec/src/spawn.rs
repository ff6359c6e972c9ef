//! Starting a task's command straight into its cgroup, without forking the runner.
//!
//! std's `Command` forks a runner that has a `pre_exec` hook (the old way of
//! joining the task's cgroup: the child wrote `0` to `cgroup.procs` before its
//! exec); a fork of a big multi-threaded worker copies its page tables and then
//! faults on every page either side writes, and the child's move between cgroups
//! takes a machine-wide lock. Here the command is started the way `posix_spawn`
//! starts one (the child shares the runner's memory and the runner waits until the
//! child has called `execve`: no page is copied), through `clone3` with
//! `CLONE_INTO_CGROUP`: the kernel creates the child inside the task's cgroup, so
//! every process of the task is in it from its first instruction, with no
//! migration at all. `CLONE_CLEAR_SIGHAND` gives the child the default handlers
//! (no runner's handler can run in the shared memory), `CLONE_PIDFD` a pidfd that
//! the runtime waits on.
//!
//! Only on x86_64 Linux (the `clone3` call needs a few instructions of assembly:
//! the child starts on a stack of its own). Where it is not available (another
//! architecture, a kernel before 5.7, a seccomp filter that refuses `clone3`),
//! [`spawn`] says [`SpawnError::Unsupported`] and the caller starts the command
//! the old way.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What to start: `program` (an absolute path) with `args`, the whole environment
/// `env`, in `cwd`, in its own process group, inside the cgroup whose directory is
/// open as `cgroup`.
pub(crate) struct Spec<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    pub cgroup: &'a File,
}

/// Why a command was not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// This machine cannot start a process this way: start it the old way.
    #[error("clone3 into a cgroup is not available here: {0}")]
    Unsupported(String),
    /// The command could not be started (`execve` failed, no pipe, ...).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started command: its pid, a pidfd that becomes readable when it exits, and
/// the reading ends of its stdout and stderr.
pub(crate) struct Spawned {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    status: Option<ExitStatus>,
    /// The command's `ru_maxrss` (bytes) once reaped: the largest RSS of it and
    /// of the descendants it waited for.
    max_rss: Option<u64>,
}

impl Spawned {
    /// The largest RSS of the command (and of the children it reaped), in bytes,
    /// from `wait4`'s rusage; `None` before it is reaped.
    pub(crate) fn max_rss(&self) -> Option<u64> {
        self.max_rss
    }

    /// The command's pid (also its process group).
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits until the command exits and reaps it; its status, as many times as
    /// asked.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.status {
                return Ok(s);
            }
            let mut ready = self.pidfd.readable().await?;
            let mut raw = 0;
            // SAFETY: all-zero is a valid rusage (plain integers).
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4(2) on our own child, writing into locals.
            let r = unsafe { libc::wait4(self.pid, &mut raw, libc::WNOHANG, &mut usage) };
            match r {
                r if r == self.pid => {
                    self.status = Some(ExitStatus::from_raw(raw));
                    // Linux gives ru_maxrss in kilobytes.
                    self.max_rss = Some(usage.ru_maxrss.max(0) as u64 * 1024);
                }
                0 => ready.clear_ready(),
                _ => return Err(std::io::Error::last_os_error()),
            }
        }
    }
}

impl Drop for Spawned {
    /// A command dropped unwaited is reaped if it is over already; one still
    /// running is left to the task's end, which kills its cgroup (it stays a
    /// zombie until the runner exits: no code path here drops one running).
    fn drop(&mut self) {
        if self.status.is_none() {
            let mut raw = 0;
            // SAFETY: waitpid(2) on our own child, writing into a local.
            unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
        }
    }
}

/// Set once `clone3` was refused for want of support: later tasks go the old way
/// at once.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Starts `spec` (see the module docs), stdin from `/dev/null`, stdout and stderr
/// into pipes.
pub(crate) fn spawn(spec: &Spec<'_>) -> Result<Spawned, SpawnError> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(SpawnError::Unsupported("refused before".into()));
    }
    let strings = Strings::of(spec)?;
    let null = low_safe(open_dev_null()?)?;
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let mut ctx = ChildCtx {
        program: strings.program.as_ptr(),
        argv: strings.argv.as_ptr(),
        envp: strings.envp.as_ptr(),
        cwd: strings.cwd.as_ptr(),
        fds: [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        errno: AtomicI32::new(0),
    };
    let (pid, pidfd) = match clone_into(spec.cgroup.as_raw_fd(), &mut ctx) {
        Ok(p) => p,
        Err(e) if unsupported(&e) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            return Err(SpawnError::Unsupported(e.to_string()));
        }
        Err(e) => return Err(SpawnError::Io(e)),
    };
    drop((null, out_w, err_w));
    let mut spawned = Spawned {
        pid,
        // SAFETY: the pidfd is owned by the AsyncFd from here on, open as long as it.
        pidfd: unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?,
        stdout: None,
        stderr: None,
        status: None,
        max_rss: None,
    };
    // The child writes its errno here and exits when `execve` failed; the clone
    // returns only after the exec or the exit (CLONE_VFORK).
    let errno = ctx.errno.load(Ordering::SeqCst);
    if errno != 0 {
        reap_now(&mut spawned);
        return Err(SpawnError::Io(std::io::Error::from_raw_os_error(errno)));
    }
    spawned.stdout = Some(pipe::Receiver::from_owned_fd(out_r)?);
    spawned.stderr = Some(pipe::Receiver::from_owned_fd(err_r)?);
    Ok(spawned)
}

/// Reaps a child known to have exited (its exec failed): blocking, but at once.
fn reap_now(s: &mut Spawned) {
    let mut raw = 0;
    // SAFETY: waitpid(2) on our own child, writing into a local.
    if unsafe { libc::waitpid(s.pid, &mut raw, 0) } == s.pid {
        s.status = Some(ExitStatus::from_raw(raw));
    }
}

/// Errors that mean "not here", not "not this command".
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::E2BIG | libc::EOPNOTSUPP)
    )
}

/// The C strings the child needs, made before the clone (the child must not
/// allocate: it shares the runner's heap and its locks).
struct Strings {
    program: CString,
    cwd: CString,
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    envp: Vec<*const libc::c_char>,
}

impl Strings {
    fn of(spec: &Spec<'_>) -> Result<Self, SpawnError> {
        let c = |b: &[u8]| {
            CString::new(b).map_err(|_| {
                SpawnError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a NUL byte in the command, its directory or its environment",
                ))
            })
        };
        let program = c(spec.program.as_os_str().as_bytes())?;
        let mut args = vec![program.clone()];
        for a in spec.args {
            args.push(c(a.as_bytes())?);
        }
        let mut env = Vec::with_capacity(spec.env.len());
        for (k, v) in &spec.env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(c(&kv)?);
        }
        let argv = null_terminated(&args);
        let envp = null_terminated(&env);
        Ok(Self {
            program,
            cwd: c(spec.cwd.as_os_str().as_bytes())?,
            _args: args,
            argv,
            _env: env,
            envp,
        })
    }
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn open_dev_null() -> std::io::Result<OwnedFd> {
    Ok(File::open("/dev/null")?.into())
}

/// A pipe, both ends close-on-exec and at fd 3 or above (the child moves them to
/// 1 and 2: an end already at 0, 1 or 2 could be overwritten before it is moved).
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just made by pipe2 and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((low_safe(r)?, low_safe(w)?))
}

/// `fd` itself when it is 3 or above, else a close-on-exec copy at 3 or above.
fn low_safe(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl(2) duplicating an fd we own.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` was just made and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// What the child reads (shared memory: it runs in the runner's address space
/// until its exec) and where it leaves its errno when something fails.
#[repr(C)]
struct ChildCtx {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// What becomes the child's fds 0, 1 and 2.
    fds: [RawFd; 3],
    errno: AtomicI32,
}

/// The child, between the clone and its exec: only system calls, no allocation,
/// no lock, no panic (it shares the runner's memory).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildCtx the parent keeps alive until the exec.
    let ctx = unsafe { &*(arg as *const ChildCtx) };
    // SAFETY: plain system calls on fds and strings the parent prepared.
    unsafe {
        // Rust's runtime ignores SIGPIPE; a command expects the default (as std's
        // Command restores it).
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let [stdin, stdout, stderr] = ctx.fds;
        let ok = libc::dup2(stdin, 0) == 0
            && libc::dup2(stdout, 1) == 1
            && libc::dup2(stderr, 2) == 2
            && libc::setpgid(0, 0) == 0
            && libc::chdir(ctx.cwd) == 0;
        if ok {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(ctx.program, ctx.argv, ctx.envp);
        }
        let e = *libc::__errno_location();
        ctx.errno
            .store(if e == 0 { libc::EIO } else { e }, Ordering::SeqCst);
        libc::_exit(127)
    }
}

/// `struct clone_args` of the kernel (up to `cgroup`, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_CLEAR_SIGHAND` and `CLONE_INTO_CGROUP` (Linux 5.5, 5.7): above 32 bits,
/// where the `libc` crate's `c_int` constants overflow.
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The child's stack: it only makes a few system calls.
const CHILD_STACK: usize = 64 * 1024;

/// clone3 into `cgroup` running [`child_main`] on a stack of its own; returns
/// once the child has exec'd or exited, with its pid and pidfd.
fn clone_into(cgroup: RawFd, ctx: &mut ChildCtx) -> std::io::Result<(i32, OwnedFd)> {
    let mut stack = vec![0u128; CHILD_STACK / 16]; // 16-byte aligned
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64
            | CLONE_CLEAR_SIGHAND
            | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: (stack.len() * 16) as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    let ret = raw_clone3(&args, ctx as *mut ChildCtx as *mut libc::c_void);
    drop(stack);
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error((-ret) as i32));
    }
    // SAFETY: the kernel stored a new pidfd that nobody else owns.
    Ok((ret as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The system call itself: the parent gets the pid (or `-errno`); the child,
/// on the new stack, calls [`child_main`] and exits with what it returns.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn raw_clone3(args: &CloneArgs, ctx: *mut libc::c_void) -> i64 {
    let ret: i64;
    let f: extern "C" fn(*mut libc::c_void) -> libc::c_int = child_main;
    // SAFETY: clone3 with CLONE_VM | CLONE_VFORK: the parent is suspended until
    // the child execs or exits, so the child's use of the shared memory (its own
    // stack, the context) cannot race the parent. The child never returns into
    // Rust code of the parent's frames: it calls `f` on its stack and exits.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") f,
            in("r13") ctx,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn raw_clone3(_args: &CloneArgs, _ctx: *mut libc::c_void) -> i64 {
    -(libc::ENOSYS as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The command is in the cgroup from its start, in its own process group, in
    /// its directory, with the environment given and SIGPIPE at its default.
    #[tokio::test]
    async fn starts_inside_the_cgroup_with_its_directory_and_environment() {
        let crate::contain::Mechanism::Cgroup { parent } = crate::contain::mechanism() else {
            rigmind_testkit::skip(
                "rigmind-exec spawn::starts_inside_the_cgroup_with_its_directory_and_environment",
                "no cgroup here",
            );
            return;
        };
        let cg = parent.join(format!("rigmind-task-spawn-test-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            program: Path::new("/bin/bash"),
            args: &["-c", "sed -n 's/^0:://p' /proc/self/cgroup; pwd; echo \"$GREETING\"; ps -o pgid= -o pid= $$; grep SigIgn /proc/self/status"],
            env: vec![("GREETING".into(), "hi".into()), ("PATH".into(), std::env::var_os("PATH").unwrap())],
            cwd: dir.path(),
            cgroup: &File::open(&cg).unwrap(),
        };
        let mut s = match spawn(&spec) {
            Err(SpawnError::Unsupported(why)) => {
                let _ = std::fs::remove_dir(&cg);
                rigmind_testkit::skip("rigmind-exec spawn::starts_inside_the_cgroup", &why);
                return;
            }
            other => other.unwrap(),
        };
        let mut out = String::new();
        s.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let status = s.wait().await.unwrap();
        let _ = std::fs::remove_dir(&cg);
        assert!(status.success(), "{status:?}: {out}");
        let name = cg.file_name().unwrap().to_str().unwrap();
        assert!(out.lines().next().unwrap().ends_with(name), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(Path::new(lines[1]), dir.path().canonicalize().unwrap());
        assert_eq!(lines[2], "hi");
        let ids: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(ids[0], ids[1], "its own process group: {out}");
        // SIGPIPE (13) is not ignored: bit 12 of the mask.
        let ign = u64::from_str_radix(lines[4].split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(ign & (1 << 12), 0, "{out}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_not_a_fallback() {
        let crate::contain::Mechanism::Cgroup { parent } = crate::contain::mechanism() else {
            return;
        };
        let cg = parent.join(format!("rigmind-task-spawn-test2-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let spec = Spec {
            program: Path::new("/bin/bash"),
            args: &["-c", "true"],
            env: vec![],
            cwd: Path::new("/nonexistent/rigmind"),
            cgroup: &File::open(&cg).unwrap(),
        };
        let r = spawn(&spec);
        let _ = std::fs::remove_dir(&cg);
        match r {
            Err(SpawnError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            Err(SpawnError::Unsupported(_)) => {}
            Ok(_) => panic!("started in a missing directory"),
        }
    }
}
