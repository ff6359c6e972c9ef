//! `rigmind init [--group NAME]`: makes a root's directories and, with a group,
//! locks the root down to that group (docs/safety.md, "A locked-down root").

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rigmind_queue::access::{group_id, RootAccess};
use rigmind_queue::Layout;

use crate::args::InitArgs;

/// `rigmind init`
pub fn init(a: InitArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    layout
        .ensure()
        .with_context(|| format!("creating the root {}", layout.root().display()))?;
    let Some(name) = a.group else {
        println!(
            "root {} is ready (shared as your umask says; `rigmind init --group NAME` locks it down to one group)",
            layout.root().display()
        );
        return Ok(0);
    };
    let Some(gid) = group_id(&name) else {
        bail!("there is no group '{name}' in /etc/group (create it first: groupadd {name})");
    };
    let mut changed = 0;
    lock_down(layout.root(), gid, &mut changed)?;
    if RootAccess::of(layout.root()).group != Some(gid) {
        bail!(
            "{}: could not be made setgid for group {name} (is it on a filesystem without Unix modes?)",
            layout.root().display()
        );
    }
    println!(
        "root {} is locked down to group {name} (gid {gid}): {changed} entries set, directories drwxrws---, \
         nothing for others; add people with `usermod -aG {name} USER`",
        layout.root().display()
    );
    Ok(0)
}

/// Gives `path` and everything below it (links are not followed) group `gid`:
/// directories setgid with the group's rights equal to the owner's and nothing
/// for others, files the same without setgid.
fn lock_down(path: &Path, gid: u32, changed: &mut usize) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, None, Some(gid))
        .with_context(|| format!("{}: giving it group {gid}", path.display()))?;
    let owner = meta.permissions().mode() & 0o700;
    let mode = if meta.is_dir() {
        0o2000 | owner | owner >> 3 | 0o070
    } else {
        owner | (owner >> 3)
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("{}: setting mode {mode:04o}", path.display()))?;
    *changed += 1;
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?
        {
            lock_down(&entry?.path(), gid, changed)?;
        }
    }
    Ok(())
}
