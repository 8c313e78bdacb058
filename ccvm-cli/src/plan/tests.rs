//! Unit tests of the planner's steps.
use std::path::Path;

use ccvm_plugin_api::{ControlEndpoint, PolicyPlan, RemoteForward, SshOption};

use super::memlock_warning;
use super::session::ssh_command;

fn ssh_options(forward: Option<&RemoteForward>, policy: PolicyPlan) -> Vec<String> {
    let control = ControlEndpoint::TcpForward {
        host: "127.0.0.1".to_owned(),
        port: 40022,
    };
    let facts = ccvm_plugin_api::testing::example_facts(&[]);
    let ssh = ssh_command(
        Some(Path::new("/usr/bin/ssh")),
        &facts,
        Path::new("/run/user/1000/ccvm/run-1"),
        &control,
        "ANTHROPIC_API_KEY",
        &[policy],
        forward,
    );
    ssh.args
        .windows(2)
        .filter(|w| w[0] == "-o")
        .map(|w| w[1].clone())
        .collect()
}

/// S6.2, S10.4: the client authenticates with its key only, never prompts, forwards
/// nothing, and a policy cannot add a forward through its ssh options.
#[test]
fn ssh_uses_public_keys_only_and_forwards_nothing() {
    let policy = PolicyPlan {
        ssh_options: vec![
            SshOption {
                key: "LocalForward".to_owned(),
                value: "8080 127.0.0.1:80".to_owned(),
            },
            SshOption {
                key: "ServerAliveInterval".to_owned(),
                value: "30".to_owned(),
            },
        ],
        ..PolicyPlan::default()
    };
    let options = ssh_options(None, policy);
    for expected in [
        "PreferredAuthentications=publickey",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "HostbasedAuthentication=no",
        "GSSAPIAuthentication=no",
        "BatchMode=yes",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "StrictHostKeyChecking=yes",
        "ServerAliveInterval=30",
    ] {
        assert!(
            options.iter().any(|o| o == expected),
            "{expected}: {options:?}"
        );
    }
    assert!(
        !options.iter().any(|o| o.contains("Forward=")),
        "{options:?}"
    );
}

#[test]
fn the_one_remote_forward_reaches_ssh() {
    let forward = RemoteForward {
        listen: "127.0.0.1:7070".to_owned(),
        target: "/run/user/1000/ccvm/run-1/clip.sock".to_owned(),
    };
    let options = ssh_options(Some(&forward), PolicyPlan::default());
    assert!(
        options
            .iter()
            .any(|o| o == "RemoteForward=127.0.0.1:7070 /run/user/1000/ccvm/run-1/clip.sock"),
        "{options:?}"
    );
    assert!(options.iter().any(|o| o == "ExitOnForwardFailure=yes"));
    assert!(!options.iter().any(|o| o.starts_with("ClearAllForwardings")));
}

#[test]
fn memlock_warning_only_when_the_limit_is_below_guest_memory() {
    assert_eq!(memlock_warning(None, 4096), None, "unlimited");
    assert_eq!(memlock_warning(Some(8 << 30), 4096), None);
    let warning = memlock_warning(Some(8 << 20), 4096).expect("8 MiB < 4096 MiB");
    assert!(
        warning.contains("at least 4096 MiB, but it is 8 MiB"),
        "{warning}"
    );
    assert!(warning.contains("ulimit -l"), "{warning}");
}
