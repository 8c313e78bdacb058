//! `--ccvm-help` (S1.3): flags, environment variables, config files. Built from the same
//! option table the configuration code uses, so it cannot drift from what is accepted.

use crate::config::{SYSTEM_CONFIG, documented_options};
use crate::plugins::SYSTEM_PLUGIN_DIR;

/// The full usage text.
pub fn text() -> String {
    let mut out = format!(
        "\
ccvm {version} — run Claude Code in an ephemeral micro-VM that sees only this directory

USAGE
    ccvm [CCVM FLAGS] [CLAUDE ARGUMENTS]...
    ccvm --shell [CCVM FLAGS] [SHELL ARGUMENTS]...

Every argument that is not one of ccvm's flags below is passed to claude unchanged and in
order, including --help, --version, --debug and claude's own subcommands. ccvm's flags are
recognised anywhere before a bare `--`; `--` and everything after it go to claude as they are.

CCVM FLAGS
    --shell               start a login shell in the VM instead of claude;
                          `ccvm --shell -c 'make test'` runs one command and exits with its status
    --backend NAME        backend plugin that boots the VM (also --backend=NAME)
    --writable-cwd        project edits land on the host live (default)
    --read-only-cwd       host project is read-only; edits go to an overlay discarded at exit
    --ccvm-plugin-dir DIR search DIR for ccvm plugins first (repeatable; also =DIR).
                          claude's own --plugin-dir is passed to claude
    --ccvm-debug          stream the guest console to stderr and keep the scratch directory

MANAGEMENT
    --ccvm-help           this text
    --ccvm-version        print `ccvm <version>`
    --ccvm-plugins        list every backend and policy found: source, API version, status
    --ccvm-plan           dry run: print the complete launch plan as JSON (hypervisor argv,
                          seed, guest setup, ssh command); boots nothing, writes nothing
    --ccvm-image build [--name NAME] [--stub] [--suite SUITE] [--kernel-flavour FLAVOUR] [--force]
                          build the guest image (Debian SUITE, default bookworm, its kernel,
                          Claude Code {claude} from npm, the guest agent) into
                          $XDG_CACHE_HOME/ccvm/images/<key>/ and name it NAME (default
                          `default`); --stub puts a test stand-in in place of claude
    --ccvm-image list     the built images: name, Claude Code version, kernel, size, key
    --ccvm-image remove NAME
                          delete an image
    --ccvm-doctor [DEST…] check every prerequisite (QEMU, ssh, KVM, the image, image tools)
                          and print a fix for each problem; exit 1 if a session cannot start.
                          Each DEST (host, host:port, [v6]:port or a URL) is checked against
                          the egress allowlist: reachable, or why not and what to change

CONFIGURATION (lowest layer first; later layers win)
    built-in defaults
    {SYSTEM_CONFIG}
    $XDG_CONFIG_HOME/ccvm/config.toml (default ~/.config/ccvm/config.toml)
    CCVM_* environment variables
    command-line flags
Unknown keys and wrong types are errors. Booleans in the environment accept 1/true/yes and
0/false/no. Settings for a third-party policy go in a [plugins.<name>] table.

OPTIONS (config key [environment variable]: meaning)
",
        version = env!("CARGO_PKG_VERSION"),
        claude = ccvm_image::CLAUDE_CODE_VERSION,
    );
    for (key, env, help) in documented_options() {
        let var = env.map(|e| format!(" [{e}]")).unwrap_or_default();
        out.push_str(&format!("    {key}{var}\n        {help}\n"));
    }
    out.push_str(&format!(
        "\
    (the API key's value is read from the variable named by api_key_variable and reaches the
    guest only through the ssh session's environment, never a file or a command line)

ENVIRONMENT (besides the CCVM_* options above)
    CCVM_TIMINGS=FILE     write when each phase of the session was reached (JSON, seconds
                          since the Unix epoch) to FILE when it ends; used by the benchmarks

PLUGINS
    Searched in this order, first hit per kind and name wins: --ccvm-plugin-dir,
    CCVM_PLUGIN_PATH, plugin_dirs, ~/.local/lib/ccvm/plugins, /usr/local/lib/ccvm/plugins,
    {SYSTEM_PLUGIN_DIR}, then the plugins built into this binary. Directories and files that are group- or
    world-writable, or owned by neither root nor you, are refused.

EXIT STATUS
    claude's (or the shell's) status for a session; 2 for a configuration or usage error;
    1 for a boot, runtime or plugin failure; 0 for the management actions above.
"
    ));
    out
}
