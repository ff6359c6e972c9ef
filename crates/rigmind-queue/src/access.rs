//! Who may put work into a root, and what a task may touch.
//!
//! A root made by `rigmind init --group NAME` is *locked down*: its directory
//! belongs to the group, carries the setgid bit (so everything created below it
//! inherits the group) and gives others no access. That is how a locked-down root
//! is recognised, from the directory alone (`ls -ld shared` shows `drwxrws---`),
//! so there is nothing else to keep in step.
//!
//! In such a root, the processes keep a umask that gives others nothing
//! ([`keep_umask`]), and a task file is refused ([`refusal`]) when it is owned
//! by someone outside the group. In every root, a task file that others may write
//! is refused: whoever can write it can run commands as the worker's user.
//!
//! Names and paths are data: [`safe_file_stem`] keeps ids that become file names
//! to one path component, and [`contained`] keeps a task's output inside its
//! plan's directory or the root.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// The mode bits of a locked-down root's directory: setgid, nothing for others.
const SETGID: u32 = 0o2000;
const OTHERS: u32 = 0o007;

/// How a root is shared, read from its directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootAccess {
    /// The group of a locked-down root; `None` for a root that is not one.
    pub group: Option<u32>,
}

impl RootAccess {
    /// Reads `root`'s mode and group: locked down when the directory is setgid
    /// and closed to others.
    pub fn of(root: &Path) -> RootAccess {
        let group = std::fs::metadata(root)
            .ok()
            .filter(|m| locked_mode(m.permissions().mode()))
            .map(|m| m.gid());
        RootAccess { group }
    }

    /// The group's name, or its number where no name is listed.
    pub fn group_name(&self) -> Option<String> {
        self.group
            .map(|g| group_name(g).unwrap_or_else(|| format!("gid {g}")))
    }
}

fn locked_mode(mode: u32) -> bool {
    mode & SETGID != 0 && mode & OTHERS == 0
}

/// Makes this process create files and directories without access for others
/// when `root` is locked down (a umask of 007, whatever the shell had); says
/// whether it did. Called at the start of every rigmind process.
pub fn keep_umask(root: &Path) -> bool {
    if RootAccess::of(root).group.is_none() {
        return false;
    }
    // SAFETY: umask(2) only swaps the process's mask; it cannot fail.
    let old = unsafe { libc::umask(0o007) };
    // Keep what the user asked for beyond "nothing for others".
    // SAFETY: as above.
    unsafe { libc::umask(old | 0o007) };
    true
}

/// Why a task file with metadata `meta` may not be run in a root shared as
/// `access`, or `None` when it may. The process's own user and root are always
/// trusted (they could run the commands anyway).
pub fn refusal(meta: &std::fs::Metadata, access: &RootAccess) -> Option<String> {
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Some(format!(
            "writable by others (mode {:04o}): anyone could change what it runs",
            mode & 0o7777
        ));
    }
    let gid = access.group?;
    let uid = meta.uid();
    // SAFETY: geteuid(2) cannot fail.
    if uid == 0 || uid == unsafe { libc::geteuid() } || is_member(uid, gid) {
        return None;
    }
    Some(format!(
        "owned by {}, who is not a member of the root's group {}",
        owner_name(uid),
        access.group_name().unwrap_or_default()
    ))
}

/// Why the root of `layout` refuses the task file at `path` ([`refusal`] under
/// the root's [`RootAccess`]), or `None` when it may run or is gone.
pub fn refusal_at(layout: &crate::Layout, path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    refusal(&meta, &RootAccess::of(layout.root()))
}

/// `name (uid N)`, the name from /etc/passwd where it is listed.
pub fn owner_name(uid: u32) -> String {
    match passwd_entry(uid) {
        Some((name, _)) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Whether `uid` belongs to group `gid`: as its primary group (/etc/passwd) or
/// listed among the group's members (/etc/group). Answers are kept for the
/// process's life: a worker asks for every task file.
pub fn is_member(uid: u32, gid: u32) -> bool {
    static SEEN: Mutex<Option<HashMap<(u32, u32), bool>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    *seen
        .get_or_insert_with(HashMap::new)
        .entry((uid, gid))
        .or_insert_with(|| member_now(uid, gid))
}

fn member_now(uid: u32, gid: u32) -> bool {
    let Some((name, primary)) = passwd_entry(uid) else {
        return false;
    };
    primary == gid || group_entry(gid).is_some_and(|(_, members)| members.contains(&name))
}

/// `(name, primary gid)` of `uid` in /etc/passwd.
fn passwd_entry(uid: u32) -> Option<(String, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[2].parse() == Ok(uid) {
            Some((f[0].to_string(), f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// `(name, members)` of `gid` in /etc/group.
fn group_entry(gid: u32) -> Option<(String, Vec<String>)> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[2].parse() == Ok(gid)).then(|| {
            let members = f[3].split(',').filter(|m| !m.is_empty()).map(String::from);
            (f[0].to_string(), members.collect())
        })
    })
}

/// The name of group `gid`, from /etc/group.
pub fn group_name(gid: u32) -> Option<String> {
    group_entry(gid).map(|(name, _)| name)
}

/// The number of group `name`, from /etc/group.
pub fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 2 && f[0] == name {
            f[2].parse().ok()
        } else {
            None
        }
    })
}

/// Why `id` (a task or batch id, which becomes part of a file name such as
/// `logs/tasks/<task_id>.log`) cannot be one, or `None` when it can: it must be
/// one path component, not `.` or `..`, without `/`, NUL or control characters.
pub fn safe_file_stem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("is empty")
    } else if id == "." || id == ".." {
        Some("is '.' or '..'")
    } else if id.contains('/') {
        Some("contains '/'")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else if id.len() > 200 {
        Some("is longer than 200 bytes")
    } else {
        None
    }
}

/// `path` with `.` and `..` taken out by name alone (no file is looked at);
/// `None` when a `..` would climb above the start of a relative path.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Whether `path` (relative to `base`, or absolute) stays inside one of
/// `allowed` once `.` and `..` are taken out; the existing part of it is
/// resolved too, so a symbolic link to elsewhere does not count as inside.
pub fn contained(base: &Path, path: &Path, allowed: &[&Path]) -> bool {
    let Some(full) = lexical(&base.join(path)) else {
        return false;
    };
    let resolved = resolve_existing(&full);
    allowed.iter().any(|a| {
        let a = std::fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf());
        resolved.starts_with(a)
    })
}

/// `path` with its longest existing ancestor resolved through symbolic links
/// and the rest kept as written.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(real, |p: PathBuf, c| p.join(c));
        }
        match (cur.file_name().map(|n| n.to_owned()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_locked_down_when_setgid_and_closed_to_others() {
        assert!(locked_mode(0o2770));
        assert!(locked_mode(0o2750));
        assert!(!locked_mode(0o0770));
        assert!(!locked_mode(0o2775));
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(RootAccess::of(dir.path()).group, None);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2770)).unwrap();
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        assert_eq!(RootAccess::of(dir.path()).group, Some(gid));
    }

    #[test]
    fn a_world_writable_task_file_is_refused_in_any_root() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.json");
        std::fs::write(&f, "{}").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = refusal(&std::fs::metadata(&f).unwrap(), &RootAccess::default()).unwrap();
        assert!(why.contains("writable by others (mode 0666)"), "{why}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            refusal(&std::fs::metadata(&f).unwrap(), &RootAccess::default()),
            None
        );
    }

    #[test]
    fn ids_that_would_leave_their_directory_are_not_file_stems() {
        for bad in ["", ".", "..", "../x", "a/b", "x\0y", "a\nb"] {
            assert!(safe_file_stem(bad).is_some(), "{bad:?}");
        }
        for good in ["t1", "b-20261130-ab12", "a..b", "résumé ~ (1)"] {
            assert_eq!(safe_file_stem(good), None, "{good:?}");
        }
    }

    #[test]
    fn an_output_path_must_stay_inside_what_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan");
        std::fs::create_dir_all(plan.join("out")).unwrap();
        let ok = |p: &str| contained(&plan, Path::new(p), &[&plan]);
        assert!(ok("out/a.md"));
        assert!(ok("new/dir/a.md"));
        assert!(ok("out/../b.md"));
        assert!(!ok("../escape.md"));
        assert!(!ok("out/../../escape.md"));
        assert!(!ok("/etc/passwd"));
        std::os::unix::fs::symlink("/tmp", plan.join("link")).unwrap();
        assert!(!ok("link/x.md"), "a link to elsewhere is not inside");
    }
}
