//! The real terminal (S6.5, S6.1): tmux plays the user's terminal emulator around the real
//! `ccvm`, and every assertion reads the captured screen. The Claude Code tests boot the real
//! image (the real Claude Code, offline, with a fake key, and a host `~/.claude.json` that
//! has finished onboarding and trusts the project); the `--shell` tests boot the stub image,
//! which has the same packages (bash, vim, less, terminfo) and no Claude Code to wait for.
//!
//! Every wait polls the screen with a deadline; a failure prints the last screen.

use std::time::{Duration, Instant};

use ccvm_test_support::tmux::{self, Tmux, has_line};
use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// Any string will do offline; ccvm forwards it and the guest marks it approved.
const FAKE_KEY: &str = "sk-ant-api03-ccvm-terminal-test-not-a-key-0123456789abcdefghij";
/// From `ccvm` to Claude Code's prompt: ~55 s measured alone on a 2-core TCG host (boot,
/// then Claude Code retrying its remote-settings fetch offline before it draws); generous
/// because CI runs other VM tests beside it.
const PROMPT_LIMIT: Duration = Duration::from_secs(240);
/// The stub image's `--shell` session to its first command's output.
const SHELL_LIMIT: Duration = Duration::from_secs(180);
/// One reaction to a keystroke or a resize; Claude Code takes seconds under TCG.
const REACTION_LIMIT: Duration = Duration::from_secs(90);
/// The pane's size at the start.
const COLS: u16 = 100;
const ROWS: u16 = 30;
/// Claude Code's prompt line starts with `❯` and a no-break space.
const PROMPT: &str = "❯\u{a0}";

/// Lines of `screen` that are Claude Code's prompt line, without the prompt sign. Several
/// are on screen after a resume (the frame drawn before the suspension stays above).
fn prompt_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter_map(|l| l.strip_prefix(PROMPT))
        .map(str::trim_end)
        .collect()
}

/// Widths of the horizontal rules Claude Code draws across the whole terminal.
fn rule_widths(screen: &str) -> Vec<usize> {
    screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && l.chars().all(|c| c == '─'))
        .map(|l| l.chars().count())
        .collect()
}

/// Starts `ccvm args` in a `COLS`×`ROWS` pane with the world's environment, `FAKE_KEY`, more
/// variables (`DISPLAY`), and `TERM=term` (`None`: the pane's own `tmux-256color`).
fn ccvm_pane(world: &World, term: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Tmux {
    let mut ccvm = world.ccvm().env("ANTHROPIC_API_KEY", FAKE_KEY).args(args);
    for (key, value) in env {
        ccvm = ccvm.env(key, *value);
    }
    Tmux::start(world, &ccvm.into_command(), term, (COLS, ROWS))
}

/// A world booting the real image, whose host `~/.claude.json` has finished onboarding and
/// trusts the project (what the real Claude Code needs, with an approved key, to reach its
/// prompt offline). `None` after printing why when it cannot run.
fn claude_world() -> Option<World> {
    claude_world_for(std::env::consts::ARCH)
}

/// [`claude_world`] with the real image for `arch`.
fn claude_world_for(arch: &str) -> Option<World> {
    if let Some(reason) = tmux::missing() {
        vm::skip(&reason);
        return None;
    }
    let image = vm::real_image_or_skip_for(arch)?;
    let world = World::for_vm();
    world.config("acceleration = \"tcg\"\n");
    vm::install_image(&image, &world.path("cache"), "default");
    let project = std::fs::canonicalize(world.path("project")).expect("project");
    let claude_json = serde_json::json!({
        "hasCompletedOnboarding": true,
        "projects": { project.to_string_lossy(): { "hasTrustDialogAccepted": true } }
    });
    std::fs::write(
        world.home().join(".claude.json"),
        serde_json::to_string_pretty(&claude_json).expect("json"),
    )
    .expect("write ~/.claude.json");
    world.hand_over();
    Some(world)
}

/// A world booting the stub image for `--shell` sessions.
fn shell_world() -> Option<World> {
    if let Some(reason) = tmux::missing() {
        vm::skip(&reason);
        return None;
    }
    vm::stub_world("", |_| {})
}

/// Starts the real Claude Code and waits for its prompt, failing at once on the "Detected a
/// custom API key" dialog (the key must be taken without asking, S6.1).
fn claude_at_its_prompt(world: &World) -> Tmux {
    claude_at_its_prompt_with(world, &[])
}

/// [`claude_at_its_prompt`] with more variables for ccvm.
fn claude_at_its_prompt_with(world: &World, env: &[(&str, &str)]) -> Tmux {
    claude_at_its_prompt_in(world, &[], env, PROMPT_LIMIT)
}

/// [`claude_at_its_prompt`] for `ccvm args`, within `limit`.
fn claude_at_its_prompt_in(
    world: &World,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Tmux {
    let tmux = ccvm_pane(world, None, args, env);
    tmux.wait_for("Claude Code's empty prompt", limit, |screen| {
        assert!(
            !screen.contains("Detected a custom API key"),
            "Claude Code asked about the forwarded key:\n{screen}"
        );
        prompt_lines(screen) == [""]
    });
    eprintln!(
        "terminal: Claude Code's prompt {:.1} s after ccvm started",
        tmux.started.elapsed().as_secs_f64()
    );
    tmux
}

#[test]
fn real_claude_takes_the_key_resumes_after_ctrl_z_redraws_on_resize_and_exits_0() {
    let Some(world) = claude_world() else { return };
    let host_claude_json = std::fs::read(world.home().join(".claude.json")).expect("read");
    let tmux = claude_at_its_prompt(&world);

    // Ctrl+Z: Claude Code suspends itself with SIGTSTP; the session resumes it at once, so
    // what is typed next lands in its prompt line, not in a frozen cooked-mode terminal.
    tmux.keys(&["C-z"]);
    tmux.wait_for("Claude Code's suspend notice", REACTION_LIMIT, |s| {
        s.contains("Claude Code is suspended")
    });
    tmux.type_text("typed after ctrl-z");
    tmux.wait_for(
        "the typed text in the prompt line after Ctrl+Z",
        REACTION_LIMIT,
        |s| prompt_lines(s).contains(&"typed after ctrl-z"),
    );

    // A wider window: old lines keep their width, a redraw draws rules across the new one.
    tmux.resize(COLS + 40, ROWS + 5);
    tmux.wait_for("a redraw at the new width", REACTION_LIMIT, |s| {
        rule_widths(s).contains(&usize::from(COLS + 40))
    });

    tmux.keys(&["C-u"]);
    tmux.wait_for("the prompt line cleared", REACTION_LIMIT, |s| {
        let lines = prompt_lines(s);
        !lines.is_empty() && lines.iter().all(|l| !l.contains("typed"))
    });
    tmux.type_text("/exit");
    tmux.wait_for("/exit in the prompt line", REACTION_LIMIT, |s| {
        prompt_lines(s).contains(&"/exit")
    });
    tmux.keys(&["Enter"]);
    assert_eq!(tmux.exit_status(REACTION_LIMIT), 0, "{}", tmux.screen());
    // The approval was made in the guest: the host file is as the user left it.
    assert_eq!(
        std::fs::read(world.home().join(".claude.json")).expect("read"),
        host_claude_json
    );
}

#[test]
fn real_claude_exits_0_on_ctrl_c_twice() {
    let Some(world) = claude_world() else { return };
    let tmux = claude_at_its_prompt(&world);
    // Both at once, as a user presses them: Claude Code counts the second only within a
    // short window after the first, which a slow TCG guest can outlast between two polls.
    tmux.keys(&["C-c", "C-c"]);
    assert_eq!(tmux.exit_status(REACTION_LIMIT), 0, "{}", tmux.screen());
}

/// The `virt` backend with the real arm64 Claude Code: `ccvm --backend virt` in a terminal
/// reaches the prompt, takes typing and leaves with `/exit`'s status (S3, S10).
#[test]
fn virt_real_claude_reaches_its_prompt_takes_typing_and_exits_0() {
    let Some(world) = claude_world_for(vm::AARCH64) else {
        return;
    };
    // aarch64 under TCG runs Claude Code about twice as slowly as x86_64 (bench/RESULTS.md).
    let tmux = claude_at_its_prompt_in(&world, &["--backend", "virt"], &[], PROMPT_LIMIT * 2);
    tmux.type_text("/exit");
    tmux.wait_for("/exit in the prompt line", REACTION_LIMIT * 2, |s| {
        prompt_lines(s).contains(&"/exit")
    });
    tmux.keys(&["Enter"]);
    assert_eq!(tmux.exit_status(REACTION_LIMIT * 2), 0, "{}", tmux.screen());
}

/// S8.1: Ctrl+V with a PNG on the host clipboard (a real X server, a real `xclip` owner)
/// attaches it in the real Claude Code in the VM as it does natively: `[Image #1]` in the
/// prompt line (what Claude Code 2.1.330 draws on the host for the same paste).
#[test]
fn real_claude_attaches_the_host_clipboard_image_on_ctrl_v() {
    let Some(mut x) = crate::clipboard::HostClipboard::x11() else {
        return;
    };
    x.offer(Some("image/png"), &crate::clipboard::png(64, 48));
    let Some(world) = claude_world() else { return };
    let (variable, display) = x.variable();
    let tmux = claude_at_its_prompt_with(&world, &[(variable, &display)]);
    let pressed = Instant::now();
    tmux.keys(&["C-v"]);
    let screen = tmux.wait_for("the pasted image in the prompt line", REACTION_LIMIT, |s| {
        prompt_lines(s) == ["[Image #1]"]
    });
    eprintln!(
        "terminal: `[Image #1]` {:.1} s after Ctrl+V:\n{screen}",
        pressed.elapsed().as_secs_f64()
    );
    // Dropping the tmux server hangs up ccvm, which tears the VM down.
}

/// Edits a command line with a cursor key before running it: `echo abc`, two Lefts, `X`.
fn assert_line_editor_works(tmux: &Tmux) {
    tmux.shell_prompt(REACTION_LIMIT);
    tmux.type_text("echo abc");
    tmux.keys(&["Left", "Left"]);
    tmux.type_text("X");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the edited command's output", REACTION_LIMIT, |s| {
        has_line(s, "aXbc")
    });
    assert!(
        screen
            .lines()
            .any(|l| l.trim_end().ends_with("$ echo aXbc")),
        "the edited command line is shown as run:\n{screen}"
    );
}

#[test]
fn shell_with_term_xterm_ghostty_falls_back_and_runs_vim_and_less_and_sees_resizes() {
    let Some(world) = shell_world() else { return };
    let tmux = ccvm_pane(&world, Some("xterm-ghostty"), &["--shell"], &[]);
    tmux.shell("echo ready-$((6 * 7))", "ready-42", SHELL_LIMIT);
    let screen = tmux.screen();
    assert!(
        screen.contains("no terminfo for TERM=\"xterm-ghostty\"; using xterm-256color"),
        "one notice about the fallback:\n{screen}"
    );
    assert_line_editor_works(&tmux);

    tmux.shell(
        "echo \"cols=$(tput cols)\"",
        &format!("cols={COLS}"),
        REACTION_LIMIT,
    );
    tmux.resize(COLS + 20, ROWS + 2);
    tmux.shell(
        "echo \"cols=$(tput cols) lines=$(tput lines)\"",
        &format!("cols={} lines={}", COLS + 20, ROWS + 2),
        REACTION_LIMIT,
    );

    tmux.shell_prompt(REACTION_LIMIT);
    tmux.type_text("vim notes.txt");
    tmux.keys(&["Enter"]);
    tmux.wait_for("vim's new-file message", REACTION_LIMIT, |s| {
        s.contains("\"notes.txt\" [New]")
    });
    tmux.type_text("iwritten in vim");
    tmux.keys(&["Escape"]);
    tmux.type_text(":wq");
    tmux.keys(&["Enter"]);
    tmux.shell("cat notes.txt", "written in vim", REACTION_LIMIT);

    // less pages: the first screen starts at 1, Space shows the next one.
    tmux.shell_prompt(REACTION_LIMIT);
    tmux.type_text("seq 1 500 | less");
    tmux.keys(&["Enter"]);
    tmux.wait_for("less's first page", REACTION_LIMIT, |s| {
        s.lines().next() == Some("1") && has_line(s, ":")
    });
    tmux.keys(&["Space"]);
    let page = usize::from(ROWS + 2) - 1;
    tmux.wait_for("less's second page", REACTION_LIMIT, |s| {
        s.lines().next() == Some(&(page + 1).to_string()) && has_line(s, ":")
    });
    tmux.keys(&["q"]);
    tmux.shell("echo less-done", "less-done", REACTION_LIMIT);

    tmux.shell_prompt(REACTION_LIMIT);
    tmux.type_text("exit 0");
    tmux.keys(&["Enter"]);
    assert_eq!(tmux.exit_status(REACTION_LIMIT), 0, "{}", tmux.screen());
    assert_eq!(
        std::fs::read_to_string(world.path("project/notes.txt")).expect("vim's file"),
        "written in vim\n"
    );
}

#[test]
fn shell_with_term_wezterm_falls_back_and_the_guest_approved_only_the_key_suffix() {
    let Some(world) = shell_world() else { return };
    let tmux = ccvm_pane(&world, Some("wezterm"), &["--shell"], &[]);
    tmux.shell("echo ready-$((6 * 7))", "ready-42", SHELL_LIMIT);
    assert_line_editor_works(&tmux);
    // The guest's ~/.claude.json lists the key's last 20 characters, never the key (S6.1).
    tmux.shell(
        "echo \"approved=$(jq -r '.customApiKeyResponses.approved[0]' ~/.claude.json) \
         whole=$(grep -c terminal-test ~/.claude.json)\"",
        &format!("approved={} whole=0", &FAKE_KEY[FAKE_KEY.len() - 20..]),
        REACTION_LIMIT,
    );
    tmux.shell(
        "echo \"term=$TERM cols=$(tput cols)\"",
        &format!("term=xterm-256color cols={COLS}"),
        REACTION_LIMIT,
    );
    let screen = tmux.screen();
    assert_eq!(
        screen.matches("no terminfo for TERM=\"wezterm\"").count(),
        1,
        "one notice about the fallback:\n{screen}"
    );
    tmux.shell_prompt(REACTION_LIMIT);
    tmux.type_text("exit 0");
    tmux.keys(&["Enter"]);
    assert_eq!(tmux.exit_status(REACTION_LIMIT), 0, "{}", tmux.screen());
}
