//! The host services the policies planned, checked before anything runs (S8): at most one
//! clipboard responder, its socket directly inside the private run directory, its tool the
//! `xclip` or `wl-paste` that ccvm's own trusted `PATH` lookup found.

use std::path::Path;

use ccvm_plugin_api::{HostFacts, HostService, HostServiceKind};

use crate::error::Error;

/// `services` as the launcher may run them, or why not.
pub fn checked(
    services: Vec<HostService>,
    run_dir: &Path,
    facts: &HostFacts,
) -> Result<Vec<HostService>, Error> {
    let refuse = |problem: String| Error::PluginPlan {
        plugin: "a policy".to_owned(),
        problem,
    };
    if services.len() > 1 {
        return Err(refuse(format!(
            "{} clipboard services; ccvm runs at most one",
            services.len()
        )));
    }
    for service in &services {
        let HostServiceKind::ClipboardImages { socket, tool } = &service.kind;
        let socket = Path::new(socket);
        let named_plainly = socket
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| {
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            });
        if socket.parent() != Some(run_dir) || !named_plainly {
            return Err(refuse(format!(
                "the clipboard socket {} is not directly inside the run directory {}",
                socket.display(),
                run_dir.display()
            )));
        }
        let trusted = Path::new(tool)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| ccvm_policy_clipboard::HOST_TOOLS.contains(n))
            .and_then(|n| facts.program(n))
            .is_some_and(|found| found == tool);
        if !trusted {
            return Err(refuse(format!(
                "the clipboard tool {tool} is not the `xclip` or `wl-paste` ccvm's own PATH \
                 lookup found"
            )));
        }
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(socket: &str, tool: &str) -> HostService {
        HostService {
            name: "clipboard-images".to_owned(),
            kind: HostServiceKind::ClipboardImages {
                socket: socket.to_owned(),
                tool: tool.to_owned(),
            },
        }
    }

    #[test]
    fn a_service_must_sit_in_the_run_dir_and_use_the_trusted_tool() {
        let mut facts = ccvm_plugin_api::testing::example_facts(&[]);
        facts
            .programs
            .insert("xclip".to_owned(), Some("/usr/bin/xclip".to_owned()));
        facts.programs.insert("wl-paste".to_owned(), None);
        let run = Path::new("/run/user/1000/ccvm/run-1");
        let good = service("/run/user/1000/ccvm/run-1/clipboard.sock", "/usr/bin/xclip");
        let kept = checked(vec![good.clone()], run, &facts).expect("valid");
        assert_eq!(kept, std::slice::from_ref(&good));
        assert!(checked(Vec::new(), run, &facts).expect("valid").is_empty());

        for socket in [
            "/tmp/clipboard.sock",
            "/run/user/1000/ccvm/run-1/sub/clipboard.sock",
            "/run/user/1000/ccvm/run-1/../clipboard.sock",
            "/run/user/1000/ccvm/run-1/clip board.sock",
        ] {
            let e = checked(vec![service(socket, "/usr/bin/xclip")], run, &facts)
                .expect_err(socket)
                .to_string();
            assert!(e.contains("not directly inside the run directory"), "{e}");
        }
        for tool in [
            "/bin/sh",
            "xclip",
            "/usr/local/bin/xclip",
            "/usr/bin/wl-paste",
            "/usr/bin/../bin/xclip",
        ] {
            let e = checked(
                vec![service("/run/user/1000/ccvm/run-1/clipboard.sock", tool)],
                run,
                &facts,
            )
            .expect_err(tool)
            .to_string();
            assert!(
                e.contains("is not the `xclip` or `wl-paste`"),
                "{tool}: {e}"
            );
        }
        let e = checked(vec![good.clone(), good], run, &facts)
            .expect_err("two")
            .to_string();
        assert!(e.contains("at most one"), "{e}");
    }
}
