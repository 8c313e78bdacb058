//! ccvm's own flags, each declared once (S1.1, S1.3, S1.6): its spelling, the value it takes,
//! its help text and what it sets. The parser, `--ccvm-help`, the man page and the shell
//! completions all read this table, so none of them can drift from what is accepted.
//!
//! Everything not in this table reaches claude. The only names without the `--ccvm-` prefix
//! are `--shell`, `--writable-cwd`, `--read-only-cwd` and `--backend`; a test checks them
//! against every flag of the real Claude Code.

/// What a flag does when it is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Shell,
    Debug,
    /// `--writable-cwd` (true) / `--read-only-cwd` (false); the last one wins.
    WritableCwd(bool),
    Backend,
    PluginDir,
    /// A management action; every word after `--ccvm-image` belongs to it.
    Help,
    Version,
    Plugins,
    Plan,
    Doctor,
    Image,
    Completions,
    Man,
    /// Internal: ccvm runs itself with these.
    VsockProxy,
    Reap,
}

/// One flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagDef {
    pub name: &'static str,
    /// The value's placeholder, for flags that take one (`--backend NAME` or `--backend=NAME`).
    pub value: Option<&'static str>,
    /// Shown as the flag's arguments in the help instead of `value` (`build|list|remove …`).
    pub usage: Option<&'static str>,
    pub help: &'static str,
    pub effect: Effect,
    /// `CCVM FLAGS` (false) or `MANAGEMENT` (true) in the help.
    pub management: bool,
    /// Internal flags are accepted but not documented.
    pub hidden: bool,
}

const fn flag(name: &'static str, help: &'static str, effect: Effect) -> FlagDef {
    FlagDef {
        name,
        value: None,
        usage: None,
        help,
        effect,
        management: false,
        hidden: false,
    }
}

const fn action(name: &'static str, help: &'static str, effect: Effect) -> FlagDef {
    FlagDef {
        management: true,
        ..flag(name, help, effect)
    }
}

/// Every flag, in the order the help lists them.
pub const FLAGS: &[FlagDef] = &[
    flag(
        "--shell",
        "start a login shell in the VM instead of claude; `ccvm --shell -c 'make test'` runs one \
         command and exits with its status",
        Effect::Shell,
    ),
    FlagDef {
        value: Some("NAME"),
        ..flag(
            "--backend",
            "backend plugin that boots the VM: microvm, q35, virt, cloud-hypervisor (also \
             --backend=NAME)",
            Effect::Backend,
        )
    },
    flag(
        "--writable-cwd",
        "project edits land on the host live (default)",
        Effect::WritableCwd(true),
    ),
    flag(
        "--read-only-cwd",
        "host project is read-only; edits go to an overlay discarded at exit",
        Effect::WritableCwd(false),
    ),
    FlagDef {
        value: Some("DIR"),
        ..flag(
            "--ccvm-plugin-dir",
            "search DIR for ccvm plugins first (repeatable; also =DIR). claude's own \
             --plugin-dir is passed to claude",
            Effect::PluginDir,
        )
    },
    flag(
        "--ccvm-debug",
        "stream the guest console to stderr and keep the scratch directory",
        Effect::Debug,
    ),
    action("--ccvm-help", "this text", Effect::Help),
    action("--ccvm-version", "print `ccvm <version>`", Effect::Version),
    action(
        "--ccvm-plugins",
        "list every backend and policy found: source, API version, status",
        Effect::Plugins,
    ),
    action(
        "--ccvm-plan",
        "dry run: print the complete launch plan as JSON (hypervisor argv, seed, guest setup, \
         ssh command); boots nothing, writes nothing",
        Effect::Plan,
    ),
    FlagDef {
        usage: Some("build|list|remove …"),
        ..action(
            "--ccvm-image",
            "build, list and remove guest images (see IMAGES below)",
            Effect::Image,
        )
    },
    FlagDef {
        usage: Some("[DEST…]"),
        ..action(
            "--ccvm-doctor",
            "check every prerequisite (QEMU, ssh, KVM, the image, image tools) and print a fix \
             for each problem; exit 1 if a session cannot start. Each DEST (host, host:port, \
             [v6]:port or a URL) is checked against the egress allowlist: reachable, or why not \
             and what to change",
            Effect::Doctor,
        )
    },
    FlagDef {
        value: Some("SHELL"),
        ..action(
            "--ccvm-completions",
            "print the completion script for SHELL (bash, zsh or fish): ccvm's flags and \
             backends; claude's arguments complete as files",
            Effect::Completions,
        )
    },
    action(
        "--ccvm-man",
        "print the man page, ccvm(1), in roff (`ccvm --ccvm-man | man -l -`)",
        Effect::Man,
    ),
    FlagDef {
        usage: Some("SOCKET PORT"),
        hidden: true,
        ..action(
            "--ccvm-vsock-proxy",
            "internal: the ssh ProxyCommand of vsock backends",
            Effect::VsockProxy,
        )
    },
    FlagDef {
        usage: Some("DIR DISK"),
        hidden: true,
        ..action(
            "--ccvm-reap",
            "internal: removes a session's run directory when its ccvm exits",
            Effect::Reap,
        )
    },
];

/// The flag `text` is, with the value of a `--flag=value` form.
pub fn lookup(text: &str) -> Option<(&'static FlagDef, Option<&str>)> {
    FLAGS.iter().find_map(|def| {
        if text == def.name {
            return Some((def, None));
        }
        let value = text.strip_prefix(def.name)?.strip_prefix('=')?;
        def.value.is_some().then_some((def, Some(value)))
    })
}

/// `--flag VALUE` or the flag's usage, for the help.
pub fn synopsis(def: &FlagDef) -> String {
    match (def.usage, def.value) {
        (Some(usage), _) | (None, Some(usage)) => format!("{} {usage}", def.name),
        (None, None) => def.name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// S1.1: only four names lack the `--ccvm-` prefix, and they are exactly these.
    #[test]
    fn only_the_four_named_flags_lack_the_ccvm_prefix() {
        let unprefixed: Vec<&str> = FLAGS
            .iter()
            .map(|f| f.name)
            .filter(|n| !n.starts_with("--ccvm-"))
            .collect();
        assert_eq!(
            unprefixed,
            ["--shell", "--backend", "--writable-cwd", "--read-only-cwd"]
        );
    }

    #[test]
    fn equals_forms_exist_only_for_flags_with_a_value() {
        assert!(matches!(lookup("--backend=q35"), Some((d, Some("q35"))) if d.name == "--backend"));
        assert!(lookup("--shell=yes").is_none());
        assert!(lookup("--backendx").is_none());
    }
}
