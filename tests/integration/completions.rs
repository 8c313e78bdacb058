//! Shell completions and the man page (S1.6), tried the way a user meets them: the bash
//! completion sourced in a real interactive bash in a terminal (tmux) and completed with Tab,
//! the zsh and fish scripts read by those shells where they are installed, and the man page
//! rendered by groff with every warning on.

use std::process::{Command, Stdio};
use std::time::Duration;

use ccvm_test_support::tmux::{self, Tmux, has_line};
use ccvm_test_support::world::World;

/// One reaction of bash to a keystroke.
const REACTION: Duration = Duration::from_secs(20);

/// `ccvm --ccvm-completions bash`, sourced in bash: Tab completes ccvm's flags and the backend
/// names; claude's arguments (and everything after `--`) complete as files, never as ccvm's.
#[test]
fn bash_completes_ccvm_flags_and_backends_and_leaves_claude_arguments_alone() {
    if let Some(reason) = tmux::missing() {
        ccvm_test_support::vm::skip(&reason);
        return;
    }
    let world = World::new();
    std::fs::write(world.path("project/notes-file.txt"), "x").expect("write");
    world.hand_over();
    let bin = ccvm_test_support::ccvm_binary();
    let dir = bin.parent().expect("the binary's directory");
    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-i"])
        .current_dir(world.path("project"))
        .env("HOME", world.home())
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("PS1", "$ ")
        .env("TERM", "xterm");
    let tmux = Tmux::start(&world, &bash, None, (120, 30));
    tmux.shell_prompt(REACTION);
    tmux.type_text("source <(ccvm --ccvm-completions bash) && echo sourced");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the script sourced", REACTION, |s| has_line(s, "sourced"));
    tmux.keys(&["C-l"]);

    let complete = |typed: &str, keys: &[&str], what: &str, done: &dyn Fn(&str) -> bool| {
        tmux.shell_prompt(REACTION);
        tmux.type_text(typed);
        tmux.keys(keys);
        let screen = tmux.wait_for(what, REACTION, done);
        // Readline's own line kill, not Ctrl-C: on a loaded machine the completion function
        // can still be running when its result shows, and Ctrl-C then interrupts it instead
        // of discarding the line (seen once in CI: the next prompt never came).
        tmux.keys(&["C-u"]);
        tmux.keys(&["C-l"]);
        screen
    };
    complete(
        "ccvm --ccvm-do",
        &["Tab"],
        "--ccvm-doctor completed",
        &|s| has_line(s, "$ ccvm --ccvm-doctor"),
    );
    complete("ccvm --back", &["Tab"], "--backend completed", &|s| {
        has_line(s, "$ ccvm --backend")
    });
    let screen = complete(
        "ccvm --backend ",
        &["Tab", "Tab"],
        "the backend names",
        &|s| s.contains("cloud-hypervisor") && s.contains("microvm") && s.contains("q35"),
    );
    assert!(!screen.contains("notes-file.txt"), "{screen}");
    // claude's arguments: files, as for any command.
    complete(
        "ccvm -p notes-f",
        &["Tab"],
        "a file for claude's argument",
        &|s| has_line(s, "$ ccvm -p notes-file.txt"),
    );
    // After `--`, a word that looks like ccvm's flag is claude's: nothing of ccvm's is offered.
    let screen = complete(
        "ccvm -- --ccvm-d",
        &["Tab", "Tab", "Space", "x"],
        "the typed line",
        &|s| has_line(s, "$ ccvm -- --ccvm-d x"),
    );
    assert!(!screen.contains("--ccvm-doctor"), "{screen}");
}

/// zsh and fish accept their scripts (where the shells are installed; bash is tested above).
#[test]
fn zsh_and_fish_read_their_scripts() {
    let world = World::new();
    for (shell, check) in [
        ("zsh", ["-n", "/dev/stdin"]),
        ("fish", ["-n", "/dev/stdin"]),
    ] {
        let script = world
            .ccvm()
            .args(["--ccvm-completions", shell])
            .run()
            .expect_code(0)
            .stdout;
        // fish names long options without their dashes (`-l ccvm-doctor`).
        assert!(script.contains("ccvm-doctor"), "{shell}: {script}");
        if which::which(shell).is_err() {
            eprintln!(
                "skipped: `{shell}` is not installed; its script is checked for content only"
            );
            continue;
        }
        let mut child = Command::new(shell)
            .args(check)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the shell runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `ccvm --ccvm-man` renders with groff without one warning, and documents the flags.
#[test]
fn the_man_page_renders_without_warnings() {
    let world = World::new();
    let page = world.ccvm().arg("--ccvm-man").run().expect_code(0).stdout;
    let mut groff = Command::new("groff")
        // Plain ASCII text: no overstriking, no escapes.
        .args(["-ww", "-man", "-Tascii", "-P-cbou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (package groff-base) runs");
    use std::io::Write as _;
    groff
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write");
    let out = groff.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "groff: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "--ccvm-doctor",
        "--backend NAME",
        "CCVM_VM_DISK_SIZE",
        "EXIT STATUS",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
}
