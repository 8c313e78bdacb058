//! S1.1 against the real Claude Code: ccvm never consumes an argument that claude has. The
//! flag list comes from the `--help` of the Claude Code binary in the built image, so a
//! future Claude Code flag that collides with one of ccvm's is caught here.

use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// Every option spelling in a commander-style `--help` (`-c, --continue`,
/// `--allowedTools, --allowed-tools <tools...>`), and every subcommand name.
fn options_and_commands(help: &str) -> (Vec<String>, Vec<String>) {
    let mut options = Vec::new();
    let mut commands = Vec::new();
    let mut section = "";
    for line in help.lines() {
        if !line.starts_with(' ') {
            section = line.trim_end_matches(':');
            continue;
        }
        let trimmed = line.trim_start();
        // Only the first column: continuation lines are indented far deeper.
        if line.len() - trimmed.len() > 4 {
            continue;
        }
        let head = trimmed.split("  ").next().unwrap_or_default();
        match section {
            "Options" => options.extend(
                head.split([',', ' '])
                    .filter(|w| w.starts_with('-'))
                    .map(str::to_owned),
            ),
            "Commands" => commands.extend(
                head.split_whitespace()
                    .next()
                    .into_iter()
                    .flat_map(|w| w.split('|'))
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    (options, commands)
}

#[test]
fn help_parser_reads_both_columns_and_aliases() {
    let help = "Usage: claude [options]\n\nOptions:\n  -c, --continue    Continue\n  \
                --allowedTools, --allowed-tools <tools...>\n      Comma list (e.g. \"--x\")\n\n\
                Commands:\n  plugin|plugins    Manage\n  doctor            Check\n";
    let (options, commands) = options_and_commands(help);
    assert_eq!(
        options,
        ["-c", "--continue", "--allowedTools", "--allowed-tools"]
    );
    assert_eq!(commands, ["plugin", "plugins", "doctor"]);
}

/// Every flag and subcommand of the real Claude Code (top level and each subcommand's), each
/// followed by a value, reaches claude unchanged and in order through `ccvm --ccvm-plan`
/// (S1.1).
#[test]
fn every_flag_of_the_real_claude_code_reaches_claude_unchanged() {
    let Some(claude) = vm::real_claude_binary() else {
        return;
    };
    let (mut options, commands) = options_and_commands(&vm::run_real_claude(&claude, &["--help"]));
    assert!(
        options.len() > 40 && options.iter().any(|o| o == "--plugin-dir"),
        "the --help of the real Claude Code was not understood: {options:?}"
    );
    // And every subcommand's own flags (`claude mcp add --scope …`).
    for command in &commands {
        let (sub, _) = options_and_commands(&vm::run_real_claude(&claude, &[command, "--help"]));
        options.extend(sub);
    }
    options.sort();
    options.dedup();
    let mut argv: Vec<String> = Vec::new();
    for word in options.iter().chain(&commands) {
        argv.push(word.clone());
        argv.push("value".to_owned());
        argv.push(format!("{word}=value"));
    }
    let world = World::new();
    let out = world
        .ccvm()
        .arg("--ccvm-plan")
        .args(&argv)
        .run()
        .expect_code(0);
    let forwarded: Vec<String> = out.json()["session"]["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|a| a.as_str().expect("text").to_owned())
        .collect();
    assert_eq!(
        forwarded, argv,
        "ccvm consumed or changed a Claude Code argument"
    );
}
